"""Metrics from scikit-learn on a model's predictions, and their tables.

The keys a split gets in `metrics.json`:

- multi-class: `accuracy`, `top_3_accuracy` and `top_5_accuracy` (when
  there are more classes than k), `precision_macro`, `recall_macro`,
  `f1_macro`, `precision_weighted`, `recall_weighted`, `f1_weighted`,
  `ece` (expected calibration error of the top-1 probability), `nll`
  (log loss), `confusion_matrix` (rows: true class, columns: predicted
  class), `per_class` (`precision`, `recall`, `f1`, `support` per class
  name);
- multi-label, at the decision threshold 0.5: `map_macro` (mean average
  precision over the classes that have positives), `map_micro`,
  `roc_auc_macro` (over the classes with positives and negatives),
  `roc_auc_micro`, `precision_micro`, `recall_micro`, `f1_micro`,
  `f1_macro`, `f1_samples`, `hamming_loss`, `subset_accuracy`, `ece` (per
  label), `per_class` (`ap`, `roc_auc`, `precision`, `recall`, `f1`,
  `support`, and `threshold` when tuned) and, for a model with tuned
  thresholds, `tuned_thresholds` holding the threshold-dependent keys
  again at those thresholds;
- both: `num_examples`.

Metrics a split cannot define (ROC-AUC of a class without negatives) are
`None`.
"""

import dataclasses
import heapq

import numpy as np
from scipy import special
from sklearn import metrics

from kerastl.evaluate import calibration
from kerastl.models import decisions
from kerastl.utils import distribution

MULTI_CLASS_KEYS = (
    "accuracy",
    "top_3_accuracy",
    "top_5_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "ece",
    "ece_uncalibrated",
    "nll",
)
MULTI_LABEL_KEYS = (
    "map_macro",
    "map_micro",
    "roc_auc_macro",
    "roc_auc_micro",
    "precision_micro",
    "recall_micro",
    "f1_micro",
    "f1_macro",
    "f1_samples",
    "hamming_loss",
    "subset_accuracy",
    "ece",
    "ece_uncalibrated",
)
# The multi-label keys that depend on the decision thresholds.
THRESHOLD_KEYS = (
    "precision_micro",
    "recall_micro",
    "f1_micro",
    "f1_macro",
    "f1_samples",
    "hamming_loss",
    "subset_accuracy",
)
TOP_K = (3, 5)


@dataclasses.dataclass
class Predictions:
    """A model's outputs on one split, aligned with the labels.

    Attributes:
        labels: int labels `(n,)`, or multi-hot `(n, num_classes)`.
        logits: `(n, num_classes)` float32, before temperature scaling.
        mistakes: indices into the split of its most confidently wrong
            examples, most confident first (see `predict_split`).
        mistake_images: the images at those indices.
    """

    labels: np.ndarray
    logits: np.ndarray
    mistakes: np.ndarray
    mistake_images: np.ndarray

    def probabilities(self, model):
        """The model's probabilities at its current temperature."""
        return probabilities(self.logits, model.multi_label, model.temperature)


def probabilities(logits, multi_label, temperature=1.0):
    """Softmax or sigmoid of `logits / temperature`, in float64.

    Example:
    ```python
    probs = kerastl.evaluate.metrics.probabilities(logits, False, 1.3)
    ```
    """
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if multi_label:
        return special.expit(scaled)
    return special.softmax(scaled, axis=1)


