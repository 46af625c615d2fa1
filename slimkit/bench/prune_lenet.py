"""prune-lenet300 and prune-lenet5: Han et al. 2015 ("Learning both Weights and Connections for
Efficient Neural Networks") on MNIST.

One run trains (or loads from the cache) the dense baseline, sweeps each layer's sensitivity on
the validation split, allocates per-layer sparsities that reach the setting's ratio of fewer
non-zero parameters (LeNet-300-100 12x, LeNet-5 20x) with the least loss, and prunes gradually
(Zhu & Gupta 2017's cubic schedule) while retraining at a tenth of the baseline's learning rate.
Retraining distils from the dense baseline (Hinton et al. 2015: T=4, 70% soft targets): the
dense model is at hand, and its soft targets recover more than the labels alone (LeNet-300-100
at 12x: 0.96% test error against 1.06% with labels only, measured here). The peer row is
``torch.nn.utils.prune`` global magnitude pruning at the same sparsity with the same retraining
(same epochs, same loss).

Targets (issue 3): at least 12x fewer non-zero parameters, test error at most 0.1 point above
the dense baseline and at most 1.70% (LeNet-300-100) / 0.85% (LeNet-5); paper: 12x at 1.59% /
0.77%. The result artifact is a ``.slim`` archive holding only the non-zero weights.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from torch import nn
from torch.nn.utils import prune as torch_prune

from slimkit.bench import BENCHMARKS, BenchContext
from slimkit.data import Dataset, load_data
from slimkit.distill import DistillConfig, DistillLoss, TeacherLogits
from slimkit.layers import select_layers
from slimkit.measure import count_nonzero, count_params, measure
from slimkit.models import save_checkpoint
from slimkit.prune import PruneConfig, plot_sensitivity, prune
from slimkit.report import build_report
from slimkit.train import TrainConfig, fit, seed_everything

_SGD = {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "schedule": "cosine"}
SETTINGS: dict[str, dict[str, Any]] = {
    "prune-lenet300": {
        "model": "lenet300",
        "train": {**_SGD, "lr": 0.05, "epochs": 40, "batch_size": 128, "weight_decay": 1e-4,
                  "jitter": 1},
        "retrain_epochs": 30,
        "ratio": 12.0,  # at 20x: 1.10% error, 0.16 point over the baseline (BENCHMARKS.md)
        "paper_error": 0.0159,
        "max_error": 0.0170,
    },
    "prune-lenet5": {
        "model": "lenet5",
        "train": {**_SGD, "lr": 0.05, "epochs": 12, "batch_size": 128, "weight_decay": 1e-4,
                  "jitter": 1},
        "retrain_epochs": 8,
        "ratio": 20.0,  # the aim: within the error budget at 20x
        "paper_error": 0.0077,
        "max_error": 0.0085,
    },
}  # fmt: skip
REQUIRED = 12.0  # fewer non-zero parameters than the dense model (issue 3); aim 20x
AIM = 20.0
KD = DistillConfig(temperature=4.0, alpha=0.7)


def baseline_model(ctx: BenchContext, data: Dataset, settings: dict[str, Any]) -> nn.Module:
    """The dense baseline trained with ``settings["train"]``, from the cache when it is there."""
    return ctx.baseline(settings["model"], data, "mnist", settings["train"])


def _sparsity_for(model: nn.Module, layers: dict[str, nn.Module], ratio: float) -> float:
    """Weight sparsity over ``layers`` that leaves ``1/ratio`` of all parameters non-zero."""
    weights = sum(m.weight.numel() for m in layers.values())
    others = count_params(model) - weights  # biases stay dense
    return 1.0 - (count_params(model) / ratio - others) / weights


def _retrain(settings: dict[str, Any], seed: int) -> TrainConfig:
    """Han et al.: retrain at a tenth of the original learning rate."""
    train = dict(settings["train"])
    train.update(lr=train["lr"] / 10, epochs=settings["retrain_epochs"], seed=seed)
    return TrainConfig(**train)


def prune_config(
    baseline: nn.Module, settings: dict[str, Any], seed: int, ratio: float
) -> PruneConfig:
    """Sensitivity-allocated gradual pruning to ``ratio`` times fewer non-zero parameters, with
    Han et al.'s retraining at a tenth of the learning rate."""
    sparsity = _sparsity_for(baseline, select_layers(baseline), ratio)
    return PruneConfig(
        sparsity=round(sparsity, 6), allocation="sensitivity", schedule="gradual",
        frequency=50, end_fraction=0.6, retrain=_retrain(settings, seed),
    )  # fmt: skip


def teacher_loss(baseline: nn.Module) -> DistillLoss:
    """Distillation from a frozen copy of the dense baseline, for retraining."""
    return DistillLoss(TeacherLogits(copy.deepcopy(baseline).eval()), KD)


def _peer(baseline: nn.Module, data: Dataset, sparsity: float, retrain: TrainConfig) -> nn.Module:
    """torch.nn.utils.prune: global L1 magnitude pruning once, then the same retraining."""
    model = copy.deepcopy(baseline)
    layers = select_layers(model)
    params = [(m, "weight") for m in layers.values()]
    torch_prune.global_unstructured(params, torch_prune.L1Unstructured, amount=sparsity)
    fit(model, data, retrain, loss_fn=teacher_loss(baseline), quiet=True)
    for module, name in params:
        torch_prune.remove(module, name)
    return model


