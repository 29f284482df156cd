"""`kerastl doctor`: planted duplicates, leaks, flipped labels and a broken
file in a folder of real PNGs, found and reported; the data untouched."""

import csv
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import keras
import kit
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn import metrics

import kerastl
from kerastl.cli import cli
from kerastl.data import DataSpec
from kerastl.runs.recipe import Recipe

# Three classes of clearly different colours: the features of even a
# random-weight backbone separate them, so a flipped label stands out.
PALETTE = {"rojo": (220, 30, 30), "verde": (30, 200, 40), "azul": (30, 40, 210)}
PER_SPLIT = {"train": 16, "validation": 4, "test": 4}
SIZE = kit.TINY_IMAGE_SIZE
KERASTL = pathlib.Path(sys.executable).parent / "kerastl"


def _image(color, seed):
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 25, size=(SIZE, SIZE, 3))
    return np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """`(folder, truth)`: split/class folders of PNGs with planted faults.

    - `dup_*`: byte-for-byte copies of a test image in train (leaks) and
      of a training image in train (a repeat);
    - `flip_*`: training images of one colour filed under another;
    - `broken.png`: a truncated file.
    """
    root = tmp_path_factory.mktemp("doctor") / "colores ñ"
    seed = 0
    for split, count in PER_SPLIT.items():
        for name, color in PALETTE.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                seed += 1
                path = folder / f"{name} {i} é.png"
                Image.fromarray(_image(color, seed)).save(path)
    leaked = [root / "test" / "rojo" / "rojo 0 é.png"]
    leaked.append(root / "test" / "azul" / "azul 1 é.png")
    repeated = root / "train" / "verde" / "verde 2 é.png"
    copies = {}
    for source in [*leaked, repeated]:
        copy = root / "train" / source.parent.name / f"dup_{source.name}"
        copy.write_bytes(source.read_bytes())
        copies[source] = copy
    flips = {}
    for i, (true, filed) in enumerate(
        [("rojo", "verde"), ("verde", "azul"), ("azul", "rojo")]
    ):
        path = root / "train" / filed / f"flip_{i}.png"
        Image.fromarray(_image(PALETTE[true], 1000 + i)).save(path)
        flips[str(path)] = true
    broken = root / "train" / "rojo" / "broken.png"
    broken.write_bytes(leaked[0].read_bytes()[:40])
    truth = {"copies": copies, "flips": flips, "broken": broken}
    return root, truth


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("presets") / "resnet_tiny"
    kit.save_tiny_preset("resnet", path)
    return path


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(root).rglob("*")):
        digest.update(str(path).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def diagnosed(planted, preset, tmp_path_factory):
    """`kerastl doctor` run as a user runs it: a fresh process."""
    root, _ = planted
    before = _tree_digest(root)
    out = tmp_path_factory.mktemp("out")
    done = subprocess.run(
        [
            str(KERASTL),
            "doctor",
            str(root),
            "--preset",
            str(preset),
            "--output-dir",
            str(out / "report"),
            "--fix-into",
            str(out / "fixes"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": keras.config.backend()},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _tree_digest(root) == before, "doctor changed the user's data"
    result = json.loads((out / "report" / "doctor.json").read_text())
    return result, out, done.stdout + done.stderr


def test_exact_duplicates_are_the_byte_identical_files(planted, diagnosed):
    root, truth = planted
    result, _, _ = diagnosed
    # Independently: files with equal bytes (PNG is lossless, so equal
    # bytes are the only identical images here).
    by_bytes = {}
    for path in root.rglob("*.png"):
        if path != truth["broken"]:
            by_bytes.setdefault(path.read_bytes(), []).append(str(path))
    expected = sorted(sorted(g) for g in by_bytes.values() if len(g) > 1)
    found = sorted(
        sorted(m["example"] for m in g["members"])
        for g in result["exact_duplicates"]
    )
    assert found == expected
    crossing = {
        frozenset(m["example"] for m in g["members"]): g["cross_split"]
        for g in result["exact_duplicates"]
    }
    for source, copy in truth["copies"].items():
        group = frozenset({str(source), str(copy)})
        assert crossing[group] == ("test" in source.parts)
    assert result["summary"]["exact_duplicate_groups_across_splits"] == 2


def test_flipped_labels_rank_first_with_the_true_class(planted, diagnosed):
    _, truth = planted
    result, _, _ = diagnosed
    issues = result["label_issues"]
    flips = truth["flips"]
    top = {i["example"]: i["suggested"] for i in issues[: 2 * len(flips)]}
    recall = np.mean([path in top for path in flips])
    assert recall >= 0.8
    for path, true in flips.items():
        if path in top:
            assert top[path] == true
    ranks = [i["self_confidence"] for i in issues]
    assert ranks == sorted(ranks)


def test_broken_file_is_listed_not_fatal(planted, diagnosed):
    _, truth = planted
    result, _, _ = diagnosed
    unreadable = result["facts"]["unreadable"]
    assert [u["path"] for u in unreadable] == [str(truth["broken"])]
    assert result["summary"]["unreadable_files"] == 1


def test_class_counts_and_sizes_match_the_folder(planted, diagnosed):
    root, truth = planted
    result, _, _ = diagnosed
    for split in PER_SPLIT:
        for name in PALETTE:
            files = [
                p
                for p in (root / split / name).glob("*.png")
                if p != truth["broken"]
            ]
            assert result["facts"]["class_counts"][split][name] == len(files)
    sizes = result["facts"]["image_sizes"]["train"]
    assert sizes["height"] == {"min": SIZE, "median": SIZE, "max": SIZE}
    assert sizes["grayscale_share"] == 0.0


def test_fixes_csv_suggests_and_report_shows(planted, diagnosed):
    _, truth = planted
    result, out, console = diagnosed
    with open(out / "fixes" / "fixes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    removed = {r["example"] for r in rows if r["action"] == "remove"}
    # The training copies of leaked test images go; of the repeat within
    # train, exactly one of the two.
    for source, copy in truth["copies"].items():
        if "test" in source.parts:
            assert str(copy) in removed and str(source) not in removed
        else:
            assert len({str(source), str(copy)} & removed) == 1
    relabels = {r["example"]: r["suggested"] for r in rows}
    for issue in result["label_issues"]:
        assert relabels[issue["example"]] == issue["suggested"]
    report = (out / "report" / "report.md").read_text()
    for picture in (
        "class_counts.png",
        "exact_duplicates.png",
        "label_issues.png",
    ):
        assert f"]({picture})" in report
        assert (out / "report" / picture).stat().st_size > 0
    assert "Exact duplicate groups: 3 (2 across splits)" in console
    assert "Traceback" not in console


def test_near_duplicates_match_brute_force_cosine(tmp_path):
    # In memory, so the features can be computed independently here.
    images, labels = kit.color_images(24, num_classes=3, seed=3)
    images[5] = np.clip(images[4].astype(int) + 3, 0, 255)
    preset = tmp_path / "preset"
    kit.save_tiny_preset("resnet", preset)
    spec = DataSpec(
        "arrays",
        arrays={
            "train": (images[:16], labels[:16]),
            "validation": (images[16:], labels[16:]),
        },
        class_names=("a", "b", "c"),
    )
    recipe = Recipe(name="near", preset=str(preset), data=spec)
    threshold = 0.99
    diagnosis = kerastl.doctor(
        recipe, output_dir=tmp_path / "out", threshold=threshold, verbose=0
    )
    model = kerastl.TransferClassifier.from_preset(str(preset), num_classes=3)
    extractor = model.feature_extractor()
    features = keras.ops.convert_to_numpy(
        extractor.predict(images.astype("float32"), verbose=0)
    )
    centred = features - features.mean(axis=0)
    similarity = metrics.pairwise.cosine_similarity(centred)
    first, second = np.triu_indices(len(images), k=1)
    close = similarity[first, second] >= threshold
    pairs = zip(first[close].tolist(), second[close].tolist(), strict=True)
    expected = sorted(pairs)
    found = sorted(tuple(p["indices"]) for p in diagnosis.near_duplicates)
    assert (4, 5) in expected
    assert found == expected
    for pair in diagnosis.near_duplicates:
        i, j = pair["indices"]
        assert pair["similarity"] == pytest.approx(similarity[i, j], abs=1e-4)
        assert pair["cross_split"] == ((i < 16) != (j < 16))


def test_refuses_to_write_fixes_into_the_data(planted, preset, tmp_path):
    root, _ = planted
    result = CliRunner().invoke(
        cli,
        [
            "doctor",
            str(root),
            "--preset",
            str(preset),
            "--output-dir",
            str(tmp_path / "out"),
            "--fix-into",
            str(root / "fixes"),
        ],
    )
    assert result.exit_code != 0
    assert "only reads" in result.output
    assert not (root / "fixes").exists()
    assert not (tmp_path / "out").exists()


def test_both_commands_read_a_csv(planted, preset, tmp_path):
    root, truth = planted
    # In a folder of its own: kerastl writes nothing beside a CSV.
    (tmp_path / "table").mkdir()
    table = tmp_path / "table" / "images.csv"
    rows = ["path,labels,split"]
    for path in sorted(root.rglob("*.png")):
        split, label = path.parts[-3], path.parts[-2]
        rows.append(f'"{path}",{label},{split}')
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "doctor",
            str(table),
            "--preset",
            str(preset),
            "--output-dir",
            str(tmp_path / "doctor"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "doctor" / "doctor.json").read_text())
    assert found["summary"]["exact_duplicate_groups"] == len(truth["copies"])
    result = runner.invoke(
        cli,
        [
            "select",
            str(table),
            "--presets",
            str(preset),
            "--output-dir",
            str(tmp_path / "select"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    # The colours are easy: the probe separates them on validation.
    (score,) = json.loads((tmp_path / "select" / "select.json").read_text())[
        "scores"
    ]
    assert score["probe"] >= 0.9
    assert "Feature cache hit (train)" in result.output
