"""Label issues: out-of-fold probabilities against folds fitted by hand,
and confident learning against cleanlab, an independent implementation
that kerastl itself does not import."""

import numpy as np
import pytest
from cleanlab import count
from cleanlab import filter as cleanlab_filter
from sklearn import datasets
from sklearn import linear_model
from sklearn import model_selection
from sklearn import pipeline
from sklearn import preprocessing

from kerastl.evaluate import label_issues


def _by_hand(features, labels, num_classes, folds, C=1.0, seed=0):
    """Out-of-fold probabilities, one fold at a time, all classes present."""
    probs = np.zeros((len(labels), num_classes))
    splitter = model_selection.StratifiedKFold(
        folds, shuffle=True, random_state=seed
    )
    for train, test in splitter.split(features, labels):
        model = pipeline.make_pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(C=C, max_iter=1000),
        )
        model.fit(features[train], labels[train])
        assert list(model.classes_) == list(np.unique(labels))
        probs[test[:, None], model.classes_] = model.predict_proba(
            features[test]
        )
    return probs


def _cleanlab_issues(labels, probs):
    # One process: the result is the same for any `n_jobs`, and forking a
    # process that runs JAX or torch threads is unsafe.
    return cleanlab_filter.find_label_issues(
        labels,
        probs,
        filter_by="prune_by_noise_rate",
        return_indices_ranked_by="self_confidence",
        n_jobs=1,
    )


def _dirichlet(seed, n=None, classes=None, alpha=None):
    rng = np.random.default_rng(seed)
    classes = classes or int(rng.integers(3, 6))
    n = n or int(rng.integers(200, 400))
    probs = rng.dirichlet(np.full(classes, alpha or rng.uniform(0.3, 2)), n)
    return rng.integers(0, classes, n), probs


@pytest.mark.parametrize("seed, C", [(0, 1.0), (3, 0.1)])
def test_out_of_fold_probabilities_equal_folds_fitted_by_hand(seed, C):
    features, labels = datasets.make_blobs(
        240, n_features=6, centers=4, cluster_std=4.0, random_state=seed
    )
    # A fifth class that no example has: its column is all zeros.
    ours = label_issues.out_of_fold_probabilities(
        features, labels, num_classes=5, C=C, seed=seed
    )
    np.testing.assert_allclose(
        ours, _by_hand(features, labels, 5, folds=5, C=C, seed=seed), atol=1e-6
    )
    assert np.all(ours[:, 4] == 0)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0)


def test_a_small_class_means_fewer_folds():
    features, labels = datasets.make_blobs(
        60, n_features=4, centers=3, cluster_std=3.0, random_state=1
    )
    labels[np.flatnonzero(labels == 2)[3:]] = 0
    # Class 2 has 3 examples: three stratified folds, not five.
    ours = label_issues.out_of_fold_probabilities(
        features, labels, num_classes=3
    )
    np.testing.assert_allclose(
        ours, _by_hand(features, labels, 3, folds=3), atol=1e-6
    )


def test_no_example_is_scored_by_a_model_that_saw_it():
    # Two classes apart along feature 0; one example of class 1 sits in
    # class 0's cluster but alone far out along feature 2. A model fitted
    # on it learns feature 2 and gets it right; a model that never saw it
    # has nothing to go on but feature 0, which says class 0.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    features = rng.normal(scale=0.5, size=(100, 3))
    features[:, 0] += np.where(labels == 1, 3.0, -3.0)
    outlier = 0
    labels[outlier] = 1
    features[outlier, 2] = 40.0
    seen = pipeline.make_pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(max_iter=1000),
    ).fit(features, labels)
    assert seen.predict_proba(features[[outlier]])[0, 1] > 0.5
    probs = label_issues.out_of_fold_probabilities(
        features, labels, num_classes=2
    )
    assert probs[outlier, 1] < 0.05
    # A class of one example can never be predicted out of fold: its
    # probability is exactly 0 wherever that example is scored.
    labels[outlier] = 2
    probs = label_issues.out_of_fold_probabilities(
        features, labels, num_classes=3
    )
    assert probs[outlier, 2] == 0.0
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_a_class_of_one_means_unstratified_folds():
    # Class 2 has one example: a plain shuffled 2-fold split, in which (for
    # this seed) one training part holds class 0 alone. The only model of
    # one class predicts it; the other part is fitted as usual.
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    features = rng.normal(size=(9, 2)) + labels[:, None]
    ours = label_issues.out_of_fold_probabilities(
        features, labels, num_classes=3, folds=2, seed=1
    )
    splitter = model_selection.KFold(2, shuffle=True, random_state=1)
    (alone, held_out), (mixed, rest) = splitter.split(features)
    assert np.all(labels[alone] == 0)
    np.testing.assert_array_equal(ours[held_out], [[1, 0, 0]] * len(held_out))
    model = pipeline.make_pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(max_iter=1000),
    ).fit(features[mixed], labels[mixed])
    np.testing.assert_allclose(
        ours[rest], model.predict_proba(features[rest]), atol=1e-6
    )


def test_bad_inputs_are_clear_errors():
    # One class; or three, but only one with two examples to learn from.
    for labels in (np.zeros(10, int), np.array([0, 0, 0, 1, 2])):
        features = np.arange(2 * len(labels), dtype=float).reshape(-1, 2)
        with pytest.raises(ValueError, match="at least two classes"):
            label_issues.out_of_fold_probabilities(
                features, labels, num_classes=3
            )
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        label_issues.find_label_issues([0, 2], np.full((2, 2), 0.5))


