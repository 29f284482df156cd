"""kerastl.data: every source, bad inputs, carving, augmentation, errors."""

import csv
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from kerastl.data import Augment
from kerastl.data import DataError
from kerastl.data import DataSpec
from kerastl.data import images
from kerastl.data import load_data
from kerastl.data import pipeline
from kerastl.data import validation_split
from kerastl.errors import OfflineError

SIZE = (8, 8)
RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def _load(spec, multi_label=False, **kwargs):
    kwargs = {"image_size": SIZE, "batch_size": 4, **kwargs}
    return load_data(spec, multi_label=multi_label, **kwargs)


def _collect(dataset):
    """All of a split's images and labels, checking every batch's format."""
    xs, ys = [], []
    for x, y in dataset:
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == np.float32 and x.shape[1:] == (*SIZE, 3)
        assert x.min() >= 0.0 and x.max() <= 255.0
        assert len(y) == len(x)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _solid(path, color, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _class_folder(root, colors, per_class=5):
    """One folder per class; each class's images are one solid colour."""
    for name, color in colors.items():
        for i in range(per_class):
            _solid(root / name / f"{i}.png", color, size=(10 + i, 9))
    return root


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# === tfds ===


def test_tfds_single_label_carves_validation():
    with tfds.testing.mock_data(num_examples=20):
        bundle = _load(DataSpec("tfds", "cifar10", test="test"))
    # Offline, tfds knows CIFAR-10's class count but not its names.
    assert len(bundle.class_names) == 10
    assert bundle.num_examples == {"train": 18, "validation": 2, "test": 20}
    for split, count in bundle.num_examples.items():
        _, labels = _collect(bundle.splits[split])
        assert labels.dtype == np.int32 and labels.shape == (count,)
        assert labels.min() >= 0 and labels.max() < 10


def test_tfds_sequence_label_is_multi_hot():
    spec = DataSpec(
        "tfds", "voc/2007", validation="validation", label_key="objects/label"
    )
    with tfds.testing.mock_data(num_examples=6):
        bundle = _load(spec, multi_label=True)
        with pytest.raises(DataError, match="multi-label"):
            _load(spec, multi_label=False)
    assert (
        len(bundle.class_names) == 20 and bundle.class_names[0] == "aeroplane"
    )
    _, labels = _collect(bundle.splits["train"])
    assert labels.dtype == np.float32 and labels.shape == (6, 20)
    assert set(np.unique(labels)) <= {0.0, 1.0} and labels.sum() > 0


@pytest.mark.parametrize(
    "name, label_key, multi_label, classes",
    [
        ("oxford_iiit_pet", "label", False, 37),
        ("cifar10", "label", False, 10),
        ("voc/2007", "objects/label", True, 20),
    ],
)
def test_tfds_smoke_runs_offline(name, label_key, multi_label, classes):
    spec = DataSpec("tfds", name, label_key=label_key, test="test")
    bundle = _load(spec, multi_label=multi_label, smoke=True)
    assert len(bundle.class_names) == classes
    assert bundle.num_examples["train"] == 8
    assert bundle.num_examples["test"] == 4
    for split in ("train", "validation", "test"):
        _, labels = _collect(bundle.splits[split])
        assert labels.shape[1:] == ((classes,) if multi_label else ())


def test_tfds_offline_is_one_paragraph(tmp_path):
    # Sockets are blocked in tests: the machine is offline.
    spec = DataSpec("tfds", "cifar10", data_dir=str(tmp_path))
    with pytest.raises(OfflineError, match="seems to be offline") as info:
        _load(spec)
    assert "data.data_dir" in str(info.value)
    assert "--smoke" in str(info.value)


def test_tfds_num_classes_must_match():
    with (
        tfds.testing.mock_data(num_examples=4),
        pytest.raises(DataError, match="10 classes"),
    ):
        _load(DataSpec("tfds", "cifar10"), num_classes=37)


# === Folder ===


def test_folder_labels_follow_sorted_class_folders(tmp_path):
    root = _class_folder(tmp_path, {"dog": BLUE, "cat": RED, "emu": GREEN})
    bundle = _load(DataSpec("folder", str(root), validation_fraction=0.2))
    assert bundle.class_names == ["cat", "dog", "emu"]
    assert bundle.num_examples == {"train": 12, "validation": 3}
    assert bundle.skipped == []
    for split in ("train", "validation"):
        x, y = _collect(bundle.splits[split])
        colors = np.array([RED, BLUE, GREEN], np.float32)
        # Shrunk images are JPEGs in the prepared-image cache: within 2 levels.
        np.testing.assert_allclose(x[:, 3, 4], colors[y], atol=2)
    # Stratified: one validation image per class.
    _, y = _collect(bundle.splits["validation"])
    assert sorted(y) == [0, 1, 2]


def test_folder_split_subfolders_and_multi_label(tmp_path):
    _class_folder(tmp_path / "train", {"a": RED, "b": BLUE}, per_class=3)
    _class_folder(tmp_path / "validation", {"a": RED, "b": BLUE}, per_class=1)
    _class_folder(tmp_path / "test", {"b": BLUE}, per_class=2)
    bundle = _load(DataSpec("folder", str(tmp_path)), multi_label=True)
    assert bundle.num_examples == {"train": 6, "validation": 2, "test": 2}
    _, y = _collect(bundle.splits["test"])
    np.testing.assert_array_equal(y, [[0.0, 1.0], [0.0, 1.0]])


def test_every_bad_input_kind(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    _solid(good / "gray.png", 77, mode="L")
    _solid(good / "rgba.png", (10, 20, 30, 0), mode="RGBA")
    palette = Image.new("P", (12, 10), 0)
    palette.putpalette([255, 0, 0] + [0] * 765)
    palette.save(good / "palette.png")
    sixteen = np.full((10, 12), 128 * 257, np.uint16)  # 128 in 8 bits.
    Image.fromarray(sixteen).save(good / "sixteen.png")
    _solid(good / "cmyk.jpg", (0, 255, 255, 0), mode="CMYK")
    # 40 wide, 20 high, red left half; EXIF 6 means "rotate 90 degrees
    # clockwise to display", which turns it 20 wide, 40 high, red on top.
    rotated = Image.new("RGB", (40, 20), BLUE)
    rotated.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(good / "exif.jpg", exif=exif, quality=95)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg")
    whole = (tmp_path / "full.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.txt").write_text("not an image")
    _solid(bad / "fine.png", GREEN)

    pixels = {p.name: images.read_rgb(str(p)) for p in good.iterdir()}
    assert all(p.dtype == np.uint8 and p.ndim == 3 for p in pixels.values())
    assert all(p.shape[-1] == 3 for p in pixels.values())
    np.testing.assert_array_equal(pixels["gray.png"][0, 0], [77, 77, 77])
    np.testing.assert_array_equal(pixels["rgba.png"][0, 0], [10, 20, 30])
    np.testing.assert_array_equal(pixels["palette.png"][0, 0], RED)
    np.testing.assert_array_equal(pixels["sixteen.png"][0, 0], [128] * 3)
    np.testing.assert_allclose(pixels["cmyk.jpg"][4, 4], RED, atol=3)
    exif_pixels = pixels["exif.jpg"].astype(int)
    assert exif_pixels.shape == (40, 20, 3)
    np.testing.assert_allclose(exif_pixels[5, 10], RED, atol=8)
    np.testing.assert_allclose(exif_pixels[35, 10], BLUE, atol=8)

    bundle = _load(DataSpec("folder", str(tmp_path), validation_fraction=0.2))
    assert bundle.num_examples["train"] + bundle.num_examples["validation"] == 7
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in bundle.skipped}
    assert sorted(reasons) == [
        "corrupt.png",
        "empty.png",
        "notes.txt",
        "truncated.jpg",
    ]
    assert reasons["empty.png"] == "empty file"
    assert reasons["notes.txt"] == "not an image"
    assert reasons["truncated.jpg"].startswith("corrupt")
    x, _ = _collect(bundle.splits["train"])
    assert x.shape[-1] == 3


# === CSV ===


def test_csv_delimited_single_and_multi_label(tmp_path):
    _solid(tmp_path / "img" / "r.png", RED)
    _solid(tmp_path / "img" / "b.png", BLUE)
    _solid(tmp_path / "img" / "g.png", GREEN)
    _solid(tmp_path / "img" / "r2.png", RED)
    rows = [
        ["img/r.png", "red", "warm"],
        ["img/b.png", "blue", "cold"],
        [str(tmp_path / "img" / "g.png"), "green", "cold grass"],
        ["img/r2.png", "red", "warm"],
    ]
    table = _write_csv(tmp_path / "t.csv", ["path", "labels", "tags"], rows)
    bundle = _load(DataSpec("csv", str(table), validation_fraction=0.25))
    assert bundle.class_names == ["blue", "green", "red"]
    x, y = _collect(bundle.splits["train"])
    colors = np.array([BLUE, GREEN, RED], np.float32)
    # Shrunk images are JPEGs in the prepared-image cache: within 2 levels.
    np.testing.assert_allclose(x[:, 0, 0], colors[y], atol=2)

    spec = DataSpec("csv", str(table), label_column="tags", label_delimiter=" ")
    bundle = _load(spec, multi_label=True)
    assert bundle.class_names == ["cold", "grass", "warm"]
    x, y = _collect(_load(spec, multi_label=True, seed=3).splits["validation"])
    assert y.shape == (1, 3) and y.dtype == np.float32
    with pytest.raises(DataError, match="single-label"):
        _load(spec, multi_label=False)


def test_csv_one_hot_columns_split_column_and_missing_file(tmp_path):
    _solid(tmp_path / "a.png", RED)
    _solid(tmp_path / "b.png", BLUE)
    _solid(tmp_path / "c.png", BLUE)
    _solid(tmp_path / "d.png", RED)
    rows = [
        ["a.png", "1", "0", "1", "train"],
        ["b.png", "0", "1", "0", "train"],
        ["gone.png", "1", "1", "0", "train"],
        ["c.png", "0", "1", "1", "val"],
        ["d.png", "1", "0", "0", "test"],
    ]
    header = ["path", "cat", "dog", "outdoor", "split"]
    table = _write_csv(tmp_path / "t.csv", header, rows)
    spec = DataSpec("csv", str(table), label_columns=("cat", "dog", "outdoor"))
    bundle = _load(spec, multi_label=True)
    assert bundle.class_names == ["cat", "dog", "outdoor"]
    assert bundle.num_examples == {"train": 2, "validation": 1, "test": 1}
    assert [(s.path, s.reason) for s in bundle.skipped] == [
        (str(tmp_path / "gone.png"), "missing")
    ]
    x, y = _collect(bundle.splits["train"])
    np.testing.assert_array_equal(y, [[1, 0, 1], [0, 1, 0]])
    # Shrunk images are JPEGs in the prepared-image cache: within 2 levels.
    np.testing.assert_allclose(x[:, 0, 0], [RED, BLUE], atol=2)
    _, y = _collect(bundle.splits["validation"])
    np.testing.assert_array_equal(y, [[0, 1, 1]])


# === Arrays ===


@pytest.mark.parametrize("shape", [(6, 5, 7), (6, 5, 7, 1)])
def test_arrays_grayscale_becomes_rgb(shape):
    gray = np.arange(6, dtype=np.uint8)[:, None, None] * 40
    gray = np.broadcast_to(
        gray.reshape((6, 1, 1) + (1,) * (len(shape) - 3)), shape
    )
    labels = np.array([0, 1, 2, 0, 1, 2])
    spec = DataSpec(
        "arrays",
        arrays={"train": (gray, labels), "validation": (gray[:2], labels[:2])},
    )
    bundle = _load(spec)
    assert bundle.class_names == ["0", "1", "2"]
    x, y = _collect(bundle.splits["validation"])
    np.testing.assert_array_equal(x[:, 0, 0], [[0, 0, 0], [40, 40, 40]])
    np.testing.assert_array_equal(y, [0, 1])
    x, y = _collect(bundle.splits["train"])
    assert np.all(x[..., 0] == x[..., 2])
    np.testing.assert_array_equal((x[:, 2, 2, 0] / 40) % 3, y)


def test_arrays_multi_hot_labels():
    rgb = np.zeros((5, 4, 4, 3), np.uint8)
    labels = np.eye(5, 3, dtype=np.float32)
    labels[4] = [1, 1, 1]
    spec = DataSpec(
        "arrays", arrays={"train": (rgb, labels)}, validation_fraction=0.2
    )
    bundle = _load(spec, multi_label=True)
    assert bundle.class_names == ["0", "1", "2"]
    _, y = _collect(bundle.splits["train"])
    assert y.shape == (4, 3) and y.dtype == np.float32
    with pytest.raises(DataError, match="multi-hot"):
        _load(spec, multi_label=False)


# === Validation carving, shuffling, determinism ===


def test_carve_is_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, val = validation_split.carve(labels, 0.1, seed=0)
    assert len(val) == 10 and len(train) == 90
    assert not set(train) & set(val)
    np.testing.assert_array_equal(np.bincount(labels[val]), [5, 3, 2])
    np.testing.assert_array_equal(
        validation_split.carve(labels, 0.1, seed=0)[1], val
    )
    assert set(validation_split.carve(labels, 0.1, seed=1)[1]) != set(val)
    # Each class keeps a training example, even a singleton.
    train, val = validation_split.carve(np.array([0, 0, 0, 1]), 0.5, seed=0)
    assert 3 in train and len(val) == 2


def _ids_spec(count=40):
    """Arrays whose pixels encode each example's index."""
    ids = np.arange(count, dtype=np.uint8)
    gray = np.broadcast_to(ids[:, None, None], (count, *SIZE)).copy()
    return DataSpec("arrays", arrays={"train": (gray, ids % 4)})


def _ids(dataset):
    return _collect(dataset)[0][:, 0, 0, 0].astype(int).tolist()


def test_same_seed_same_order_other_seed_differs():
    first = _load(_ids_spec(), seed=5)
    second = _load(_ids_spec(), seed=5)
    other = _load(_ids_spec(), seed=6)
    train = _ids(first.splits["train"])
    assert train == _ids(second.splits["train"])
    assert train != sorted(train)  # shuffled
    assert _ids(first.splits["train"]) != train  # reshuffled every epoch
    val = _ids(first.splits["validation"])
    assert val == _ids(second.splits["validation"]) == sorted(val)
    assert val == _ids(first.splits["validation"])  # not shuffled
    assert set(_ids(other.splits["validation"])) != set(val)
    assert sorted(train + val) == list(range(40))


def test_augmentation_changes_train_only():
    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (8, 16, 16, 3), np.uint8)
    labels = np.arange(8) % 2
    arrays = {"train": (pictures, labels), "validation": (pictures, labels)}
    spec = DataSpec("arrays", arrays=arrays)
    kwargs = {"image_size": (16, 16), "batch_size": 8, "seed": 1}

    def first(augment, split="train"):
        bundle = load_data(spec, multi_label=False, augment=augment, **kwargs)
        x, y = next(iter(bundle.splits[split]))
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == np.float32 and x.shape == (8, 16, 16, 3)
        assert x.min() >= 0 and x.max() <= 255
        return x, y

    crop = Augment(flip=True, random_resized_crop=True)
    x_plain, y_plain = first(None)
    x_crop, y_crop = first(crop)
    np.testing.assert_array_equal(y_plain, y_crop)  # the same shuffle
    assert np.abs(x_plain - x_crop).mean() > 1.0
    np.testing.assert_array_equal(x_crop, first(crop)[0])  # seeded
    np.testing.assert_array_equal(first(crop, "validation")[0], pictures)
    x_rand, _ = first(Augment(flip=False, rand_augment=9))
    assert np.abs(x_plain - x_rand).mean() > 1.0


