"""Pruning: masks, schedules, sensitivity, structured pruning and the prune stage.

Tiny models and the bundled digits only, so the whole file runs in seconds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.layers import select_layers
from slimkit.measure import count_nonzero, export_onnx, onnx_parity
from slimkit.models import build_model, load_checkpoint, save_checkpoint
from slimkit.prune import (
    PruneConfig,
    agp_sparsity,
    allocate,
    dependency_graph,
    iterative_sparsities,
    mask_of,
    prune,
    sensitivity,
    structured_prune,
)
from slimkit.train import TrainConfig, fit


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return build_model("lenet300", (1, 8, 8), 10)


# -- unstructured -------------------------------------------------------------------------------
def test_masks_survive_an_optimizer_step(mlp):
    prune(mlp, sparsity=0.7, retrain=None, finalize=False)
    zeros = {n: (m.weight == 0) for n, m in select_layers(mlp).items()}
    optimizer = torch.optim.SGD(mlp.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(mlp(torch.randn(16, 1, 8, 8)), torch.randint(0, 10, (16,))).backward()
        optimizer.step()
    for name, module in select_layers(mlp).items():
        assert torch.all(module.weight[zeros[name]] == 0), name
        assert torch.any(module.weight[~zeros[name]] != 0)


def test_fit_keeps_pruned_weights_at_zero(digits, mlp):
    result = prune(mlp, data=digits, sparsity=0.8, retrain={"epochs": 1, "lr": 1e-3})
    assert result.sparsity == pytest.approx(0.8, abs=1e-5)
    assert mask_of(mlp[1]) is None  # finalized: a plain layer with zeros
    assert result.history and len(result.history) == 1


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_sparsity_reached_equals_target(mlp, scope):
    result = prune(mlp, sparsity=0.9, scope=scope, retrain=None)
    total = sum(s["params"] for s in result.layers.values())
    nonzero = sum(s["nonzero"] for s in result.layers.values())
    assert nonzero == total - round(0.9 * total)
    if scope == "layer":
        for stats in result.layers.values():
            assert stats["nonzero"] == stats["params"] - round(0.9 * stats["params"])


def test_per_layer_sparsities_and_exclude(mlp):
    result = prune(mlp, sparsities={"1": 0.92, "3": 0.91}, exclude=["5"], retrain=None)
    assert result.layers["1"]["sparsity"] == pytest.approx(0.92, abs=1e-4)
    assert result.layers["3"]["sparsity"] == pytest.approx(0.91, abs=1e-4)
    assert "5" not in result.layers and int((mlp[5].weight == 0).sum()) == 0


def test_threshold(mlp):
    result = prune(mlp, threshold=0.05, retrain=None)
    for module in select_layers(mlp).values():
        weight = module.weight
        assert torch.all((weight == 0) | (weight.abs() >= 0.05))
    assert 0 < result.sparsity < 1


def test_agp_schedule_values():
    values = [agp_sparsity(t, 0.8, 0.1, start=100, n=4, every=50) for t in (0, 100, 150, 300, 1000)]
    expected = [0.1, 0.1, 0.8 + (0.1 - 0.8) * 0.75**3, 0.8, 0.8]
    assert values == pytest.approx(expected)
    assert [round(s, 6) for s in iterative_sparsities(0.875, 3)] == [0.5, 0.75, 0.875]


@pytest.mark.parametrize("schedule", ["iterative", "gradual"])
def test_schedules_reach_target(digits, mlp, schedule):
    retrain = {"epochs": 2, "lr": 1e-3, "patience": 1}
    rounds = {"iterations": 2} if schedule == "iterative" else {"frequency": 5}
    result = prune(mlp, data=digits, sparsity=0.85, schedule=schedule, retrain=retrain, **rounds)
    assert result.sparsity == pytest.approx(0.85, abs=1e-5)
    assert len(result.history) == (4 if schedule == "iterative" else 2)


def test_sensitivity_and_allocation(digits):
    model = build_model("lenet300", digits.input_shape, 10)
    fit(model, digits, TrainConfig(epochs=2, lr=3e-3), quiet=True)
    layers = select_layers(model)
    before = {n: m.weight.detach().clone() for n, m in layers.items()}
    curves = sensitivity(layers, model, digits.val, [0.0, 0.5, 0.9, 0.99])
    assert all(torch.equal(before[n], m.weight) for n, m in layers.items())  # restored
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    shares = allocate(curves, sizes, 0.9)
    overall = sum(shares[k] * sizes[k] for k in sizes) / sum(sizes.values())
    assert overall == pytest.approx(0.9, abs=1e-6)
    result = prune(model, data=digits, sparsity=0.9, allocation="sensitivity", retrain=None)
    assert result.sparsity == pytest.approx(0.9, abs=1e-3)


# -- structured ---------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.side = nn.Conv2d(1, 4, 1)
        self.fc = nn.Linear(12 * 4 * 4, 10)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = h + self.conv2(F.relu(self.conv1(h)))  # residual: stem and conv2 tied
        h = self.dw(h)  # depthwise: per channel
        h = torch.cat([h, self.side(x)], dim=1)  # concat
        h = F.max_pool2d(h, 2)
        return self.fc(torch.flatten(h, 1))  # flatten into Linear


def _zero_channels(model: Residual) -> None:
    """Make some channels of every prunable group exactly zero, so removing them changes
    nothing: the lowest-norm channels are then the ones pruned."""
    with torch.no_grad():
        for conv, bn, idx in ((model.stem, model.bn, [1, 5]), (model.conv1, None, [0, 3])):
            conv.weight[idx] = 0
            conv.bias[idx] = 0
            if bn is not None:
                bn.weight[idx], bn.bias[idx] = 0, 0
        model.conv2.weight[[1, 5]] = 0
        model.conv2.bias[[1, 5]] = 0
        model.dw.bias[[1, 5]] = 0  # depthwise bias would otherwise feed the removed channels
        model.side.weight[[2]], model.side.bias[[2]] = 0, 0


def test_structured_residual_depthwise_concat_flatten():
    torch.manual_seed(0)
    model = Residual().eval()
    _zero_channels(model)
    x = torch.randn(4, 1, 8, 8)
    result = structured_prune(model, x[:2], sparsity=0.25)
    small = result.model.eval()
    assert small.stem.out_channels == small.conv2.out_channels == small.dw.groups == 6
    assert small.conv1.out_channels == 5 and small.side.out_channels == 3
    assert small.fc.in_features == 9 * 16
    assert result.skipped == {"fc": "model output"}
    torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
    assert model.stem.out_channels == 8  # the original is untouched


def test_structured_blocks_grouped_conv_with_a_reason():
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)
    )
    result = structured_prune(model, torch.zeros(2, 1, 8, 8), sparsity=0.5)
    assert "grouped convolution '1'" in result.skipped["0"]
    assert result.model[0].out_channels == 8 and result.model[3].in_features == 128


def test_structured_resnet20_macs_and_bn_criterion():
    model = build_model("resnet20", (1, 8, 8), 10)
    graph = dependency_graph(model, torch.zeros(2, 1, 8, 8))
    tied = [sorted(p) for p in graph.groups().values() if len(p) > 1]
    assert ["conv1", *[f"layers.0.{i}.conv2" for i in range(3)]] in tied
    result = prune(model, method="structured", macs_reduction=0.5, criterion="bn", retrain=None)
    assert result.macs_after <= 0.5 * result.macs_before
    assert result.model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_taylor_criterion_runs_on_data(digits):
    model = build_model("cnn-small", digits.input_shape, 10)
    result = prune(
        model,
        data=digits,
        method="structured",
        sparsity=0.5,
        criterion="taylor",
        taylor_batches=2,
        retrain=None,
    )
    assert result.model.features[0].out_channels == 8


def test_pruned_model_saves_loads_and_exports(tmp_path, digits):
    model = build_model("cnn-small", digits.input_shape, 10).eval()
    small = prune(model, method="structured", sparsity=0.5, retrain=None).model.eval()
    path = save_checkpoint(small, tmp_path / "small.safetensors")
    loaded = load_checkpoint(path)
    x = digits.test.x[:32]
    torch.testing.assert_close(loaded(x), small(x))
    onnx = export_onnx(loaded, tmp_path / "small.onnx", digits.input_shape)
    assert onnx_parity(loaded, onnx, x)["max_abs_diff"] < 1e-4
    sparse = build_model("lenet300", digits.input_shape, 10)
    prune(sparse, sparsity=0.9, retrain=None)
    again = load_checkpoint(save_checkpoint(sparse, tmp_path / "sparse.safetensors"))
    assert count_nonzero(again) == count_nonzero(sparse)
    torch.testing.assert_close(again(x), sparse.eval()(x))


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_sparsity_outside_unit_interval_is_refused(mlp, bad):
    with pytest.raises(SlimkitError, match=r"sparsity must be in \[0, 1\)"):
        prune(mlp, sparsity=bad)


def test_bad_settings_name_the_problem(mlp):
    with pytest.raises(SlimkitError, match="'fc9' matches no"):
        prune(mlp, sparsity=0.5, layers=["fc9"])
    with pytest.raises(SlimkitError, match="do not apply"):
        prune(mlp, sparsity=0.5, criterion="bn")
    with pytest.raises(SlimkitError, match="one target"):
        prune(mlp, sparsity=0.5, threshold=0.1)
    with pytest.raises(ValueError, match="extra"):
        PruneConfig(sparsty=0.5)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.fc(x)
        return -self.fc(x)


def test_untraceable_model_is_a_clear_error():
    with pytest.raises(SlimkitError, match=r"torch\.fx.*leaf_modules"):
        structured_prune(Branchy(), torch.zeros(2, 4), sparsity=0.5)


def test_prune_stage_in_a_recipe(tmp_path):
    from slimkit.recipe import Recipe, run_recipe

    recipe = Recipe.from_dict(
        {
            "model": {"name": "lenet300"},
            "data": {"name": "digits"},
            "stages": [
                {"kind": "train", "epochs": 1},
                {
                    "kind": "prune",
                    "sparsity": 0.9,
                    "allocation": "sensitivity",
                    "retrain": {"epochs": 1},
                },
            ],
        }
    )
    report = run_recipe(recipe, tmp_path / "out", quiet=True)
    stage = report["stages"][1]
    assert stage["prune"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert (tmp_path / "out" / stage["sensitivity_plot"]).is_file()
    assert report["result"]["nonzero_params"] < 0.15 * report["baseline"]["params"]
