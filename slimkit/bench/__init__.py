"""Benchmarks: reproducible experiments that put slimkit beside its peers in one run.

Each benchmark is one module registering a function ``run(ctx) -> report dict`` under its name
(``slimkit bench NAME``). Trained baselines are cached between runs, keyed by their settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from slimkit.errors import SlimkitError
from slimkit.registry import Registry


@dataclass
class BenchContext:
    """Where a benchmark finds data, keeps its cache and writes files."""

    data_dir: Path
    work_dir: Path
    cache_dir: Path
    seed: int = 0
    threads: int = 2
    console: Console | None = None

    def data_path(self, name: str) -> Path:
        """The folder of a shared data set, with a clear error when it is missing."""
        path = self.data_dir / name
        if not path.is_dir():
            raise SlimkitError(
                f"benchmark data {path} not found; pass --data-dir pointing to "
                "the folder that holds mnist/, fashion-mnist/ and sst2/"
            )
        return path

    def cached_model(self, key: dict[str, Any], make: Callable[[], nn.Module]) -> nn.Module:
        """Return the model trained with settings ``key``, training it with ``make`` only once."""
        from slimkit.models import load_checkpoint, save_checkpoint

        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = self.cache_dir / f"{key.get('name', 'model')}-{digest}.safetensors"
        if path.exists():
            return load_checkpoint(path)
        model = make()
        save_checkpoint(model, path, extra={"key": key})
        return model

    def baseline(self, model: str, data: Any, data_name: str, train: dict[str, Any]) -> nn.Module:
        """The zoo ``model`` trained on ``data`` with ``train`` settings, from the cache when it
        is there (keyed by model, settings, seed and data name)."""
        from slimkit.models import build_model
        from slimkit.train import TrainConfig, fit, seed_everything

        key = {"name": model, "train": train, "seed": self.seed, "data": data_name}

        def make() -> nn.Module:
            seed_everything(self.seed)
            net = build_model(model, data.input_shape, data.num_classes)
            fit(net, data, TrainConfig(**train, seed=self.seed), quiet=True)
            return net

        return self.cached_model(key, make)


Benchmark = Callable[[BenchContext], dict[str, Any]]
BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def default_data_dir() -> Path:
    """``$SLIMKIT_DATA_DIR``, else ``../shared/data`` from the working directory."""
    return Path(os.environ.get("SLIMKIT_DATA_DIR", Path.cwd().parent / "shared" / "data"))


def run_benchmark(
    name: str,
    *,
    data_dir: Path | None = None,
    out: Path | None = None,
    seed: int = 0,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run benchmark ``name``, print its table and write its report (``out``) if asked.

    Example (needs the shared data sets):
        >>> report = run_benchmark("prune-lenet300", out=Path("bench.json"))  # doctest: +SKIP
    """
    from slimkit.bench import catalog  # noqa: F401  (fills the registry)
    from slimkit.report import print_table, save_json

    bench = BENCHMARKS.get(name)
    work = (out.parent if out else Path.cwd() / "bench-out") / name
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("SLIMKIT_CACHE", Path.cwd() / ".slimkit-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    ctx = BenchContext(
        data_dir=Path(data_dir or default_data_dir()),
        work_dir=work,
        cache_dir=cache,
        seed=seed,
        console=console,
    )
    report = bench(ctx)
    print_table(report, console)
    if out is not None:
        save_json(report, out)
    return report
