"""`kerastl select`: each score recomputed with scikit-learn on features
computed here, the ranking rule by hand, the CLI on real recipes."""

import json
import pathlib

import keras
import kit
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn import linear_model
from sklearn import metrics
from sklearn import neighbors
from sklearn import preprocessing

import kerastl
from kerastl.cli import cli
from kerastl.data import DataSpec
from kerastl.evaluate import transferability
from kerastl.runs import select
from kerastl.runs.recipe import Recipe
from kerastl.runs.recipe import load_recipe

RECIPES = pathlib.Path(__file__).parents[1] / "recipes"
CS = (1e-3, 1e-2, 1e-1, 1, 10, 100)


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "resnet_tiny"
    kit.save_tiny_preset("resnet", path)
    return path


@pytest.fixture(scope="module")
def vit_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "vit_tiny"
    kit.save_tiny_preset("vit", path)
    return path


def _features(preset, images):
    model = kerastl.TransferClassifier.from_preset(str(preset), num_classes=3)
    extractor = model.feature_extractor()
    return keras.ops.convert_to_numpy(
        extractor.predict(images.astype("float32"), verbose=0)
    ), model


def test_scores_match_scikit_learn_on_the_same_features(preset, tmp_path):
    images, labels = kit.color_images(60, num_classes=3, seed=1)
    # Noisy labels, so the scores are not all perfect.
    labels = labels.copy()
    labels[::7] = (labels[::7] + 1) % 3
    spec = DataSpec(
        "arrays",
        arrays={
            "train": (images[:42], labels[:42]),
            "validation": (images[42:], labels[42:]),
        },
        class_names=("a", "b", "c"),
    )
    recipe = Recipe(name="scored", preset=str(preset), data=spec)
    selection = kerastl.select(
        recipe,
        [select.Candidate(str(preset)), select.Candidate(str(preset), False)],
        output_dir=tmp_path / "out",
        verbose=0,
    )
    (score,) = [s for s in selection.scores if s.candidate == str(preset)]
    features, model = _features(preset, images)
    train, val = features[:42], features[42:]
    y_train, y_val = labels[:42], labels[42:]

    scaler = preprocessing.StandardScaler().fit(train)
    accuracy = {}
    for c in CS:
        probe = linear_model.LogisticRegression(C=c, max_iter=1000)
        probe.fit(scaler.transform(train), y_train)
        predicted = probe.predict(scaler.transform(val))
        accuracy[c] = metrics.accuracy_score(y_val, predicted)
    best = max(accuracy.values())
    assert score.probe_c == min(c for c in CS if accuracy[c] == best)
    assert score.probe == pytest.approx(best)

    knn = neighbors.KNeighborsClassifier(
        n_neighbors=20,
        metric="cosine",
        weights=lambda d: np.exp((1 - d) / 0.07),
    ).fit(train, y_train)
    assert score.knn == pytest.approx(
        metrics.accuracy_score(y_val, knn.predict(val))
    )
    assert score.logme == pytest.approx(
        transferability.logme(train, y_train), rel=1e-4
    )
    assert score.parameters == model.backbone.count_params()
    assert score.feature_dim == train.shape[1]
    assert score.images_per_second > 0

    saved = json.loads((tmp_path / "out" / "select.json").read_text())
    assert [s["candidate"] for s in saved["scores"]] == [
        s.candidate for s in selection.scores
    ]
    assert (tmp_path / "out" / select.PLOT_FILE).stat().st_size > 0


def _score(name, logme, knn, probe):
    return select.Score(
        candidate=name,
        preset=name,
        family="resnet",
        fine_tune_learning_rate=1e-4,
        parameters=1,
        feature_dim=1,
        logme=logme,
        knn=knn,
        probe=probe,
        probe_c=1.0,
        images_per_second=1.0,
        feature_seconds=0.0,
    )


def test_rank_is_the_mean_rank_then_the_probe():
    # Ranks (LogME, kNN, probe): a (1, 3, 2) = 2.0; b (2, 1, 3) = 2.0;
    # c (3, 2, 1) = 2.0; d (4, 4, 4) = 4.0. a, b and c tie on the mean:
    # the probe orders them c (0.9), a (0.8), b (0.7).
    scores = [
        _score("a", 3.0, 0.1, 0.8),
        _score("b", 2.0, 0.9, 0.7),
        _score("c", 1.0, 0.5, 0.9),
        _score("d", 0.0, 0.0, 0.0),
    ]
    ranked = select.rank(scores)
    assert [s.candidate for s in ranked] == ["c", "a", "b", "d"]
    assert [s.rank for s in ranked] == [1, 2, 3, 4]