def test_center_crop_keeps_aspect():
    # 30 wide, 10 high: red | green | blue thirds. A square crop keeps the
    # green middle only.
    strip = Image.new("RGB", (30, 10), RED)
    strip.paste(GREEN, (10, 0, 20, 10))
    strip.paste(BLUE, (20, 0, 30, 10))
    out = pipeline.center_crop_resize(tf.constant(np.asarray(strip)), SIZE)
    np.testing.assert_array_equal(np.asarray(out).reshape(-1, 3)[0], GREEN)
    np.testing.assert_array_equal(
        np.unique(np.asarray(out).reshape(-1, 3), axis=0), [GREEN]
    )


def test_smoke_takes_few_local_examples(tmp_path):
    root = _class_folder(tmp_path, {"a": RED, "b": BLUE}, per_class=10)
    bundle = _load(DataSpec("folder", str(root)), smoke=True, batch_size=2)
    assert bundle.num_examples == {"train": 4, "validation": 2}


# === Errors ===


def test_empty_class_folder(tmp_path):
    _class_folder(tmp_path, {"a": RED})
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="is empty"):
        _load(DataSpec("folder", str(tmp_path)))


def test_folder_without_images(tmp_path):
    with pytest.raises(DataError, match="no class subfolders"):
        _load(DataSpec("folder", str(tmp_path)))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no readable images"):
        _load(DataSpec("folder", str(tmp_path)))
    with pytest.raises(DataError, match="does not exist"):
        _load(DataSpec("folder", str(tmp_path / "nope")))


