"""Per-class decision thresholds for multi-label classifiers.

A sigmoid head scores every class independently, and 0.5 is rarely the
best cut: rare classes get low scores and are never predicted. kerastl
tunes one threshold per class on the validation split, either to maximize
that class's F1 or, given a target precision, to reach it with the most
recall. `TransferClassifier(thresholds=...)` stores them; `predict`,
`evaluate` and exports use them.
"""

import numpy as np
from sklearn import metrics

from kerastl.models.decisions import DEFAULT_THRESHOLD


def tune_thresholds(y_true, probs, target_precision=None):
    """One decision threshold per class, tuned on held-out predictions.

    For each class the candidates are its distinct scores; a class is
    predicted when `prob >= threshold`. The chosen threshold sits halfway
    between the chosen score and the next lower score, so the decisions on
    these examples are unchanged while unseen scores just below the chosen
    one are not cut off by a hair. Classes without positive (or without
    negative) examples keep 0.5.

    Args:
        y_true: multi-hot labels `(n, num_classes)`.
        probs: predicted probabilities `(n, num_classes)`.
        target_precision: float in (0, 1] or `None`. `None` maximizes each
            class's F1. A float picks, per class, the lowest threshold whose
            precision reaches it (the most recall at that precision);
            classes that cannot reach it get their F1-best threshold and
            are listed in the returned `unmet`.

    Returns:
        `(thresholds, unmet)`: a list of floats, one per class, and the list
        of class indices whose target precision was not reachable.

    Example:
    ```python
    thresholds, _ = kerastl.evaluate.thresholds.tune_thresholds(y_val, p_val)
    model.set_thresholds(thresholds)
    ```
    """
    y_true = np.asarray(y_true).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    if target_precision is not None and not 0 < target_precision <= 1:
        raise ValueError(
            "`target_precision` must be in (0, 1], e.g. 0.9. Received: "
            f"target_precision={target_precision!r}"
        )
    thresholds, unmet = [], []
    for c in range(y_true.shape[1]):
        labels, scores = y_true[:, c], probs[:, c]
        if labels.min() == labels.max():
            thresholds.append(DEFAULT_THRESHOLD)
            continue
        chosen = None
        if target_precision is not None:
            chosen = _lowest_at_precision(labels, scores, target_precision)
            if chosen is None:
                unmet.append(c)
        if chosen is None:
            chosen = _best_f1(labels, scores)
        thresholds.append(_below(chosen, scores))
    return thresholds, unmet


def _best_f1(labels, scores):
    precision, recall, candidates = metrics.precision_recall_curve(
        labels, scores
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    # The last point (recall 0) has no threshold.
    f1 = np.nan_to_num(f1[:-1])
    # Among equal F1s the highest threshold: the fewest false alarms.
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(candidates[best])


def _lowest_at_precision(labels, scores, target):
    precision, _, candidates = metrics.precision_recall_curve(labels, scores)
    reached = np.flatnonzero(precision[:-1] >= target)
    return float(candidates[reached[0]]) if len(reached) else None


def _below(score, scores):
    """Halfway from `score` down to the next lower score (or to 0)."""
    lower = scores[scores < score]
    return float((score + (lower.max() if len(lower) else 0.0)) / 2)