def predict_split(model, dataset, num_mistakes=16):
    """Labels and logits for every example of a dataset, in one pass.

    One pass, so labels and predictions stay aligned even for a dataset
    whose order is not fixed. The images of the `num_mistakes` most
    confidently wrong examples are kept on the way (for the report's
    grid) without holding the whole split in memory. Multi-class: wrong
    top-1 class, ranked by its probability. Multi-label: images with a
    wrong decision at 0.5, ranked by the most confident wrong one.

    Args:
        model: a `kerastl.TransferClassifier`.
        dataset: a `tf.data.Dataset` of `(images, labels)` batches, or
            `(images, labels, weights)`: rows of weight 0 are left out.
        num_mistakes: int. How many mistakes' images to keep.

    Returns:
        A `Predictions`.

    Example:
    ```python
    predictions = kerastl.evaluate.metrics.predict_split(model, test_ds)
    probs = predictions.probabilities(model)
    ```
    """
    logits_model = model.logits_model()
    labels, logits, heap = [], [], []
    offset = 0
    for images, batch_labels, *weights in dataset.as_numpy_iterator():
        batch_logits = np.asarray(
            distribution.predict_on_batch(logits_model, images),
            dtype=np.float32,
        )
        if weights:
            # Rows of weight 0 pad a batch for data-parallel devices.
            (real,) = np.nonzero(weights[0])
            images, batch_labels = images[real], batch_labels[real]
            batch_logits = batch_logits[real]
        labels.append(batch_labels)
        logits.append(batch_logits)
        probs = probabilities(batch_logits, model.multi_label)
        scores = _mistake_confidence(batch_labels, probs, model.multi_label)
        for i in np.flatnonzero(scores > 0):
            item = (float(scores[i]), -(offset + i), images[i])
            # A min-heap of the most confident mistakes so far.
            if len(heap) < num_mistakes:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)
        offset += len(batch_labels)
    ranked = sorted(heap, key=lambda item: item[:2], reverse=True)
    num_classes = model.num_classes
    empty_labels = (0, num_classes) if model.multi_label else (0,)
    return Predictions(
        labels=np.concatenate(labels) if labels else np.zeros(empty_labels),
        logits=(
            np.concatenate(logits)
            if logits
            else np.zeros((0, num_classes), np.float32)
        ),
        mistakes=np.array([-item[1] for item in ranked], dtype=int),
        mistake_images=np.array([item[2] for item in ranked]),
    )


def _mistake_confidence(labels, probs, multi_label):
    """Each example's confidence in a wrong answer; 0 if it is right."""
    if multi_label:
        wrong = (probs >= 0.5) != (np.asarray(labels) >= 0.5)
        confidence = np.maximum(probs, 1 - probs)
        return np.max(np.where(wrong, confidence, 0.0), axis=1)
    predicted = probs.argmax(axis=1)
    top = probs.max(axis=1)
    return np.where(predicted != np.asarray(labels), top, 0.0)


def classification_metrics(
    y_true, probs, multi_label, num_classes, class_names=None, thresholds=None
):
    """scikit-learn metrics for one split, as plain JSON-ready values.

    Args:
        y_true: int labels `(n,)`, or multi-hot `(n, num_classes)`.
        probs: predicted probabilities `(n, num_classes)`.
        multi_label: bool. Which family of metrics to compute.
        num_classes: int. Fixes the confusion matrix's size.
        class_names: list of str or `None`. Keys of `per_class`; defaults
            to "0", "1", ...
        thresholds: list of floats or `None`. Multi-label: tuned per-class
            thresholds, reported under `tuned_thresholds`.

    Example:
    ```python
    kerastl.evaluate.metrics.classification_metrics(y, p, False, 37)["f1_macro"]
    ```
    """
    names = class_names or [str(i) for i in range(num_classes)]
    probs = np.asarray(probs, dtype=np.float64)
    result = {"num_examples": int(len(y_true))}
    if len(y_true) == 0:
        return result
    if multi_label:
        return _multi_label(result, y_true, probs, names, thresholds)
    return _multi_class(result, np.asarray(y_true).astype(int), probs, names)


