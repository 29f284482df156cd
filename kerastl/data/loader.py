"""`load_data`: a `DataSpec` in, batched train / validation / test out."""

import pathlib

import numpy as np

from kerastl.data import pipeline
from kerastl.data import synthetic
from kerastl.data import tfds_source
from kerastl.data import validation_split
from kerastl.data.array_source import load_arrays
from kerastl.data.csv_source import load_table
from kerastl.data.examples import Examples
from kerastl.data.examples import drop_unreadable
from kerastl.data.examples import first_of_each_class
from kerastl.data.folder_source import load_folder
from kerastl.data.idx_source import load_idx
from kerastl.data.prepared import PreparedImages
from kerastl.data.spec import MAX_PIXELS
from kerastl.data.spec import DataBundle
from kerastl.data.spec import DataError
from kerastl.data.spec import DataSpec

# `--smoke` carves a third of its few training examples for validation, so
# validation gets about one batch.
_SMOKE_VALIDATION_FRACTION = 1 / 3


def _smoke_counts(batch_size):
    return {
        "train": 2 * batch_size,
        "validation": batch_size,
        "test": batch_size,
    }


def _check_labels(class_names, splits, multi_label, num_classes, spec):
    if num_classes is not None and num_classes != len(class_names):
        raise DataError(
            f"The model has num_classes={num_classes}, but the data "
            f"{spec.name or spec.source!r} has {len(class_names)} classes "
            f"({_preview(class_names)}). Set num_classes to "
            f"{len(class_names)}, or fix the data or data.class_names."
        )
    if len(set(class_names)) != len(class_names):
        raise DataError(
            f"The class names {class_names} repeat a name. Give each class "
            "one distinct name in data.class_names."
        )
    if not multi_label and any(
        examples.labels.ndim == 2 for examples in splits.values()
    ):
        raise DataError(
            "The data has multi-hot labels (several classes per image), "
            "but the task is single-label. Train with multi_label=True, or "
            "give one integer label per image."
        )


def _preview(names, limit=8):
    shown = ", ".join(map(str, names[:limit]))
    return shown + (", ..." if len(names) > limit else "")


def _file_or_array_splits(spec, multi_label, num_classes, smoke):
    if spec.source == "folder":
        return load_folder(spec, multi_label)
    if spec.source == "csv":
        return load_table(spec, multi_label)
    if spec.source == "idx":
        return load_idx(spec, stand_in=smoke)
    # `num_classes` counts the classes kept, not the source's.
    return load_arrays(spec, None if spec.classes else num_classes)


def _select_classes(class_names, splits, classes, multi_label):
    """Keeps `classes` (source indices), relabelled 0..k-1 in that order."""
    if multi_label or any(e.labels.ndim != 1 for e in splits.values()):
        raise DataError(
            "data.classes needs single-label data (one integer label per "
            "image). Leave data.classes unset for multi-label data."
        )
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < len(class_names)]
    if bad or not classes or len(set(classes)) != len(classes):
        raise DataError(
            f"data.classes={tuple(classes)} does not select from the "
            f"{len(class_names)} classes ({_preview(class_names)}). Give "
            f"distinct indices in [0, {len(class_names)}), in the order of "
            "the new labels."
        )
    relabel = np.full(len(class_names), -1, np.int64)
    relabel[classes] = np.arange(len(classes))
    selected = {}
    for split, examples in splits.items():
        kept = examples.take(np.flatnonzero(relabel[examples.labels] >= 0))
        kept.labels = relabel[kept.labels]
        selected[split] = kept
    return [class_names[c] for c in classes], selected


def _members(labels, label):
    """Whether each example has `label` (integer or multi-hot labels)."""
    return labels[:, label] > 0 if labels.ndim == 2 else labels == label


