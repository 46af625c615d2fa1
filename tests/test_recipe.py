import json

import pytest
import torch

from slimkit.errors import SlimkitError
from slimkit.models import build_model, load_checkpoint
from slimkit.recipe import STAGES, Recipe, run_recipe
from slimkit.recipe.stage import Stage
from slimkit.train import seed_everything

BASE = {"model": {"name": "mlp", "kwargs": {"hidden": [32]}}, "data": {"name": "digits"}}


def recipe(*stages, **extra):
    return Recipe.from_dict({**BASE, "stages": list(stages), **extra})


def test_valid_recipe_fills_defaults():
    r = recipe({"kind": "train", "epochs": 2}, {"kind": "export"})
    assert r.stages[0].config.optimizer == "adam"
    assert r.stages[1].config.format == "onnx"
    assert [s.name for s in r.stages] == ["train", "export"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {**BASE, "stages": [{"kind": "train", "epocs": 2}]},
            "stages\\[0\\] \\(train\\): unknown key 'epocs'",
        ),
        ({**BASE, "stages": [{"kind": "trian"}]}, "unknown stage 'trian'; known: .*train"),
        ({**BASE, "stages": [{"epochs": 2}]}, "stages\\[0\\] needs a 'kind'"),
        ({**BASE, "stages": []}, "non-empty list"),
        ({**BASE, "stagez": [], "stages": [{"kind": "train"}]}, "unknown key 'stagez'"),
        (
            {
                "model": {"name": "mlp", "path": "x"},
                "data": {"name": "digits"},
                "stages": [{"kind": "train"}],
            },
            "exactly one of",
        ),
        ({**BASE, "stages": [{"kind": "train", "lr": -1}]}, "lr"),
        ({**BASE, "stages": [{"kind": "train"}, {"kind": "train"}]}, "two stages are named"),
        ({**BASE, "stages": [{"kind": "export", "format": "zip"}]}, "unknown format 'zip'"),
    ],
)
def test_recipe_errors_name_the_problem(raw, message):
    with pytest.raises(SlimkitError, match=message):
        Recipe.from_dict(raw)


def test_recipe_file_paths_resolve_against_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "model: {path: model.safetensors}\ndata: {name: csv, dir: data.csv}\n"
        "stages: [{kind: train}, {kind: distill, teacher: t.safetensors}]\n"
    )
    r = Recipe.from_file(path)
    assert r.model.path == str(tmp_path / "model.safetensors")
    assert r.data.dir == str(tmp_path / "data.csv")
    assert r.stages[1].config.teacher == str(tmp_path / "t.safetensors")


def test_yaml_is_never_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SlimkitError, match="not valid YAML"):
        Recipe.from_file(path)


def test_pipeline_writes_report_and_checkpoints(tmp_path):
    out = tmp_path / "out"
    report = run_recipe(
        recipe({"kind": "train", "epochs": 3, "lr": 3e-3}, {"kind": "export"}), out, quiet=True
    )
    assert report["result"]["metric"] > 0.85
    assert report["baseline"]["size_bytes"] == 4 * report["baseline"]["params"]
    assert report["result"]["artifact"] == "stages/02-export/model.onnx"
    assert report["stages"][1]["parity"]["top1_agreement"] == 1.0
    for name in (
        "report.json",
        "report.md",
        "metric_vs_size.png",
        "layers.png",
        "baseline.safetensors",
        "stages/01-train/stage.json",
    ):
        assert (out / name).exists(), name
    assert json.loads((out / "report.json").read_text())["task"]["data"] == "digits"


def test_weight_only_report_times_the_matmul_nbits_file(tmp_path, monkeypatch):
    import slimkit.recipe.pipeline as pipeline

    timed = []
    real = pipeline.measure

    def spy(model, data, **kwargs):
        timed.append(kwargs.get("onnx_path"))
        return real(model, data, **kwargs)

    monkeypatch.setattr(pipeline, "measure", spy)
    int4 = {"kind": "quantize", "mode": "weight-only", "weight_bits": 4, "group_size": 32}
    report = run_recipe(recipe({"kind": "train", "epochs": 1}, int4), tmp_path / "o", quiet=True)
    assert report["result"]["artifact"] == "stages/02-quantize/model.packed.safetensors"
    assert timed[-1] == tmp_path / "o" / "stages/02-quantize/model.int8.onnx"
    assert report["stages"][1]["integer_ops"]["integer_ops"] == {"MatMulNBits": 2}


def test_baseline_is_the_initial_model_when_no_stage_trains(tmp_path):
    """With no leading train stage, the baseline is the model the stages started from."""
    run_recipe(recipe({"kind": "prune", "sparsity": 0.5}, seed=3), tmp_path / "out", quiet=True)
    seed_everything(3)
    initial = build_model("mlp", (1, 8, 8), 10, hidden=[32]).state_dict()
    baseline = load_checkpoint(tmp_path / "out" / "baseline.safetensors").state_dict()
    assert initial.keys() == baseline.keys()
    assert all(torch.equal(initial[k], baseline[k]) for k in initial)


def test_existing_output_needs_force(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(SlimkitError, match="--force"):
        run_recipe(recipe({"kind": "train", "epochs": 1}), tmp_path / "out", quiet=True)


class Interrupt(Exception):
    pass


def test_resume_skips_finished_stages(tmp_path, monkeypatch):
    """A run killed in its third stage resumes there, without re-running the first two."""
    calls = []

    @STAGES.register("flaky-test-stage")
    class Flaky(Stage):
        Config = STAGES.get("finetune").Config

        def run(self, model, ctx):
            calls.append(ctx.stage_dir.name)
            if len(calls) == 1:
                raise Interrupt
            return model

    try:
        r = recipe(
            {"kind": "train", "epochs": 1},
            {"kind": "finetune", "epochs": 1},
            {"kind": "flaky-test-stage"},
        )
        out = tmp_path / "out"
        with pytest.raises(Interrupt):
            run_recipe(r, out, quiet=True)
        first = (out / "stages/01-train/stage.json").stat().st_mtime_ns
        assert not (out / "report.json").exists()
        report = run_recipe(r, out, resume=True, quiet=True)
        assert (out / "stages/01-train/stage.json").stat().st_mtime_ns == first
        assert calls == ["03-flaky-test-stage", "03-flaky-test-stage"]
        assert len(report["stages"]) == 3
    finally:
        STAGES._items.pop("flaky-test-stage")


def test_resume_refuses_a_different_recipe(tmp_path):
    out = tmp_path / "out"
    run_recipe(recipe({"kind": "train", "epochs": 1}), out, quiet=True)
    with pytest.raises(SlimkitError, match="different recipe"):
        run_recipe(recipe({"kind": "train", "epochs": 2}), out, resume=True, quiet=True)


def test_demo_recipe_is_valid():
    from slimkit.cli import DEMO_RECIPE

    kinds = [stage.kind for stage in Recipe.from_file(DEMO_RECIPE).stages]
    assert kinds[0] == "train" and {"prune", "cluster", "quantize"} <= set(kinds)
