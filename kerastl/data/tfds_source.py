"""TensorFlow Datasets sources."""

import urllib.parse

import numpy as np
import tensorflow as tf

from kerastl.data import validation_split
from kerastl.data.spec import DataError
from kerastl.utils import downloads


def _tfds():
    # Imported lazily: tensorflow_datasets takes seconds to import.
    import tensorflow_datasets as tfds

    return tfds


def _label_feature(features, label_key):
    """Walks `label_key` ("objects/label") into nested and sequence features;
    returns the ClassLabel and whether labels are a sequence (multi-hot)."""
    tfds = _tfds()
    feature = features
    sequence = False
    for part in label_key.split("/"):
        if isinstance(feature, tfds.features.Sequence):
            feature, sequence = feature.feature, True
        try:
            feature = feature[part]
        except (KeyError, TypeError):
            return None, sequence
    if isinstance(feature, tfds.features.Sequence):
        feature, sequence = feature.feature, True
    if not isinstance(feature, tfds.features.ClassLabel):
        return None, sequence
    return feature, sequence


def builder_info(spec):
    """Returns `(builder, class_names, sequence)` for a tfds `DataSpec`.

    `sequence` tells whether the label is a sequence of class indices (a
    multi-label dataset such as PASCAL VOC's `"objects/label"`).

    Args:
        spec: a `DataSpec` with `source="tfds"`.

    Example:
    ```python
    builder, class_names, sequence = builder_info(DataSpec("tfds", "cifar10"))
    ```
    """
    tfds = _tfds()
    try:
        builder = tfds.builder(spec.name, data_dir=spec.data_dir)
    except Exception as e:
        raise DataError(
            f"tfds has no dataset {spec.name!r} ({e}). Check data.name "
            "against the TensorFlow Datasets catalog."
        ) from e
    label, sequence = _label_feature(builder.info.features, spec.label_key)
    if label is None:
        raise DataError(
            f"The tfds dataset {spec.name!r} has no class-label feature "
            f"{spec.label_key!r} (features: "
            f"{list(builder.info.features.keys())}). Set data.label_key to "
            "a ClassLabel feature, e.g. 'label' or 'objects/label'."
        )
    return builder, list(label.names), sequence


# How to go on offline, for `downloads.offline_error`.
_LOCAL_DATA_WAY = (
    "point data.data_dir at a tfds data dir where the dataset is already "
    "prepared (`--set data.data_dir=DIR`)"
)


def _mocked(builder):
    # `tfds.testing.mock_data` (smoke runs) swaps `download_and_prepare` for
    # a no-op: nothing will be downloaded, so nothing must be probed.
    method = type(builder).download_and_prepare
    module = getattr(method, "__module__", None) or ""
    return module.startswith("tensorflow_datasets.testing")


def _has_local_copy(builder, url_infos):
    """Whether tfds holds one of the dataset's files already, downloaded
    earlier or put in the manual folder by hand: it may need no network."""
    tfds = _tfds()
    root = builder.data_dir_root / "downloads"
    for url, info in url_infos.items():
        cached = tfds.download.resource.get_dl_fname(url, info.checksum)
        # tfds' cache layout, its older one, and the manual folder.
        paths = [root / builder.name / cached, root / cached]
        if info.filename:
            paths.append(root / "manual" / info.filename)
        if any(path.exists() for path in paths):
            return True
    return False


def _prepare(builder, spec):
    if builder.is_prepared():
        return
    # The URLs the dataset's registered checksums list, when it has any.
    url_infos = builder.url_infos or {}
    urls = sorted(url_infos)
    what = f"the tfds dataset {spec.name!r}"
    if urls:
        what += f" (from {urllib.parse.urlsplit(urls[0]).hostname})"
    # Offline, tfds retries each download 10 times with backoff (about
    # 200 s) before it gives up. One request without retries tells an
    # offline machine in seconds; online, the download runs as tfds made it.
    if (
        urls
        and not _mocked(builder)
        and not _has_local_copy(builder, url_infos)
    ):
        failure = downloads.unreachable(urls[0])
        if failure is not None:
            raise downloads.offline_error(
                what, _LOCAL_DATA_WAY, failure
            ) from failure
    try:
        builder.download_and_prepare()
    except Exception as e:
        if downloads.network_failure(e) is not None:
            raise downloads.offline_error(what, _LOCAL_DATA_WAY, e) from e
        raise DataError(
            f"The tfds dataset {spec.name!r} is not in "
            f"{builder.data_dir_root!r} and could not be downloaded "
            f"({type(e).__name__}: {e}). Point kerastl at a tfds data dir "
            "where it is already prepared with `--set data.data_dir=DIR` "
            "(data.data_dir in a recipe), or run with `--smoke` to try the "
            "pipeline on synthetic data."
        ) from e