def test_cli_ranks_writes_a_recipe_and_shares_features(
    preset, vit_preset, tmp_path
):
    recipe = RECIPES / "fashion_transfer.py"
    written = tmp_path / "best.py"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "select",
            str(recipe),
            "--smoke",
            "--presets",
            f"{preset},{vit_preset}",
            "--output-dir",
            str(tmp_path / "select"),
            "--write-recipe",
            str(written),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "select" / "select.json").read_text())
    winner = saved["scores"][0]
    assert "rank" in result.output and winner["candidate"] in result.output
    best = load_recipe(written)
    original = load_recipe(recipe)
    assert best.data == original.data
    assert best.preset == winner["candidate"]
    assert [(s.train, s.learning_rate) for s in best.stages] == [
        ("head", 1e-3),
        ("all", winner["fine_tune_learning_rate"]),
    ]
    # The same preset on the same data: doctor reads select's features.
    result = runner.invoke(
        cli,
        [
            "doctor",
            str(recipe),
            "--smoke",
            "--preset",
            str(preset),
            "--output-dir",
            str(tmp_path / "doctor"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    # select reads training and validation images; test's are new.
    for split in ("train", "validation"):
        assert f"Feature cache hit ({split})" in result.output
    assert "Feature cache written (test)" in result.output
    again = runner.invoke(
        cli, ["select", str(recipe), "--write-recipe", str(written)]
    )
    assert again.exit_code != 0 and "exists" in again.output


# One recipe per bundled dataset: the others share its data.
@pytest.mark.parametrize(
    "name",
    ["pets", "cifar10_resnet", "fashion_transfer", "voc2007_multilabel"],
)
def test_both_commands_run_on_bundled_recipe_data(name, preset, tmp_path):
    recipe = RECIPES / f"{name}.py"
    runner = CliRunner()
    # The tiny preset throughout, so doctor reuses select's features, but
    # for one recipe, whose own preset a stand-in replaces offline.
    doctor_preset = (
        [] if name == "fashion_transfer" else ["--preset", str(preset)]
    )
    result = runner.invoke(
        cli,
        [
            "select",
            str(recipe),
            "--smoke",
            "--presets",
            str(preset),
            "--output-dir",
            str(tmp_path / "select"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "select" / "select.json").read_text())
    multi_label = name == "voc2007_multilabel"
    assert saved["metric"] == ("mAP" if multi_label else "accuracy")
    (score,) = saved["scores"]
    assert 0.0 <= score["probe"] <= 1.0 and np.isfinite(score["logme"])
    result = runner.invoke(
        cli,
        [
            "doctor",
            str(recipe),
            "--smoke",
            *doctor_preset,
            "--output-dir",
            str(tmp_path / "doctor"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "doctor" / "doctor.json").read_text())
    assert (found["label_issues"] is None) == multi_label
    assert set(found["summary"]["examples"]) >= {"train", "validation"}


def test_a_broken_candidate_is_skipped_and_a_typo_stops_at_once(
    preset, tmp_path
):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    recipe = RECIPES / "fashion_transfer.py"
    runner = CliRunner()
    args = ["select", str(recipe), "--smoke"]
    args += ["--output-dir", str(tmp_path / "out")]
    result = runner.invoke(cli, [*args, "--presets", f"{preset},{broken}"])
    assert result.exit_code == 0, result.output
    assert f"Skipped {broken}" in result.output
    assert "JSON files is damaged" in result.output
    saved = json.loads((tmp_path / "out" / "select.json").read_text())
    assert [s["candidate"] for s in saved["scores"]] == [str(preset)]
    assert list(saved["skipped"]) == [str(broken)]
    # A mistyped name is refused before any candidate is scored.
    result = runner.invoke(
        cli,
        ["select", str(recipe), "--output-dir", str(tmp_path / "typo")]
        + ["--presets", f"{preset},resnet_50_imagenett"],
    )
    assert result.exit_code != 0 and "Did you mean" in result.output
    assert not (tmp_path / "typo").exists()