def _check_no_class_lost(class_names, before, after, skipped):
    """Every class with training files keeps at least one readable one.

    Otherwise the model would get an output for a class it never sees.
    """
    lost = [
        label
        for label in range(len(class_names))
        if _members(before.labels, label).any()
        and not _members(after.labels, label).any()
    ]
    if not lost:
        return
    reasons = {item.path: item.reason for item in skipped}
    first = before.paths[np.argmax(_members(before.labels, lost[0]))]
    classes = ", ".join(
        f"{class_names[label]!r} "
        f"({_members(before.labels, label).sum()} file(s))"
        for label in lost
    )
    raise DataError(
        f"Every training file of the class(es) {classes} is unreadable and "
        f"was skipped (e.g. {first!r}: {reasons[first]}), so the model would "
        "have a class it never sees. Fix or replace those files, or remove "
        "the class (its folder, or its rows and its name in "
        "data.class_names)."
    )


def _sample_per_class(examples, count, class_names, seed, smoke):
    """`count` examples of each class, drawn under `seed`, in data order."""
    if count < 1:
        raise DataError(
            f"data.train_per_class must be at least 1, got {count}. Leave "
            "it unset (None) to train on all the training data."
        )
    rng = np.random.default_rng(seed)
    chosen = []
    for label, name in enumerate(class_names):
        members = np.flatnonzero(examples.labels == label)
        if len(members) < count and not smoke:
            raise DataError(
                f"data.train_per_class={count}, but class {name!r} has only "
                f"{len(members)} training example(s) left after carving "
                "validation. Lower train_per_class or validation_fraction."
            )
        chosen.append(rng.permutation(members)[:count])
    return examples.take(np.sort(np.concatenate(chosen)))


def _load_local(
    spec, *, multi_label, seed, num_classes, smoke, batch_size, prepared
):
    """Folder, CSV, arrays and IDX: lists, checks (or prepares) files,
    carves validation, picks `classes` and `train_per_class`."""
    class_names, splits = _file_or_array_splits(
        spec, multi_label, num_classes, smoke
    )
    if spec.classes is not None:
        class_names, splits = _select_classes(
            class_names, splits, spec.classes, multi_label
        )
    _check_labels(class_names, splits, multi_label, num_classes, spec)
    fraction = spec.validation_fraction
    if smoke:
        counts = _smoke_counts(batch_size)
        if "validation" not in splits:
            counts["train"] += batch_size
            fraction = _SMOKE_VALIDATION_FRACTION
        splits = {
            split: first_of_each_class(examples, counts[split])
            for split, examples in splits.items()
        }
    skipped = []
    if spec.source in ("folder", "csv"):
        # Before any training: an unreadable file is reported, not fatal.
        before = splits["train"]
        check = prepared.prepare if prepared is not None else None
        splits, skipped = drop_unreadable(splits, spec.max_pixels, check)
    for split, examples in splits.items():
        if len(examples) == 0:
            raise DataError(
                f"The {split} split of {spec.name!r} has no readable images "
                f"({len(skipped)} file(s) skipped as unreadable). Add "
                "images, or fix the paths."
            )
    # A smoke run reads each class's first few files only: they can all be
    # bad while the class has good ones.
    if spec.source in ("folder", "csv") and not smoke:
        _check_no_class_lost(class_names, before, splits["train"], skipped)
    if "validation" not in splits:
        train_idx, val_idx = validation_split.carve(
            splits["train"].labels, fraction, seed
        )
        train = splits["train"]
        splits["train"], splits["validation"] = (
            train.take(train_idx),
            train.take(val_idx),
        )
    if spec.train_per_class is not None:
        splits["train"] = _sample_per_class(
            splits["train"], spec.train_per_class, class_names, seed, smoke
        )
    return class_names, splits, skipped


