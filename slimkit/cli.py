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
console = Console()
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
    from slimkit.models import build_model, load_model, save_checkpoint
    from slimkit.train import TrainConfig, fit, seed_everything

    _quiet(quiet)
    check_output(out, force)
    config = _validated(
        TrainConfig, epochs=epochs, seed=seed, lr=lr, optimizer=optimizer, batch_size=batch_size
    )
    dataset = load_data(data, data_dir)
    seed_everything(seed)
    if Path(model).exists():
        net = load_model(model)
    else:
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
