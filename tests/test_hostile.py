"""Hostile inputs: any file name, any file, bounded memory.

The CLI commands run in subprocesses with a timeout, as a user runs them:
a regression that hangs (a named pipe opened for reading) then fails the
test instead of blocking the suite, and a crash shows as a traceback in
the output.
"""

import contextlib
import json
import os
import pathlib
import re
import struct
import subprocess
import sys
import zlib

import keras
import kit
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kerastl.cli import cli
from kerastl.data import DataError
from kerastl.data import DataSpec
from kerastl.data import images
from kerastl.data import load_data
from kerastl.data import pipeline

KERASTL = pathlib.Path(sys.executable).parent / "kerastl"
# Generous for two loaded CPU cores; a hang fails after it.
TIMEOUT = 300
RED, GREEN, BLUE, GRAY = (220, 20, 20), (20, 200, 20), (20, 20, 220), (90,) * 3
# Names in several scripts, with spaces.
NAMES = ("café.png", "🐈 émoji.png", "名前 with spaces.png", "Фото 1.png")

RECIPE = """
from kerastl import Recipe
from kerastl import Stage
from kerastl.data import Augment
from kerastl.data import DataSpec

recipe = Recipe(
    name="hostile",
    preset={preset!r},
    data=DataSpec("folder", {folder!r}, validation_fraction=0.25),
    batch_size=4,
    augment=Augment(flip=False),
    stages=(Stage(epochs=1),),
)
"""


def _png(path, color, size=(40, 30)):
    Image.new("RGB", size, color).save(path)


def bomb_png(path, width, height):
    """A valid one-colour 8-bit grayscale PNG declaring `width` x `height`.

    Written row block by row block, so neither this nor the file (a few
    hundred KB: zlib squeezes the zero rows about 1000 to 1) ever holds
    the pixels.
    """

    def chunk(kind, data):
        crc = zlib.crc32(kind + data)
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
        )

    row = bytes(width + 1)  # filter type 0, then black pixels
    block = max(1, (1 << 22) // len(row))
    compressor = zlib.compressobj()
    data = [
        compressor.compress(row * min(block, height - start))
        for start in range(0, height, block)
    ]
    data.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pathlib.Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(data))
        + chunk(b"IEND", b"")
    )


def _load(folder, **spec):
    return load_data(
        DataSpec("folder", str(folder), validation_fraction=0.25, **spec),
        image_size=(8, 8),
        batch_size=4,
        multi_label=False,
    )


def _every_example(bundle):
    xs, ys = [], []
    for dataset in bundle.splits.values():
        for x, y in dataset:
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)


def test_any_file_name_loads(tmp_path):
    colors = {"猫": RED, "café au lait": GREEN, "кошка 🐈": BLUE}
    for name, color in colors.items():
        (tmp_path / name).mkdir()
        for file_name in NAMES:
            _png(tmp_path / name / file_name, color)
    # A Latin-1 name, not valid UTF-8: the file system's bytes are kept.
    latin1 = os.path.join(os.fsencode(tmp_path / "猫"), b"caf\xe9.png")
    # File systems that allow only UTF-8 names (macOS) refuse it.
    with contextlib.suppress(OSError):
        _png(latin1, RED)
    bundle = _load(tmp_path)
    assert bundle.skipped == []
    assert bundle.class_names == sorted(colors)
    x, y = _every_example(bundle)
    assert len(y) == sum(bundle.num_examples.values())
    assert len(y) == 3 * len(NAMES) + os.path.exists(latin1)
    expected = np.array([colors[bundle.class_names[label]] for label in y])
    # Shrunk images are JPEGs in the prepared-image cache: within 2 levels.
    np.testing.assert_allclose(x[:, 4, 4], expected, atol=2)


