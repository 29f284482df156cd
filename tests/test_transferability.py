import warnings

import numpy as np
import pytest
from scipy import optimize
from scipy import stats
from sklearn import exceptions
from sklearn import linear_model
from sklearn import metrics
from sklearn import multiclass
from sklearn import neighbors
from sklearn import preprocessing

from kerastl.evaluate import transferability


def test_logme_hand_worked():
    # F = [[1], [-1]], y = [2, -1]. The marginal of y is N(0, C) with
    # C = I / beta + F F^T / alpha; F F^T = [[1, -1], [-1, 1]] has
    # eigenvectors u = (1, 1) / sqrt2 (eigenvalue 0) and v = (1, -1) / sqrt2
    # (eigenvalue 2), so C has eigenvalues b = 1 / beta on u and
    # a = 1 / beta + 2 / alpha on v. y's squared components are 0.5 on u and
    # 4.5 on v, and log N(y; 0, C) = -1/2 (0.5 / b + 4.5 / a + log b
    # + log a) - log(2 pi) is largest at b = 0.5, a = 4.5 (beta = 2,
    # alpha = 0.5): -1/2 (log 4.5 + log 0.5 + 1 + 1) - log(2 pi). The
    # score is that per example, / 2.
    evidence = -0.5 * (np.log(4.5) + np.log(0.5) + 2) - np.log(2 * np.pi)
    score = transferability.logme([[1.0], [-1.0]], [[2.0], [-1.0]])
    assert score == pytest.approx(evidence / 2, rel=1e-6)


def _max_log_marginal(features, y):
    """max over (alpha, beta) of log N(y; 0, I / beta + F F^T / alpha),
    by scipy from several starts: the evidence can have two maxima."""
    n = len(features)
    gram = features @ features.T
    # Searched over log(alpha / beta) and log beta: C = (I + F F^T beta /
    # alpha) / beta, whose condition number scipy needs below ~1e9.
    top = np.log(np.linalg.eigvalsh(gram)[-1])

    def negative(log_params):
        ratio, beta = np.exp(log_params)
        cov = (np.eye(n) + gram / ratio) / beta
        return -stats.multivariate_normal(cov=cov).logpdf(y)

    fits = [
        optimize.minimize(
            negative,
            (top + start, 0.0),
            method="L-BFGS-B",
            bounds=[(top - 20, top + 40), (-10, 20)],
            options={"ftol": 1e-12},
        )
        for start in (-10, 0, 10, 30)
    ]
    return -min(fit.fun for fit in fits)


@pytest.mark.parametrize(("n", "d", "seed"), [(30, 5, 0), (10, 40, 35)])
def test_logme_is_the_maximised_gaussian_marginal_likelihood(n, d, seed):
    # n > d, and d > n where the features span R^n; one-hot targets and a
    # regression target. With seed 35 the second one-hot column's evidence
    # has two maxima, and iterating MacKay's update from alpha = beta = 1
    # climbs to the lower one (at beta -> infinity, by 0.07 per example).
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=d)
    labels = rng.integers(0, 3, size=n)
    regression = features @ rng.normal(size=d) + rng.normal(size=n)
    targets = np.column_stack([np.eye(3)[labels], regression])
    targets = targets[:, targets.any(axis=0)]
    expected = np.mean([_max_log_marginal(features, y) for y in targets.T])
    assert transferability.logme(features, targets) == pytest.approx(
        expected / n, rel=1e-5
    )


@pytest.mark.parametrize(("n", "d"), [(60, 8), (20, 64)])
def test_logme_does_not_change_with_the_features_scale(n, d):
    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, d))
    labels = rng.integers(0, 3, size=n)
    assert transferability.logme(10 * features, labels) == pytest.approx(
        transferability.logme(features, labels), rel=1e-6
    )


def test_logme_scores_informative_features_higher():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=200)
    noise = rng.normal(size=(200, 32))
    informative = np.eye(5)[labels] @ rng.normal(size=(5, 32)) + noise
    assert transferability.logme(informative, labels) > (
        transferability.logme(noise, labels) + 0.1
    )


@pytest.mark.parametrize(
    ("features", "y"),
    [
        (np.zeros((4, 3)), [1.0, 2.0, -2.0, 0.5]),
        # F^T y = 0: y is orthogonal to both feature columns.
        ([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]] * 2, [1, -1, 3, -1, 1, -3]),
    ],
)
def test_logme_of_features_that_explain_nothing(features, y):
    # The evidence is largest as alpha -> infinity (w = 0), where
    # y ~ N(0, I / beta), maximised at beta = n / |y|^2: log evidence / n
    # = 1/2 log(n / |y|^2) - 1/2 - 1/2 log(2 pi).
    y = np.array(y, dtype=float)[:, None]
    n = len(y)
    expected = 0.5 * np.log(n / np.sum(y**2)) - 0.5 - 0.5 * np.log(2 * np.pi)
    assert transferability.logme(features, y) == pytest.approx(
        expected, rel=1e-9
    )