def test_label_outside_class_names(tmp_path):
    _class_folder(tmp_path / "f", {"a": RED, "b": BLUE})
    with pytest.raises(DataError, match="outside the class list"):
        _load(DataSpec("folder", str(tmp_path / "f"), class_names=("a",)))
    _solid(tmp_path / "x.png", RED)
    table = _write_csv(tmp_path / "t.csv", ["path", "labels"], [["x.png", "z"]])
    with pytest.raises(DataError, match="outside the class list"):
        _load(DataSpec("csv", str(table), class_names=("a", "b")))


def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _load(DataSpec("csv", str(tmp_path / "missing.csv")))


def test_num_classes_mismatch(tmp_path):
    _class_folder(tmp_path, {"a": RED, "b": BLUE})
    with pytest.raises(DataError, match="num_classes=3"):
        _load(DataSpec("folder", str(tmp_path)), num_classes=3)


def test_bad_rand_augment_magnitude():
    with pytest.raises(DataError, match="0 to 10"):
        _load(_ids_spec(), augment=Augment(rand_augment=11))


def _id_arrays(first, count, num_classes):
    """Grayscale arrays whose pixels hold an id; label = id % num_classes."""
    ids = np.arange(first, first + count)
    gray = np.broadcast_to(ids[:, None, None], (count, 2, 2)).astype(np.uint8)
    return gray, ids % num_classes


