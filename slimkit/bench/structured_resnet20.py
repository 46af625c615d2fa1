"""structured-resnet20: structured channel pruning of ResNet-20 on Fashion-MNIST.

One run trains (or loads from the cache) the dense ResNet-20, removes whole channels from every
dependency group that torch.fx tracing finds (residual streams pruned together, the classifier
output left whole) until at least 60% of the MACs are gone, fine-tunes, and measures the real
speed-up in ONNX Runtime at batch 64 against the dense model in the same run. When Torch-Pruning
(``torch-pruning``, bench extra) is installed, its ``MetaPruner`` with the same L1 criterion,
MAC reduction and fine-tuning budget is the peer row.

Targets (issue 3): at least 50% of the MACs removed, accuracy at most 1.0 point below the dense
model after fine-tuning, ONNX Runtime batch-64 latency at least 1.6x lower.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from slimkit.bench import BENCHMARKS, BenchContext
from slimkit.data import Dataset, load_data
from slimkit.measure import count_macs, measure
from slimkit.models import save_checkpoint
from slimkit.prune import PruneConfig, prune
from slimkit.report import build_report
from slimkit.train import TrainConfig, fit, seed_everything

# The 20-minute budget on 2 cores holds three trainings of a 31M-MAC network: a short baseline
# schedule (Adam, cosine) and one fine-tuning epoch for each pruned model.
TRAIN = {"optimizer": "adam", "lr": 2e-3, "epochs": 3, "batch_size": 128, "schedule": "cosine"}
FINETUNE = {"optimizer": "adam", "lr": 5e-4, "epochs": 1, "batch_size": 128, "schedule": "cosine"}
PRUNE = {"method": "structured", "macs_reduction": 0.6, "criterion": "l1", "round_to": 4}
TARGETS = {"macs_removed": 0.5, "accuracy_drop_max": 0.01, "ort_b64_speedup": 1.6}


def _baseline(ctx: BenchContext, data: Dataset) -> nn.Module:
    return ctx.baseline("resnet20", data, "fashion-mnist", TRAIN)


def _torch_pruning(
    baseline: nn.Module, data: Dataset, reduction: float, seed: int
) -> nn.Module | None:
    """Torch-Pruning's MetaPruner (L1 magnitude, uniform ratio) at the same MAC reduction."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None
    example = data.train.x[:2].clone()
    before = count_macs(baseline, data.input_shape)

    def pruned(ratio: float) -> nn.Module:
        model = copy.deepcopy(baseline)
        tp.pruner.MetaPruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio, ignored_layers=[model.fc], round_to=PRUNE["round_to"],
        ).step()  # fmt: skip
        return model

    lo, hi = 0.0, 0.95
    for _ in range(7):  # bisect the ratio to the same MAC reduction
        mid = (lo + hi) / 2
        removed = 1 - count_macs(pruned(mid), data.input_shape) / before
        lo, hi = (mid, hi) if removed < reduction else (lo, mid)
    model = pruned(hi)
    seed_everything(seed)
    fit(model, data, TrainConfig(**FINETUNE, seed=seed), quiet=True)
    return model


@BENCHMARKS.register("structured-resnet20")
def run(ctx: BenchContext) -> dict[str, Any]:
    """Dense ResNet-20 (cached), structured pruning to 60% fewer MACs, fine-tuning, measurement.

    Example (needs the shared Fashion-MNIST files):
        >>> from slimkit.bench import run_benchmark
        >>> report = run_benchmark("structured-resnet20")  # doctest: +SKIP
        >>> report["targets"]["met"]  # doctest: +SKIP
        True
    """
    start = time.perf_counter()
    torch.set_num_threads(ctx.threads)
    data = load_data("fashion-mnist", ctx.data_path("fashion-mnist"), seed=ctx.seed)
    seconds: dict[str, float] = {}
    baseline = _baseline(ctx, data)
    seconds["baseline"] = round(time.perf_counter() - start, 1)
    config = PruneConfig(**PRUNE, retrain=TrainConfig(**FINETUNE, seed=ctx.seed))
    seed_everything(ctx.seed)
    result = prune(baseline, config, data)
    seconds["prune"] = result.seconds
    tick = time.perf_counter()
    reduction = 1 - result.macs_after / result.macs_before
    peer = _torch_pruning(baseline, data, reduction, ctx.seed)
    seconds["peer"] = round(time.perf_counter() - tick, 1)
    work, base = ctx.work_dir, ctx.work_dir.parent
    rows = {
        name: measure(model, data, artifact=save_checkpoint(model, work / f"{name}.safetensors"),
                      relative_to=base, threads=ctx.threads)
        for name, model in (("baseline", baseline), ("model", result.model), ("peer", peer))
        if model is not None
    }  # fmt: skip
    rows["baseline"]["file_bytes"] = rows["baseline"]["size_bytes"]
    rows["baseline"]["size_bytes"] = 4 * rows["baseline"]["params"]  # dense float32
    seconds["total"] = round(time.perf_counter() - start, 1)
    stages = [
        {"name": "train", "kind": "train", "config": TRAIN,
         "metric": rows["baseline"]["metric"], "seconds": seconds["baseline"]},
        {"name": "prune", "kind": "prune", "config": config.model_dump(),
         "metric": rows["model"]["metric"], "seconds": seconds["prune"], **result.summary()},
    ]  # fmt: skip
    peers = []
    if "peer" in rows:
        peers.append({"name": "torch_pruning.MetaPruner (L1, same MACs and fine-tuning)",
                      **rows["peer"]})  # fmt: skip
    return build_report(
        data.task(), rows["baseline"], rows["model"], stages, peers,
        threads=ctx.threads, targets=_targets(rows["baseline"], rows["model"]), seconds=seconds,
    )  # fmt: skip


def _targets(base: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    removed = 1 - res["macs"] / base["macs"]
    drop = base["metric"] - res["metric"]
    speedup = base["latency_ms"]["ort_b64"] / res["latency_ms"]["ort_b64"]
    return {
        "macs_removed": round(removed, 4),
        "accuracy_drop": round(drop, 4),
        "ort_b64_speedup": round(speedup, 2),
        "required": TARGETS,
        "met": removed >= TARGETS["macs_removed"]
        and drop <= TARGETS["accuracy_drop_max"]
        and speedup >= TARGETS["ort_b64_speedup"],
    }