def test_thresholds_and_joint_equal_cleanlab():
    for seed in range(6):
        labels, probs = _dirichlet(seed)
        if seed == 5:
            # Class 0 never predicted for its own examples: its mean is 0,
            # and the lower bound on the thresholds decides who counts.
            probs[labels == 0, 0] = 0.0
            probs /= probs.sum(axis=1, keepdims=True)
            assert label_issues.confident_thresholds(labels, probs)[0] == 2e-6
        np.testing.assert_array_equal(
            label_issues.confident_thresholds(labels, probs),
            count.get_confident_thresholds(labels, probs),
        )
        for calibrate in (False, True):
            np.testing.assert_array_equal(
                label_issues.confident_joint(
                    labels, probs, calibrate=calibrate
                ),
                count.compute_confident_joint(
                    labels, probs, calibrate=calibrate
                ),
            )


def test_issues_equal_cleanlab_on_random_probabilities():
    for seed in range(5):
        labels, probs = _dirichlet(seed)
        issues = label_issues.find_label_issues(labels, probs)
        expected = _cleanlab_issues(labels, probs)
        assert len(expected) > 0
        np.testing.assert_array_equal(issues.indices, expected)
        np.testing.assert_array_equal(
            issues.self_confidence, probs[expected, labels[expected]]
        )
        np.testing.assert_array_equal(
            issues.suggested, probs[expected].argmax(axis=1)
        )
        np.testing.assert_array_equal(
            issues.confident_joint,
            count.compute_confident_joint(labels, probs),
        )


def test_issues_equal_cleanlab_with_small_classes():
    # Tiny classes and sharp probabilities: in some of these datasets a
    # class's calibrated confident joint rounds its diagonal to 0, which
    # the pruning corrects for; in others a class has one example or none,
    # which cleanlab leaves alone (and warns about).
    zero_diagonals = small_classes = 0
    for seed in range(60):
        labels, probs = _dirichlet(seed, n=30, classes=6, alpha=0.2)
        joint = label_issues.confident_joint(labels, probs)
        np.testing.assert_array_equal(
            joint, count.compute_confident_joint(labels, probs)
        )
        zero_diagonals += np.any(joint.diagonal() == 0)
        if np.bincount(labels, minlength=6).min() < 2:
            small_classes += 1
            with pytest.warns(UserWarning, match="too few examples"):
                expected = _cleanlab_issues(labels, probs)
        else:
            expected = _cleanlab_issues(labels, probs)
        np.testing.assert_array_equal(
            label_issues.find_label_issues(labels, probs).indices, expected
        )
    assert zero_diagonals >= 3 and small_classes >= 3


def test_issues_equal_cleanlab_with_tied_probabilities():
    # Probabilities in steps of 1/4 tie often: the tie order must match.
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 4, size=(300, 3)).astype(float)
    weights[weights.sum(axis=1) == 0, 0] = 1.0
    probs = weights / weights.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 3, 300)
    np.testing.assert_array_equal(
        label_issues.find_label_issues(labels, probs).indices,
        _cleanlab_issues(labels, probs),
    )


def test_flipped_labels_of_blobs_are_found():
    features, truth = datasets.make_blobs(
        1000, n_features=8, centers=5, cluster_std=4.0, random_state=0
    )
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(truth), size=50, replace=False)
    labels = truth.copy()
    # A different class for each: add 1..4 modulo 5. The blobs overlap a
    # little: 3.5% of the out-of-fold predictions miss the true class.
    labels[flipped] = (truth[flipped] + rng.integers(1, 5, 50)) % 5
    probs = label_issues.out_of_fold_probabilities(
        features, labels, num_classes=5
    )
    issues = label_issues.find_label_issues(labels, probs)
    np.testing.assert_array_equal(
        issues.indices, _cleanlab_issues(labels, probs)
    )
    found = np.intersect1d(issues.indices[: 2 * len(flipped)], flipped)
    assert len(found) / len(flipped) >= 0.8
    # Where the flipped ones are found, the suggestion is the true class.
    suggested = dict(zip(issues.indices, issues.suggested, strict=True))
    assert np.mean([suggested[i] == truth[i] for i in found]) >= 0.9


def test_hand_worked_issues():
    # Probability of class 1 for six examples, three labelled each class.
    p1 = np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.3])
    probs = np.stack([1 - p1, p1], axis=1)
    labels = np.array([0, 0, 0, 1, 1, 1])
    # t_0 = mean(0.9, 0.8, 0.1) = 0.6 and t_1 = mean(0.8, 0.7, 0.3) = 0.6.
    np.testing.assert_allclose(
        label_issues.confident_thresholds(labels, probs), [0.6, 0.6]
    )
    # Confidently class 0: examples 0, 1 (label 0) and 5 (label 1);
    # class 1: example 2 (label 0), 3 and 4 (label 1). The rows already
    # sum to the class sizes, so calibration keeps them.
    for calibrate in (False, True):
        np.testing.assert_array_equal(
            label_issues.confident_joint(labels, probs, calibrate=calibrate),
            [[2, 1], [1, 2]],
        )
    # One of class 0 is really 1: the largest p_1 - p_0 there, example 2.
    # One of class 1 is really 0: the largest p_0 - p_1, example 5. Ranked
    # by the probability of the given label: 0.1 (example 2), 0.3.
    issues = label_issues.find_label_issues(labels, probs)
    np.testing.assert_array_equal(issues.indices, [2, 5])
    np.testing.assert_allclose(issues.self_confidence, [0.1, 0.3])
    np.testing.assert_array_equal(issues.suggested, [1, 0])
    np.testing.assert_array_equal(
        issues.indices, _cleanlab_issues(labels, probs)
    )