def _ids_labels(dataset):
    images, labels = _collect(dataset)
    return np.rint(images[:, 0, 0, 0]).astype(int), labels


def test_classes_and_train_per_class():
    spec = DataSpec(
        "arrays",
        arrays={"train": _id_arrays(0, 200, 5), "test": _id_arrays(200, 50, 5)},
        class_names=("a", "b", "c", "d", "e"),
        classes=(3, 1),
        train_per_class=6,
        validation_fraction=0.25,
    )
    bundle = _load(spec, seed=7)
    assert bundle.class_names == ["d", "b"]
    splits = {s: _ids_labels(bundle.splits[s]) for s in bundle.splits}
    new_label = {3: 0, 1: 1}
    for ids, labels in splits.values():
        # Only classes 3 and 1, each relabelled by its place in `classes`.
        assert [new_label[i % 5] for i in ids] == labels.tolist()
    train_ids, train_labels = splits["train"]
    val_ids, val_labels = splits["validation"]
    assert np.bincount(train_labels).tolist() == [6, 6]
    # A quarter of the 80 kept training examples, stratified.
    assert np.bincount(val_labels).tolist() == [10, 10]
    assert not set(train_ids) & set(val_ids)
    expected_test = [i for i in range(200, 250) if i % 5 in (1, 3)]
    assert sorted(splits["test"][0]) == expected_test
    assert bundle.num_examples == {"train": 12, "validation": 20, "test": 20}

    def sample(seed):
        return sorted(_ids_labels(_load(spec, seed=seed).splits["train"])[0])

    assert sample(7) == sorted(train_ids)
    assert sample(8) != sorted(train_ids)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(classes=(0, 4)), "does not select"),
        (dict(classes=(1, 1)), "does not select"),
        (dict(classes=()), "does not select"),
        (dict(train_per_class=10), "has only 9"),
        (dict(train_per_class=0), "at least 1"),
    ],
    ids=["out_of_range", "repeated", "empty", "too_many", "zero"],
)
def test_classes_and_train_per_class_errors(change, message):
    # 4 classes of 10; carving 10% leaves 9 of each to train.
    spec = DataSpec("arrays", arrays={"train": _id_arrays(0, 40, 4)})
    with pytest.raises(DataError, match=message):
        _load(dataclasses.replace(spec, **change))