def _load_tfds(spec, *, multi_label, seed, num_classes, smoke, batch_size):
    if not smoke:
        class_names, datasets, counts = tfds_source.load_tfds(
            spec,
            multi_label=multi_label,
            seed=seed,
            validation_fraction=spec.validation_fraction,
        )
        return class_names, datasets, counts
    import tensorflow_datasets as tfds

    sizes = _smoke_counts(batch_size)
    try:
        # The real loading code, on tfds' generated stand-in examples.
        with tfds.testing.mock_data(num_examples=3 * batch_size):
            class_names, datasets, counts = tfds_source.load_tfds(
                spec,
                multi_label=multi_label,
                seed=seed,
                validation_fraction=_SMOKE_VALIDATION_FRACTION,
            )
        datasets = {
            split: ds.take(sizes[split]) for split, ds in datasets.items()
        }
        counts = {
            split: min(count, sizes[split]) for split, count in counts.items()
        }
        return class_names, datasets, counts
    except DataError:
        raise
    except Exception:
        # tfds cannot mock this dataset; random images of its classes.
        _, class_names, _ = tfds_source.builder_info(spec)
    datasets = {}
    counts = {}
    splits = ["train", "validation"] + (["test"] if spec.test else [])
    for offset, split in enumerate(splits):
        examples = synthetic.random_examples(
            sizes[split], (64, 64), len(class_names), multi_label, seed + offset
        )
        datasets[split] = pipeline.examples_dataset(examples)
        counts[split] = sizes[split]
    return class_names, datasets, counts


def load_data(
    spec,
    *,
    image_size,
    batch_size,
    multi_label,
    seed=0,
    augment=None,
    num_classes=None,
    smoke=False,
    ordered=False,
):
    """Loads a dataset as batched, model-ready `tf.data` splits.

    Every split yields `(images, labels)` batches: float32 RGB images
    `(B, H, W, 3)` in [0, 255], not normalized (the model normalizes), of
    `image_size` (center-cropped to its aspect ratio, then resized); int32
    labels `(B,)`, or float32 multi-hot `(B, num_classes)` when
    `multi_label`. Training data is shuffled and augmented under `seed`;
    validation and test are neither. All checks (unreadable files, label
    errors, class counts) run before this returns, so a bad dataset fails
    before training: unreadable image files are skipped and listed in
    `DataBundle.skipped`, other problems raise `DataError`.

    Args:
        spec: `DataSpec`. Where the data comes from.
        image_size: `(height, width)` of the model's input.
        batch_size: int.
        multi_label: bool. Several classes per image (sigmoid head) if
            `True`.
        seed: int. Seeds the validation carving, shuffling and
            augmentation. Defaults to `0`.
        augment: `Augment` or `None`. Training augmentation; `None` for
            none. Defaults to `None`.
        num_classes: int or `None`. The model's class count; a different
            count in the data is an error. Defaults to `None`.
        smoke: bool. Replace the data with a few examples of the same
            classes (`2 * batch_size` for training, `batch_size` for
            validation and test): tfds datasets are mocked offline,
            folder, CSV, array and IDX sources keep their first examples,
            and absent IDX files give random stand-ins. Defaults to
            `False`.
        ordered: bool. Every split in source order, neither shuffled nor
            augmented, with `DataBundle.examples` saying what each
            example is: for inspecting data (`kerastl doctor`, `kerastl
            select`) rather than training on it. Defaults to `False`.

    Returns:
        A `DataBundle`.

    Example:
    ```python
    bundle = load_data(
        DataSpec("folder", "/data/flowers"),
        image_size=(224, 224),
        batch_size=32,
        multi_label=False,
        augment=Augment(random_resized_crop=True),
    )
    model.fit(
        bundle.splits["train"],
        validation_data=bundle.splits["validation"],
        epochs=3,
    )
    ```
    """
    if spec.source != "arrays" and not spec.name:
        raise DataError(
            f"data.name is not set. Name the {spec.source} dataset: a tfds "
            "name, a folder or a CSV file."
        )
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}.")
    subset = spec.classes is not None or spec.train_per_class is not None
    if spec.source == "tfds" and subset:
        raise DataError(
            "data.classes and data.train_per_class work with the folder, "
            "csv, arrays and idx sources, not tfds. Select classes with "
            "the tfds split, or load the data as arrays."
        )
    kwargs = dict(
        multi_label=multi_label,
        seed=seed,
        num_classes=num_classes,
        smoke=smoke,
        batch_size=batch_size,
    )
    skipped = []
    prepared = None
    examples = None
    if spec.source == "tfds":
        class_names, datasets, counts = _load_tfds(spec, **kwargs)
        _check_labels(class_names, {}, multi_label, num_classes, spec)
        examples = dict.fromkeys(datasets)
    else:
        if spec.source in ("folder", "csv") and spec.cache_images:
            prepared = PreparedImages(
                pipeline.decode_size(image_size), spec.max_pixels
            )
        class_names, examples, skipped = _load_local(
            spec, prepared=prepared, **kwargs
        )
        datasets = {
            split: pipeline.examples_dataset(split_examples)
            for split, split_examples in examples.items()
        }
        counts = {split: len(part) for split, part in examples.items()}
    splits = {
        split: pipeline.make_split(
            dataset,
            image_size=image_size,
            batch_size=batch_size,
            num_classes=len(class_names),
            multi_label=multi_label,
            training=split == "train" and not ordered,
            seed=seed,
            augment=augment,
            count=counts[split],
            max_pixels=spec.max_pixels,
            prepared=prepared,
        )
        for split, dataset in datasets.items()
    }
    return DataBundle(
        class_names=list(class_names),
        splits=splits,
        num_examples=counts,
        skipped=sorted(skipped, key=lambda s: s.path),
        multi_label=multi_label,
        examples=examples if ordered else None,
    )


