"""Run a recipe: stages in order, a checkpoint after each, resume, then measure and report."""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.data import Dataset, load_data
from slimkit.errors import SlimkitError
from slimkit.io import atomic_path, check_output
from slimkit.measure import count_nonzero, count_params, evaluate, file_size, measure
from slimkit.models import (
    build_model,
    load_checkpoint,
    load_model,
    model_factory,
    save_checkpoint,
    spec_of,
)
from slimkit.recipe.schema import Recipe
from slimkit.recipe.stage import StageContext
from slimkit.report import build_report, write_report
from slimkit.train import seed_everything

DONE = "stage.json"


def run_recipe(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    quiet: bool | None = None,
) -> dict[str, Any]:
    """Run every stage of ``recipe`` into ``out_dir`` and write report.json, report.md and PNGs.

    Each finished stage leaves ``stages/NN-name/model.safetensors`` and ``stage.json``; with
    ``resume=True`` those stages are loaded instead of run again.

    Example:
        >>> import tempfile
        >>> recipe = Recipe.from_dict({"model": {"name": "mlp"}, "data": {"name": "digits"},
        ...                            "stages": [{"kind": "train", "epochs": 1}]})
        >>> report = run_recipe(recipe, tempfile.mkdtemp() + "/out", quiet=True)
        >>> report["result"]["metric"] > 0.5
        True
    """
    out = Path(out_dir)
    model_file = _load_model_file(recipe)
    data = _load_data(recipe)
    seed_everything(recipe.seed)
    model = _initial_model(recipe, data, model_file)
    baseline = copy.deepcopy(model)  # unless leading train stages make one
    _prepare_out(recipe, out, resume, force)
    entries, artifact, onnx, baseline_path = [], None, None, None
    leading = True
    for index, section in enumerate(recipe.stages, start=1):
        stage_dir = out / "stages" / f"{index:02d}-{section.name}"
        stage = section.build()
        if resume and (stage_dir / DONE).exists():
            entry = json.loads((stage_dir / DONE).read_text())
            model = load_checkpoint(stage_dir / "model.safetensors", allow_import=True)
        else:
            seed_everything(recipe.seed + index)
            model, entry = _run_stage(stage, section, model, data, out, stage_dir, recipe, quiet)
        entries.append(entry)
        if entry.get("artifact"):  # the last file a stage wrote, and the ONNX file to time
            artifact = out / entry["artifact"]
            onnx = out / entry["onnx"] if entry.get("onnx") else None
        leading = leading and stage.makes_baseline
        if leading:
            baseline_path = stage_dir / "model.safetensors"
    if baseline_path is not None:
        baseline = load_checkpoint(baseline_path, allow_import=True)
    return _finish(recipe, data, model, out, entries, artifact, baseline, onnx=onnx)


def load_recipe_inputs(recipe: Recipe) -> tuple[Dataset, nn.Module]:
    """Load the data and build the model of ``recipe`` (validates them before any output).

    Example:
        >>> recipe = Recipe.from_dict({"model": {"name": "mlp"}, "data": {"name": "digits"},
        ...                            "stages": [{"kind": "train", "epochs": 1}]})
        >>> data, model = load_recipe_inputs(recipe)
        >>> data.input_shape, model(data.test.x[:2]).shape
        ((1, 8, 8), torch.Size([2, 10]))
    """
    model_file = _load_model_file(recipe)
    data = _load_data(recipe)
    return data, _initial_model(recipe, data, model_file)


def _load_model_file(recipe: Recipe) -> nn.Module | None:
    """The recipe's model file, or None for a zoo model. Called before the data set loads, so a
    mistyped zoo name or a missing or foreign file fails first."""
    section = recipe.model
    if section.path is None:
        model_factory(section.name)
        return None
    model = load_model(section.path)
    spec_of(model)  # recipes checkpoint every stage, so the model must be a slimkit checkpoint
    return model


def _load_data(recipe: Recipe) -> Dataset:
    d = recipe.data
    return load_data(
        d.name,
        d.dir,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=d.seed,
        **d.options,
    )


def _initial_model(recipe: Recipe, data: Dataset, model_file: nn.Module | None) -> nn.Module:
    if model_file is not None:
        return model_file
    section = recipe.model
    return build_model(section.name, data.input_shape, data.num_classes, **section.kwargs)


def _prepare_out(recipe: Recipe, out: Path, resume: bool, force: bool) -> None:
    saved = out / "recipe.json"
    if resume:
        if not saved.exists():
            raise SlimkitError(f"--resume: {out} holds no earlier run of a recipe")
        if json.loads(saved.read_text()) != _jsonable(recipe.to_dict()):
            raise SlimkitError(f"--resume: {out} was made by a different recipe; use a new --out")
        return
    check_output(out, force)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True)
    saved.write_text(json.dumps(recipe.to_dict(), indent=2))


def _run_stage(stage, section, model, data, out, stage_dir, recipe, quiet):
    if stage_dir.exists():  # left half-done by an interrupted run
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    ctx = StageContext(
        data=data,
        out_dir=out,
        stage_dir=stage_dir,
        seed=recipe.seed,
        threads=recipe.threads,
        quiet=quiet,
    )
    start = time.perf_counter()
    model = stage.run(model, ctx)
    seconds = time.perf_counter() - start
    checkpoint = save_checkpoint(model, stage_dir / "model.safetensors")
    entry = {
        "name": section.name,
        "kind": section.kind,
        "config": section.config.model_dump(),
        "metric": round(evaluate(model, data.test), 6),
        "seconds": round(seconds, 3),
        "params": count_params(model),
        "nonzero_params": count_nonzero(model),
        "size_bytes": file_size(ctx.artifact or checkpoint),
        "artifact": str((ctx.artifact or checkpoint).relative_to(out)),
        **ctx.info,
    }
    if ctx.artifact is None:
        entry.pop("artifact")
    with atomic_path(stage_dir / DONE) as tmp:  # written last: marks the stage finished
        tmp.write_text(json.dumps(_jsonable(entry), indent=2))
    return model, entry


def _finish(
    recipe, data, model, out, entries, artifact, baseline_model, onnx=None
) -> dict[str, Any]:
    base_file = save_checkpoint(baseline_model, out / "baseline.safetensors")
    final_file = save_checkpoint(model, out / "model.safetensors")
    baseline = measure(
        baseline_model, data, artifact=base_file, relative_to=out, threads=recipe.threads
    )
    baseline["file_bytes"] = baseline["size_bytes"]
    baseline["size_bytes"] = 4 * baseline["params"]  # dense float32, as the papers count
    if onnx is None and artifact is not None and artifact.suffix == ".onnx":
        onnx = artifact
    result = measure(
        model,
        data,
        artifact=artifact or final_file,
        relative_to=out,
        onnx_path=onnx,
        threads=recipe.threads,
    )
    report = build_report(data.task(), baseline, result, entries, threads=recipe.threads)
    write_report(out, report, model=model)
    return report


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
