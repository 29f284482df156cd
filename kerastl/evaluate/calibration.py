"""Calibration: how far predicted probabilities are from observed accuracy,
and temperature scaling to bring them closer.

A classifier is calibrated when, of the images it gives 80% confidence,
80% are right. Fine-tuned networks are usually overconfident. The
*expected calibration error* (ECE; Guo et al., 2017) measures the gap over
equal-width confidence bins: `ECE = sum_b (n_b / n) |accuracy_b -
confidence_b|`. Two readings of "confidence":

- multi-class: the top-1 probability, against whether the top-1 class is
  right;
- multi-label: every class's probability, against whether the label is
  present (each (image, class) pair is one binary prediction).

Temperature scaling divides the logits by one scalar `T` fitted on the
validation split to minimize the negative log-likelihood. It changes no
prediction's ranking, so accuracy, mAP and ROC-AUC stay the same; only the
probabilities move. `TransferClassifier(temperature=T)` applies it inside
the model, so `predict`, evaluation and exports all see it.
"""

import numpy as np
from scipy import optimize
from scipy import special

# Guo et al.'s 15 bins: enough to resolve overconfidence, few enough that
# a validation split of a few hundred images fills most of them.
NUM_BINS = 15
# The fitted temperature is kept within [1/20, 20]: beyond that the
# validation split is degenerate (all right or all wrong with one class).
_LOG_TEMPERATURE_BOUNDS = (np.log(0.05), np.log(20.0))


def confidence_and_correctness(y_true, probs, multi_label):
    """The per-prediction confidences and outcomes that ECE bins.

    Args:
        y_true: int labels `(n,)`, or multi-hot `(n, num_classes)`.
        probs: predicted probabilities `(n, num_classes)`.
        multi_label: bool.

    Returns:
        `(confidence, correct)`: flat float arrays of the same length.

    Example:
    ```python
    conf, correct = kerastl.evaluate.calibration.confidence_and_correctness(
        y, probs, multi_label=False
    )
    ```
    """
    probs = np.asarray(probs, dtype=np.float64)
    if multi_label:
        return probs.ravel(), np.asarray(y_true, dtype=np.float64).ravel()
    predicted = probs.argmax(axis=1)
    confidence = probs[np.arange(len(probs)), predicted]
    return confidence, (predicted == np.asarray(y_true)).astype(np.float64)


def reliability_bins(confidence, correct, num_bins=NUM_BINS):
    """Mean confidence, accuracy and count in equal-width confidence bins.

    Bin `i` holds confidences in `(i / num_bins, (i + 1) / num_bins]`; the
    first also holds 0. Empty bins have count 0 and NaN means.

    Args:
        confidence: float array `(n,)` in [0, 1].
        correct: array `(n,)` of 0/1 outcomes.
        num_bins: int. Defaults to 15.

    Returns:
        `(mean_confidence, accuracy, counts)`, arrays of length `num_bins`.

    Example:
    ```python
    conf, acc, counts = kerastl.evaluate.calibration.reliability_bins(
        [0.9, 0.6], [1, 0], num_bins=2
    )
    ```
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    index = np.clip(
        np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1
    )
    counts = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = (
            np.bincount(index, confidence, minlength=num_bins) / counts
        )
        accuracy = np.bincount(index, correct, minlength=num_bins) / counts
    return mean_confidence, accuracy, counts


def expected_calibration_error(y_true, probs, multi_label, num_bins=NUM_BINS):
    """ECE: the count-weighted mean |accuracy - confidence| over the bins.

    Args:
        y_true: int labels `(n,)`, or multi-hot `(n, num_classes)`.
        probs: predicted probabilities `(n, num_classes)`.
        multi_label: bool. Per-label rather than top-1 confidences.
        num_bins: int. Defaults to 15.

    Example:
    ```python
    kerastl.evaluate.calibration.expected_calibration_error(y, probs, False)
    ```
    """
    confidence, correct = confidence_and_correctness(y_true, probs, multi_label)
    mean_confidence, accuracy, counts = reliability_bins(
        confidence, correct, num_bins
    )
    filled = counts > 0
    gaps = np.abs(accuracy[filled] - mean_confidence[filled])
    return float(np.sum(counts[filled] * gaps) / max(len(confidence), 1))


def negative_log_likelihood(y_true, logits, multi_label, temperature=1.0):
    """Mean NLL of the labels under `activation(logits / temperature)`.

    Multi-label: the binary cross-entropy averaged over images and classes.

    Example:
    ```python
    kerastl.evaluate.calibration.negative_log_likelihood(y, logits, False, 1.5)
    ```
    """
    logits = np.asarray(logits, dtype=np.float64) / temperature
    if multi_label:
        y = np.asarray(y_true, dtype=np.float64)
        # -log sigmoid(z) = logaddexp(0, -z), stable for large |z|.
        losses = y * np.logaddexp(0, -logits) + (1 - y) * np.logaddexp(
            0, logits
        )
        return float(losses.mean())
    log_probs = logits - special.logsumexp(logits, axis=1, keepdims=True)
    labels = np.asarray(y_true, dtype=int)
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(y_true, logits, multi_label):
    """The temperature that minimizes the NLL of `y_true` given `logits`.

    A bounded scalar search over `log T` in [log 0.05, log 20]; the NLL is
    convex in `1 / T`, so the minimum is unique.

    Args:
        y_true: int labels `(n,)`, or multi-hot `(n, num_classes)`: the
            validation split's.
        logits: `(n, num_classes)` (`TransferClassifier.logits_model()`).
        multi_label: bool. Sigmoid rather than softmax likelihood.

    Returns:
        float. Apply with `model.set_temperature(t)`.

    Example:
    ```python
    logits = model.logits_model().predict(val_images)
    model.set_temperature(
        kerastl.evaluate.calibration.fit_temperature(val_labels, logits, False)
    )
    ```
    """
    if len(y_true) == 0:
        raise ValueError(
            "Temperature scaling needs validation examples to fit on; the "
            "split is empty. Add a validation split or leave calibration off."
        )
    result = optimize.minimize_scalar(
        lambda log_t: negative_log_likelihood(
            y_true, logits, multi_label, np.exp(log_t)
        ),
        bounds=_LOG_TEMPERATURE_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))