def load_labelled_images(
    path,
    *,
    class_names,
    image_size,
    batch_size,
    multi_label,
    split=None,
    max_pixels=MAX_PIXELS,
):
    """Every labelled image of a folder or CSV, as one evaluation split.

    For `kerastl evaluate --data`: unlike `load_data`, nothing is carved
    off, shuffled or augmented. The labels must be among the model's
    `class_names` (a folder need not have every class).

    Args:
        path: a folder with one subfolder of images per class (or `train/`,
            `validation/`, `test/` subfolders holding those), or a CSV file
            (`path` and `labels` columns, see `DataSpec`).
        class_names: list of str. The model's classes, in label order.
        image_size: `(height, width)` of the model's input.
        batch_size: int.
        multi_label: bool.
        split: str or `None`. With split subfolders or a CSV `split`
            column, which split; `None` takes `test` when there is one,
            else everything.
        max_pixels: int. Images with more pixels are skipped. Defaults to
            `MAX_PIXELS` (50 million).

    Returns:
        `(dataset, count, skipped, name)`: batched `(images, labels)`, the
        number of examples, the `SkippedFile`s, and a name for the split
        (the folder or file name, plus the split).

    Example:
    ```python
    dataset, count, skipped, name = load_labelled_images(
        "new_photos/", class_names=model.class_names,
        image_size=model.image_size, batch_size=32, multi_label=False,
    )
    ```
    """
    path = pathlib.Path(path)
    if path.is_file():
        spec = DataSpec("csv", str(path), class_names=tuple(class_names))
        _, splits = load_table(spec, multi_label)
    else:
        spec = DataSpec("folder", str(path), class_names=tuple(class_names))
        _, splits = load_folder(spec, multi_label, every_class=False)
    if split is None:
        split = "test" if "test" in splits else None
    if split is not None and split not in splits:
        raise DataError(
            f"{str(path)!r} has no {split!r} split; it has "
            f"{', '.join(splits)}. Pick one with --split."
        )
    chosen = {split: splits[split]} if split else splits
    chosen, skipped = drop_unreadable(chosen, max_pixels)
    examples = list(chosen.values())
    merged = Examples.concatenate(examples)
    if len(merged) == 0:
        raise DataError(
            f"{str(path)!r} holds no readable labelled images "
            f"({len(skipped)} file(s) unreadable)."
        )
    dataset = pipeline.make_split(
        pipeline.examples_dataset(merged),
        image_size=image_size,
        batch_size=batch_size,
        num_classes=len(class_names),
        multi_label=multi_label,
        training=False,
        seed=0,
        augment=None,
        count=len(merged),
        max_pixels=max_pixels,
    )
    name = path.stem + (f"-{split}" if split else "")
    return dataset, len(merged), skipped, name
