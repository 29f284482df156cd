"""`Examples`: image files or arrays with their labels, before tf.data."""

import dataclasses

import numpy as np

from kerastl.data import images
from kerastl.data.spec import MAX_PIXELS
from kerastl.data.spec import DataError
from kerastl.data.spec import SkippedFile

# An image found in several splits stays in the first of these: evaluation
# splits win, so nothing evaluated on was learnt from (CSV and folder
# sources).
SPLIT_PRIORITY = ("test", "validation", "train")


@dataclasses.dataclass
class Examples:
    """One split's examples: file paths or an image array, and labels.

    Args:
        labels: NumPy array. Integer `(N,)` or multi-hot float32 `(N, C)`.
        paths: list of str or `None`. Image files (file sources).
        images: NumPy array or `None`. `(N, H, W, C)` images (arrays).

    Example:
    ```python
    examples = Examples(np.array([0, 1]), paths=["a.jpg", "b.jpg"])
    train = examples.take([0])
    ```
    """

    labels: np.ndarray
    paths: list | None = None
    images: np.ndarray | None = None

    def __len__(self):
        return len(self.labels)

    def take(self, indices):
        """Returns the examples at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return Examples(
            labels=self.labels[indices],
            paths=None
            if self.paths is None
            else [self.paths[i] for i in indices],
            images=None if self.images is None else self.images[indices],
        )

    @staticmethod
    def concatenate(parts):
        """One `Examples` holding `parts` (all file-based) in order."""
        return Examples(
            labels=np.concatenate([part.labels for part in parts]),
            paths=[path for part in parts for path in part.paths],
        )


def encode_labels(label_sets, class_names, multi_label, where):
    """Turns lists of label names into integer or multi-hot labels.

    Args:
        label_sets: list of lists of str, one list per example.
        class_names: list of str. The classes, in label order.
        multi_label: bool. Multi-hot float32 `(N, C)` if `True`, else
            integer `(N,)` (each example must then have exactly one label).
        where: list of str. Where each example comes from, for errors.

    Example:
    ```python
    encode_labels([["cat"], ["dog"]], ["cat", "dog"], False, ["r1", "r2"])
    ```
    """
    index = {name: i for i, name in enumerate(class_names)}
    if multi_label:
        labels = np.zeros((len(label_sets), len(class_names)), np.float32)
    else:
        labels = np.zeros((len(label_sets),), np.int64)
    for row, (names, place) in enumerate(zip(label_sets, where, strict=True)):
        unknown = [name for name in names if name not in index]
        if unknown:
            raise DataError(
                f"{place} has label(s) {unknown} outside the class list "
                f"{list(class_names)}. Fix the label, or add the class to "
                "data.class_names."
            )
        if multi_label:
            labels[row, [index[name] for name in names]] = 1.0
        elif len(names) != 1:
            raise DataError(
                f"{place} has {len(names)} labels {list(names)}, but the "
                "task is single-label (one class per image). Give each "
                "image exactly one label, or train with multi_label=True."
            )
        else:
            labels[row] = index[names[0]]
    return labels


def drop_unreadable(splits, max_pixels=MAX_PIXELS, check=None):
    """Checks every file of every split; returns the readable examples.

    Args:
        splits: dict of split name to file-based `Examples`.
        max_pixels: int. Images with more pixels are skipped too. Defaults
            to `MAX_PIXELS` (50 million).
        check: callable or `None`. Takes the list of paths and returns,
            for each, `None` or why it cannot be read, such as
            `PreparedImages.prepare`, which checks files by preparing
            them. `None` for `images.check_files`. Defaults to `None`.

    Returns:
        `(splits, skipped)`: the splits without unreadable files, and a
        `SkippedFile` for each file left out.

    Example:
    ```python
    splits, skipped = drop_unreadable({"train": examples})
    ```
    """
    names = list(splits)
    paths = [path for name in names for path in splits[name].paths]
    if check is None:
        reasons = iter(images.check_files(paths, max_pixels))
    else:
        reasons = iter(check(paths))
    skipped = []
    kept = {}
    for name in names:
        keep = []
        for i, path in enumerate(splits[name].paths):
            reason = next(reasons)
            if reason is None:
                keep.append(i)
            else:
                skipped.append(SkippedFile(path, reason))
        kept[name] = splits[name].take(keep)
    return kept, skipped


def first_of_each_class(examples, count):
    """Returns up to `count` examples, taken in turn from each class.

    Args:
        examples: `Examples`.
        count: int. How many to keep.

    Example:
    ```python
    small = first_of_each_class(examples, 8)
    ```
    """
    labels = examples.labels
    keys = labels if labels.ndim == 1 else np.argmax(labels, axis=-1)
    rank = np.zeros(len(keys), np.int64)
    seen = {}
    for i, key in enumerate(keys.tolist()):
        rank[i] = seen.get(key, 0)
        seen[key] = rank[i] + 1
    order = np.lexsort((keys, rank))
    return examples.take(np.sort(order[:count]))
