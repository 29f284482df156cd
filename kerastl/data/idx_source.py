"""IDX files: MNIST, Fashion-MNIST and their kin, read offline.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the
number of dimensions), one big-endian uint32 per dimension, then the values,
big-endian, in C order. A dataset directory holds one images file
(`(N, H, W)`) and one labels file (`(N,)`) per split, named
`{split}-images-idx3-ubyte` and `{split}-labels-idx1-ubyte`, optionally
gzipped; MNIST and Fashion-MNIST ship `train` and `t10k` (the test set).

Debian's `dataset-fashion-mnist` package installs Fashion-MNIST in
`FASHION_MNIST_DIR`; `keras.datasets.fashion_mnist.load_data()` downloads
the same four files to `~/.keras/datasets/fashion-mnist`.
"""

import dataclasses
import gzip
import pathlib

import numpy as np

from kerastl.data import synthetic
from kerastl.data.array_source import load_arrays
from kerastl.data.spec import DataError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Zalando's names, in label order (keras.datasets.fashion_mnist lists them).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX type code -> big-endian NumPy dtype.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_TEST_SPLIT = "t10k"

# Stand-in examples per class when a smoke run finds no IDX files: enough
# for the smoke's first-of-each-class subset and a per-class sample of 20.
_STAND_IN_PER_CLASS = {"train": 64, "test": 16}
_STAND_IN_SIZE = (28, 28)


def read_idx(path):
    """Reads an IDX file, gzipped or not, into a NumPy array.

    Args:
        path: str or path-like. The file; gzip is recognised by its magic
            bytes, not by the name.

    Returns:
        A NumPy array of the file's shape, in native byte order (`uint8`
        for images and labels).

    Example:
    ```python
    labels = read_idx(f"{FASHION_MNIST_DIR}/t10k-labels-idx1-ubyte.gz")
    labels.shape  # (10000,)
    ```
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
    except (OSError, EOFError) as error:
        raise _not_idx(path, f"a broken gzip stream ({error})") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _DTYPES:
        raise _not_idx(path, "no IDX magic number")
    dtype, ndim = _DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _not_idx(path, "a header cut short")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise _not_idx(
            path,
            f"{len(data)} bytes where shape {shape} needs {expected}",
        )
    values = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _not_idx(path, problem):
    return DataError(
        f"{path} is not a readable IDX file: it has {problem}. Replace it "
        "with an intact copy (e.g. reinstall dataset-fashion-mnist, or "
        "delete it and run keras.datasets.fashion_mnist.load_data() again)."
    )


def split_files(directory, split):
    """The images and labels files of one split, or `None` if absent.

    Accepts `{split}-images-idx3-ubyte` and `{split}-images.idx3-ubyte`
    (the Kaggle copies' spelling), each optionally ending in `.gz`.

    Args:
        directory: str or path-like.
        split: str. The file prefix, e.g. `"train"` or `"t10k"`.

    Returns:
        `(images_path, labels_path)` or `None`.

    Example:
    ```python
    images, labels = split_files(FASHION_MNIST_DIR, "t10k")
    ```
    """
    directory = pathlib.Path(directory)
    found = []
    for kind, ndim in (("images", 3), ("labels", 1)):
        names = [
            f"{split}-{kind}{sep}idx{ndim}-ubyte{ext}"
            for sep in ("-", ".")
            for ext in (".gz", "")
        ]
        paths = [directory / name for name in names]
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return tuple(found)


def _split_prefixes(spec):
    prefixes = {"train": spec.train}
    if spec.validation:
        prefixes["validation"] = spec.validation
    if spec.test:
        prefixes["test"] = spec.test
    elif split_files(spec.name, _TEST_SPLIT):
        prefixes["test"] = _TEST_SPLIT
    return prefixes


def _missing_error(spec, missing):
    return DataError(
        f"No IDX files for split(s) {missing} in {spec.name!r}: each split "
        "needs PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte"
        "[.gz] there. For Fashion-MNIST, `apt-get install "
        f"dataset-fashion-mnist` puts them in {FASHION_MNIST_DIR}, or run "
        "`keras.datasets.fashion_mnist.load_data()` once and point "
        "data.name at ~/.keras/datasets/fashion-mnist. Otherwise set "
        "data.train / data.validation / data.test to the files' prefixes."
    )


def _read_split(spec, split, images_path, labels_path):
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"The {split} IDX files of {spec.name!r} hold images of shape "
            f"{images.shape} and labels of shape {labels.shape}; expected "
            "(N, height, width) images and (N,) labels. Check that "
            f"{images_path.name} and {labels_path.name} belong together."
        )
    return images, labels


def _stand_in(spec):
    count = len(spec.class_names) if spec.class_names else 10
    arrays = {}
    for seed, (split, per_class) in enumerate(_STAND_IN_PER_CLASS.items()):
        examples = synthetic.random_examples(
            per_class * count, _STAND_IN_SIZE, count, False, seed
        )
        arrays[split] = (examples.images, examples.labels)
    return arrays


def load_idx(spec, stand_in=False):
    """Reads an IDX dataset directory into checked in-memory examples.

    `spec.name` is the directory; `spec.train`, `spec.validation` and
    `spec.test` are file prefixes. The test split defaults to `t10k` when
    its files are there; validation, unless named, is carved from train by
    the loader. Labels are integer class indices; names come from
    `spec.class_names` (e.g. `FASHION_MNIST_CLASSES`), else `"0"`, `"1"`,
    ... The images go through the arrays source's checks and the same
    pipeline (grayscale made RGB, resized to the model's size).

    Args:
        spec: a `DataSpec` with `source="idx"`.
        stand_in: bool. When the files are absent, return random 28x28
            images of the same classes instead of raising (`--smoke` runs
            offline without the dataset). Defaults to `False`.

    Returns:
        `(class_names, splits)`: a list of str and a dict of split name to
        `Examples`.

    Example:
    ```python
    spec = DataSpec(
        "idx", FASHION_MNIST_DIR, class_names=FASHION_MNIST_CLASSES
    )
    class_names, splits = load_idx(spec)
    ```
    """
    prefixes = _split_prefixes(spec)
    files = {
        split: split_files(spec.name, prefix)
        for split, prefix in prefixes.items()
    }
    missing = [prefixes[split] for split, found in files.items() if not found]
    if missing and stand_in:
        arrays = _stand_in(spec)
    elif missing:
        raise _missing_error(spec, missing)
    else:
        arrays = {
            split: _read_split(spec, split, *paths)
            for split, paths in files.items()
        }
    return load_arrays(
        dataclasses.replace(spec, source="arrays", arrays=arrays), None
    )
