"""minilm-int4: weight-only int4 all-MiniLM-L6-v2, GPTQ against rounding to nearest.

Every Linear's weights become 4-bit codes with one float16 scale per group of 128 or 32 inputs,
the word and position embedding tables int8 rows; computation stays float. The 872 sentences of
SST-2's dev set are embedded as in minilm-int8 (batches of 32, mean pooling, L2-normalised) and
compared by cosine with the float model's embeddings. slimkit rounds to nearest, or by GPTQ
(Frantar et al. 2023, :mod:`slimkit.quant.gptq`) on 512 *training* sentences; each model is
written packed (:func:`~slimkit.quant.save_packed`), loaded back into MiniLM and embedded from
that file. The GPTQ models are also exported to ONNX with their codes in ``MatMulNBits``
(:mod:`slimkit.quant.onnx_nbits`) and embedded in ONNX Runtime. Peer: ONNX Runtime's
``MatMulNBitsQuantizer`` (symmetric int4, rounding to nearest, the same block sizes) on the
float ONNX model. ONNX files are compared with the float ONNX model, and timed against it on
the first 256 sentences, batch by batch with the models interleaved (minilm-int8's method).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from slimkit.bench import BENCHMARKS, BenchContext
from slimkit.bench.minilm_int8 import BATCH, cosine_summary, sst2_minilm, time_sessions
from slimkit.measure import file_size, ort_session
from slimkit.measure._common import quiet
from slimkit.report import build_report

CALIBRATION = 512  # training sentences for GPTQ's input statistics
GROUPS = (128, 32)
TIMED_BATCHES = 8  # ONNX Runtime timing on the first 256 dev sentences


def _ort_peer(float_path: Path, group: int, ctx: BenchContext) -> Path:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with quiet():  # the quantizer logs every node it rewrites
        quantizer = MatMulNBitsQuantizer(onnx.load(str(float_path)), block_size=group,
                                         is_symmetric=True)  # fmt: skip
        quantizer.process()
    path = ctx.work_dir / f"minilm.int4-g{group}.ort-matmulnbits.onnx"
    onnx.save(quantizer.model.model, str(path))
    return path


def _onnx_rows(embedder, models: dict, ctx: BenchContext, batches: list) -> dict[str, dict]:
    """The GPTQ models as MatMulNBits ONNX files and the peer's, against the float ONNX model:
    fidelity on every sentence, time on the first ``TIMED_BATCHES`` batches."""
    from slimkit.quant.onnx_nbits import export_weight_only
    from slimkit.quant.transformer import embed_onnx, export_embedder

    def write_float(model: torch.nn.Module, path: Path) -> Path:
        return export_embedder(model, path, batches[0])

    paths = {"float": write_float(embedder, ctx.work_dir / "minilm.float.onnx")}
    for group in GROUPS:
        path = ctx.work_dir / f"minilm.int4-g{group}-gptq.onnx"
        export_weight_only(models[group], path, write_float)
        paths[f"slimkit gptq g{group} ONNX"] = path
        paths[f"ORT MatMulNBits int4 g{group}"] = _ort_peer(paths["float"], group, ctx)
    sessions = {name: ort_session(path, ctx.threads) for name, path in paths.items()}
    outputs = {name: embed_onnx(session, batches) for name, session in sessions.items()}
    seconds = time_sessions(sessions, batches[:TIMED_BATCHES])
    rows = {}
    for name, path in paths.items():
        fidelity = cosine_summary(outputs[name], outputs["float"])
        rows[name] = {
            "name": name, "metric": fidelity["cosine_mean"], "size_bytes": file_size(path),
            "artifact": path.name, "fidelity": fidelity,
            "latency_ms": {"ort_256_sentences": round(1000 * seconds[name], 1)},
            "speedup_vs_float": round(seconds["float"] / seconds[name], 3),
        }  # fmt: skip
    return rows


@BENCHMARKS.register("minilm-int4")
def run(ctx: BenchContext) -> dict[str, Any]:
    """Run the benchmark and return its report (see the module docstring)."""
    from slimkit.quant import load_packed, quantize, save_packed
    from slimkit.quant.transformer import embed

    start = time.perf_counter()
    sentences, embedder, batches, calibration = sst2_minilm(ctx, CALIBRATION)
    with torch.no_grad():
        reference = embed(embedder, batches)
    params = sum(p.numel() for p in embedder.parameters())
    rows: dict[str, dict[str, Any]] = {}
    gptq_models = {}
    for group in GROUPS:
        for rounding in ("nearest", "gptq"):
            tick = time.perf_counter()
            q = quantize(embedder, mode="weight-only", weight_bits=4, group_size=group,
                         weight_rounding=rounding, data=calibration,
                         calibration_batches=len(calibration))  # fmt: skip
            seconds = time.perf_counter() - tick
            path = save_packed(q, ctx.work_dir / f"minilm.int4-g{group}-{rounding}.safetensors")
            with torch.no_grad():
                fidelity = cosine_summary(embed(load_packed(path, embedder), batches), reference)
            rows[f"slimkit {rounding} g{group}"] = {
                "name": f"slimkit {rounding} g{group}", "metric": fidelity["cosine_mean"],
                "params": params, "size_bytes": file_size(path), "artifact": path.name,
                "fidelity": fidelity, "quantize_seconds": round(seconds, 1),
            }  # fmt: skip
            if rounding == "gptq":
                gptq_models[group] = q
    checks = {
        f"gptq_beats_nearest_g{g}": rows[f"slimkit gptq g{g}"]["metric"]
        > rows[f"slimkit nearest g{g}"]["metric"]
        for g in GROUPS
    }
    onnx_rows = _onnx_rows(embedder, gptq_models, ctx, batches)
    float_onnx = onnx_rows.pop("float")
    result = rows.pop("slimkit gptq g128")
    peers = [*onnx_rows.values(), *rows.values()]
    baseline = {"metric": 1.0, "params": params, "size_bytes": 4 * params,
                "fidelity": {"cosine_mean": 1.0, "cosine_min": 1.0},
                "latency_ms": float_onnx["latency_ms"],
                "file_bytes": float_onnx["size_bytes"]}  # fmt: skip
    if ctx.console is not None:
        for row in [result, *peers]:
            f, timed = row["fidelity"], row.get("speedup_vs_float")
            ctx.console.print(
                f"minilm-int4: {row['name']:28s} cosine mean {f['cosine_mean']:.5f} "
                f"min {f['cosine_min']:.5f}  {row['size_bytes']:,} bytes"
                + (f"  {timed:.2f}x float's speed in ORT" if timed else "")
            )
        ctx.console.print(f"minilm-int4: checks {checks}")
    task = {"data": "sst2", "metric": "cosine_mean", "split": "dev", "n": len(sentences)}
    return build_report(
        task, baseline, result, peers=peers, threads=ctx.threads, benchmark="minilm-int4",
        checks=checks, seconds=round(time.perf_counter() - start, 1),
        settings={"batch": BATCH, "calibration": CALIBRATION, "groups": GROUPS,
                  "timed_batches": TIMED_BATCHES},
    )  # fmt: skip