def _multi_class(result, y_true, probs, names):
    labels = list(range(len(names)))
    y_pred = probs.argmax(axis=1)
    result["accuracy"] = float(metrics.accuracy_score(y_true, y_pred))
    for k in TOP_K:
        if k < len(names):
            result[f"top_{k}_accuracy"] = float(
                metrics.top_k_accuracy_score(y_true, probs, k=k, labels=labels)
            )
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        result[f"precision_{average}"] = float(precision)
        result[f"recall_{average}"] = float(recall)
        result[f"f1_{average}"] = float(f1)
    result["ece"] = calibration.expected_calibration_error(
        y_true, probs, multi_label=False
    )
    result["nll"] = float(metrics.log_loss(y_true, probs, labels=labels))
    result["confusion_matrix"] = metrics.confusion_matrix(
        y_true, y_pred, labels=labels
    ).tolist()
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    result["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }
    return result


def _multi_label(result, y_true, probs, names, thresholds):
    y_true = np.asarray(y_true).astype(int)
    positives = y_true.sum(axis=0) > 0
    both = positives & (y_true.sum(axis=0) < len(y_true))
    result["map_macro"] = _score(
        metrics.average_precision_score, y_true, probs, positives, "macro"
    )
    result["map_micro"] = _score(
        metrics.average_precision_score, y_true, probs, positives, "micro"
    )
    result["roc_auc_macro"] = _score(
        metrics.roc_auc_score, y_true, probs, both, "macro"
    )
    result["roc_auc_micro"] = (
        float(metrics.roc_auc_score(y_true, probs, average="micro"))
        if 0 < y_true.sum() < y_true.size
        else None
    )
    result.update(_thresholded(y_true, probs, None))
    result["ece"] = calibration.expected_calibration_error(
        y_true, probs, multi_label=True
    )
    predicted = decisions.apply_thresholds(probs, thresholds)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, predicted, average=None, zero_division=0
    )
    per_class = {}
    for c, name in enumerate(names):
        per_class[name] = {
            "ap": float(
                metrics.average_precision_score(y_true[:, c], probs[:, c])
            )
            if positives[c]
            else None,
            "roc_auc": float(metrics.roc_auc_score(y_true[:, c], probs[:, c]))
            if both[c]
            else None,
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
        if thresholds is not None:
            per_class[name]["threshold"] = float(thresholds[c])
    result["per_class"] = per_class
    if thresholds is not None:
        result["tuned_thresholds"] = _thresholded(y_true, probs, thresholds)
    return result


def _score(function, y_true, probs, columns, average):
    """`function` over the classes in `columns`; `None` if there are none."""
    if not columns.any():
        return None
    return float(
        function(y_true[:, columns], probs[:, columns], average=average)
    )


def _thresholded(y_true, probs, thresholds):
    y_pred = decisions.apply_thresholds(probs, thresholds)
    result = {}
    precision, recall, _, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, average="micro", zero_division=0
    )
    result["precision_micro"] = float(precision)
    result["recall_micro"] = float(recall)
    for average in ("micro", "macro", "samples"):
        result[f"f1_{average}"] = float(
            metrics.f1_score(y_true, y_pred, average=average, zero_division=0)
        )
    result["hamming_loss"] = float(metrics.hamming_loss(y_true, y_pred))
    result["subset_accuracy"] = float(metrics.accuracy_score(y_true, y_pred))
    return result


def classification_report(
    y_true, probs, multi_label, class_names, thresholds=None
):
    """scikit-learn's text classification report for one split.

    Multi-label decisions use `thresholds` (0.5 when `None`).

    Example:
    ```python
    print(kerastl.evaluate.metrics.classification_report(y, p, False, names))
    ```
    """
    probs = np.asarray(probs)
    if multi_label:
        y_pred = decisions.apply_thresholds(probs, thresholds)
        y_true = np.asarray(y_true).astype(int)
    else:
        y_pred = probs.argmax(axis=1)
    return metrics.classification_report(
        y_true,
        y_pred,
        labels=list(range(len(class_names))),
        target_names=list(class_names),
        zero_division=0,
        digits=3,
    )


def metrics_table(splits):
    """A Markdown table: one row per metric, one column per split.

    Multi-label splits with tuned thresholds get extra rows marked
    "(tuned)" below the 0.5-threshold ones.

    Args:
        splits: dict mapping split name to `classification_metrics` output.

    Example:
    ```python
    print(kerastl.evaluate.metrics.metrics_table({"test": test_metrics}))
    ```
    """
    names = list(splits)
    values = list(splits.values())
    multi_label = any("map_macro" in split for split in values)
    rows = [(key, key) for key in MULTI_LABEL_KEYS if multi_label] or [
        (key, key) for key in MULTI_CLASS_KEYS
    ]
    if any("tuned_thresholds" in split for split in values):
        rows += [
            (f"{key} (tuned)", ("tuned_thresholds", key))
            for key in THRESHOLD_KEYS
        ]
    rows.append(("num_examples", "num_examples"))
    lines = [
        "| metric | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for label, key in rows:
        cells = [_lookup(split, key) for split in values]
        if all(cell is _MISSING for cell in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(map(_format, cells)) + " |")
    return "\n".join(lines)


_MISSING = object()


def _lookup(split, key):
    if isinstance(key, tuple):
        return split.get(key[0], {}).get(key[1], _MISSING)
    return split.get(key, _MISSING)


def _format(value):
    if value is _MISSING:
        return ""
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
