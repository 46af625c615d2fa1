"""``slimkit nas``: search, then retrain the chosen candidate fully, measure, export, report.

Output folder::

    study.db          the study (default storage; a resumed search continues from it)
    model.safetensors the chosen candidate, retrained (weights + architecture spec)
    model.onnx        its ONNX export (timed on ONNX Runtime)
    baseline.safetensors
    report.json, report.md, metric_vs_size.png, pareto.png

report.json (DESIGN.md): ``result`` is the chosen candidate retrained for ``retrain_epochs`` on
the whole training split and measured on the test split. ``baseline`` is where the search
started: its first completed candidate, trained as the search trained it (``epochs`` on the
trial subset), measured on the test split. The gap therefore mixes what the search found and
what the longer training adds; every trial's validation metric under equal brief training is in
``trials``. ``size_bytes`` of both is the dense float32 weights (4 bytes per parameter, as
DESIGN.md counts); ``file_bytes`` is the checkpoint's size on disk.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial
from torch import nn

from slimkit.data import Dataset
from slimkit.errors import SlimkitError
from slimkit.measure import export_onnx, measure
from slimkit.models import save_checkpoint
from slimkit.report import build_report, write_report
from slimkit.search.config import NasConfig
from slimkit.search.nas import SearchResult, default_storage, search
from slimkit.search.objectives import UNITS
from slimkit.search.pareto import plot_fronts
from slimkit.search.space import SearchSpace
from slimkit.search.trial import candidate_of, describe, subset, train_candidate, trial_seed


def run_nas(
    space: SearchSpace,
    data: Dataset,
    config: NasConfig,
    out: str | Path,
    *,
    storage: str | None = None,
    study_name: str = "nas",
    force: bool = False,
    search_only: bool = False,
    quiet: bool | None = None,
) -> dict[str, Any]:
    """Search, retrain the chosen candidate, measure and export it, write the report.

    ``storage`` defaults to ``OUT/study.db``. An existing ``OUT/report.json`` is refused without
    ``force``; an output folder holding only a study resumes it. ``search_only`` stops after the
    search (a worker of a shared study) and returns a summary instead of a report.

    Example:
        >>> from slimkit.data import load_data
        >>> space = SearchSpace(family="mlp", width=[16, 32], depth=[1])
        >>> report = run_nas(space, load_data("digits"), NasConfig(trials=2, epochs=1),
        ...                  "nas-out")  # doctest: +SKIP
        >>> report["result"]["metric"] > 0.8  # doctest: +SKIP
        True
    """
    out = Path(out)
    if (out / "report.json").exists() and not force:
        raise SlimkitError(
            f"{out} holds a finished search (report.json); pass --force to overwrite its "
            "outputs or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(out)
    result = search(space, data, config, storage=url, study_name=study_name, quiet=quiet)
    summary = search_summary(result)
    if search_only:
        return summary
    report = deliver(result, data, config, out, summary, quiet=quiet)
    write_report(out, report)
    front_figure(result, out / "pareto.png")
    return report


def deliver(
    result: SearchResult,
    data: Dataset,
    config: NasConfig,
    out: Path,
    summary: dict[str, Any],
    quiet: bool | None = None,
    relative_to: Path | None = None,
) -> dict[str, Any]:
    """Retrain the chosen candidate, rebuild the baseline, measure both, assemble report.json.

    Files go to ``out``; the report names them relative to ``relative_to`` (default ``out``).
    """
    relative_to = relative_to or out
    start = time.perf_counter()
    chosen = candidate_of(result.chosen)
    model, trained = train_candidate(chosen, data, config.retrain_epochs, config.seed, quiet=quiet)
    retrain_s = time.perf_counter() - start
    onnx = export_onnx(model, out / "model.onnx", data.input_shape)
    row = measure_dense(model, data, out / "model.safetensors", relative_to, config, onnx)
    row["onnx"] = os.path.relpath(onnx, relative_to)
    first = result.first
    trial_data = subset(data, config.train_subset, config.val_subset, config.seed)
    base, _ = train_candidate(
        candidate_of(first), trial_data, config.epochs, trial_seed(config.seed, first.number)
    )
    baseline = measure_dense(base, data, out / "baseline.safetensors", relative_to, config)
    stages = [
        {"name": "search", "kind": "nas", "config": config.model_dump(),
         "metric": result.values(result.chosen)["metric"], "seconds": round(result.seconds, 1)},
        {"name": "retrain", "kind": "train",
         "config": {"epochs": config.retrain_epochs, "lr": chosen.lr,
                    "batch_size": chosen.batch_size, "seed": config.seed},
         "metric": round(trained.history[-1]["val"], 6), "seconds": round(retrain_s, 1)},
    ]  # fmt: skip
    return build_report(
        data.task(),
        baseline,
        row,
        stages,
        threads=config.threads,
        search=summary,
        chosen=describe(chosen),
        baseline_is=f"first completed trial ({first.number}), trained as in the search",
    )


def measure_dense(
    model: nn.Module,
    data: Dataset,
    path: Path,
    out: Path,
    config: NasConfig,
    onnx: Path | None = None,
) -> dict[str, Any]:
    """MEASUREMENT of a float32 net saved at ``path``: size is 4 bytes per weight.

    Example:
        >>> import tempfile
        >>> from slimkit.data import load_data
        >>> from slimkit.models import build_model
        >>> data, out = load_data("digits"), Path(tempfile.mkdtemp())
        >>> row = measure_dense(build_model("mlp", (1, 8, 8), 10), data, out / "m.safetensors",
        ...                     out, NasConfig())
        >>> row["params"], row["size_bytes"]
        (50826, 203304)
    """
    save_checkpoint(model, path)
    row = measure(
        model, data, artifact=path, relative_to=out, onnx_path=onnx, threads=config.threads
    )
    row["file_bytes"], row["size_bytes"] = row["size_bytes"], 4 * row["params"]
    return row


def search_summary(result: SearchResult) -> dict[str, Any]:
    """The ``search`` block of report.json: study, counts, front and every trial.

    Example:
        >>> import optuna
        >>> from slimkit.search.nas import summarize
        >>> study = optuna.create_study(study_name="demo", direction="maximize")
        >>> study.add_trial(optuna.trial.create_trial(value=0.9))
        >>> search_summary(summarize(study, NasConfig()))["pareto_front"]
        [{'number': 0, 'state': 'complete', 'values': {'metric': 0.9}}]
    """
    return {
        "study": result.study.study_name,
        "storage": result.storage,
        "objectives": result.objectives,
        "trials": result.counts,
        "seconds": round(result.seconds, 1),
        "chosen_trial": result.chosen.number,
        "first_trial": result.first.number,
        "pareto_front": [trial_row(t, result) for t in result.front],
        "all_trials": [trial_row(t, result) for t in result.study.get_trials(deepcopy=False)],
    }


def trial_row(trial: FrozenTrial, result: SearchResult) -> dict[str, Any]:
    """One trial, JSON-ready: number, state, objective values, size and why it failed.

    Example:
        >>> from optuna.trial import create_trial
        >>> t = create_trial(value=0.9, user_attrs={"params": 500})
        >>> row = trial_row(t, SearchResult(None, ["metric"], [t], [t], t, t, seconds=1.0))
        >>> row["state"], row["values"], row["params"]
        ('complete', {'metric': 0.9}, 500)
    """
    row: dict[str, Any] = {"number": trial.number, "state": trial.state.name.lower()}
    if trial.values is not None:
        row["values"] = {k: round(v, 6) for k, v in result.values(trial).items()}
    for key in ("params", "macs", "error", "infeasible", "retry_of", "worker"):
        if key in trial.user_attrs:
            row[key] = trial.user_attrs[key]
    if "candidate" in trial.user_attrs:
        row["candidate"] = describe(candidate_of(trial))
    return row


def front_points(result: SearchResult) -> tuple[str, list[tuple[float, float]]]:
    """(cost name, [(cost, metric)]) of the completed trials; the cost is the first cost
    objective, or the parameter count when the metric is the only objective.

    Example:
        >>> from optuna.trial import create_trial
        >>> t = create_trial(value=0.9, user_attrs={"metric": 0.9, "params": 500})
        >>> front_points(SearchResult(None, ["metric"], [t], [t], t, t, seconds=1.0))
        ('params', [(500.0, 0.9)])
    """
    cost = next((name for name in result.objectives if name != "metric"), "params")
    points = [
        (float(t.user_attrs[cost]), float(t.user_attrs["metric"]))
        for t in result.completed
        if cost in t.user_attrs
    ]
    return cost, points


def front_figure(result: SearchResult, path: Path, label: str = "search") -> Path:
    """pareto.png: every completed trial, the front over metric and the first cost, the choice."""
    cost, points = front_points(result)
    chosen = result.chosen.user_attrs
    unit = f" ({UNITS[cost]})" if UNITS[cost] else ""
    return plot_fronts(
        {label: points},
        path,
        cost_label=f"{cost}{unit}",
        chosen=(float(chosen[cost]), float(chosen["metric"])) if cost in chosen else None,
        log_cost=cost in ("params", "macs", "bytes"),
    )
