"""Shared fixtures: small real data (digits) and the shared data sets when present."""

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
