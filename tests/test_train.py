import pytest
import torch
from pydantic import ValidationError

from slimkit.measure import evaluate
from slimkit.models import build_model
from slimkit.train import TrainConfig, fit, seed_everything, shift


def test_training_reaches_high_digits_accuracy(digits, trained_cnn):
    assert evaluate(trained_cnn, digits.test) > 0.95


def test_training_is_seeded(digits):
    def run():
        seed_everything(3)  # the initial weights; fit seeds the data order and dropout
        model = build_model("mlp", digits.input_shape, 10, hidden=(32,))
        fit(model, digits, TrainConfig(epochs=1, seed=3), quiet=True)
        return model[1].weight.detach().clone()

    assert torch.equal(run(), run())


def test_early_stopping_restores_best_epoch(digits):
    model = build_model("mlp", digits.input_shape, 10, hidden=(16,))
    # a huge learning rate makes validation stop improving quickly
    result = fit(
        model,
        digits,
        TrainConfig(epochs=30, lr=2.0, optimizer="sgd", patience=2, schedule="constant"),
        quiet=True,
    )
    assert result.epochs_run < 30
    assert evaluate(model, digits.val) == pytest.approx(result.best_val)


def test_sgd_step_schedule_and_loss_hook(digits):
    seen = []
    model = build_model("mlp", digits.input_shape, 10, hidden=(16,))
    result = fit(
        model,
        digits,
        TrainConfig(epochs=2, optimizer="sgd", lr=0.05, schedule="step", step_every=1),
        step_hook=seen.append,
        quiet=True,
    )
    steps_per_epoch = -(-len(digits.train) // 64)
    assert seen[-1] == 2 * steps_per_epoch
    assert result.history[1]["loss"] < result.history[0]["loss"]


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError):
        TrainConfig(lr=-1)
    with pytest.raises(ValidationError, match=r"unknown_key|Extra"):
        TrainConfig(unknown_key=1)


def test_shift_moves_pixels_within_bounds():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    moved = shift(x, 2)
    rows, cols = torch.nonzero(moved[:, 0] == 1.0)[:, 1], torch.nonzero(moved[:, 0] == 1.0)[:, 2]
    assert moved.sum() == 64  # every image keeps its one bright pixel
    assert (rows - 4).abs().max() <= 2 and (cols - 4).abs().max() <= 2
    assert (rows != 4).any()