def test_classes_need_single_label_local_data():
    multi_hot = np.eye(3, dtype=np.float32)[np.arange(12) % 3]
    images = np.zeros((12, 2, 2), np.uint8)
    spec = DataSpec(
        "arrays", arrays={"train": (images, multi_hot)}, classes=(0,)
    )
    with pytest.raises(DataError, match="single-label"):
        _load(spec, multi_label=True)
    with pytest.raises(DataError, match="not tfds"):
        _load(DataSpec("tfds", "mnist", train_per_class=5))


def test_idx_smoke_without_files_stands_in(tmp_path):
    spec = DataSpec(
        "idx",
        str(tmp_path),
        class_names=tuple("abcdefghij"),
        classes=(5, 6, 7, 8, 9),
        train_per_class=3,
    )
    # 48 smoke training examples: about 6 per class left after carving.
    bundle = _load(spec, smoke=True, batch_size=16)
    assert bundle.class_names == list("fghij")
    _, labels = _collect(bundle.splits["train"])
    assert np.bincount(labels).tolist() == [3] * 5
    assert set(bundle.splits) == {"train", "validation", "test"}


# === CSV: encodings, repeated rows, one image in two splits ===


def _numbered(folder, numbers):
    """Solid images whose red value is 10 times their number."""
    for number in numbers:
        _solid(folder / f"{number}.png", (10 * number, 0, 0))


