import pytest
import torch
from pydantic import ValidationError
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.lowrank import FactorizeConfig, choose_rank, factorize, factorize_layer
from slimkit.lowrank.svd import rank_error
from slimkit.models import build_model, load_model, save_checkpoint


def test_reconstruction_error_falls_with_rank():
    torch.manual_seed(0)
    fc = nn.Linear(60, 40, bias=False)
    x = torch.eye(60)
    errors = []
    for rank in (1, 5, 20, 40):
        approx = factorize_layer(fc, rank)(x).T.detach()  # the reconstructed weight matrix
        weight = fc.weight.detach()
        err = float((approx - weight).norm() / weight.norm())
        assert err == pytest.approx(rank_error(fc.weight.detach(), rank), abs=1e-4)
        errors.append(err)
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-5


def test_energy_rank_choice():
    s = torch.tensor([4.0, 2.0, 1.0, 0.5])
    assert choose_rank(s, None, 0.75) == 1  # 16 / 21.25 = 0.753
    assert choose_rank(s, None, 0.94) == 2  # 20 / 21.25 = 0.941
    assert choose_rank(s, None, 0.95) == 3  # 21 / 21.25 = 0.988
    assert choose_rank(s, None, 1.0) == 4
    assert choose_rank(s, 10, None) == 4


def test_conv_factorization_keeps_shapes_and_function_at_full_rank():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    pair = factorize_layer(conv, 16)
    x = torch.randn(2, 8, 9, 9)
    assert torch.allclose(pair(x), conv(x), atol=1e-4)
    assert isinstance(pair[1], nn.Conv2d) and pair[1].kernel_size == (1, 1)


def test_factorized_model_saves_loads_and_saves_params(tmp_path):
    model = build_model("lenet300", (1, 28, 28), 10).eval()
    done = factorize(model, FactorizeConfig(rank=16))
    assert set(done) == {"1", "3"}  # the 100x10 layer would not save enough
    x = torch.randn(3, 1, 28, 28)
    loaded = load_model(save_checkpoint(model, tmp_path / "f.safetensors"))
    assert torch.equal(loaded(x), model(x))
    assert sum(p.numel() for p in model.parameters()) < 266_610 / 5


def test_bad_settings():
    with pytest.raises(ValidationError, match="exactly one"):
        FactorizeConfig()
    with pytest.raises(SlimkitError, match="matches no"):
        factorize(build_model("mlp", (1, 8, 8), 10), FactorizeConfig(rank=2, layers=["conv"]))
