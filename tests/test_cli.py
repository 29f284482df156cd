import csv
import json
import pathlib

import keras
import pytest
from click.testing import CliRunner
from PIL import Image

import kerastl
from kerastl import testing
from kerastl.cli import cli
from kerastl.evaluation import MULTI_CLASS_KEYS
from kerastl.evaluation import MULTI_LABEL_KEYS

RUN_FILES = (
    "model.keras",
    "preset/kerastl.json",
    "recipe.json",
    "history.csv",
    "metrics.json",
    "report.md",
)


@pytest.fixture
def runner():
    return CliRunner()


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert kerastl.__version__ in result.output


def test_info_lists_versions_and_devices(runner):
    result = runner.invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.output.splitlines())
    assert lines["keras"] == keras.__version__
    assert lines["backend"] == keras.config.backend()
    for backend in ("jax", "tensorflow", "torch"):
        assert "cpu:0" in lines[backend]


RECIPES = pathlib.Path(__file__).parents[1] / "recipes"
FIXTURES = pathlib.Path(__file__).parent / "recipes"
BUNDLED = sorted(RECIPES.glob("*.py"))


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "resnet_tiny"
    testing.save_tiny_preset("resnet", path)
    return path


def smoke_fit(runner, recipe, preset, output_dir, *extra):
    args = ["fit", str(recipe), "--smoke", "--output-dir", str(output_dir)]
    args += ["--set", f"preset={preset}", *extra]
    return runner.invoke(cli, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A trained-looking 10-class kerastl preset: cifar10_distill's teacher."""
    backbone, converter = testing.tiny_vit()
    teacher = kerastl.TransferClassifier(
        backbone, num_classes=10, image_converter=converter
    )
    path = tmp_path_factory.mktemp("presets") / "teacher"
    teacher.save_to_preset(path)
    return path


@pytest.mark.parametrize("recipe", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_recipes_smoke(runner, recipe, tiny_preset, tmp_path, request):
    extra = []
    if recipe.stem == "cifar10_distill":
        teacher = request.getfixturevalue("tiny_teacher")
        extra = ["--set", f"teacher={teacher}"]
    result = smoke_fit(runner, recipe, tiny_preset, tmp_path / "run", *extra)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    for name in RUN_FILES:
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["backend"] == keras.config.backend()
    assert metrics["smoke"] is True
    split = metrics["splits"]["validation"]
    keys = MULTI_LABEL_KEYS if "multilabel" in recipe.stem else MULTI_CLASS_KEYS
    assert set(keys) <= set(split)
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    recipe_json = json.loads((run_dir / "recipe.json").read_text())
    # One epoch per stage in a smoke run, numbered on across stages.
    assert [row["stage"] for row in rows] == [
        s["name"] for s in recipe_json["stages"]
    ]
    assert [int(row["epoch"]) for row in rows] == list(range(1, len(rows) + 1))
    assert recipe_json["preset"] == str(tiny_preset)
    assert "Run directory:" in result.output


def test_fit_predict_evaluate(runner, tiny_preset, tmp_path):
    run_dir = tmp_path / "run"
    result = smoke_fit(runner, RECIPES / "pets.py", tiny_preset, run_dir)
    assert result.exit_code == 0, result.output

    images = tmp_path / "images"
    images.mkdir()
    for i, color in enumerate([(255, 0, 0), (0, 0, 255)]):
        Image.new("RGB", (50, 40), color).save(images / f"{i}.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    result = runner.invoke(
        cli, ["predict", str(run_dir), str(images), "--top-k", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.output)
    assert len(predictions) == 3
    broken = [p for p in predictions if p["path"].endswith("broken.jpg")]
    assert "error" in broken[0]
    model = keras.models.load_model(run_dir / "model.keras")
    for entry in predictions:
        if "error" in entry:
            continue
        assert len(entry["predictions"]) == 3
        probs = [p["probability"] for p in entry["predictions"]]
        assert probs == sorted(probs, reverse=True)
        assert {p["class"] for p in entry["predictions"]} <= set(
            model.class_names
        )

    result = runner.invoke(cli, ["evaluate", str(run_dir), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "| accuracy |" in result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test" in metrics["splits"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", str(FIXTURES / "no_recipe.py")], "defines no kerastl.Recipe"),
        (["fit", str(FIXTURES / "import_error.py")], "Traceback"),
        (["fit", str(FIXTURES / "missing.py")], "does not exist"),
        (
            ["fit", str(FIXTURES / "valid.py"), "--set", "batch_sise=2"],
            "Did you mean: batch_size",
        ),
        (
            ["fit", str(FIXTURES / "valid.py"), "--set", "batch_size=two"],
            "expected an integer",
        ),
    ],
    ids=["no-recipe", "import-error", "missing", "unknown-key", "bad-type"],
)
def test_recipe_errors_are_usage_errors(runner, args, message):
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output


def test_unknown_preset_is_a_clean_error(runner, tmp_path):
    result = runner.invoke(
        cli,
        [
            "fit",
            str(FIXTURES / "valid.py"),
            "--smoke",
            "--output-dir",
            str(tmp_path),
            "--set",
            "preset=resnet_50_imagenett",
        ],
    )
    assert result.exit_code == 1
    assert "Unknown preset" in result.output
    assert "Traceback" not in result.output


def test_presets_lists_image_presets(runner):
    result = runner.invoke(cli, ["presets", "resnet_50"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["preset", "family", "params", "input"]
    assert any(line.startswith("resnet_50_imagenet ") for line in lines)
    assert all("vit" not in line for line in lines[1:])
    result = runner.invoke(cli, ["presets", "no_such_model"])
    assert result.exit_code == 1


FOLDER_RECIPE = """
from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec

recipe = Recipe(
    name="shapes",
    preset={preset!r},
    data=DataSpec("folder", {folder!r}, validation_fraction=0.25),
    batch_size=4,
    augment=Augment(flip=False),
    stages=(Stage(epochs=1), Stage(epochs=1, train=1, learning_rate=1e-4)),
)
"""


def test_fit_on_a_folder_lists_skipped_files(runner, tiny_preset, tmp_path):
    folder = tmp_path / "images"
    for name, color in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 30), color).save(folder / name / f"{i}.png")
    (folder / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "blue" / "notes.txt").write_text("not an image")
    recipe = tmp_path / "shapes.py"
    recipe.write_text(
        FOLDER_RECIPE.format(preset=str(tiny_preset), folder=str(folder))
    )
    run_dir = tmp_path / "run"
    result = runner.invoke(
        cli, ["fit", str(recipe), "--output-dir", str(run_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "Skipped 2 unreadable file(s)" in result.output
    skipped = (run_dir / "skipped_files.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in skipped) == sorted(
        [
            str(folder / "red" / "corrupt.jpg"),
            str(folder / "blue" / "notes.txt"),
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 8 readable images, a quarter held out to validate, stratified.
    assert metrics["splits"]["validation"]["num_examples"] == 2
    assert metrics["smoke"] is False
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.class_names == ["blue", "red"]