def test_logme_labels_are_one_hot_columns_without_empty_classes():
    # Class 1 has no examples: its all-zero column is left out, so the
    # score is that of the labels renumbered 0, 1 and of their one-hot
    # matrix.
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 6))
    labels = rng.integers(0, 2, size=40)
    gapped = transferability.logme(features, labels * 2)
    assert gapped == pytest.approx(transferability.logme(features, labels))
    assert gapped == pytest.approx(
        transferability.logme(features, np.eye(2)[labels])
    )


@pytest.mark.parametrize(
    ("features", "targets", "message"),
    [
        (np.ones((3, 2)), [0, 1], "3 feature rows but 2 targets"),
        (np.ones((1, 2)), [0], "n >= 2"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), [0, 1], "NaN or infinite"),
        (np.ones((2, 2)), [0.5, 1.0], "class indices"),
    ],
)
def test_logme_rejects_bad_input(features, targets, message):
    with pytest.raises(ValueError, match=message):
        transferability.logme(features, targets)


def _sklearn_knn(k, temperature=0.07):
    # Cosine distance is 1 - similarity, so these are DINO's weights.
    return neighbors.KNeighborsClassifier(
        n_neighbors=k,
        metric="cosine",
        weights=lambda d: np.exp((1 - d) / temperature),
    )


@pytest.mark.parametrize("block_elements", [2**24, 1000])
def test_knn_scores_match_scikit_learn(monkeypatch, block_elements):
    # Continuous random features: no ties in similarity. The small block
    # runs 5 queries at a time, checking the leave-one-out offsets.
    monkeypatch.setattr(transferability, "_BLOCK_ELEMENTS", block_elements)
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 16))
    labels = rng.integers(0, 4, size=200)
    query = rng.normal(size=(37, 16))
    knn = _sklearn_knn(10).fit(train, labels)
    scores = transferability.knn_scores(
        train, labels, query, num_classes=4, k=10
    )
    np.testing.assert_allclose(scores, knn.predict_proba(query), atol=1e-6)
    # With no query, scikit-learn leaves each training example out.
    left_out = transferability.knn_scores(
        train, labels, train, num_classes=4, k=10, exclude_self=True
    )
    np.testing.assert_allclose(left_out, knn.predict_proba(None), atol=1e-6)


def test_knn_exclude_self_hand_worked():
    # Unit vectors at 0, 37, 90 and 180 degrees: similarities
    # 0.8 (0-37), 0.6 (37-90), 0 (0-90, 90-180), -0.8 (37-180), -1.
    features = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    labels = np.array([0, 1, 1, 0])
    itself = transferability.knn_scores(
        features, labels, features, num_classes=2, k=1
    )
    np.testing.assert_allclose(itself, np.eye(2)[labels])
    # Left out, each one's nearest other is 37, 0, 37 and 90 degrees.
    nearest_other = transferability.knn_scores(
        features, labels, features, num_classes=2, k=1, exclude_self=True
    )
    np.testing.assert_allclose(nearest_other, np.eye(2)[[1, 0, 1, 1]])
    # k = 2 at temperature 0.1: the 37-degree example hears 0 degrees
    # (class 0, weight e^8) and 90 degrees (class 1, weight e^6).
    two = transferability.knn_scores(
        features,
        labels,
        features,
        num_classes=2,
        k=2,
        temperature=0.1,
        exclude_self=True,
    )
    share = 1 / (1 + np.exp(-2))
    np.testing.assert_allclose(two[1], [share, 1 - share])


def test_knn_multi_hot_votes_go_to_every_positive_class():
    # The query's 2 nearest are itself-like (similarity 1, classes 0 and
    # 1) and the orthogonal one (similarity 0, classes 1 and 2); at
    # temperature 1 their weights are e and 1.
    train = np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]])
    scores = transferability.knn_scores(
        train, labels, [[3.0, 0.0]], num_classes=3, k=2, temperature=1.0
    )
    near = np.e / (np.e + 1)
    np.testing.assert_allclose(scores, [[near, 1.0, 1 - near]])


