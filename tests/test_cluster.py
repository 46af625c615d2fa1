import pytest
import torch
from pydantic import ValidationError

from slimkit.cluster import ClusterConfig, cluster, finalize, shared_values
from slimkit.errors import SlimkitError
from slimkit.measure import evaluate
from slimkit.models import build_model
from slimkit.recipe import Recipe, run_recipe
from slimkit.train import TrainConfig, fit


def pruned_model(fraction=0.7):
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 28, 28), 10)
    with torch.no_grad():
        for layer in (model[1], model[3]):
            w = layer.weight
            w[w.abs() < w.abs().quantile(fraction)] = 0
    return model


def test_codebook_size_and_zero_preservation():
    model = pruned_model()
    zeros = {i: (model[i].weight == 0).clone() for i in (1, 3)}
    cluster(model, ClusterConfig(bits=4, layer_bits={"5": 2}))
    counts = shared_values(model)
    # pruned layers: 2**bits - 1 shared values, so they and the zero fit in ``bits``
    assert counts["1"] == 15 and counts["3"] == 15 and counts["5"] == 4
    assert all(len(torch.unique(model[i].weight)) == 16 for i in (1, 3))
    for i, mask in zeros.items():
        assert torch.equal(model[i].weight == 0, mask)


def test_linear_init_spans_the_weight_range():
    model = pruned_model()
    weight = model[1].weight.detach()
    low, high = float(weight.min()), float(weight.max())
    cluster(model, ClusterConfig(bits=3, layers=["1"]))
    centroids = model[1].parametrizations.weight[0].centroids
    assert centroids.min() < low / 2 and centroids.max() > high / 2


def test_finetuning_updates_shared_values_and_keeps_zeros(digits):
    model = build_model("mlp", digits.input_shape, 10, hidden=(64,))
    fit(model, digits, TrainConfig(epochs=2, lr=3e-3), quiet=True)
    with torch.no_grad():
        model[1].weight[model[1].weight.abs() < 0.05] = 0
    zeros = (model[1].weight == 0).clone()
    cluster(model, ClusterConfig(bits=3))
    before = model[1].parametrizations.weight[0].centroids.detach().clone()
    before_acc = evaluate(model, digits.val)
    fit(model, digits, TrainConfig(epochs=2, lr=1e-3), quiet=True)
    after = model[1].parametrizations.weight[0].centroids.detach()
    assert not torch.equal(before, after)
    assert torch.equal(model[1].weight == 0, zeros)
    assert shared_values(model)["1"] <= 8
    assert evaluate(model, digits.val) >= before_acc - 0.02
    finalize(model)
    assert not hasattr(model[1], "parametrizations")
    assert shared_values(model)["1"] <= 8


def test_bad_settings():
    with pytest.raises(ValidationError):
        ClusterConfig(bits=9)
    with pytest.raises(SlimkitError, match="matches no"):
        cluster(pruned_model(), ClusterConfig(layers=["conv*"]))


def test_cluster_stage_in_a_recipe(tmp_path):
    recipe = Recipe.from_dict(
        {
            "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
            "data": {"name": "digits"},
            "stages": [
                {"kind": "train", "epochs": 3, "lr": 3e-3},
                {"kind": "cluster", "bits": 4, "finetune": {"epochs": 1, "lr": 1e-4}},
                {"kind": "export", "format": "slim"},
            ],
        }
    )
    report = run_recipe(recipe, tmp_path / "out", quiet=True)
    assert report["result"]["artifact"].endswith(".slim")
    assert report["result"]["size_bytes"] < report["baseline"]["size_bytes"] / 4
    assert report["result"]["metric"] > report["baseline"]["metric"] - 0.05
