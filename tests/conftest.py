"""Shared fixtures: small real data (digits), the shared data sets when present, and the command
line run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def digits():
    from slimkit.data import load_data

    return load_data("digits")


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A cnn-small trained briefly on digits (well above chance, a few seconds)."""
    from slimkit.models import build_model
    from slimkit.train import TrainConfig, fit

    model = build_model("cnn-small", digits.input_shape, digits.num_classes)
    fit(model, digits, TrainConfig(epochs=4, lr=3e-3, batch_size=32), quiet=True)
    return model.eval()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def cli(capsys):
    """Run ``slimkit ARGS...`` in-process through its entry point: ``(exit code, stdout, stderr)``.

    In-process spares each call the 3-4 s of a fresh interpreter importing torch; test_cli.py
    still runs the real console process for its training fixture and one bad input."""
    from slimkit.cli import main

    def run(*args) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def bad_input(cli):
    """Run the command line, assert exit code 2 with one ``error:`` line and no traceback, and
    return that line."""

    def run(*args) -> str:
        code, _, err = cli(*args)
        lines = err.strip().splitlines()
        assert code == 2, err
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]

    return run
