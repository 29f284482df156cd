"""IDX files, Fashion-MNIST and the transfer-experiment recipes."""

import gzip
import pathlib
import struct

import keras_hub
import numpy as np
import pytest

from kerastl.data import DataError
from kerastl.data import DataSpec
from kerastl.data import load_data
from kerastl.data.idx_source import FASHION_MNIST_CLASSES
from kerastl.data.idx_source import FASHION_MNIST_DIR
from kerastl.data.idx_source import read_idx
from kerastl.data.idx_source import split_files
from kerastl.models.presets import load_image_converter
from kerastl.runs.build import build_model
from kerastl.runs.recipe import load_recipe

FASHION = pathlib.Path(FASHION_MNIST_DIR)
RECIPES = pathlib.Path(__file__).parents[1] / "recipes"
# Fashion-MNIST's classes 5-9, the transfer recipes' targets.
SHOES_AND_BAGS = ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

needs_fashion = pytest.mark.skipif(
    not all(split_files(FASHION, split) for split in ("train", "t10k")),
    reason=(
        f"Fashion-MNIST IDX files not found in {FASHION}; "
        "apt-get install dataset-fashion-mnist"
    ),
)


def _write_idx(path, type_code, shape, payload, compress=False):
    """An IDX file from parts written out by hand: magic, dims, bytes."""
    data = bytes([0, 0, type_code, len(shape)])
    data += b"".join(struct.pack(">I", d) for d in shape) + payload
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_hand_written_files(tmp_path, compress):
    # uint8 images (2, 2, 3): bytes 0..11 in C order.
    images = _write_idx(
        tmp_path / "images", 0x08, (2, 2, 3), bytes(range(12)), compress
    )
    np.testing.assert_array_equal(
        read_idx(images), [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    )
    assert read_idx(images).dtype == np.uint8
    # Big-endian int32 and float32: the byte order must be undone.
    int32 = b"\x00\x00\x01\x00" + b"\xff\xff\xff\xfe" + b"\x00\x00\x00\x07"
    ints = _write_idx(tmp_path / "ints", 0x0C, (3,), int32, compress)
    np.testing.assert_array_equal(read_idx(ints), [256, -2, 7])
    assert read_idx(ints).dtype == np.int32  # native byte order
    float32 = b"\x3f\xc0\x00\x00" + b"\xc0\x20\x00\x00"  # 1.5, -2.5
    floats = _write_idx(tmp_path / "floats", 0x0D, (2,), float32, compress)
    np.testing.assert_array_equal(read_idx(floats), [1.5, -2.5])


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x08\x03\x00\x00", "no IDX magic number"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "10 bytes where"),
        (b"\x00\x00\x08\x02\x00\x00", "header cut short"),
        (b"\x1f\x8b\x08\x00garbage", "broken gzip"),
    ],
    ids=["magic", "truncated", "header", "gzip"],
)
def test_read_idx_rejects_broken_files(tmp_path, payload, message):
    path = tmp_path / "bad-labels-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_idx_source_reads_split_files_and_names(tmp_path):
    # Two classes of 3x3 images: train 4, t10k 2; the Kaggle spelling.
    labels = {"train": [1, 0, 1, 0], "t10k": [0, 1]}
    for split, split_labels in labels.items():
        count = len(split_labels)
        pixels = bytes(10 * i + 100 * y for i, y in enumerate(split_labels))
        _write_idx(
            tmp_path / f"{split}-images.idx3-ubyte",
            0x08,
            (count, 3, 3),
            b"".join(bytes([p]) * 9 for p in pixels),
        )
        _write_idx(
            tmp_path / f"{split}-labels.idx1-ubyte",
            0x08,
            (count,),
            bytes(split_labels),
        )
    spec = DataSpec(
        "idx", str(tmp_path), class_names=("a", "b"), validation_fraction=0.5
    )
    bundle = load_data(spec, image_size=(4, 4), batch_size=8, multi_label=False)
    assert bundle.class_names == ["a", "b"]
    assert bundle.num_examples == {"train": 2, "validation": 2, "test": 2}
    images, test_labels = next(iter(bundle.splits["test"]))
    # Constant grayscale images stay constant through resize and RGB.
    np.testing.assert_allclose(images[:, 0, 0, :], [[0.0] * 3, [110.0] * 3])
    np.testing.assert_array_equal(test_labels, [0, 1])


def test_idx_source_missing_files_says_how_to_get_them(tmp_path):
    spec = DataSpec("idx", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion"):
        load_data(spec, image_size=(8, 8), batch_size=4, multi_label=False)


@needs_fashion
def test_fashion_files_match_an_independent_decoding():
    images_path, labels_path = split_files(FASHION, "t10k")
    with gzip.open(images_path) as f:
        raw = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", raw[:16])
    assert (magic, count, rows, cols) == (2051, 10000, 28, 28)
    expected = np.frombuffer(raw, np.uint8, offset=16).reshape(count, 28, 28)
    np.testing.assert_array_equal(read_idx(images_path), expected)
    labels = read_idx(labels_path)
    # The test set's first image is an ankle boot (9); 1,000 of each class.
    assert labels[0] == 9
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)


def _labels(dataset):
    return np.concatenate([np.asarray(y) for _, y in dataset])


@needs_fashion
def test_fashion_subset_and_twenty_per_class():
    spec = DataSpec(
        "idx",
        FASHION_MNIST_DIR,
        class_names=FASHION_MNIST_CLASSES,
        classes=(5, 6, 7, 8, 9),
        train_per_class=20,
        validation_fraction=0.01,
    )
    bundle = load_data(
        spec, image_size=(8, 8), batch_size=256, seed=3, multi_label=False
    )
    assert bundle.class_names == SHOES_AND_BAGS
    np.testing.assert_array_equal(
        np.bincount(_labels(bundle.splits["train"])), [20] * 5
    )
    # 6,000 training images per class, 1% (60 each) carved to validate;
    # the whole t10k test set of those classes.
    np.testing.assert_array_equal(
        np.bincount(_labels(bundle.splits["validation"])), [60] * 5
    )
    np.testing.assert_array_equal(
        np.bincount(_labels(bundle.splits["test"])), [1000] * 5
    )


def test_architecture_preset_builds_random_resnet():
    recipe = load_recipe(RECIPES / "fashion_scratch.py")
    converter = load_image_converter(recipe.preset)
    model = build_model(recipe, SHOES_AND_BAGS, converter)
    # The recipes' documented architecture, built directly.
    expected = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 128, 256],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        image_shape=(32, 32, 3),
    )
    assert model.backbone.count_params() == expected.count_params()
    assert model.image_size == (32, 32)
    # Fashion-MNIST's pixel mean maps to 0, mean + std to 1.
    mean, std = 0.2860 * 255, 0.3530 * 255
    scaled = converter(np.full((1, 32, 32, 3), [mean, mean + std, 0.0]))
    np.testing.assert_allclose(
        scaled[0, 0, 0], [0.0, 1.0, -0.2860 / 0.3530], atol=1e-4
    )
