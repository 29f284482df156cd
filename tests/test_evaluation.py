import keras
import kit
import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics

from kerastl import TransferClassifier
from kerastl.evaluate import metrics as evaluation

NAMES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]


def _multi_class(seed=0, n=120):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(NAMES), n)
    logits = rng.normal(size=(n, len(NAMES)))
    logits[np.arange(n), labels] += 1.5  # better than chance
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def _hand_ece(confidence, correct, bins=15):
    # A plain loop over (lo, hi] bins, the first also taking 0.
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (confidence > lo) & (confidence <= hi)
        if b == 0:
            inside |= confidence == 0
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            total += inside.sum() * gap
    return total / len(confidence)


def test_multi_class_metrics_match_independent_computations():
    labels, probs = _multi_class()
    result = evaluation.classification_metrics(
        labels, probs, False, len(NAMES), class_names=NAMES
    )
    predicted = probs.argmax(axis=1)
    assert result["num_examples"] == len(labels)
    assert result["accuracy"] == pytest.approx(np.mean(predicted == labels))
    for k in (3, 5):
        top_k = np.argsort(-probs, axis=1)[:, :k]
        hits = np.mean(np.any(top_k == labels[:, None], axis=1))
        assert result[f"top_{k}_accuracy"] == pytest.approx(hits)
    report = metrics.classification_report(
        labels, predicted, target_names=NAMES, output_dict=True
    )
    for average, key in (("macro", "macro avg"), ("weighted", "weighted avg")):
        assert result[f"precision_{average}"] == pytest.approx(
            report[key]["precision"]
        )
        assert result[f"recall_{average}"] == pytest.approx(
            report[key]["recall"]
        )
        assert result[f"f1_{average}"] == pytest.approx(report[key]["f1-score"])
    for name in NAMES:
        assert result["per_class"][name]["f1"] == pytest.approx(
            report[name]["f1-score"]
        )
        assert result["per_class"][name]["support"] == report[name]["support"]
    assert result["nll"] == pytest.approx(
        -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    )
    assert result["ece"] == pytest.approx(
        _hand_ece(probs.max(axis=1), (predicted == labels).astype(float))
    )
    np.testing.assert_array_equal(
        result["confusion_matrix"],
        metrics.confusion_matrix(labels, predicted, labels=range(len(NAMES))),
    )


def test_few_classes_have_no_top_k_beyond_them():
    labels = np.array([0, 1, 2, 1])
    probs = np.eye(3)[[0, 2, 2, 1]] * 0.8 + 0.2 / 3
    result = evaluation.classification_metrics(labels, probs, False, 3)
    assert "top_3_accuracy" not in result and "top_5_accuracy" not in result
    assert result["accuracy"] == 0.75
    assert set(result["per_class"]) == {"0", "1", "2"}


def _multi_label(seed=0, n=80, classes=4):
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=(n, classes)) < 0.35).astype(int)
    labels[:, 3] = 0  # a class with no positives in this split
    probs = np.clip(labels * 0.45 + rng.uniform(0, 0.55, labels.shape), 0, 1)
    return labels, probs


def test_multi_label_metrics_match_independent_computations():
    labels, probs = _multi_label()
    cuts = [0.3, 0.6, 0.5, 0.9]
    result = evaluation.classification_metrics(
        labels, probs, True, 4, class_names=NAMES[:4], thresholds=cuts
    )
    present = [0, 1, 2]
    aps = [
        metrics.average_precision_score(labels[:, c], probs[:, c])
        for c in present
    ]
    assert result["map_macro"] == pytest.approx(np.mean(aps))
    aucs = [metrics.roc_auc_score(labels[:, c], probs[:, c]) for c in present]
    assert result["roc_auc_macro"] == pytest.approx(np.mean(aucs))
    assert result["per_class"]["dog"]["ap"] is None
    assert result["per_class"]["dog"]["roc_auc"] is None
    assert result["per_class"]["ant"]["ap"] == pytest.approx(aps[0])
    at_half = probs >= 0.5
    assert result["hamming_loss"] == pytest.approx(np.mean(at_half != labels))
    assert result["subset_accuracy"] == pytest.approx(
        np.mean(np.all(at_half == labels, axis=1))
    )
    assert result["f1_samples"] == pytest.approx(
        metrics.f1_score(labels, at_half, average="samples", zero_division=0)
    )
    tp = np.sum(at_half & (labels == 1))
    assert result["precision_micro"] == pytest.approx(tp / at_half.sum())
    assert result["recall_micro"] == pytest.approx(tp / labels.sum())
    tuned = probs >= np.array(cuts)
    assert result["tuned_thresholds"]["hamming_loss"] == pytest.approx(
        np.mean(tuned != labels)
    )
    assert result["tuned_thresholds"]["f1_macro"] == pytest.approx(
        metrics.f1_score(labels, tuned, average="macro", zero_division=0)
    )
    assert result["per_class"]["bee"]["threshold"] == 0.6
    assert result["per_class"]["bee"]["f1"] == pytest.approx(
        metrics.f1_score(labels[:, 1], tuned[:, 1])
    )


def test_metrics_table_rows():
    labels, probs = _multi_label()
    result = evaluation.classification_metrics(
        labels, probs, True, 4, thresholds=[0.5] * 4
    )
    table = evaluation.metrics_table({"validation": result})
    assert "| f1_micro (tuned) |" in table
    assert "| ece_uncalibrated |" not in table  # absent keys are left out
    assert table.splitlines()[0] == "| metric | validation |"


@pytest.mark.parametrize("multi_label", [False, True])
def test_predict_split_keeps_the_most_confident_mistakes(multi_label):
    backbone, converter = kit.tiny_resnet()
    model = TransferClassifier(
        backbone,
        num_classes=3,
        image_converter=converter,
        multi_label=multi_label,
    )
    images = kit.random_images(20)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 20)
    if multi_label:
        labels = keras.utils.to_categorical(labels, 3)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(6)
    result = evaluation.predict_split(model, dataset, num_mistakes=4)
    np.testing.assert_array_equal(result.labels, labels)
    expected_logits = model.logits_model().predict(images, verbose=0)
    np.testing.assert_allclose(result.logits, expected_logits, atol=1e-5)
    probs = model.predict(images, verbose=0)
    if multi_label:
        wrong = (probs >= 0.5) != (labels >= 0.5)
        score = np.where(wrong, np.maximum(probs, 1 - probs), 0).max(axis=1)
    else:
        score = np.where(probs.argmax(1) != labels, probs.max(1), 0)
    expected = [i for i in np.argsort(-score, kind="stable") if score[i] > 0]
    np.testing.assert_array_equal(result.mistakes, expected[:4])
    np.testing.assert_array_equal(result.mistake_images, images[expected[:4]])
    np.testing.assert_allclose(
        result.probabilities(model), probs, rtol=1e-5, atol=1e-6
    )
