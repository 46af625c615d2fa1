import pytest
import torch
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.models import MODELS, build_model, load_model, save_checkpoint, spec_of

SHAPES = {
    "mlp": (1, 8, 8),
    "lenet300": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "cnn-small": (1, 8, 8),
    "resnet20": (3, 32, 32),
}


@pytest.mark.parametrize("name", MODELS.names())
def test_zoo_output_shape(name):
    shape = SHAPES[name]
    model = build_model(name, shape, 7).eval()
    assert model(torch.zeros(3, *shape)).shape == (3, 7)


@pytest.mark.parametrize(("name", "params"), [("lenet300", 266_610), ("lenet5", 431_080)])
def test_paper_parameter_counts(name, params):
    model = build_model(name, (1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) == params


def test_resnet20_follows_data_channels_and_classes():
    model = build_model("resnet20", (1, 28, 28), 5).eval()
    assert model.conv1.in_channels == 1
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len([c for c in convs if c.kernel_size == (3, 3)]) == 19  # 19 convs + fc = 20 layers


def test_unknown_model_lists_known():
    with pytest.raises(SlimkitError, match=r"unknown model 'vgg'.*lenet300"):
        build_model("vgg", (1, 8, 8), 10)


def test_resnet_shape_error_names_its_depth():
    from slimkit.models.zoo import ResNet

    with pytest.raises(SlimkitError, match=r"^resnet8 needs image data"):
        ResNet((3, 32), 10, blocks_per_stage=1)


def test_lenet5_rejects_too_small_input():
    with pytest.raises(SlimkitError, match="16x16"):
        build_model("lenet5", (1, 8, 8), 10)


def test_checkpoint_round_trip_identical(tmp_path):
    model = build_model("resnet20", (1, 16, 16), 10).eval()
    x = torch.randn(4, 1, 16, 16)
    path = save_checkpoint(model, tmp_path / "r.safetensors")
    loaded = load_model(path)
    assert torch.equal(model(x), loaded(x))
    assert spec_of(loaded).input_shape == [1, 16, 16]


def test_checkpoint_records_changed_layer_shapes(tmp_path):
    """Saving needs no special case when a compression step changes layer widths."""
    model = build_model("lenet300", (1, 28, 28), 10)
    model[1] = nn.Linear(784, 40)
    model[3] = nn.Linear(40, 100)
    model.eval()
    loaded = load_model(save_checkpoint(model, tmp_path / "small.safetensors"))
    x = torch.randn(2, 1, 28, 28)
    assert loaded[1].out_features == 40
    assert torch.equal(model(x), loaded(x))


def test_pickled_checkpoint_is_refused(tmp_path):
    model = build_model("mlp", (1, 8, 8), 10)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(SlimkitError, match="pickled"):
        load_model(tmp_path / "w.pt")


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(SlimkitError, match=r"bad\.safetensors"):
        load_model(bad)
    with pytest.raises(SlimkitError, match="does not exist"):
        load_model(tmp_path / "nothing.safetensors")


def test_torchscript_file_loads(tmp_path):
    model = build_model("cnn-small", (1, 8, 8), 10).eval()
    torch.jit.script(model).save(str(tmp_path / "m.pt"))
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(load_model(tmp_path / "m.pt")(x), model(x))


def test_import_path_factory(tmp_path):
    model = build_model("torch.nn:Flatten", (1, 8, 8), 10)
    assert isinstance(model, nn.Flatten)


def test_checkpoint_naming_import_needs_permission(tmp_path):
    model = build_model("tests.factories:tiny", (1, 8, 8), 10)
    path = save_checkpoint(model, tmp_path / "t.safetensors")
    with pytest.raises(SlimkitError, match="allow"):
        load_model(path)
    assert isinstance(load_model(path, allow_import=True), nn.Module)
