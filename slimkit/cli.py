"""The ``slimkit`` command line (contract in DESIGN.md).

Exit codes: 0 success, 2 bad input or usage (one ``error: ...`` line on stderr), 1 internal
failure. No command overwrites an output without ``--force`` or touches its inputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from slimkit.errors import SlimkitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Make neural networks smaller and faster, measured on ONNX Runtime.",
)
# Logs and pipes get a wide fixed width: rich's 80-column default squeezes the tables unreadably.
console = Console(width=None if sys.stdout.isatty() else 160)
DEMO_RECIPE = Path(__file__).parent / "recipes" / "demo.yaml"

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]
Force = Annotated[bool, typer.Option("--force", help="overwrite an existing output")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="folder (or file) of the data")]


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("slimkit-demo"),
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Run the embedded demo recipe on the bundled digits data (no files needed)."""
    from slimkit.recipe import Recipe, run_recipe
    from slimkit.report import print_table

    _quiet(quiet)
    recipe = Recipe.from_file(DEMO_RECIPE)
    _check_fresh(out, force)
    report = run_recipe(recipe, out, force=force, quiet=quiet)
    print_table(report, console)
    console.print(
        f"report: {out / 'report.json'}, {out / 'report.md'}, figures: "
        f"{', '.join(sorted(p.name for p in out.glob('*.png')))}"
    )


