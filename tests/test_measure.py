"""slimkit.measure: counts, ONNX export and parity, latency, and the MEASUREMENT dict."""

from __future__ import annotations

import doctest
import importlib
import json
import os

import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from slimkit.errors import SlimkitError
from slimkit.measure import (
    count_macs,
    count_nonzero,
    count_params,
    environment,
    evaluate,
    export_onnx,
    file_size,
    measure,
    onnx_parity,
    onnx_weight_counts,
    ort_latency_ms,
    predict,
    torch_latency_ms,
)
from slimkit.models import OnnxModule, build_model, save_checkpoint

MNIST = (1, 28, 28)
LATENCY_KEYS = {"torch_b1", "torch_b64", "ort_b1", "ort_b64"}
SCHEMA_KEYS = {
    "metric", "error", "params", "nonzero_params", "macs", "size_bytes", "artifact", "latency_ms",
}  # fmt: skip


@pytest.fixture(scope="module")
def cnn(digits):
    torch.manual_seed(0)
    return build_model("cnn-small", digits.input_shape, digits.num_classes)


@pytest.fixture(scope="module")
def cnn_onnx(cnn, digits, tmp_path_factory):
    return export_onnx(cnn, tmp_path_factory.mktemp("onnx") / "cnn.onnx", digits.input_shape)


# --- counts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "macs"),
    [
        ("lenet300", 784 * 300 + 300 * 100 + 100 * 10),  # 266,200
        ("lenet5", 20 * 24 * 24 * 25 + 50 * 8 * 8 * 20 * 25 + 800 * 500 + 500 * 10),  # 2,293,000
    ],
)
def test_macs_match_hand_counts(name, macs):
    model = build_model(name, MNIST, 10)
    assert count_macs(model, MNIST) == macs
    assert macs in (266_200, 2_293_000)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_macs_count_groups_and_leading_dims():
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)  # 4 * 8 * 8 outputs, 1 * 9 MACs each
    assert count_macs(depthwise, (4, 8, 8)) == 4 * 8 * 8 * 9
    tokens = nn.Linear(16, 8)  # applied to each of 5 rows of an example
    assert count_macs(tokens, (5, 16)) == 5 * 8 * 16


@pytest.mark.parametrize(("name", "params"), [("lenet300", 266_610), ("lenet5", 431_080)])
def test_params_of_zoo_models(name, params):
    model = build_model(name, MNIST, 10)
    assert count_params(model) == params
    assert count_nonzero(model) == params  # freshly initialised: no exact zeros


def test_count_nonzero_after_zeroing_half_a_layer():
    model = build_model("lenet300", MNIST, 10)
    weight = model[1].weight  # 300 x 784
    with torch.no_grad():
        weight[:150].zero_()
    assert count_nonzero(model) == 266_610 - 150 * 784
    assert count_params(model) == 266_610  # the dense architecture is unchanged


def test_count_nonzero_sees_prune_masks_and_parametrizations():
    model = build_model("lenet300", MNIST, 10)
    prune.l1_unstructured(model[1], "weight", amount=0.5)  # weight_orig + weight_mask
    assert count_nonzero(model) == 266_610 - 300 * 784 // 2

    class ZeroFirstRow(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros_like(w[:1]), w[1:]])

    with torch.no_grad():  # an in-place mask edit, not yet seen by any forward pass
        model[1].weight_mask[:10].zero_()
    pruned = int(torch.count_nonzero(model[1].weight_orig * model[1].weight_mask))
    assert count_nonzero(model) == 266_610 - 300 * 784 + pruned

    parametrize.register_parametrization(model[3], "weight", ZeroFirstRow())  # 100 x 300
    assert count_nonzero(model) == 266_610 - 300 * 784 + pruned - 300
    assert count_params(model) == 266_610


def test_file_size_is_bytes_on_disk(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 1234)
    assert file_size(path) == os.path.getsize(path) == 1234
    with pytest.raises(SlimkitError, match="does not exist"):
        file_size(tmp_path / "missing.bin")
    with pytest.raises(SlimkitError, match="not a file"):
        file_size(tmp_path)


# --- predict / evaluate -----------------------------------------------------------------------


def test_predict_batches_agree_and_modes_are_restored(digits, cnn):
    cnn.train()
    cnn.features[1].eval()  # a mixed state must come back as it was
    x = digits.test.x[:50]
    whole = predict(cnn, x, batch_size=256)
    assert torch.allclose(predict(cnn, x, batch_size=7), whole, atol=1e-6)
    assert not whole.requires_grad and whole.shape == (50, 10)
    assert cnn.training and not cnn.features[1].training
    cnn.eval()


def test_evaluate_is_an_accuracy(digits, cnn):
    accuracy = evaluate(cnn, digits.test)
    assert 0.0 <= accuracy <= 1.0


def test_evaluate_rejects_a_wrong_input_shape(digits):
    model = build_model("lenet300", MNIST, 10)
    with pytest.raises(SlimkitError, match=r"different input shape.*\(1, 8, 8\)") as info:
        evaluate(model, digits.test)
    assert "\n" not in str(info.value)


