import kit
import numpy as np
import pytest
from sklearn import metrics

from kerastl import TransferClassifier
from kerastl.evaluate import thresholds
from kerastl.models import decisions


def _scores(seed=0, n=200, classes=4):
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=(n, classes)) < [0.5, 0.2, 0.05, 0.3]).astype(
        int
    )
    # Informative but noisy scores, a different scale per class.
    scores = 1 / (
        1 + np.exp(-(2.0 * labels - 1 + rng.normal(size=labels.shape)))
    )
    return labels, scores * [1.0, 0.6, 0.4, 0.9]


def test_tuned_thresholds_reach_the_best_f1():
    labels, scores = _scores()
    tuned, unmet = thresholds.tune_thresholds(labels, scores)
    assert unmet == []
    for c, threshold in enumerate(tuned):
        # Brute force with scikit-learn over every distinct score as a cut.
        best = max(
            metrics.f1_score(labels[:, c], scores[:, c] >= cut)
            for cut in np.unique(scores[:, c])
        )
        ours = metrics.f1_score(labels[:, c], scores[:, c] >= threshold)
        assert ours == pytest.approx(best)
    # The rare, low-scoring class needs a cut well under 0.5.
    assert tuned[2] < 0.4


def test_target_precision_gives_the_most_recall_at_that_precision():
    labels, scores = _scores(seed=1)
    tuned, unmet = thresholds.tune_thresholds(
        labels, scores, target_precision=0.8
    )
    for c, threshold in enumerate(tuned):
        y, s = labels[:, c], scores[:, c]
        reachable = [
            metrics.recall_score(y, s >= cut)
            for cut in np.unique(s)
            if metrics.precision_score(y, s >= cut, zero_division=0) >= 0.8
        ]
        if not reachable:
            assert c in unmet
            continue
        assert metrics.precision_score(y, s >= threshold) >= 0.8
        assert metrics.recall_score(y, s >= threshold) == pytest.approx(
            max(reachable)
        )


def test_hand_worked_thresholds():
    # Class 0: positives score 0.8 and 0.3, negatives 0.6 and 0.1. F1 is
    # best (0.8) cutting at 0.3 -- both positives, one false alarm -- so
    # the cut goes halfway to the next lower score: (0.3 + 0.1) / 2.
    # Class 1 has no positives and keeps 0.5.
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    scores = np.array([[0.8, 0.1], [0.3, 0.9], [0.6, 0.2], [0.1, 0.3]])
    tuned, _ = thresholds.tune_thresholds(labels, scores)
    assert tuned == pytest.approx([0.2, 0.5])
    # At precision 1.0 only the 0.8 positive: halfway to 0.6.
    tuned, unmet = thresholds.tune_thresholds(
        labels, scores, target_precision=1.0
    )
    assert tuned == pytest.approx([0.7, 0.5])
    assert unmet == []


def test_bad_thresholds_are_clear_errors():
    with pytest.raises(ValueError, match="multi-label"):
        decisions.check_thresholds([0.5, 0.5], 2, multi_label=False)
    with pytest.raises(ValueError, match="2 numbers in"):
        decisions.check_thresholds([0.5], 2, multi_label=True)
    with pytest.raises(ValueError, match="2 numbers in"):
        decisions.check_thresholds([0.5, 1.5], 2, multi_label=True)
    with pytest.raises(ValueError, match="target_precision"):
        thresholds.tune_thresholds(*_scores(), target_precision=0)


def test_model_predicts_labels_over_its_thresholds():
    backbone, converter = kit.tiny_resnet()
    model = TransferClassifier(
        backbone, num_classes=3, image_converter=converter, multi_label=True
    )
    images = kit.random_images(6)
    probs = model.predict(images, verbose=0)
    np.testing.assert_array_equal(model.predict_labels(images), probs >= 0.5)
    cuts = np.median(probs, axis=0).tolist()
    model.set_thresholds(cuts)
    np.testing.assert_array_equal(model.predict_labels(images), probs >= cuts)
