import csv
import json
import pathlib
import shutil

import keras
import kit
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn import metrics as sklearn_metrics

import kerastl
from kerastl.cli import cli
from kerastl.data import images
from kerastl.data import pipeline


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
    assert lines["distribute"] == "auto: one device: cpu:0"
    assert lines["gpu-memory"].startswith(keras.config.backend())


RECIPES = pathlib.Path(__file__).parents[1] / "recipes"
FIXTURES = pathlib.Path(__file__).parent / "recipes"
BUNDLED = sorted(RECIPES.glob("*.py"))


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "resnet_tiny"
    kit.save_tiny_preset("resnet", path)
    return path


def smoke_fit(runner, recipe, preset, output_dir, *extra):
    args = ["fit", str(recipe), "--smoke", "--output-dir", str(output_dir)]
    args += ["--set", f"preset={preset}", *extra]
    return runner.invoke(cli, args, catch_exceptions=False)


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
    assert (run_dir / "evaluation_test.md").exists()

    check_predict_formats(runner, run_dir, model, tmp_path)
    check_evaluate_new_data(runner, run_dir, model, tmp_path)
    check_compare(runner, run_dir, tmp_path)


def _noise_images(folder, count, size, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        paths.append(folder / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def _read(paths):
    return np.stack([images.read_rgb(str(p)).astype(np.float32) for p in paths])


def check_predict_formats(runner, run_dir, model, tmp_path):
    # Images already at the model's size: no resizing to second-guess.
    paths = _noise_images(tmp_path / "noise", 3, model.image_size, seed=1)
    pixels = _read(paths)
    expected = (
        model.predict(pixels, verbose=0)
        + model.predict(pixels[:, :, ::-1], verbose=0)
    ) / 2
    result = runner.invoke(
        cli,
        ["predict", str(run_dir), *map(str, paths), "--tta", "--json"],
    )
    assert result.exit_code == 0, result.output
    for entry, row in zip(json.loads(result.output), expected, strict=True):
        top = entry["predictions"][0]
        assert top["class"] == model.class_names[row.argmax()]
        assert top["probability"] == pytest.approx(row.max(), abs=1e-5)

    result = runner.invoke(
        cli,
        [
            "predict",
            str(run_dir),
            str(paths[0]),
            "--format",
            "csv",
            "--top-k",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.output.splitlines()))
    assert [row["rank"] for row in rows] == ["1", "2"]
    assert [row["selected"] for row in rows] == ["1", "0"]
    plain = model.predict(pixels[:1], verbose=0)[0]
    assert float(rows[0]["probability"]) == pytest.approx(plain.max(), abs=1e-5)


def check_evaluate_new_data(runner, run_dir, model, tmp_path):
    # A new labelled folder holding two of the model's classes.
    data = tmp_path / "new_data"
    paths, labels = [], []
    for label in (0, 2):
        name = model.class_names[label]
        paths += _noise_images(data / name, 3, (40, 50), seed=label)
        labels += [label] * 3
    result = runner.invoke(cli, ["evaluate", str(run_dir), "--data", str(data)])
    assert result.exit_code == 0, result.output
    out = run_dir / "evaluations" / "new_data"
    metrics = json.loads((out / "metrics.json").read_text())["splits"]
    metrics = metrics["new_data"]
    assert metrics["num_examples"] == 6
    resized = np.stack(
        [
            pipeline.center_crop_resize(
                images.read_rgb(str(p)), model.image_size
            )
            for p in paths
        ]
    )
    predicted = model.predict(resized, verbose=0).argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(labels, predicted)
    )
    assert (out / "report.md").exists()
    assert (out / "plots" / "new_data_confusion_matrix.png").exists()


def check_compare(runner, run_dir, tmp_path):
    other = tmp_path / "other_run"
    shutil.copytree(run_dir, other)
    summary = json.loads((other / "metrics.json").read_text())
    summary["splits"]["test"]["accuracy"] = 0.99
    (other / "metrics.json").write_text(json.dumps(summary))
    out = tmp_path / "comparison"
    result = runner.invoke(
        cli, ["compare", str(run_dir), str(other), "--output-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = (out / "comparison.md").read_text()
    assert "Metrics on the test split." in table
    assert "**0.9900**" in table
    original = json.loads((run_dir / "metrics.json").read_text())
    assert f"{original['splits']['test']['accuracy']:.4f}" in table
    with Image.open(out / "comparison.png") as figure:
        assert figure.format == "PNG"
    result = runner.invoke(cli, ["compare", str(run_dir)])
    assert result.exit_code == 2


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


def folder_recipe(tmp_path, preset):
    """A two-class folder of PNGs and a two-stage recipe on it."""
    folder = tmp_path / "images"
    for name, color in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 30), color).save(folder / name / f"{i}.png")
    recipe = tmp_path / "shapes.py"
    recipe.write_text(
        FOLDER_RECIPE.format(preset=str(preset), folder=str(folder))
    )
    return recipe


def test_fit_words(runner, tiny_preset, tmp_path):
    recipe = folder_recipe(tmp_path, tiny_preset)
    run_dir = tmp_path / "run"
    args = ["fit", str(recipe), "--output-dir", str(run_dir)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # The recipe in a few lines, not its JSON.
    assert "{" not in result.output.split("Devices:")[0]
    assert f"shapes: {tiny_preset} on folder" in lines[1]
    # Each epoch is placed in the whole run, stages numbered from 1.
    assert "Stage 1/2 'stage1' · epoch 1 of 2" in lines
    assert "Stage 2/2 'stage2' · epoch 2 of 2" in lines
    # A finished run is not offered a --resume.
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert "holds a finished run" in result.output
    assert "--resume" not in result.output


def test_fit_help_ends_with_the_recipe_fields(runner):
    result = runner.invoke(cli, ["fit", "--help"])
    assert result.exit_code == 0, result.output
    fields = result.output.split("Recipe fields")[1]
    for key in ("preset [required]", "data.data_dir [None]", "augment.flip"):
        assert key in fields
    assert "stages.N.learning_rate [0.001]" in fields


@pytest.mark.parametrize(
    "override, message",
    [
        ("preset=resnet_50_imagenett", "Unknown preset"),
        ("data.name=/no/such/folder", "/no/such/folder"),
    ],
    ids=["bad-preset", "bad-data"],
)
def test_failed_start_leaves_no_run_dir(
    runner, tiny_preset, tmp_path, override, message
):
    recipe = folder_recipe(tmp_path, tiny_preset)
    run_dir = tmp_path / "run"
    result = runner.invoke(
        cli,
        ["fit", str(recipe), "--output-dir", str(run_dir), "--set", override],
    )
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not run_dir.exists()


def test_preprocessing_for_a_preset_without_converter(runner, tmp_path):
    # What `backbone.save_to_preset(dir)` alone writes: no converter.
    backbone, _ = kit.tiny_resnet()
    preset = tmp_path / "bare"
    backbone.save_to_preset(str(preset))
    recipe = folder_recipe(tmp_path, preset)
    run_dir = tmp_path / "run"
    args = ["fit", str(recipe), "--output-dir", str(run_dir)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert "--set preprocessing=imagenet" in result.output
    result = runner.invoke(cli, [*args, "--set", "preprocessing=imagenet"])
    assert result.exit_code == 0, result.output
    converter = keras.models.load_model(run_dir / "model.keras").image_converter
    # ImageNet statistics (torchvision): (x / 255 - mean) / std.
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(converter.scale, 1 / (255 * std), rtol=1e-6)
    np.testing.assert_allclose(converter.offset, -mean / std, rtol=1e-6)
    size = backbone.get_config()["image_shape"][:2]
    assert tuple(converter.image_size) == tuple(size)
