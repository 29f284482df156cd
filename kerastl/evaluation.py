"""Metrics from scikit-learn on a model's predictions, and their tables.

The keys a split gets in `metrics.json`:

- multi-class: `accuracy`, `precision_macro`, `recall_macro`, `f1_macro`,
  `precision_weighted`, `recall_weighted`, `f1_weighted`,
  `confusion_matrix` (rows: true class, columns: predicted class);
- multi-label (decision threshold 0.5): `map_macro` (mean average precision
  over the classes that have positives), `f1_micro`, `f1_macro`,
  `subset_accuracy`;
- both: `num_examples`.
"""

import numpy as np
from sklearn import metrics

MULTI_CLASS_KEYS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
)
MULTI_LABEL_KEYS = ("map_macro", "f1_micro", "f1_macro", "subset_accuracy")


def predict_split(model, dataset):
    """Labels and predicted probabilities for every example of a dataset.

    One pass over the data, so labels and predictions stay aligned even for
    a dataset whose order is not fixed.

    Args:
        model: a `kerastl.TransferClassifier`.
        dataset: a `tf.data.Dataset` of `(images, labels)` batches.

    Returns:
        `(labels, probabilities)` as numpy arrays.

    Example:
    ```python
    y_true, probs = kerastl.evaluation.predict_split(model, test_ds)
    ```
    """
    labels, probs = [], []
    for images, batch_labels in dataset.as_numpy_iterator():
        probs.append(np.asarray(model.predict_on_batch(images)))
        labels.append(batch_labels)
    return np.concatenate(labels), np.concatenate(probs)


def classification_metrics(y_true, probs, multi_label, num_classes):
    """scikit-learn metrics for one split, as plain JSON-ready values.

    Args:
        y_true: int labels `(n,)`, or multi-hot `(n, num_classes)`.
        probs: predicted probabilities `(n, num_classes)`.
        multi_label: bool. Which family of metrics to compute.
        num_classes: int. Fixes the confusion matrix's size.

    Example:
    ```python
    kerastl.evaluation.classification_metrics(y, p, False, 37)["f1_macro"]
    ```
    """
    result = {"num_examples": int(len(y_true))}
    if multi_label:
        y_true = np.asarray(y_true).astype(int)
        y_pred = (probs >= 0.5).astype(int)
        present = y_true.sum(axis=0) > 0
        result["map_macro"] = float(
            metrics.average_precision_score(
                y_true[:, present], probs[:, present], average="macro"
            )
            if present.any()
            else 0.0
        )
        for average in ("micro", "macro"):
            result[f"f1_{average}"] = float(
                metrics.f1_score(
                    y_true, y_pred, average=average, zero_division=0
                )
            )
        result["subset_accuracy"] = float(
            metrics.accuracy_score(y_true, y_pred)
        )
        return result
    y_pred = probs.argmax(axis=1)
    labels = list(range(num_classes))
    result["accuracy"] = float(metrics.accuracy_score(y_true, y_pred))
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        result[f"precision_{average}"] = float(precision)
        result[f"recall_{average}"] = float(recall)
        result[f"f1_{average}"] = float(f1)
    result["confusion_matrix"] = metrics.confusion_matrix(
        y_true, y_pred, labels=labels
    ).tolist()
    return result


def metrics_table(splits):
    """A Markdown table: one row per metric, one column per split.

    Args:
        splits: dict mapping split name to `classification_metrics` output.

    Example:
    ```python
    print(kerastl.evaluation.metrics_table({"test": test_metrics}))
    ```
    """
    names = list(splits)
    first = next(iter(splits.values()), {})
    keys = MULTI_LABEL_KEYS if "map_macro" in first else MULTI_CLASS_KEYS
    lines = [
        "| metric | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for key in (*keys, "num_examples"):
        cells = []
        for name in names:
            value = splits[name].get(key)
            cells.append(
                f"{value:.4f}" if isinstance(value, float) else str(value)
            )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