def _special_files(folder):
    """Files no reader may open; returns each path and a reason fragment."""
    special = {
        "fifo.png": "named pipe",
        "loop a.png": "symbolic link loop",
        "loop b.png": "symbolic link loop",
        "zero.png": "device file",
        "broken.png": "broken symbolic link",
        "up": "folder",
    }
    os.mkfifo(folder / "fifo.png")
    (folder / "loop a.png").symlink_to(folder / "loop b.png")
    (folder / "loop b.png").symlink_to(folder / "loop a.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "broken.png").symlink_to(folder / "nowhere.png")
    (folder / "up").symlink_to(folder.parent)
    return {str(folder / name): reason for name, reason in special.items()}


def test_special_files_are_listed_as_skipped(tmp_path):
    for name, color in (("a", RED), ("b", BLUE)):
        (tmp_path / name).mkdir()
        for i in range(3):
            _png(tmp_path / name / f"{i}.png", color)
    expected = _special_files(tmp_path / "a")
    # A link to a regular file is read like the file.
    (tmp_path / "a" / "link.png").symlink_to(tmp_path / "a" / "0.png")
    bundle = _load(tmp_path)
    reasons = {item.path: item.reason for item in bundle.skipped}
    assert reasons.keys() == expected.keys()
    for path, fragment in expected.items():
        assert fragment in reasons[path], path
    assert sum(bundle.num_examples.values()) == 7


def test_class_with_only_unreadable_files_is_an_error(tmp_path):
    for name, color in (("a", RED), ("b", BLUE)):
        (tmp_path / name).mkdir()
        for i in range(3):
            _png(tmp_path / name / f"{i}.png", color)
    (tmp_path / "всё плохо").mkdir()
    (tmp_path / "всё плохо" / "empty.jpg").write_bytes(b"")
    (tmp_path / "всё плохо" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as info:
        _load(tmp_path)
    message = str(info.value)
    assert "'всё плохо' (2 file(s))" in message
    assert "remove the class" in message
    assert "\n" not in message


def test_empty_class_folder_is_an_error(tmp_path):
    # Decided: an error, not ignored; leaving the class out would change
    # the model's classes without a word.
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _png(tmp_path / name / "0.png", RED)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="'.*empty' is empty"):
        _load(tmp_path)


def test_images_over_max_pixels_are_skipped_from_their_header(tmp_path):
    for name, color in (("a", RED), ("b", BLUE)):
        (tmp_path / name).mkdir()
        for i in range(3):
            _png(tmp_path / name / f"{i}.png", color)
    bomb = tmp_path / "a" / "bomb.png"
    # 72 megapixels: over the default limit, under PIL's own (89).
    bomb_png(bomb, 9000, 8000)
    assert bomb.stat().st_size < 200_000
    with Image.open(bomb) as image:
        assert image.size == (9000, 8000)
    bundle = _load(tmp_path)
    assert [(item.path, item.reason) for item in bundle.skipped] == [
        (
            str(bomb),
            "too large: 9000 x 8000 pixels, over the max_pixels limit of "
            "50,000,000; raise data.max_pixels to use it",
        )
    ]
    assert sum(bundle.num_examples.values()) == 6
    assert images.check_file(bomb, max_pixels=9000 * 8000) is None


def test_max_pixels_must_be_positive(tmp_path):
    (tmp_path / "a").mkdir()
    _png(tmp_path / "a" / "0.png", RED)
    with pytest.raises(DataError, match="max_pixels"):
        _load(tmp_path, max_pixels=0)


def _smooth_photo(height, width):
    """Gradients and a slow wave: what a resize represents faithfully."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    wave = 127.5 + 100 * np.sin(x / 150) * np.cos(y / 200)
    pixels = np.stack([x / width * 255, y / height * 255, wave], axis=-1)
    return pixels.round().astype(np.uint8)


@pytest.mark.parametrize(
    "image_size, shape",
    [
        # Shrunk to 2x the model's side: 128 rows, 128 * 2000 / 1500 wide
        # (to a pixel: JPEG's 1/8-scale decode rounds first).
        ((64, 64), (128, 171)),
        ((224, 224), (448, 597)),
    ],
    ids=["64", "224"],
)
def test_large_images_decode_reduced_to_the_same_model_input(
    tmp_path, image_size, shape
):
    pixels = _smooth_photo(1500, 2000)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    min_size = pipeline.decode_size(image_size)
    for name in ("photo.jpg", "photo.png"):
        path = tmp_path / name
        reduced = images.read_rgb(path, min_size)
        assert reduced.shape[0] == shape[0] and reduced.shape[2] == 3
        assert abs(reduced.shape[1] - shape[1]) <= 1
        full = images.read_rgb(path)
        assert full.shape == (1500, 2000, 3)
        model_input = pipeline.center_crop_resize(reduced, image_size)
        expected = pipeline.center_crop_resize(full, image_size)
        difference = np.abs(np.asarray(model_input) - np.asarray(expected))
        assert difference.mean() < 2.0, name


# Hostile folder, for the CLI: every case in one folder of four classes.
# Each bad file maps to a fragment of the reason it must be listed with.
def _hostile_folder(root):
    classes = {
        "猫": RED,
        "café au lait": GREEN,
        "кошка 🐈": BLUE,
        "$x_1$": GRAY,
    }
    good, bad = [], {}
    for name, color in classes.items():
        (root / name).mkdir(parents=True)
        for file_name in NAMES:
            _png(root / name / file_name, color)
            good.append(root / name / file_name)
    cat, cafe, koshka, math = (root / name for name in classes)

    # Readable, if unusual.
    sixteen = np.full((30, 40), 40000, np.uint16)
    Image.fromarray(sixteen).save(cat / "16-bit.png")
    Image.new("CMYK", (40, 30), (0, 200, 200, 30)).save(cat / "cmyk 写真.jpg")
    frames = [Image.new("P", (40, 30), i) for i in (1, 2)]
    frames[0].save(cafe / "animated.gif", save_all=True, append_images=frames)
    Image.new("RGB", (40, 30), GREEN).save(cafe / "photo.webp")
    _png(koshka / "1x1.png", BLUE, size=(1, 1))
    _png(koshka / "wide 5000x100.png", BLUE, size=(5000, 100))
    (math / "link to café.png").symlink_to(cat / "café.png")
    good += [
        cat / "16-bit.png",
        cat / "cmyk 写真.jpg",
        cafe / "animated.gif",
        cafe / "photo.webp",
        koshka / "1x1.png",
        koshka / "wide 5000x100.png",
        math / "link to café.png",
    ]

    (cat / "empty.jpg").write_bytes(b"")
    bad[cat / "empty.jpg"] = "empty file"
    jpeg = cat / "cmyk 写真.jpg"
    (cat / "truncated.jpg").write_bytes(jpeg.read_bytes()[:300])
    bad[cat / "truncated.jpg"] = "corrupt"
    noise = np.random.default_rng(0).bytes(3000)
    (cafe / "random bytes.jpg").write_bytes(noise)
    bad[cafe / "random bytes.jpg"] = "not an image"
    (cafe / "notes.txt").write_text("not an image, but a note")
    bad[cafe / "notes.txt"] = "not an image"
    # 144 megapixels, the size of the bug report's 140 KB PNG.
    bomb_png(koshka / "bomb.png", 12000, 12000)
    bad[koshka / "bomb.png"] = "too large: 12000 x 12000 pixels"
    (koshka / "loop a.jpg").symlink_to(koshka / "loop b.jpg")
    (koshka / "loop b.jpg").symlink_to(koshka / "loop a.jpg")
    bad[koshka / "loop a.jpg"] = bad[koshka / "loop b.jpg"] = "link loop"
    os.mkfifo(math / "fifo.jpg")
    bad[math / "fifo.jpg"] = "named pipe"
    (math / "dev zero.jpg").symlink_to("/dev/zero")
    bad[math / "dev zero.jpg"] = "device file"
    return [str(p) for p in good], {str(p): r for p, r in bad.items()}


def _run(*args):
    """Runs the CLI; fails on a hang, a traceback or an unexpected code."""
    result = subprocess.run(
        [str(KERASTL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode in (0, 1, 2), output
    return result


def _listed(path):
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t", 1) for line in lines)


def _check_listed(listed, bad):
    assert listed.keys() == bad.keys()
    for path, fragment in bad.items():
        assert fragment in listed[path], (path, listed[path])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    preset = root / "preset"
    kit.save_tiny_preset("resnet", preset)
    folder = root / "data"
    good, bad = _hostile_folder(folder)
    recipe = root / "hostile.py"
    recipe.write_text(RECIPE.format(preset=str(preset), folder=str(folder)))
    run_dir = root / "run"
    fit = _run("fit", recipe, "--output-dir", run_dir)
    return folder, good, bad, run_dir, fit


def test_fit_trains_on_the_readable_files_and_lists_the_rest(hostile):
    folder, good, bad, run_dir, fit = hostile
    assert fit.returncode == 0, fit.stdout + fit.stderr
    _check_listed(_listed(run_dir / "skipped_files.txt"), bad)
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.class_names == sorted(
        ["猫", "café au lait", "кошка 🐈", "$x_1$"]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    validation = metrics["splits"]["validation"]["num_examples"]
    train = int(re.search(r"train (\d+) examples", fit.stdout).group(1))
    assert train + validation == len(good)


def test_evaluate_on_the_hostile_folder(hostile):
    folder, good, bad, run_dir, fit = hostile
    assert fit.returncode == 0, "fit failed; see its test"
    result = _run("evaluate", run_dir, "--data", folder)
    assert result.returncode == 0, result.stdout + result.stderr
    out = run_dir / "evaluations" / folder.name
    _check_listed(_listed(out / "skipped_files.txt"), bad)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["splits"][folder.name]["num_examples"] == len(good)


def test_predict_on_the_hostile_folder(hostile):
    folder, good, bad, run_dir, fit = hostile
    assert fit.returncode == 0, "fit failed; see its test"
    result = _run("predict", run_dir, folder, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    entries = {entry["path"]: entry for entry in json.loads(result.stdout)}
    assert entries.keys() == {*good, *bad}
    _check_listed(
        {
            path: entry["error"]
            for path, entry in entries.items()
            if "error" in entry
        },
        bad,
    )
    for path in good:
        assert len(entries[path]["predictions"]) == 4, path


@pytest.mark.parametrize(
    "case, expected",
    [("all-unreadable", "'c' (2 file(s))"), ("empty", "c' is empty")],
)
def test_fit_refuses_a_class_without_images(tmp_path, case, expected):
    preset = tmp_path / "preset"
    kit.save_tiny_preset("resnet", preset)
    folder = tmp_path / "data"
    for name, color in (("a", RED), ("b", BLUE)):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            _png(folder / name / f"{i}.png", color)
    (folder / "c").mkdir()
    if case == "all-unreadable":
        (folder / "c" / "zero bytes.jpg").write_bytes(b"")
        os.mkfifo(folder / "c" / "fifo.jpg")
    recipe = tmp_path / "recipe.py"
    recipe.write_text(RECIPE.format(preset=str(preset), folder=str(folder)))
    result = CliRunner().invoke(
        cli, ["fit", str(recipe), "--output-dir", str(tmp_path / "run")]
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    # One paragraph: what is wrong and what to do, on the error's line.
    message = result.output.split("Error: ", 1)[1].splitlines()[0]
    assert expected in message
    assert "remove the" in message.lower()
    assert not (tmp_path / "run").exists()


def test_a_file_linked_into_two_split_folders_stays_in_evaluation(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "validation"):
        for name, color in (("a", RED), ("b", BLUE)):
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                _png(root / split / name / f"{split}{i}.png", color)
    # The same training image, linked into validation too.
    (root / "validation" / "a" / "leak.png").symlink_to(
        root / "train" / "a" / "train0.png"
    )
    spec = DataSpec("folder", str(root))
    with pytest.warns(UserWarning, match=r"dropped \(1 from train\)"):
        bundle = load_data(
            spec, image_size=(8, 8), batch_size=4, multi_label=False, seed=0
        )
    assert bundle.num_examples == {"train": 3, "validation": 5}
