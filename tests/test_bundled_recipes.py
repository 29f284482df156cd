"""Every bundled recipe runs end to end as `kerastl fit RECIPE --smoke`,
with nothing else given and no network (sockets are blocked in tests)."""

import csv
import json
import pathlib

import keras
import pytest
from click.testing import CliRunner

from kerastl.cli import cli
from kerastl.data.idx_source import FASHION_MNIST_CLASSES
from kerastl.evaluate.metrics import THRESHOLD_KEYS
from kerastl.runs.recipe import load_recipe

RECIPES = pathlib.Path(__file__).parents[1] / "recipes"
BUNDLED = sorted(RECIPES.glob("*.py"))

RUN_FILES = (
    "model.keras",
    "preset/kerastl.json",
    "recipe.json",
    "history.csv",
    "metrics.json",
    "report.md",
    "plots/training_curves.png",
    "plots/validation_per_class_f1.png",
    "plots/validation_reliability.png",
    "plots/validation_mistakes.png",
)
# Keys every split of a run has (top-k needs more than k classes).
MULTI_CLASS = {
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "ece",
    "nll",
    "confusion_matrix",
    "per_class",
}
MULTI_LABEL = {
    "map_macro",
    "map_micro",
    "roc_auc_macro",
    "roc_auc_micro",
    "hamming_loss",
    "ece",
    "per_class",
    "tuned_thresholds",
    *THRESHOLD_KEYS,
}


# Recipes with no code path of their own, smoke-tested on one backend (the
# fastest session) to keep the matrix under 30 minutes: variants of
# fashion_transfer (head only) and fashion_pretrain (random weights);
# cifar10_resnet, pets_vit and cifar10_vit (tfds data with a validation
# split carved or named, as pets; ResNet and ViT stages as pets and the
# classifier tests; the CIFAR-10 and pets data go through select and
# doctor on every backend in test_select.py).
ONE_BACKEND_RECIPES = (
    "fashion_linear_probe",
    "fashion_scratch",
    "cifar10_resnet",
    "cifar10_vit",
    "pets_vit",
)


def _bundled_params():
    one_backend = pytest.mark.backends(
        "torch", reason="shares its code paths with other recipes"
    )
    return [
        pytest.param(
            path,
            id=path.stem,
            marks=[one_backend] if path.stem in ONE_BACKEND_RECIPES else [],
        )
        for path in BUNDLED
    ]


@pytest.mark.parametrize("recipe", _bundled_params())
def test_bundled_recipes_smoke(recipe, tmp_path, monkeypatch):
    """`kerastl fit RECIPE --smoke` with nothing else, offline (sockets are
    blocked): presets and teachers that cannot be fetched are stood in."""
    extra = []
    if recipe.stem == "cifar10_resnet":
        extra += ["--precision", "mixed_bfloat16", "--distribute", "none"]
    elif recipe.stem == "pets":
        extra += ["--set", "calibrate=true"]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["fit", str(recipe), "--smoke", *extra], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / recipe.stem).iterdir()
    original = load_recipe(recipe)
    if original.preset.startswith("runs/"):
        # A run still to be trained (fashion_pretrain's preset).
        assert f"preset directory '{original.preset}' does not exist yet" in (
            result.output
        )
    elif "://" in original.preset or "/" not in original.preset:
        assert (
            f"Smoke run: Preset '{original.preset}' is not available offline"
            in result.output
        )
    else:
        assert "Smoke run:" not in result.output
    if original.teacher:
        assert f"teacher '{original.teacher}' does not exist yet" in (
            result.output
        )
    for name in RUN_FILES:
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["backend"] == keras.config.backend()
    assert metrics["smoke"] is True
    assert metrics["devices"] == ["cpu:0"]
    assert metrics["precision"] == (
        "mixed_bfloat16" if recipe.stem == "cifar10_resnet" else "float32"
    )
    split = metrics["splits"]["validation"]
    multi_label = "multilabel" in recipe.stem
    assert (MULTI_LABEL if multi_label else MULTI_CLASS) <= set(split)
    figure = "precision_recall" if multi_label else "confusion_matrix"
    assert (run_dir / "plots" / f"validation_{figure}.png").exists()
    # The fitted temperature and thresholds travel with the model.
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.backbone.dtype_policy.name == metrics["precision"]
    assert model.temperature == metrics["temperature"]
    assert model.thresholds == metrics["thresholds"]
    if multi_label:
        assert len(model.thresholds) == model.num_classes
        # Tuned on validation for each class's best F1: never worse there.
        assert split["tuned_thresholds"]["f1_macro"] >= split["f1_macro"]
    else:
        assert model.thresholds is None
    if recipe.stem == "fashion_transfer":
        # A new head for classes 5-9, named after them.
        assert model.class_names == list(FASHION_MNIST_CLASSES[5:])
    # The report shows every figure the run drew.
    report = (run_dir / "report.md").read_text()
    for png in (run_dir / "plots").glob("*.png"):
        assert f"(plots/{png.name})" in report
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    recipe_json = json.loads((run_dir / "recipe.json").read_text())
    # One epoch per stage in a smoke run, numbered on across stages.
    assert [row["stage"] for row in rows] == [
        s["name"] for s in recipe_json["stages"]
    ]
    assert [int(row["epoch"]) for row in rows] == list(range(1, len(rows) + 1))
    assert "Run directory:" in result.output