# --- ONNX ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "shape"), [("cnn-small", (1, 8, 8)), ("resnet20", (1, 16, 16))])
def test_onnx_export_has_a_dynamic_batch_and_matches_torch(name, shape, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    model.train()
    path = export_onnx(model, tmp_path / f"{name}.onnx", shape)
    assert model.training  # restored after export
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.onnx"]  # one file, no temps
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input"
    assert session.get_outputs()[0].name == "logits"
    for batch in (1, 7):
        parity = onnx_parity(model, path, torch.randn(batch, *shape))
        assert parity["max_abs_diff"] < 1e-4
        assert parity["top1_agreement"] == 1.0
    assert model.training


def test_onnx_export_failure_is_one_clear_line(tmp_path):
    class Eig(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eig(x)[0].real

    with pytest.raises(SlimkitError, match="cannot export the model to ONNX") as info:
        export_onnx(Eig(), tmp_path / "eig.onnx", (4, 4))
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_onnx_weight_counts_match_the_torch_model(cnn, cnn_onnx):
    params, nonzero = onnx_weight_counts(cnn_onnx)
    # The exporter folds BatchNorm into the convolutions, so count within the BN parameters.
    norms = [m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)]
    bn = sum(count_params(m) for m in norms)
    assert count_params(cnn) - bn <= params <= count_params(cnn) + bn
    assert 0 < nonzero <= params


# --- latency and environment ------------------------------------------------------------------


def test_latencies_are_positive_and_leave_global_state_alone(cnn, cnn_onnx, digits):
    before = torch.get_num_threads()
    rng = torch.get_rng_state()
    assert torch_latency_ms(cnn, digits.input_shape, 4, threads=1, warmup=1, repeats=3) > 0
    assert torch.get_num_threads() == before
    assert ort_latency_ms(cnn_onnx, digits.input_shape, 4, threads=1, warmup=1, repeats=3) > 0
    assert torch.equal(torch.get_rng_state(), rng)  # measuring must not shift seeded training
    with pytest.raises(SlimkitError):
        torch_latency_ms(cnn, digits.input_shape, 0)


def test_environment_names_versions_cpu_and_threads():
    env = environment(threads=3)
    assert {"torch", "onnxruntime", "onnx", "numpy", "python", "cpu", "threads"} <= set(env)
    assert env["threads"] == 3 and env["torch"] == torch.__version__ and env["cpu"]
    json.dumps(env)


def test_cpu_details_reads_the_first_processor(tmp_path):
    from slimkit.measure.environment import cpu_details

    one = (
        "processor\t: {n}\ncpu family\t: 23\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: {f}\n"
    )
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(one.format(n=0, f="sse2 fma avx2") + "\n" + one.format(n=1, f="avx512_vnni"))
    assert cpu_details(cpuinfo) == {"cpu_family_model": "23/1", "simd": ["avx2", "fma"]}
    assert cpu_details(tmp_path / "absent") == {"cpu_family_model": None, "simd": []}


# --- measure() --------------------------------------------------------------------------------


def _check_measurement(result, *, torch_latency: bool = True):
    assert set(result) >= SCHEMA_KEYS
    json.dumps(result)
    assert 0.0 <= result["metric"] <= 1.0
    assert result["error"] == pytest.approx(1.0 - result["metric"], abs=1e-6)
    assert set(result["latency_ms"]) == LATENCY_KEYS
    for key, value in result["latency_ms"].items():
        if torch_latency or key.startswith("ort"):
            assert value is not None and value > 0, key


def test_measure_untrained_cnn_on_digits(digits, tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn-small", digits.input_shape, digits.num_classes).train()
    checkpoint = save_checkpoint(model, tmp_path / "models" / "cnn.safetensors")
    result = measure(model, digits, artifact=checkpoint, relative_to=tmp_path, threads=1)
    _check_measurement(result)
    assert model.training
    assert result["params"] == count_params(model)
    bn_biases = 16 + 32  # BatchNorm's shifts start at exactly zero
    assert result["nonzero_params"] == count_nonzero(model) == result["params"] - bn_biases
    assert result["macs"] == count_macs(model, digits.input_shape) > 0
    assert result["size_bytes"] == os.path.getsize(checkpoint)
    assert result["artifact"] == "models/cnn.safetensors"
    assert result["parity"]["max_abs_diff"] < 1e-4
    assert result["parity"]["top1_agreement"] == 1.0


def test_measure_without_latency_skips_export(digits, cnn):
    result = measure(cnn, digits, split="val", latency=False)
    assert set(result["latency_ms"].values()) == {None}
    assert result["parity"] is None and result["size_bytes"] is None
    assert result["metric"] == pytest.approx(evaluate(cnn, digits.val), abs=1e-6)
    with pytest.raises(SlimkitError, match="unknown split"):
        measure(cnn, digits, split="dev", latency=False)


def test_measure_an_onnx_module(digits, cnn, cnn_onnx):
    result = measure(OnnxModule(cnn_onnx), digits, relative_to=cnn_onnx.parent, threads=1)
    _check_measurement(result, torch_latency=False)
    assert result["latency_ms"]["torch_b1"] is None and result["macs"] is None
    assert result["metric"] == pytest.approx(evaluate(cnn, digits.test), abs=1e-6)
    assert (result["params"], result["nonzero_params"]) == onnx_weight_counts(cnn_onnx)
    assert result["size_bytes"] == os.path.getsize(cnn_onnx)
    assert result["artifact"] == "cnn.onnx"


# --- docstring examples -----------------------------------------------------------------------


@pytest.mark.parametrize("module", ["counts", "predict", "environment"])
def test_docstring_examples(module):
    # The exporting examples are left to the tests above, which cover the same calls faster.
    failures, _ = doctest.testmod(importlib.import_module(f"slimkit.measure.{module}"))
    assert failures == 0


def test_run_session_pads_the_last_batch_of_a_fixed_batch_onnx_file(tmp_path):
    import numpy as np
    import onnx

    from slimkit.measure.onnx_runtime import ort_session, run_session

    path = tmp_path / "fixed.onnx"
    onnx.save(onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["": 13]> neg (float[2, 3] x) => (float[2, 3] y)'
        " { y = Neg(x) }"
    ), path)  # fmt: skip
    x = np.arange(15, dtype=np.float32).reshape(5, 3)  # 5 rows: two full batches and one row
    np.testing.assert_array_equal(run_session(ort_session(path), x), -x)