def _count(dataset):
    count = int(dataset.cardinality())
    if count >= 0:
        return count
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))


def load_tfds(spec, *, multi_label, seed, validation_fraction):
    """Loads a tfds dataset's splits as `(image, label)` datasets.

    Images come as tfds decodes them (`uint8`, 1 or 3 channels, any size);
    labels as int64 scalars, or multi-hot float32 for sequence labels (and
    for single labels when `multi_label`). With `spec.validation` unset,
    the training split's labels are read once to carve a stratified,
    seeded validation split out of it.

    Args:
        spec: a `DataSpec` with `source="tfds"`.
        multi_label: bool. Whether to return multi-hot labels.
        seed: int. Seeds the validation carving.
        validation_fraction: float. The share of training data carved off.

    Returns:
        `(class_names, splits, counts)`: a list of str, a dict of split
        name to `tf.data.Dataset` and a dict of split name to int.

    Example:
    ```python
    class_names, splits, counts = load_tfds(
        DataSpec("tfds", "cifar10"), multi_label=False, seed=0,
        validation_fraction=0.1,
    )
    ```
    """
    builder, class_names, sequence = builder_info(spec)
    if sequence and not multi_label:
        raise DataError(
            f"The label {spec.label_key!r} of {spec.name!r} holds several "
            "classes per image, so the task is multi-label. Train with "
            "multi_label=True, or pick a single-label data.label_key."
        )
    _prepare(builder, spec)
    # Some builders name their classes while preparing (CIFAR-10 reads
    # batches.meta.txt): before the first download the names are "0".."9".
    class_names = list(
        _label_feature(builder.info.features, spec.label_key)[0].names
    )
    to_pair = _pair_maker(spec, len(class_names), sequence, multi_label)
    names = {"train": spec.train}
    for split in ("validation", "test"):
        if getattr(spec, split):
            names[split] = getattr(spec, split)
    splits = {}
    for split, name in names.items():
        try:
            dataset = builder.as_dataset(split=name, shuffle_files=False)
        except Exception as e:
            raise DataError(
                f"The tfds dataset {spec.name!r} has no split {name!r} "
                f"({e}). Set data.{split} to one of its splits, e.g. "
                f"{list(builder.info.splits.keys())}."
            ) from e
        splits[split] = dataset.map(
            to_pair, num_parallel_calls=tf.data.AUTOTUNE
        )
    counts = {split: _count(ds) for split, ds in splits.items()}
    if "validation" not in splits:
        _carve_validation(splits, counts, validation_fraction, seed)
    return class_names, splits, counts


def _pair_maker(spec, num_classes, sequence, multi_label):
    """The map from a tfds example to `(image, label)`: a class index, or
    multi-hot for multi-label data (a sequence of objects' classes)."""
    parts = spec.label_key.split("/")

    def to_pair(example):
        label = example
        for part in parts:
            label = label[part]
        if sequence:
            label = tf.reduce_max(
                tf.one_hot(label, num_classes, dtype=tf.float32),
                axis=0,
            )
            # An image without objects has no class: all zeros.
            label = tf.reshape(label, (num_classes,))
        elif multi_label:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return example[spec.image_key], label

    return to_pair


def _carve_validation(splits, counts, validation_fraction, seed):
    """Moves a seeded, stratified share of `splits["train"]` to
    `splits["validation"]`, in place, with their counts."""
    labels = np.stack(
        list(splits["train"].map(lambda _, y: y).as_numpy_iterator())
    )
    train_idx, val_idx = validation_split.carve(
        labels, validation_fraction, seed
    )
    in_val = np.zeros(len(labels), dtype=bool)
    in_val[val_idx] = True
    mask = tf.constant(in_val)
    indexed = splits["train"].enumerate()
    splits["train"] = indexed.filter(lambda i, _: tf.logical_not(mask[i])).map(
        lambda _, pair: pair
    )
    splits["validation"] = indexed.filter(lambda i, _: mask[i]).map(
        lambda _, pair: pair
    )
    counts["train"], counts["validation"] = len(train_idx), len(val_idx)
    for split in ("train", "validation"):
        splits[split] = splits[split].apply(
            tf.data.experimental.assert_cardinality(counts[split])
        )