def _save(model: nn.Module, path: Path) -> Path:
    """The sparse ``.slim`` archive (non-zeros only); checked to load back with every non-zero."""
    from slimkit.archive import load_slim, save_slim

    save_slim(model, path)
    if count_nonzero(load_slim(path)) != count_nonzero(model):
        raise RuntimeError(f"{path} does not load back with the same non-zeros")
    return path


def _run(ctx: BenchContext, name: str) -> dict[str, Any]:
    settings, start = SETTINGS[name], time.perf_counter()
    data = load_data("mnist", ctx.data_path("mnist"), seed=ctx.seed)
    seconds: dict[str, float] = {}
    baseline = baseline_model(ctx, data, settings)
    seconds["baseline"] = round(time.perf_counter() - start, 1)
    config = prune_config(baseline, settings, ctx.seed, settings["ratio"])
    sparsity, retrain = config.sparsity, config.retrain
    seed_everything(ctx.seed)
    model = copy.deepcopy(baseline)
    tick = time.perf_counter()
    result = prune(model, config, data, loss_fn=teacher_loss(baseline))
    seconds["prune"] = round(time.perf_counter() - tick, 1)
    tick = time.perf_counter()
    seed_everything(ctx.seed)
    peer = _peer(baseline, data, sparsity, retrain)
    seconds["peer"] = round(time.perf_counter() - tick, 1)
    work, base = ctx.work_dir, ctx.work_dir.parent
    figure = plot_sensitivity(result.sensitivity, work / "sensitivity.png", result.allocation)
    rows = {
        "baseline": measure(baseline, data, artifact=save_checkpoint(baseline, work /
                            "baseline.safetensors"), relative_to=base, threads=ctx.threads),
        "result": measure(result.model, data, artifact=_save(result.model, work / "model.slim"),
                          relative_to=base, threads=ctx.threads),
        "peer": measure(peer, data, artifact=_save(peer, work / "peer.slim"), relative_to=base,
                        threads=ctx.threads),
    }  # fmt: skip
    rows["baseline"]["file_bytes"] = rows["baseline"]["size_bytes"]
    rows["baseline"]["size_bytes"] = 4 * rows["baseline"]["params"]  # dense float32
    seconds["total"] = round(time.perf_counter() - start, 1)
    stages = [
        {"name": "train", "kind": "train", "config": settings["train"],
         "metric": rows["baseline"]["metric"], "seconds": seconds["baseline"]},
        {"name": "prune", "kind": "prune", "config": config.model_dump(),
         "metric": rows["result"]["metric"], "seconds": seconds["prune"], **result.summary()},
    ]  # fmt: skip
    peer_row = {"name": "torch.nn.utils.prune (global L1, same retraining)", **rows["peer"]}
    stages[1]["config"]["distill_from_baseline"] = KD.model_dump(include={"temperature", "alpha"})
    return build_report(
        data.task(), rows["baseline"], rows["result"], stages, [peer_row],
        threads=ctx.threads, targets=_targets(rows, settings), seconds=seconds,
        figures=[str(figure.relative_to(base))],
    )  # fmt: skip


def _targets(rows: dict[str, dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    base, res = rows["baseline"], rows["result"]
    fewer = base["params"] / res["nonzero_params"]
    return {
        "fewer_nonzero": round(fewer, 2),
        "fewer_nonzero_required": REQUIRED,
        "fewer_nonzero_aim": AIM,
        "aim_met": fewer >= AIM,
        "error": res["error"],
        "error_max": round(_max_error(base, settings), 6),
        "paper_error": settings["paper_error"],
        "met": fewer >= REQUIRED and res["error"] <= _max_error(base, settings),
    }


def _max_error(base: dict[str, Any], settings: dict[str, Any]) -> float:
    """The issue's cap: 0.1 point above the dense baseline, and the paper-derived maximum."""
    return min(settings["max_error"], base["error"] + 0.001)


@BENCHMARKS.register("prune-lenet300")
def lenet300(ctx: BenchContext) -> dict[str, Any]:
    """LeNet-300-100 on MNIST, pruned to 12x fewer non-zeros (Han et al. 2015, Table 2).

    Example (needs the shared MNIST files):
        >>> from slimkit.bench import run_benchmark
        >>> report = run_benchmark("prune-lenet300")  # doctest: +SKIP
        >>> report["targets"]["met"]  # doctest: +SKIP
        True
    """
    return _run(ctx, "prune-lenet300")


@BENCHMARKS.register("prune-lenet5")
def lenet5(ctx: BenchContext) -> dict[str, Any]:
    """Caffe LeNet-5 on MNIST, pruned to 20x fewer non-zeros (Han et al. 2015, Table 3).

    Example (needs the shared MNIST files):
        >>> from slimkit.bench import run_benchmark
        >>> report = run_benchmark("prune-lenet5")  # doctest: +SKIP
        >>> report["targets"]["fewer_nonzero"] >= 12  # doctest: +SKIP
        True
    """
    return _run(ctx, "prune-lenet5")


__all__ = ["KD", "SETTINGS", "baseline_model", "lenet5", "lenet300", "prune_config", "teacher_loss"]