def _blobs(rng, n, num_classes, d=8, spread=2.0):
    labels = rng.integers(0, num_classes, size=n)
    centres = np.random.default_rng(99).normal(size=(num_classes, d))
    return centres[labels] + spread * rng.normal(size=(n, d)), labels


def _sklearn_probe(train_x, train_y, val_x, C, multi_label=False):
    scaler = preprocessing.StandardScaler().fit(train_x)
    model = linear_model.LogisticRegression(C=C, max_iter=1000)
    if multi_label:
        model = multiclass.OneVsRestClassifier(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
        model.fit(scaler.transform(train_x), train_y)
    return model, model.predict_proba(scaler.transform(val_x))


def test_linear_probe_matches_scikit_learn():
    rng = np.random.default_rng(0)
    train_x, train_y = _blobs(rng, 150, 3)
    val_x, val_y = _blobs(rng, 80, 3)
    Cs = (1e-3, 1e-2, 1e-1, 1, 10, 100)
    accuracies = [
        np.mean(
            _sklearn_probe(train_x, train_y, val_x, C)[1].argmax(1) == val_y
        )
        for C in Cs
    ]
    # np.argmax takes the first of equal maxima: the smallest C.
    best = int(np.argmax(accuracies))
    result = transferability.linear_probe(train_x, train_y, val_x, val_y)
    assert Cs[best] == result.C
    assert result.score == pytest.approx(accuracies[best])
    np.testing.assert_allclose(
        result.probabilities,
        _sklearn_probe(train_x, train_y, val_x, Cs[best])[1],
        rtol=1e-6,
        atol=1e-9,
    )


def test_linear_probe_keeps_a_column_for_a_class_missing_from_train():
    rng = np.random.default_rng(1)
    train_x, train_y = _blobs(rng, 100, 2)
    val_x, val_y = _blobs(rng, 40, 3)
    train_y = train_y * 2  # classes 0 and 2 only
    result = transferability.linear_probe(
        train_x, train_y, val_x, val_y, Cs=(1.0,)
    )
    model, expected = _sklearn_probe(train_x, train_y, val_x, 1.0)
    assert list(model.classes_) == [0, 2]
    assert result.probabilities.shape == (40, 3)
    np.testing.assert_array_equal(result.probabilities[:, 1], 0.0)
    np.testing.assert_allclose(
        result.probabilities[:, [0, 2]], expected, rtol=1e-6, atol=1e-9
    )
    assert result.score == pytest.approx(
        np.mean(expected.argmax(1) * 2 == val_y)
    )


def test_linear_probe_multi_label_map_matches_scikit_learn():
    # Classes 0-2 from the features; class 3 never occurs in training
    # (constant 0 probability) and class 2 never in validation (left out
    # of the mAP).
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 6))
    multi_hot = (x[:, :4] + rng.normal(size=(300, 4)) > 0.5).astype(int)
    train_x, train_y = x[:200], multi_hot[:200].copy()
    val_x, val_y = x[200:], multi_hot[200:].copy()
    train_y[:, 3] = 0
    val_y[:, 2] = 0
    result = transferability.linear_probe(
        train_x, train_y, val_x, val_y, multi_label=True, Cs=(0.1, 10.0)
    )
    _, expected = _sklearn_probe(
        train_x, train_y[:, :3], val_x, result.C, multi_label=True
    )
    np.testing.assert_allclose(
        result.probabilities[:, :3], expected, rtol=1e-6, atol=1e-9
    )
    np.testing.assert_array_equal(result.probabilities[:, 3], 0.0)
    present = [0, 1, 3]
    assert result.score == pytest.approx(
        metrics.average_precision_score(
            val_y[:, present],
            result.probabilities[:, present],
            average="macro",
        )
    )
    # The chosen C has the higher mAP.
    other = 10.0 if result.C == 0.1 else 0.1
    _, other_probs = _sklearn_probe(
        train_x, train_y[:, :3], val_x, other, multi_label=True
    )
    other_probs = np.column_stack([other_probs, np.zeros(len(val_x))])
    assert result.score >= metrics.average_precision_score(
        val_y[:, present], other_probs[:, present], average="macro"
    )


def test_classification_score_is_accuracy_or_map():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    assert transferability.classification_score(
        probs, [0, 0, 0], multi_label=False
    ) == pytest.approx(2 / 3)
    multi_hot = np.array([[1, 0], [0, 0], [1, 0]])
    assert transferability.classification_score(
        probs, multi_hot, multi_label=True
    ) == pytest.approx(
        metrics.average_precision_score(multi_hot[:, 0], probs[:, 0])
    )
