"""In-memory NumPy arrays of images and labels."""

import numpy as np

from kerastl.data.examples import Examples
from kerastl.data.spec import DataError


def _images(images, split):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) grayscale.
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(
            f"The {split} images have shape {images.shape}; expected "
            "(N, H, W, 3) RGB or (N, H, W) / (N, H, W, 1) grayscale. "
            "Reshape data.arrays accordingly."
        )
    if images.dtype != np.uint8:
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(
                f"The {split} images hold values outside [0, 255]. Give "
                "uint8 images (or values in [0, 255])."
            )
        images = images.astype(np.float32)
    return images


def _labels(labels, split, num_images):
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or len(labels) != num_images:
        raise DataError(
            f"The {split} labels have shape {labels.shape} for "
            f"{num_images} images; expected integer (N,) or multi-hot "
            "(N, num_classes) labels, one per image."
        )
    if labels.ndim == 2:
        return labels.astype(np.float32)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"The {split} labels are {labels.dtype}, not integers. Give "
            "integer class indices (N,) or multi-hot (N, num_classes)."
        )
    return labels.astype(np.int64)


def load_arrays(spec, num_classes):
    """Checks and wraps `spec.arrays`.

    Args:
        spec: a `DataSpec` with `source="arrays"`.
        num_classes: int or `None`. Used for class names when `spec` gives
            none and labels are integers.

    Returns:
        `(class_names, splits)`: a list of str (`"0"`, `"1"`, ... unless
        `spec.class_names`) and a dict of split name to `Examples`.

    Example:
    ```python
    spec = DataSpec("arrays", arrays={"train": (images, labels)})
    class_names, splits = load_arrays(spec, num_classes=None)
    ```
    """
    arrays = spec.arrays or {}
    unknown = sorted(set(arrays) - {"train", "validation", "test"})
    if "train" not in arrays or unknown:
        raise DataError(
            f"data.arrays has keys {sorted(arrays)}; it needs a 'train' "
            "entry and may have 'validation' and 'test', each an "
            "(images, labels) pair."
        )
    splits = {}
    for split, pair in arrays.items():
        images, labels = pair
        images = _images(images, split)
        splits[split] = Examples(
            _labels(labels, split, len(images)), images=images
        )
    labels = splits["train"].labels
    if spec.class_names:
        count = len(spec.class_names)
    elif labels.ndim == 2:
        count = labels.shape[1]
    else:
        seen = max(int(s.labels.max(initial=-1)) for s in splits.values()) + 1
        count = max(seen, num_classes or 0)
    for split, examples in splits.items():
        bad = (
            examples.labels.shape[1] != count
            if examples.labels.ndim == 2
            else examples.labels.size
            and (examples.labels.min() < 0 or examples.labels.max() >= count)
        )
        if bad:
            raise DataError(
                f"The {split} labels do not fit {count} classes. Integer "
                f"labels must lie in [0, {count}) and multi-hot labels "
                f"have {count} columns; fix the labels or data.class_names."
            )
    names = spec.class_names or [str(i) for i in range(count)]
    return list(names), splits
