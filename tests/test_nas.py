"""Architecture search: spaces, search, resume, shared studies (SQLite, PostgreSQL), faults."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import torch

from slimkit.errors import SlimkitError
from slimkit.models import load_model, save_checkpoint
from slimkit.search import NasConfig, SearchSpace, load_space, run_nas, search
from slimkit.search.storage import sqlite_url, with_driver

# A small MLP space on digits: trials of one or two epochs take a fraction of a second.
SPACE_YAML = """
family: mlp
depth: [1, 2]
width: [8, 16, 64]
block: [plain, bn]
activation: [relu, silu]
lr: {low: 0.0003, high: 0.01, log: true}
batch_size: [32, 64]
"""


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(SPACE_YAML)
    return path


@pytest.fixture(scope="module")
def space(space_file) -> SearchSpace:
    return SearchSpace.from_yaml(space_file)


def nas_worker(storage: str, out: Path, seed: int, trials: int) -> subprocess.Popen:
    """``slimkit nas --search-only`` in its own process (a worker of a shared study)."""
    args = ["--data", "digits", "--space", str(out.parent / "space.yaml"), "--trials", trials,
            "--epochs", 1, "--pruner", "none", "--storage", storage, "--study", "shared",
            "--out", out, "--seed", seed, "--search-only", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen(
        [sys.executable, "-m", "slimkit.cli", "nas", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def share_study(storage: str, space_file: Path, space: SearchSpace, digits, tmp_path: Path):
    """A ``slimkit nas`` process and this test process search one study at the same time."""
    trials = 8
    shutil.copy(space_file, tmp_path / "space.yaml")
    worker = nas_worker(storage, tmp_path / "w1", seed=1, trials=trials)
    try:
        wait_for_trial(storage, "shared", worker)  # the process is searching: join it
        config = NasConfig(trials=trials, epochs=1, pruner="none", seed=2)
        search(space, digits, config, storage=storage, study_name="shared", quiet=True)
        _, err = worker.communicate(timeout=240)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    trials_run = optuna.load_study(study_name="shared", storage=with_driver(storage)).trials
    numbers = [t.number for t in trials_run]
    assert sorted(numbers) == list(range(len(numbers)))  # each number handed out once
    done = [t for t in trials_run if t.state.is_finished()]
    # The budget is shared: each worker stops once the study has `trials` finished trials, so
    # at most one trial per other worker runs past it.
    assert trials <= len(done) <= trials + 1
    assert len({t.user_attrs["worker"] for t in done}) == 2, "both workers ran trials"
    keys = [json.dumps(t.params, sort_keys=True) for t in done]
    assert len(set(keys)) >= len(keys) - 1, "workers seeded apart do not repeat candidates"


def wait_for_trial(storage: str, name: str, worker: subprocess.Popen) -> None:
    """Wait until the worker process has a trial in the study."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.stderr.read()
        try:
            trials = optuna.load_study(study_name=name, storage=with_driver(storage)).trials
            if trials:
                return
        except KeyError:
            pass  # the study is not created yet
        time.sleep(0.2)
    pytest.fail("the worker never started a trial")


# --- the search space --------------------------------------------------------------------------


def test_space_from_yaml_samples_buildable_models(space, digits, tmp_path):
    assert space.choices()["width"] == 3 and space.choices()["lr"] == float("inf")
    study = optuna.create_study()
    for _ in range(5):
        candidate = space.sample(study.ask())
        model = candidate.build(digits.input_shape, digits.num_classes)
        assert model(digits.test.x[:3]).shape == (3, 10)
        assert 1 <= len(candidate.arch["layers"]) <= 2
    # The architecture is in the checkpoint's spec: it loads back without pickle or imports.
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    again = load_model(path)
    assert torch.allclose(again(digits.test.x[:3]), model.eval()(digits.test.x[:3]))


