"""Knowledge distillation: Hinton's loss, FitNets hints, teachers, the distill stage."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from slimkit.data.dataset import Split
from slimkit.distill import (
    CachedTeacherLogits,
    DistillConfig,
    Hints,
    HintSpec,
    TeacherLogits,
    distill,
    kd_loss,
    load_teacher,
    regressor,
    soft_loss,
)
from slimkit.errors import SlimkitError
from slimkit.measure import evaluate
from slimkit.models import build_model, save_checkpoint
from slimkit.recipe import Recipe, run_recipe
from slimkit.train import TrainConfig, fit, seed_everything


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


@pytest.fixture(scope="module")
def teacher(digits):
    """A one-hidden-layer MLP trained on clean digits (about 95% test accuracy)."""
    seed_everything(0)
    model = build_model("mlp", digits.input_shape, 10, hidden=(64,))
    fit(model, digits, TrainConfig(epochs=10, lr=3e-3), quiet=True)
    return model.eval()


def test_kd_loss_equals_hand_computed_value():
    s, t, temp, alpha, label = [1.0, 2.0, 0.0], [2.0, 0.0, 1.0], 2.0, 0.7, 1
    p, q = _softmax([v / temp for v in t]), _softmax([v / temp for v in s])
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    hard = -math.log(_softmax(s)[label])
    expected = alpha * temp**2 * kl + (1 - alpha) * hard
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([label]), temp, alpha)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.7397221518, rel=1e-9)  # the numbers, written out


def test_soft_loss_scaled_by_t_squared_keeps_gradients_independent_of_t():
    # Hinton et al. 2015, eq. 4: for zero-mean logits and high T, dC/dz_i ~ (z_i - v_i) / (N T^2);
    # scaled by T^2 the gradient is (z_i - v_i) / N whatever the temperature.
    teacher_logits = torch.tensor([[-0.4, 0.6, -0.2]])
    expected = (torch.tensor([[0.5, -0.2, -0.3]]) - teacher_logits) / 3
    for temp in (50.0, 100.0):
        student_logits = torch.tensor([[0.5, -0.2, -0.3]], requires_grad=True)
        soft_loss(student_logits, teacher_logits, temp).backward()
        assert torch.allclose(student_logits.grad, expected, atol=1e-3)
    unscaled = torch.nn.functional.kl_div(
        torch.log_softmax(torch.tensor([[1.0, 0.0]]) / 3, 1),
        torch.softmax(torch.tensor([[0.0, 1.0]]) / 3, 1),
        reduction="batchmean",
    )
    assert float(soft_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 3.0)) == (
        pytest.approx(9 * float(unscaled), rel=1e-5)
    )


def test_alpha_zero_is_plain_cross_entropy_and_alpha_one_ignores_labels():
    s, t = torch.tensor([[0.3, 1.2, -0.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(s, torch.tensor([2]))
    assert torch.allclose(kd_loss(s, t, torch.tensor([2]), 4.0, 0.0), ce)
    assert torch.allclose(
        kd_loss(s, t, torch.tensor([0]), 4.0, 1.0), kd_loss(s, t, torch.tensor([2]), 4.0, 1.0)
    )


def test_distilled_student_beats_the_same_student_trained_alone(digits, teacher):
    # The student's labels are 70% noise; the teacher learned from clean labels. Alone, the
    # student memorises the noise; distilled (mostly soft targets), it inherits the teacher.
    generator = torch.Generator().manual_seed(0)
    labels = digits.train.y.clone()
    flip = torch.rand(len(labels), generator=generator) < 0.7
    labels[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=generator)
    noisy = dataclasses.replace(digits, train=Split(digits.train.x, labels))
    settings = {"epochs": 15, "lr": 1e-2, "batch_size": 64, "seed": 0}

    seed_everything(0)
    alone = build_model("mlp", digits.input_shape, 10, hidden=(64,))
    fit(alone, noisy, TrainConfig(**settings), quiet=True)
    seed_everything(0)
    student = build_model("mlp", digits.input_shape, 10, hidden=(64,))
    distill(
        student, teacher, noisy, DistillConfig(temperature=4, alpha=0.9, **settings), quiet=True
    )

    alone_acc, distilled_acc = evaluate(alone, digits.test), evaluate(student, digits.test)
    assert distilled_acc > alone_acc + 0.08, (alone_acc, distilled_acc)
    assert distilled_acc > evaluate(teacher, digits.test) - 0.03


def test_regressor_shapes_follow_fitnets():
    conv = regressor(torch.Size([2, 8, 8, 8]), torch.Size([2, 32, 4, 4]))
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (5, 5)  # (8 - 4 + 1) squared
    assert conv(torch.zeros(2, 8, 8, 8)).shape == (2, 32, 4, 4)
    assert regressor(torch.Size([2, 8, 4, 4]), torch.Size([2, 16, 4, 4])).kernel_size == (1, 1)
    linear = regressor(torch.Size([2, 16]), torch.Size([2, 64]))
    assert (linear.in_features, linear.out_features) == (16, 64)
    with pytest.raises(SlimkitError, match="smaller than the teacher"):
        regressor(torch.Size([2, 8, 2, 2]), torch.Size([2, 16, 4, 4]))


def test_hints_build_regressors_from_captured_shapes(digits):
    student = build_model("cnn-small", digits.input_shape, 10, channels=(4, 8))
    teacher = build_model("cnn-small", digits.input_shape, 10, channels=(16, 32))
    specs = [HintSpec(student="features.2", teacher="features.6")]  # 4@8x8 -> 32@4x4
    hints = Hints(student, teacher, specs, digits.train.x[:2])
    assert hints.regressors[0].weight.shape == (32, 4, 5, 5)
    with torch.no_grad():
        student(digits.train.x[:3]), teacher(digits.train.x[:3])
    assert hints.loss().ndim == 0
    hints.remove()
    assert not student.features[2]._forward_hooks and not teacher.features[6]._forward_hooks


def test_hint_training_lowers_the_hint_loss(digits, teacher):
    student = build_model("mlp", digits.input_shape, 10, hidden=(16,))
    config = DistillConfig(
        hints=[HintSpec(student="2", teacher="2")],  # after the ReLU: 16 -> 64 features
        hint_epochs=4,
        epochs=1,
        lr=3e-3,
    )
    result = distill(student, teacher, digits, config, quiet=True)
    losses = [row["loss"] for row in result.hint_history]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    assert result.epochs_run == 1
    assert not student[2]._forward_hooks  # hooks removed afterwards


def test_unknown_hint_layer_names_the_modules(digits, teacher):
    student = build_model("mlp", digits.input_shape, 10, hidden=(16,))
    config = DistillConfig(hints=[HintSpec(student="nope", teacher="2")], epochs=1)
    with pytest.raises(SlimkitError, match=r"student has no module 'nope'.*include: 0, 1"):
        distill(student, teacher, digits, config, quiet=True)


def test_output_mismatch_is_a_clear_error(digits, teacher):
    student = build_model("mlp", digits.input_shape, 5, hidden=(16,))
    with pytest.raises(SlimkitError, match=r"different output spaces.*\(10,\).*\(5,\)"):
        distill(student, teacher, digits, DistillConfig(epochs=1), quiet=True)


def test_cached_teacher_logits_match_the_teacher(digits, teacher):
    cached, plain = CachedTeacherLogits(teacher), TeacherLogits(teacher)
    x = digits.train.x[:50]
    first = cached(x[:30])
    both = cached(x)  # 30 from the cache, 20 new
    assert len(cached.store) == 50
    assert torch.allclose(both, plain(x), atol=1e-6) and torch.equal(both[:30], first)


def test_config_is_validated():
    with pytest.raises(ValidationError):
        DistillConfig(temperature=0)
    with pytest.raises(ValidationError):
        DistillConfig(alpha=1.5)
    with pytest.raises(ValidationError, match=r"extra|Extra"):
        DistillConfig(temprature=4)


def test_missing_teacher_file_is_a_clear_error(tmp_path):
    with pytest.raises(SlimkitError, match=r"teacher .* does not exist"):
        load_teacher(tmp_path / "nope.safetensors")


def _recipe(teacher_path: str, **stage) -> Recipe:
    return Recipe.from_dict(
        {
            "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
            "data": {"name": "digits"},
            "stages": [
                {"kind": "train", "epochs": 1},
                {"kind": "distill", "teacher": teacher_path, **stage},
            ],
        }
    )


def test_distill_stage_runs_from_a_recipe(tmp_path, teacher, monkeypatch):
    save_checkpoint(teacher, tmp_path / "teacher.safetensors")
    monkeypatch.chdir(tmp_path)  # the teacher path is relative to the current folder
    recipe = _recipe("teacher.safetensors", epochs=2, temperature=4, alpha=0.9, lr=3e-3)
    report = run_recipe(recipe, tmp_path / "out", quiet=True)
    stage = report["stages"][1]
    assert stage["kind"] == "distill" and stage["config"]["temperature"] == 4
    assert stage["teacher_metric"] > 0.9 and stage["epochs"] == 2
    assert (tmp_path / "out" / "stages" / "02-distill" / "model.safetensors").is_file()


def test_distill_stage_rejects_unknown_keys(tmp_path):
    with pytest.raises(SlimkitError, match="unknown key 'temprature'"):
        _recipe(str(tmp_path / "t.safetensors"), temprature=4)


def test_hugging_face_teacher_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=3,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "hf")
    teacher = load_teacher(tmp_path / "hf")
    logits = TeacherLogits(teacher)(torch.randint(0, 30, (4, 7)))
    assert logits.shape == (4, 3)


def test_kd_mnist_benchmark_is_registered_and_checks_the_bar():
    from slimkit.bench import BENCHMARKS, catalog  # noqa: F401  (fills the registry)
    from slimkit.bench.kd_mnist import _checks

    assert "kd-mnist" in BENCHMARKS
    met = _checks({"teacher": 70, "student": 140, "distilled": 100})
    assert met["required_met"] and met["gap_closed"] == pytest.approx(0.571, abs=1e-3)
    assert not _checks({"teacher": 70, "student": 140, "distilled": 110})["required_met"]
    assert _checks({"teacher": 70, "student": 140, "distilled": 80})["aim_met"]
