"""The command line through a real subprocess: exit codes, one-line errors, no partial output."""

import json
import subprocess
import sys

import pytest
import torch

from slimkit.models import build_model, save_checkpoint


def slimkit(*args, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "slimkit.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


def assert_bad_input(code, stderr, pattern):
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    assert pattern in lines[0], lines[0]


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


def test_train_eval_export_round_trip(checkpoint, tmp_path):
    code, out, err = slimkit("eval", checkpoint, "--data", "digits", "--json", tmp_path / "m.json")
    assert code == 0, err
    measured = json.loads((tmp_path / "m.json").read_text())
    assert measured["metric"] > 0.8 and measured["macs"] > 0
    code, _, err = slimkit("export", checkpoint, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert code == 0, err
    code, out, err = slimkit("eval", tmp_path / "m.onnx", "--data", "digits")
    assert code == 0, err
    assert f"metric: {measured['metric']}" in out  # ONNX Runtime gives the same accuracy


def test_no_overwrite_without_force(checkpoint, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_text("keep me")
    code, _, err = slimkit("export", checkpoint, "--out", target)
    assert_bad_input(code, err, "--force")
    assert target.read_text() == "keep me"
    code, _, err = slimkit("export", checkpoint, "--out", target, "--force")
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            ["train", "--model", "vgg99", "--data", "digits", "--out", "{tmp}/x.safetensors"],
            "unknown model 'vgg99'",
        ),
        (
            ["train", "--model", "mlp", "--data", "imagenet", "--out", "{tmp}/x.safetensors"],
            "unknown data set 'imagenet'",
        ),
        (
            [
                "train",
                "--model",
                "mlp",
                "--data",
                "mnist",
                "--data-dir",
                "{tmp}/nowhere",
                "--out",
                "{tmp}/x.safetensors",
            ],
            "train-images-idx3-ubyte",
        ),
        (
            [
                "train",
                "--model",
                "mlp",
                "--data",
                "digits",
                "--lr",
                "-1",
                "--out",
                "{tmp}/x.safetensors",
            ],
            "--lr",
        ),
        (["eval", "{tmp}/missing.safetensors", "--data", "digits"], "does not exist"),
        (["compress", "--recipe", "{tmp}/missing.yaml", "--out", "{tmp}/o"], "cannot read recipe"),
        (["bench", "no-such-bench"], "unknown benchmark"),
        (["train", "--data", "digits"], "--model"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, pattern):
    code, _, err = slimkit(*(a.format(tmp=tmp_path) for a in args))
    assert_bad_input(code, err, pattern)
    assert not (tmp_path / "x.safetensors").exists()
    assert not (tmp_path / "o").exists()


def test_pickled_checkpoint_refused(tmp_path):
    torch.save(build_model("mlp", (1, 8, 8), 10).state_dict(), tmp_path / "w.pt")
    code, _, err = slimkit("eval", tmp_path / "w.pt", "--data", "digits")
    assert_bad_input(code, err, "pickled")


def test_recipe_typo_leaves_no_output(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name: mlp}\ndata: {name: digits}\nstages:\n  - kind: train\n    epochz: 3\n"
    )
    code, _, err = slimkit("compress", "--recipe", recipe, "--out", tmp_path / "o")
    assert_bad_input(code, err, "unknown key 'epochz'")
    assert not (tmp_path / "o").exists()


def test_compress_and_resume(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name: mlp, kwargs: {hidden: [32]}}\ndata: {name: digits}\n"
        "stages:\n  - kind: train\n    epochs: 2\n  - kind: export\n"
    )
    code, _, err = slimkit("compress", "--recipe", recipe, "--out", tmp_path / "o", "--quiet")
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
    code, _, err = slimkit("compress", "--recipe", recipe, "--out", tmp_path / "o", "--resume")
    assert code == 0, err


@pytest.mark.parametrize("command", ["eval", "train"])
def test_wrong_data_shape_is_bad_input(tmp_path, command):
    model = build_model("lenet300", (1, 28, 28), 10)
    save_checkpoint(model, tmp_path / "l.safetensors")
    if command == "eval":
        code, _, err = slimkit("eval", tmp_path / "l.safetensors", "--data", "digits")
    else:
        code, _, err = slimkit(
            "train",
            "--model",
            tmp_path / "l.safetensors",
            "--data",
            "digits",
            "--out",
            tmp_path / "x.safetensors",
        )
    assert_bad_input(code, err, "input shape")
    assert not (tmp_path / "x.safetensors").exists()