def _numbers_and_labels(dataset):
    """`{image number: label}` of a split, failing if a number repeats."""
    x, y = _collect(dataset)
    numbers = np.round(x[:, 0, 0, 0] / 10).astype(int).tolist()
    assert len(set(numbers)) == len(numbers), numbers
    labels = [row.tolist() if np.ndim(row) else int(row) for row in y]
    return dict(zip(numbers, labels, strict=True))


def test_csv_in_latin_1_is_a_data_error_saying_to_save_as_utf_8(tmp_path):
    _solid(tmp_path / "a.png", RED)
    table = tmp_path / "t.csv"
    table.write_text("path,labels\na.png,café\n", encoding="latin-1")
    position = table.read_bytes().index("é".encode("latin-1"))
    with pytest.raises(DataError) as error:
        _load(DataSpec("csv", str(table)))
    message = str(error.value)
    assert "\n" not in message
    assert repr(str(table)) in message
    assert "is not UTF-8" in message
    assert f"byte at offset {position} (0xe9, line 2)" in message
    assert "Save it as UTF-8, e.g." in message
    assert "iconv -f latin1 -t utf-8" in message
    # Excel's "Unicode Text" is UTF-16, which its byte order mark gives away.
    table.write_text("path,labels\na.png,café\n", encoding="utf-16")
    with pytest.raises(DataError, match=r"saved in UTF-16 .*iconv -f utf-16"):
        _load(DataSpec("csv", str(table)))


def test_csv_from_excel_with_a_byte_order_mark(tmp_path):
    _numbered(tmp_path, [1, 2, 3])
    train, validation = tmp_path / "t.csv", tmp_path / "v.csv"
    # Excel's "CSV UTF-8" starts the file with a byte order mark.
    train.write_text(
        "path,labels\n1.png,café\n2.png,naïve\n", encoding="utf-8-sig"
    )
    validation.write_text("path,labels\n3.png,café\n", encoding="utf-8-sig")
    assert train.read_bytes().startswith(b"\xef\xbb\xbf")
    bundle = _load(DataSpec("csv", str(train), validation="v.csv"))
    assert bundle.class_names == ["café", "naïve"]
    assert _numbers_and_labels(bundle.splits["train"]) == {1: 0, 2: 1}
    assert _numbers_and_labels(bundle.splits["validation"]) == {3: 0}