@app.command()
def train(
    model: Annotated[
        str, typer.Option(help="zoo name, package.module:factory or a checkpoint to continue")
    ],
    data: Annotated[str, typer.Option(help="data set name")],
    out: Annotated[Path, typer.Option(help="checkpoint to write (.safetensors)")],
    data_dir: DataDir = None,
    epochs: int = 10,
    seed: int = 0,
    lr: Annotated[float, typer.Option(help="learning rate")] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam or sgd")] = "adam",
    batch_size: int = 64,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Train a model and save it as a safetensors checkpoint."""
    from slimkit.data import load_data
    from slimkit.io import check_output
    from slimkit.measure import evaluate
    from slimkit.models import build_model, load_model, model_factory, save_checkpoint
    from slimkit.train import TrainConfig, fit, seed_everything

    _quiet(quiet)
    check_output(out, force)
    config = _validated(
        TrainConfig, epochs=epochs, seed=seed, lr=lr, optimizer=optimizer, batch_size=batch_size
    )
    # a bad model file or a mistyped name fails before the data set loads
    net = load_model(model) if Path(model).exists() else None
    if net is None:
        model_factory(model)
    dataset = load_data(data, data_dir)
    seed_everything(seed)
    if net is None:
        net = build_model(model, dataset.input_shape, dataset.num_classes)
    result = fit(net, dataset, config, quiet=quiet)
    save_checkpoint(net, out)
    console.print(
        f"trained {result.epochs_run} epochs in {result.seconds:.1f}s; "
        f"validation {result.best_val:.4f}, test {evaluate(net, dataset.test):.4f}; "
        f"wrote {out}"
    )


@app.command(name="eval")
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="checkpoint, TorchScript or ONNX")],
    data: Annotated[str, typer.Option(help="data set name")],
    data_dir: DataDir = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the measurement")] = None,
    force: Force = False,
) -> None:
    """Measure a model on the test split: metric, size, MACs, latency."""
    from slimkit.data import load_data
    from slimkit.io import check_output
    from slimkit.measure import measure
    from slimkit.models import load_model
    from slimkit.report import save_json

    if json_out is not None:
        check_output(json_out, force)
    dataset = load_data(data, data_dir)
    net = load_model(model)
    result = measure(net, dataset, artifact=model, relative_to=(json_out or model).parent)
    for key in ("metric", "params", "nonzero_params", "macs", "size_bytes"):
        console.print(f"{key}: {result.get(key)}")
    console.print(
        "latency_ms: " + ", ".join(f"{k} {v}" for k, v in (result.get("latency_ms") or {}).items())
    )
    if json_out is not None:
        save_json({"task": dataset.task(), **result}, json_out)


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="a slimkit checkpoint")],
    out: Annotated[Path, typer.Option(help="file to write")],
    format: Annotated[str, typer.Option("--format", help="onnx, onnx-int8 or slim")] = "onnx",
    input_shape: Annotated[
        str | None,
        typer.Option(
            help="per-example input shape, e.g. 1,28,28 (read from the checkpoint if omitted)"
        ),
    ] = None,
    force: Force = False,
) -> None:
    """Export a model to a deployable file."""
    from slimkit import stages  # noqa: F401  (modules that register export formats)
    from slimkit.export import FORMATS
    from slimkit.export import export as export_model
    from slimkit.io import check_output
    from slimkit.models import load_model, spec_of

    check_output(out, force)
    FORMATS.get(format)
    net = load_model(model)
    shape = _shape(input_shape) if input_shape else spec_of(net).input_shape
    path = export_model(net, out, shape, format)
    console.print(f"wrote {path} ({path.stat().st_size:,} bytes)")


@app.command()
def compress(
    recipe: Annotated[Path, typer.Option(help="recipe YAML")],
    out: Annotated[Path, typer.Option(help="output folder")],
    resume: Annotated[bool, typer.Option(help="skip stages finished earlier")] = False,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Run a recipe's stages and write report.json, report.md and figures."""
    from slimkit.recipe import Recipe, run_recipe
    from slimkit.report import print_table

    _quiet(quiet)
    parsed = Recipe.from_file(recipe)
    if not resume:
        _check_fresh(out, force)
    report = run_recipe(parsed, out, resume=resume, force=force, quiet=quiet)
    print_table(report, console)
    console.print(f"report: {out / 'report.json'}")


@app.command()
def nas(
    data: Annotated[str, typer.Option(help="data set name")],
    out: Annotated[Path, typer.Option(help="output folder (holds the study by default)")],
    space: Annotated[str, typer.Option(help="mlp, cnn or a search space YAML file")] = "cnn",
    data_dir: DataDir = None,
    objectives: Annotated[
        str, typer.Option(help="comma-separated: metric, latency, params, macs, bytes")
    ] = "metric",
    sampler: Annotated[str, typer.Option(help="random, tpe or nsga2")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median, halving or none")] = "median",
    trials: Annotated[
        int | None, typer.Option(help="stop at this many finished trials (whole study)")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="seconds of searching in this process")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL of the study (default OUT/study.db)")
    ] = None,
    study: Annotated[str, typer.Option(help="study name; workers sharing it share the search")] = (
        "nas"
    ),
    epochs: Annotated[int, typer.Option(help="brief training epochs per trial")] = 5,
    retrain_epochs: Annotated[int, typer.Option(help="training epochs of the chosen")] = 20,
    max_params: Annotated[int | None, typer.Option(help="skip larger candidates")] = None,
    train_subset: Annotated[int | None, typer.Option(help="training examples per trial")] = None,
    search_only: Annotated[
        bool, typer.Option(help="only run trials (a worker); no retraining or report")
    ] = False,
    seed: int = 0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Search an architecture space on Optuna, then retrain, measure and export the chosen."""
    from slimkit.data import load_data
    from slimkit.search import NasConfig, load_space, run_nas

    _quiet(quiet)
    if trials is None and timeout is None:
        trials = 20
    config = NasConfig.parse(
        objectives=objectives, sampler=sampler, pruner=pruner, trials=trials, timeout=timeout,
        epochs=epochs, retrain_epochs=retrain_epochs, max_params=max_params,
        train_subset=train_subset, seed=seed,
    )  # fmt: skip
    chosen_space = load_space(space).check_not_constant()
    dataset = load_data(data, data_dir)
    report = run_nas(
        chosen_space, dataset, config, out, storage=storage, study_name=study, force=force,
        search_only=search_only, quiet=quiet,
    )  # fmt: skip
    _print_nas(report if search_only else report["search"], out, search_only)


def _print_nas(summary: dict, out: Path, search_only: bool) -> None:
    counts = ", ".join(f"{n} {state}" for state, n in summary["trials"].items())
    console.print(
        f"study {summary['study']} ({summary['storage']}): {counts}; "
        f"chosen trial {summary['chosen_trial']}, Pareto front of {len(summary['pareto_front'])}"
    )
    if not search_only:
        console.print(f"report: {out / 'report.json'}, model: {out / 'model.onnx'}")


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="benchmark name")],
    data_dir: Annotated[
        Path | None, typer.Option(help="folder holding the data sets (default ../shared/data)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write the report JSON here")] = None,
    seed: int = 0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Run a named benchmark: slimkit and its peers side by side, in one run."""
    from slimkit.bench import run_benchmark

    _quiet(quiet)
    if out is not None:
        _check_fresh(out, force)
    run_benchmark(name, data_dir=data_dir, out=out, seed=seed, console=console)


@app.command()
def automl(
    data: Annotated[str, typer.Option(help="iris, wine, breast_cancer, digits or csv")],
    budget: Annotated[float, typer.Option(help="seconds for the whole run, refit included")],
    out: Annotated[Path, typer.Option(help="output folder")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="the .csv file")] = None,
    label: Annotated[str, typer.Option(help="label column of the csv file")] = "label",
    ensemble: Annotated[
        bool, typer.Option("--ensemble/--no-ensemble", help="try a soft-voting ensemble")
    ] = True,
    seed: int = 0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Search scikit-learn models and preprocessing by cross-validation under a time budget."""
    from slimkit.search.automl import load_table, make_config, run_automl
    from slimkit.search.automl.report import config_summary

    _quiet(quiet)
    config = make_config(budget=budget, ensemble=ensemble, seed=seed)
    _check_fresh(out, force)
    table = load_table(data, data_dir, label)
    console.print(f"automl on {table.name}: {config_summary(config)}")
    report = run_automl(table, out, config, quiet=quiet)
    chosen, result = report["chosen"], report["result"]
    what = chosen.get("family") or f"ensemble of {len(chosen.get('members', []))}"
    console.print(
        f"chose {what} (CV {chosen['cv_mean']:.4f}) from {report['trials']['complete']} "
        f"trials ({report['trials']['failed']} failed); held-out accuracy {result['metric']:.4f} "
        f"on {report['task']['n']} rows; wrote {out / result['artifact']} "
        f"({result['size_bytes']:,} bytes), {out / 'report.json'}, {out / 'leaderboard.png'}"
    )


def _quiet(quiet: bool) -> None:
    from slimkit.progress import set_quiet

    set_quiet(quiet)


def _check_fresh(path: Path, force: bool) -> None:
    from slimkit.io import check_output

    check_output(path, force)


def _validated(config_cls, **values):
    from pydantic import ValidationError

    try:
        return config_cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SlimkitError(f"--{'-'.join(map(str, err['loc']))}: {err['msg']}") from None


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise SlimkitError(
            f"--input-shape must be integers separated by commas, got {text!r}"
        ) from None
    if not shape or min(shape) < 1:
        raise SlimkitError(f"--input-shape must be positive, got {text!r}")
    return shape


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        code = app(args=argv, prog_name="slimkit", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument
        return _fail(exc.format_message(), 2)
    except SlimkitError as exc:
        return _fail(str(exc), 2)
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted", 130)
    except Exception as exc:  # an internal failure: say so in one line unless debugging
        if os.environ.get("SLIMKIT_DEBUG"):
            raise
        return _fail(
            f"internal failure: {type(exc).__name__}: {exc} "
            "(set SLIMKIT_DEBUG=1 for the traceback)",
            1,
        )
    return code if isinstance(code, int) else 0


def _fail(message: str, code: int) -> int:
    first = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    print(f"error: {first}", file=sys.stderr)
    return code


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