def test_builtin_cnn_space_builds_every_block(digits):
    space = load_space("cnn")
    fixed = {"depth": 3, "head": "flatten", "hidden": 32, "activation": "silu", "dropout": 0.1,
             "lr": 1e-3, "batch_size": 32}  # fmt: skip
    for block in ("conv", "dwsep", "residual"):
        per_layer = {f"{key}_{i}": value for i in range(3)
                     for key, value in (("width", 8), ("kernel", 3), ("block", block))}  # fmt: skip
        trial = optuna.trial.FixedTrial({**fixed, **per_layer})
        net = space.sample(trial).build(digits.input_shape, 10)
        assert net(digits.test.x[:2]).shape == (2, 10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("family: cnn\nwidth: []\n", "width: lists no options"),
        ("family: mlp\n", "constant search space"),
        ("family: cnn\ndepth: [2]\nwidth: {low: 16, high: 16}\n", "constant search space"),
        ("family: mlp\ndepth: [1, 2]\nkernel: [3]\n", "cnn family only"),
        ("family: mlp\ndepth: [1, 2]\nactivation: [relu, swish]\n", "unknown option 'swish'"),
        ("family: cnn\nkernel: [3, 4]\n", "odd"),
        ("family: mlp\ndepth: [1, 2]\ndropout: [0.0, 1.5]\n", "below 1"),
        ("family: mlp\ndepth: [1, 2]\nwidht: [3]\n", "widht: unknown key"),
        ("family: mlp\nlr: {low: 0, high: 0.1, log: true}\n", "log range needs low > 0"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_bad_spaces_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SlimkitError, match=message):
        SearchSpace.from_yaml(path)


def test_unknown_space_name():
    with pytest.raises(SlimkitError, match=r"give mlp or cnn or a \.yaml file"):
        load_space("transformer")


# --- searching ---------------------------------------------------------------------------------


def test_tiny_nas_beats_its_first_trial(space, digits):
    config = NasConfig(trials=10, epochs=2, sampler="tpe", pruner="median", seed=0)
    result = search(space, digits, config, quiet=True)
    assert len(result.completed) + result.counts.get("pruned", 0) == 10
    assert result.chosen.values[0] > result.first.values[0]
    assert result.chosen.values[0] == max(t.values[0] for t in result.completed)


def test_run_nas_writes_report_front_and_model(space, digits, tmp_path):
    config = NasConfig(
        objectives="metric,params", sampler="nsga2", pruner="halving", trials=5, epochs=2,
        retrain_epochs=3,
    )  # fmt: skip
    report = run_nas(space, digits, config, tmp_path, quiet=True)
    for name in ("report.json", "pareto.png", "model.onnx", "model.safetensors", "study.db"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["result"]["metric"] == report["result"]["metric"] > 0.85
    assert saved["result"]["size_bytes"] == 4 * saved["result"]["params"]
    assert saved["baseline"]["artifact"] == "baseline.safetensors"
    front = saved["search"]["pareto_front"]
    assert front and all(set(p["values"]) == {"metric", "params"} for p in front)
    assert saved["search"]["chosen_trial"] in [p["number"] for p in front]
    assert load_model(tmp_path / "model.onnx")(digits.test.x[:2]).shape == (2, 10)
    with pytest.raises(SlimkitError, match="--force"):
        run_nas(space, digits, config, tmp_path, quiet=True)


def test_resume_continues_the_trial_count(space, digits, tmp_path, monkeypatch):
    from slimkit.search import trial as trial_module

    storage = sqlite_url(tmp_path / "study.db")
    train, calls = trial_module.train_candidate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while trial 2 trains
        return train(*args, **kwargs)

    monkeypatch.setattr(trial_module, "train_candidate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search(space, digits, NasConfig(trials=5, epochs=1), storage=storage, quiet=True)
    monkeypatch.setattr(trial_module, "train_candidate", train)
    result = search(space, digits, NasConfig(trials=5, epochs=1), storage=storage, quiet=True)
    trials = result.study.trials
    assert [t.number for t in trials] == list(range(6))  # numbering continued after the stop
    assert trials[2].state.name == "FAIL" and trials[2].user_attrs["error"] == "interrupted"
    retry = trials[3]
    assert retry.user_attrs["retry_of"] == 2 and retry.params == trials[2].params
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 5


def test_failing_trial_is_recorded_and_the_search_goes_on(space, digits, monkeypatch):
    from slimkit.search import trial as trial_module

    train = trial_module.train_candidate
    calls = []

    def out_of_memory(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return train(*args, **kwargs)

    monkeypatch.setattr(trial_module, "train_candidate", out_of_memory)
    result = search(space, digits, NasConfig(trials=4, epochs=1, pruner="none"), quiet=True)
    failed = [t for t in result.study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and "OutOfMemoryError" in failed[0].user_attrs["error"]
    assert len(result.completed) == 3  # the failed trial did not stop the search


def test_every_trial_failing_is_a_clear_error(space, digits, monkeypatch):
    from slimkit.search import trial as trial_module

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(trial_module, "train_candidate", broken)
    with pytest.raises(SlimkitError, match=r"no trial completed .*mat1 and mat2"):
        search(space, digits, NasConfig(trials=2, epochs=1), quiet=True)


def test_max_params_skips_large_candidates(space, digits):
    config = NasConfig(trials=6, epochs=1, pruner="none", max_params=2_000)
    result = search(space, digits, config, quiet=True)
    assert all(t.user_attrs["params"] <= 2_000 for t in result.completed)
    skipped = [t for t in result.study.trials if "infeasible" in t.user_attrs]
    assert skipped and all(t.state.name == "PRUNED" for t in skipped)


def test_joining_a_study_with_other_settings_is_refused(space, digits, tmp_path):
    storage = sqlite_url(tmp_path / "s.db")
    search(space, digits, NasConfig(trials=1, epochs=1), storage=storage, quiet=True)
    with pytest.raises(SlimkitError, match="already exists with a different epochs"):
        search(space, digits, NasConfig(trials=2, epochs=2), storage=storage, quiet=True)


# --- command line: bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trials", "0"], "a budget of zero trials"),
        (["--timeout", "0"], "a budget of zero seconds"),
        (["--storage", "postgresql://nas@127.0.0.1:1/nas"], "cannot open storage"),
        (["--storage", "sqlite:////no/such/folder/s.db"], "cannot open storage"),
        (["--objectives", "latency"], "must include 'metric'"),
        (["--sampler", "grid"], "sampler"),
    ],
)
def test_cli_bad_input_is_one_error_line(space_file, tmp_path, bad_input, extra, message):
    argv = ["nas", "--data", "digits", "--space", space_file, "--out", tmp_path / "o"]
    assert message in bad_input(*argv, "--quiet", *extra)


def test_cli_constant_space_is_refused(tmp_path, bad_input):
    (tmp_path / "c.yaml").write_text("family: cnn\ndepth: 1\n")
    argv = ["nas", "--data", "digits", "--space", tmp_path / "c.yaml", "--out", tmp_path]
    assert "constant search space" in bad_input(*argv)


# --- several processes share one study ---------------------------------------------------------


def test_two_workers_share_one_sqlite_study(space_file, space, digits, tmp_path):
    share_study(sqlite_url(tmp_path / "shared.db"), space_file, space, digits, tmp_path)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_killed_worker_trial_is_failed_and_retried(space, digits, space_file, tmp_path):
    storage = sqlite_url(tmp_path / "k.db")
    settings = "trials=50, epochs=30, pruner='none', heartbeat_s=1, grace_s=2"
    code = (
        "from slimkit.data import load_data; from slimkit.search import *;"
        f"search(SearchSpace.from_yaml({str(space_file)!r}), load_data('digits'),"
        f"NasConfig({settings}), storage={storage!r}, study_name='k', quiet=True)"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        kill_during_trial(worker, tmp_path / "k.db")
    finally:
        worker.kill()
        worker.wait()
    time.sleep(3)  # the grace period passes without a heartbeat
    done = sum(t.state.name == "COMPLETE" for t in _trials(storage, "k"))
    # The same settings as the dead worker (a study refuses others); one trial: the retry.
    config = NasConfig(trials=done + 1, epochs=30, pruner="none", heartbeat_s=1, grace_s=2)
    result = search(space, digits, config, storage=storage, study_name="k", quiet=True)
    killed = [t for t in result.study.trials if t.state.name == "FAIL"]
    assert len(killed) == 1, "the dead worker's trial is marked failed"
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    retried = [t for t in result.study.trials if Retry.retried_trial_number(t) == killed[0].number]
    assert len(retried) == 1 and retried[0].params == killed[0].params
    assert retried[0].state.name == "COMPLETE"


def kill_during_trial(worker: subprocess.Popen, db: Path) -> None:
    """SIGKILL the worker while it trains a trial whose heartbeat is recorded.

    A trial takes about a second, so a fixed sleep may kill between two trials (nothing is left
    RUNNING), before the first heartbeat (Optuna never fails the trial) or while the parameters
    are drawn (the retry draws the rest). The worker is stopped (SIGSTOP) while its storage is
    read, so the trial seen is the one killed.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.stderr.read()
        worker.send_signal(signal.SIGSTOP)
        if _training_with_heartbeat(db):
            worker.send_signal(signal.SIGKILL)  # no clean-up: its trial stays RUNNING
            return
        worker.send_signal(signal.SIGCONT)
        time.sleep(0.2)
    pytest.fail("the worker never trained a trial with a heartbeat")


def _training_with_heartbeat(db: Path) -> bool:
    # "params" is recorded once every parameter is drawn, just before training starts.
    query = (
        "SELECT COUNT(*) FROM trials JOIN trial_heartbeats USING (trial_id)"
        " JOIN trial_user_attributes USING (trial_id)"
        " WHERE trials.state = 'RUNNING' AND trial_user_attributes.key = 'params'"
    )
    try:
        with closing(sqlite3.connect(db, timeout=0.5)) as connection:
            return connection.execute(query).fetchone()[0] > 0
    except sqlite3.OperationalError:  # no tables yet, or the stopped worker holds a write lock
        return False


def _trials(storage: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=storage).trials


# --- PostgreSQL --------------------------------------------------------------------------------


def _pg_bin(name: str) -> str | None:
    """A PostgreSQL server program on PATH, else Debian's versioned folder (newest version)."""
    matches = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return shutil.which(name) or (matches[-1] if matches else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL server on loopback; yields a SQLAlchemy URL of an empty database.

    PostgreSQL refuses to run as root, so as root the server runs as ``nobody``.
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip(
            "PostgreSQL not installed (initdb/pg_ctl not found; apt-get install postgresql)"
        )
    pytest.importorskip("psycopg2", reason="psycopg2 (the PostgreSQL driver) is not installed")
    root = Path(tempfile.mkdtemp(prefix="slimkit-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and runuser is missing: cannot start PostgreSQL")
        shutil.chown(root, "nobody", "nogroup")
        as_user = [runuser, "-u", "nobody", "--"]
    port, data = _free_port(), root / "data"
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"

    def pg(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)

    init = pg(initdb, "-D", str(data), "-U", "slimkit", "--auth=trust", "-E", "UTF8")
    start = pg(pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    if init.returncode or start.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not start: {(init.stderr or start.stderr).strip()[:200]}")
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="slimkit", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE nas")
        conn.close()
        yield f"postgresql://slimkit@127.0.0.1:{port}/nas"
    finally:
        pg(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(postgres, space_file, space, digits, tmp_path):
    share_study(postgres, space_file, space, digits, tmp_path)