def test_csv_repeated_rows_and_conflicting_labels(tmp_path):
    _numbered(tmp_path, range(6))
    rows = [
        ["0.png", "a"],
        ["1.png", "a"],
        ["2.png", "b"],
        ["./0.png", "a"],
        ["3.png", "b"],
        ["4.png", "a"],
        ["0.png", "a"],
        ["4.png", "b"],
        ["5.png", "b"],
    ]
    table = _write_csv(tmp_path / "t.csv", ["path", "labels"], rows)
    spec = DataSpec("csv", str(table), validation_fraction=0.4)
    with pytest.warns(UserWarning) as caught:
        bundle = _load(spec)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "dropped 2 duplicate rows" in messages[0]
    assert repr(str(table)) in messages[0]
    # Single-label: an image under two labels is left out, and named.
    assert "1 image has conflicting labels" in messages[1]
    assert f"{tmp_path / '4.png'} (rows 7 and 9: a, b)" in messages[1]
    seen = {}
    for split in ("train", "validation"):
        seen.update(_numbers_and_labels(bundle.splits[split]))
    assert seen == {0: 0, 1: 0, 2: 1, 3: 1, 5: 1}
    assert sum(bundle.num_examples.values()) == 5


def test_csv_multi_label_rows_of_one_image_are_merged(tmp_path):
    _numbered(tmp_path, range(4))
    rows = [["0.png", "a"], ["0.png", "b"], ["1.png", "b a"], ["2.png", "c"]]
    table = _write_csv(tmp_path / "t.csv", ["path", "labels"], rows)
    _write_csv(tmp_path / "v.csv", ["path", "labels"], [["3.png", "a"]])
    spec = DataSpec("csv", str(table), validation="v.csv")
    with pytest.warns(UserWarning, match="1 image is listed on several"):
        bundle = _load(spec, multi_label=True)
    assert _numbers_and_labels(bundle.splits["train"]) == {
        0: [1.0, 1.0, 0.0],
        1: [1.0, 1.0, 0.0],
        2: [0.0, 0.0, 1.0],
    }


def test_csv_image_in_two_splits_stays_out_of_training(tmp_path):
    _numbered(tmp_path, range(8))
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "1.png").symlink_to(tmp_path / "1.png")
    rows = [
        ["0.png", "a", "train"],
        ["1.png", "a", "train"],
        ["2.png", "b", "train"],
        ["3.png", "a", "train"],
        ["4.png", "b", "train"],
        ["0.png", "a", "test"],
        # The same file through a symlink, and through another spelling.
        ["links/1.png", "a", "validation"],
        [str(tmp_path / "links" / ".." / "2.png"), "b", "validation"],
        ["6.png", "b", "validation"],
        ["7.png", "a", "validation"],
        ["5.png", "b", "test"],
        ["7.png", "a", "test"],
    ]
    table = _write_csv(tmp_path / "t.csv", ["path", "labels", "split"], rows)
    with pytest.warns(UserWarning) as caught:
        bundle = _load(DataSpec("csv", str(table)))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "3 images listed in training and in validation or test" in message
    assert "1 image listed in validation and in test" in message
    assert _numbers_and_labels(bundle.splits["train"]) == {3: 0, 4: 1}
    assert _numbers_and_labels(bundle.splits["validation"]) == {
        1: 0,
        2: 1,
        6: 1,
    }
    assert _numbers_and_labels(bundle.splits["test"]) == {0: 0, 5: 1, 7: 0}


def test_csv_training_images_all_in_test_is_a_data_error(tmp_path):
    _numbered(tmp_path, [0])
    rows = [["0.png", "a", "train"], ["0.png", "a", "test"]]
    table = _write_csv(tmp_path / "t.csv", ["path", "labels", "split"], rows)
    with (
        pytest.warns(UserWarning, match="dropped from training"),
        pytest.raises(DataError, match="Every training image of .* is also"),
    ):
        _load(DataSpec("csv", str(table)))
