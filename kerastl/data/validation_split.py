"""Carving a validation split off the training data."""

import numpy as np

from kerastl.data.spec import DataError


def carve(labels, fraction, seed):
    """Splits example indices into training and validation, seeded.

    Single-label data is stratified: each class gives its share (largest
    remainders round, and every class keeps a training example). Multi-hot
    labels are split uniformly at random.

    Args:
        labels: NumPy array. Integer `(N,)` or multi-hot `(N, C)` labels.
        fraction: float. The share of examples for validation, in (0, 1).
        seed: int. The same seed gives the same split.

    Returns:
        `(train_indices, validation_indices)`, each sorted.

    Example:
    ```python
    train_idx, val_idx = carve(np.array([0, 0, 1, 1]), 0.5, seed=0)
    ```
    """
    labels = np.asarray(labels)
    total = len(labels)
    if not 0.0 < fraction < 1.0:
        raise DataError(
            f"validation_fraction must be between 0 and 1, got {fraction}. "
            "Set data.validation_fraction to e.g. 0.1, or name a validation "
            "split with data.validation."
        )
    if total < 2:
        raise DataError(
            f"Cannot carve a validation split out of {total} training "
            "example(s). Add training data or name a validation split with "
            "data.validation."
        )
    rng = np.random.default_rng(seed)
    target = min(total - 1, max(1, round(fraction * total)))
    if labels.ndim != 1:
        val = rng.permutation(total)[:target]
        return _complement(val, total), np.sort(val)

    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse)
    quotas = counts * (target / total)
    per_class = np.minimum(np.floor(quotas).astype(int), counts - 1)
    # Largest remainders first; random tie-breaks keep it unbiased.
    order = np.lexsort((rng.random(len(classes)), -(quotas - per_class)))
    for c in order:
        if per_class.sum() >= target:
            break
        if per_class[c] < counts[c] - 1:
            per_class[c] += 1
    val = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        val.append(rng.permutation(members)[: per_class[c]])
    val = np.concatenate(val).astype(np.int64)
    if len(val) == 0:
        # Every class has a single example: nothing to stratify.
        val = rng.permutation(total)[:target]
    return _complement(val, total), np.sort(val)


def _complement(indices, total):
    mask = np.ones(total, dtype=bool)
    mask[indices] = False
    return np.flatnonzero(mask)
