"""minilm-int4: weight-only int4 all-MiniLM-L6-v2, GPTQ against rounding to nearest.

Every Linear's weights become 4-bit codes with one float16 scale per group of 128 or 32 inputs,
the word and position embedding tables int8 rows; computation stays float. The 872 sentences of
SST-2's dev set are embedded as in minilm-int8 (batches of 32, mean pooling, L2-normalised) and
compared by cosine with the float model's embeddings. slimkit rounds to nearest, or by GPTQ
(Frantar et al. 2023, :mod:`slimkit.quant.gptq`) on 512 *training* sentences; each model is
written packed (:func:`~slimkit.quant.save_packed`), loaded back into MiniLM and embedded from
that file. Peer: ONNX Runtime's ``MatMulNBitsQuantizer`` (symmetric int4, rounding to nearest,
the same block sizes) on the float ONNX model, embedded in ONNX Runtime and compared with the
float ONNX model.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from slimkit.bench import BENCHMARKS, BenchContext
from slimkit.bench.minilm_int8 import BATCH, cosine_summary, sst2_minilm
from slimkit.measure import file_size, ort_session
from slimkit.measure._common import quiet
from slimkit.report import build_report

CALIBRATION = 512  # training sentences for GPTQ's input statistics
GROUPS = (128, 32)


def _ort_peer(float_path: Any, group: int, ctx: BenchContext, batches: list, reference: Any):
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from slimkit.quant.transformer import embed_onnx

    with quiet():  # the quantizer logs every node it rewrites
        quantizer = MatMulNBitsQuantizer(onnx.load(str(float_path)), block_size=group,
                                         is_symmetric=True)  # fmt: skip
        quantizer.process()
    path = ctx.work_dir / f"minilm.int4-g{group}.ort-matmulnbits.onnx"
    onnx.save(quantizer.model.model, str(path))
    fidelity = cosine_summary(embed_onnx(ort_session(path, ctx.threads), batches), reference)
    return {"name": f"ORT MatMulNBits int4 g{group}", "metric": fidelity["cosine_mean"],
            "size_bytes": file_size(path), "artifact": path.name, "fidelity": fidelity}  # fmt: skip


@BENCHMARKS.register("minilm-int4")
def run(ctx: BenchContext) -> dict[str, Any]:
    """Run the benchmark and return its report (see the module docstring)."""
    from slimkit.quant import load_packed, quantize, save_packed
    from slimkit.quant.transformer import embed, embed_onnx, export_embedder

    start = time.perf_counter()
    sentences, embedder, batches, calibration = sst2_minilm(ctx, CALIBRATION)
    with torch.no_grad():
        reference = embed(embedder, batches)
    params = sum(p.numel() for p in embedder.parameters())
    rows: dict[str, dict[str, Any]] = {}
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
    float_path = export_embedder(embedder, ctx.work_dir / "minilm.float.onnx", batches[0])
    ort_reference = embed_onnx(ort_session(float_path, ctx.threads), batches)
    peers = [_ort_peer(float_path, g, ctx, batches, ort_reference) for g in GROUPS]
    peers += [row for name, row in rows.items() if name != "slimkit gptq g128"]
    result = rows["slimkit gptq g128"]
    baseline = {"metric": 1.0, "params": params, "size_bytes": 4 * params,
                "fidelity": {"cosine_mean": 1.0, "cosine_min": 1.0}}  # fmt: skip
    checks = {
        f"gptq_beats_nearest_g{g}": rows[f"slimkit gptq g{g}"]["metric"]
        > rows[f"slimkit nearest g{g}"]["metric"]
        for g in GROUPS
    }
    if ctx.console is not None:
        for row in [*rows.values(), *peers[: len(GROUPS)]]:
            f = row["fidelity"]
            ctx.console.print(
                f"minilm-int4: {row['name']:28s} cosine mean {f['cosine_mean']:.5f} "
                f"min {f['cosine_min']:.5f}  {row['size_bytes']:,} bytes"
            )
        ctx.console.print(f"minilm-int4: checks {checks}")
    task = {"data": "sst2", "metric": "cosine_mean", "split": "dev", "n": len(sentences)}
    return build_report(
        task, baseline, result, peers=peers, threads=ctx.threads, benchmark="minilm-int4",
        checks=checks, settings={"batch": BATCH, "calibration": CALIBRATION, "groups": GROUPS},
        seconds=round(time.perf_counter() - start, 1),
    )  # fmt: skip
