"""The command line: exit codes, one-line errors, no partial output.

Most cases run in-process through the entry point (the ``cli`` and ``bad_input`` fixtures of
conftest.py); the training that makes the shared checkpoint and one bad input run the real
console process."""

import json
import subprocess
import sys

import pytest
import torch

from slimkit.models import build_model, save_checkpoint


def slimkit(*args):
    """``python -m slimkit.cli ARGS...`` in a fresh process: (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "slimkit.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "cnn.safetensors"
    code, out, err = slimkit(
        "train",
        "--model",
        "cnn-small",
        "--data",
        "digits",
        "--epochs",
        "3",
        "--lr",
        "0.003",
        "--out",
        path,
    )
    assert code == 0, err
    assert "test" in out
    return path


def test_train_eval_export_round_trip(checkpoint, tmp_path, cli):
    code, out, err = cli("eval", checkpoint, "--data", "digits", "--json", tmp_path / "m.json")
    assert code == 0, err
    measured = json.loads((tmp_path / "m.json").read_text())
    assert measured["metric"] > 0.8 and measured["macs"] > 0
    code, _, err = cli("export", checkpoint, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert code == 0, err
    code, out, err = cli("eval", tmp_path / "m.onnx", "--data", "digits")
    assert code == 0, err
    assert f"metric: {measured['metric']}" in out  # ONNX Runtime gives the same accuracy


def test_no_overwrite_without_force(checkpoint, tmp_path, cli, bad_input):
    target = tmp_path / "m.onnx"
    target.write_text("keep me")
    assert "--force" in bad_input("export", checkpoint, "--out", target)
    assert target.read_text() == "keep me"
    code, _, err = cli("export", checkpoint, "--out", target, "--force")
    assert code == 0, err


OUT = "--out {tmp}/x.safetensors"


@pytest.mark.parametrize(
    ("command", "pattern"),
    [
        (f"train --model vgg99 --data digits {OUT}", "unknown model 'vgg99'"),
        # the model name is checked before the data set is looked for
        (f"train --model vgg99 --data mnist --data-dir {{tmp}}/nowhere {OUT}", "unknown model"),
        (f"train --model mlp --data imagenet {OUT}", "unknown data set 'imagenet'"),
        (f"train --model mlp --data mnist --data-dir {{tmp}}/nowhere {OUT}", "train-images-idx3"),
        (f"train --model mlp --data digits --lr -1 {OUT}", "--lr"),
        ("eval {tmp}/missing.safetensors --data digits", "does not exist"),
        ("compress --recipe {tmp}/missing.yaml --out {tmp}/o", "cannot read recipe"),
        ("bench no-such-bench", "unknown benchmark"),
        ("train --data digits", "--model"),
        ("frobnicate", "frobnicate"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, command, pattern, bad_input):
    assert pattern in bad_input(*command.format(tmp=tmp_path).split())
    assert not (tmp_path / "x.safetensors").exists()
    assert not (tmp_path / "o").exists()


def test_pickled_checkpoint_refused(tmp_path, bad_input):
    torch.save(build_model("mlp", (1, 8, 8), 10).state_dict(), tmp_path / "w.pt")
    assert "pickled" in bad_input("eval", tmp_path / "w.pt", "--data", "digits")


@pytest.mark.parametrize(
    ("recipe", "pattern"),
    [
        ("model: {name: mlp}\ndata: {name: digits}\nstages:\n  - kind: train\n    epochz: 3\n",
         "unknown key 'epochz'"),
        # the data folder is missing too: the model's error must come first
        ("model: {name: vgg99}\ndata: {name: mnist, dir: nowhere}\nstages:\n  - kind: train\n",
         "unknown model 'vgg99'"),
        ("model: {path: gone.safetensors}\ndata: {name: mnist, dir: nowhere}\n"
         "stages:\n  - kind: train\n", "model file"),
        ("model: {path: r.yaml}\ndata: {name: mnist, dir: nowhere}\n"
         "stages:\n  - kind: train\n", "unrecognised model file"),
    ],
)  # fmt: skip
def test_bad_recipe_is_one_line_and_leaves_no_output(tmp_path, bad_input, recipe, pattern):
    path = tmp_path / "r.yaml"
    path.write_text(recipe)
    assert pattern in bad_input("compress", "--recipe", path, "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_compress_and_resume(tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name: mlp, kwargs: {hidden: [32]}}\ndata: {name: digits}\n"
        "stages:\n  - kind: train\n    epochs: 2\n  - kind: export\n"
    )
    code, _, err = cli("compress", "--recipe", recipe, "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert set(report) >= {
        "slimkit_version",
        "task",
        "baseline",
        "result",
        "stages",
        "peers",
        "environment",
    }
    code, _, err = cli("compress", "--recipe", recipe, "--out", tmp_path / "o", "--resume")
    assert code == 0, err


@pytest.mark.parametrize("command", ["eval", "train"])
def test_wrong_data_shape_is_bad_input(tmp_path, command, bad_input):
    model = build_model("lenet300", (1, 28, 28), 10)
    save_checkpoint(model, tmp_path / "l.safetensors")
    if command == "eval":
        error = bad_input("eval", tmp_path / "l.safetensors", "--data", "digits")
    else:
        error = bad_input(
            "train",
            "--model",
            tmp_path / "l.safetensors",
            "--data",
            "digits",
            "--out",
            tmp_path / "x.safetensors",
        )
    assert "input shape" in error
    assert not (tmp_path / "x.safetensors").exists()


def test_the_console_process_reports_bad_input_in_one_line(tmp_path):
    """The real process: exit code 2 and nothing on stderr but the error line (no traceback, no
    warning from an import)."""
    code, _, err = slimkit("train", "--model", "vgg99", "--data", "digits", "--out", tmp_path / "x")
    assert code == 2, err
    assert err.splitlines() == [err.strip()] and err.startswith("error: unknown model 'vgg99'"), err
    assert not (tmp_path / "x").exists()
