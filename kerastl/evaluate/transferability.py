"""Transferability: how well a frozen backbone's features suit a dataset,
scored without fine-tuning.

`kerastl select` ranks pretrained backbones on the user's data from their
pooled features (`(n, d)` arrays), three ways, cheapest first:

- LogME (You et al., 2021): the log evidence of a Bayesian linear model
  from features to labels, maximised over its prior and noise precisions.
  One SVD per backbone, no training; higher is better.
- weighted kNN (DINO, Caron et al., 2021): cosine-similarity votes of the
  nearest training examples. No training either, and it shows how well
  the feature space clusters by class.
- a linear probe: logistic regression on standardised features, its
  regularisation chosen on the validation split.

kNN and the probe report the same number (`classification_score`):
accuracy, or for multi-label data the mean average precision over the
classes with validation positives, as `metrics.json`'s `map_macro` does.
"""

import dataclasses
import warnings

import numpy as np
from sklearn import exceptions
from sklearn import linear_model
from sklearn import metrics
from sklearn import preprocessing

# The evidence is searched on this many log-spaced ratios alpha / beta,
# then refined by this many bisections: the bracket shrinks ~2^50-fold.
_GRID_POINTS = 64
_BISECTIONS = 50
_EPS = np.finfo(np.float64).eps
# Similarities are computed for this many (query, train) pairs at a time:
# 128 MiB of float64 per block, whatever the dataset's size.
_BLOCK_ELEMENTS = 2**24


def logme(features, targets):
    """LogME: the maximum log evidence per example of a linear model from
    `features` to `targets`, averaged over target columns.

    Each column `y` is modelled as `y = features @ w + noise` with
    `w ~ N(0, I / alpha)` and `noise ~ N(0, I / beta)`, no intercept. The
    evidence `p(y | alpha, beta)` is maximised exactly (to rounding), on
    one thin SVD of the features shared by all columns, by solving MacKay's
    fixed-point equation. The score does not change when the features are
    scaled, and it is exact for `d > n` too.

    Args:
        features: float `(n, d)`: a backbone's pooled features.
        targets: int labels `(n,)` (one 0/1 column per class `0..max`),
            or a float `(n, k)` matrix: multi-hot labels, or one
            regression target per column. All-zero columns (a class
            without examples) are left out: any features fit them
            perfectly, so their evidence is unbounded and says nothing.

    Returns:
        float. Higher means the features predict the targets better.

    Example:
    ```python
    scores = {
        name: kerastl.evaluate.transferability.logme(features, labels)
        for name, features in features_by_backbone.items()
    }
    ```
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(
            f"LogME needs (n, d) features, n >= 2; got {features.shape}."
        )
    if not np.isfinite(features).all():
        raise ValueError("The features hold NaN or infinite values.")
    columns = _target_columns(targets, len(features))
    n, d = features.shape
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    # Directions below numpy's matrix_rank tolerance are rounding noise.
    rank = int(np.sum(s > s[0] * max(n, d) * _EPS))
    u, sigma = u[:, :rank], s[:rank] ** 2
    x = u.T @ columns
    # The part of y outside the features' span: none when they span R^n.
    rest = (columns**2).sum(axis=0) - (x**2).sum(axis=0)
    rest = np.zeros(len(rest)) if rank == n else np.maximum(rest, 0.0)
    return float(_max_evidence(sigma, x, rest, n).mean())


def _target_columns(targets, n):
    """The targets as float `(n, k)` columns, all-zero columns left out."""
    targets = np.asarray(targets)
    if len(targets) != n:
        raise ValueError(
            f"{n} feature rows but {len(targets)} targets: they must match."
        )
    if targets.ndim == 1:
        labels = targets.astype(np.int64)
        if (labels != targets).any() or (labels < 0).any():
            raise ValueError(
                "1-D targets must be class indices 0, 1, ...; pass a float "
                "(n, 1) matrix for a regression target."
            )
        columns = np.zeros((n, labels.max() + 1))
        columns[np.arange(n), labels] = 1.0
    elif targets.ndim == 2:
        columns = targets.astype(np.float64)
    else:
        raise ValueError(f"Targets must be 1-D or 2-D; got {targets.shape}.")
    if not np.isfinite(columns).all():
        raise ValueError("The targets hold NaN or infinite values.")
    columns = columns[:, (columns != 0).any(axis=0)]
    if not columns.shape[1]:
        raise ValueError("Every target is zero: there is nothing to score.")
    return columns


def _evidence(sigma, x, rest, n, ratio):
    """Log evidence / n per column at `ratio = alpha / beta`, with `beta`
    at its best for that ratio, and MacKay's update of the ratio."""
    # With the ratio fixed, the posterior mean m does not depend on beta,
    # and the best beta is n / (|Fm - y|^2 + ratio |m|^2). Every sum is
    # written so that none subtracts close numbers.
    shrink = ratio / (ratio + sigma[:, None])
    gamma = (sigma[:, None] / (ratio + sigma[:, None])).sum(axis=0)
    n_minus_gamma = (n - len(sigma)) + shrink.sum(axis=0)
    m2 = (sigma[:, None] * (x / (ratio + sigma[:, None])) ** 2).sum(axis=0)
    residual = ((shrink * x) ** 2).sum(axis=0) + rest
    # `d/2 log alpha - 1/2 log|A|` reduces to the log1p sum once log|A|
    # counts log alpha for each of the d - rank directions the features do
    # not span; thuml/LogME's `_fit_fixed_point` leaves those out, which
    # for d > n makes its scores change with the features' scale.
    evidence = (
        0.5 * np.log(n / (residual + ratio * m2))
        - 0.5
        - 0.5 * np.log(2 * np.pi)
        - 0.5 * np.log1p(sigma[:, None] / ratio).sum(axis=0) / n
    )
    # MacKay: alpha = gamma / |m|^2 and beta = (n - gamma) / |Fm - y|^2.
    # m = 0 (y orthogonal to the features) asks for an infinite ratio.
    top, bottom = gamma * residual, n_minus_gamma * m2
    update = np.divide(
        top, bottom, out=np.full_like(top, np.inf), where=bottom > 0
    )
    return evidence, update


def _max_evidence(sigma, x, rest, n):
    """The log evidence / n per column of `x`, maximised over the ratio."""
    # Past these bounds the prior is numerically infinite (the features
    # explain nothing) or zero (they fit y exactly) and the evidence is at
    # its limit; bounding the ratio, rather than adding an epsilon to |m|^2
    # and |Fm - y|^2, keeps it finite without overflow.
    if len(sigma):
        low, high = sigma[-1] * _EPS, sigma[0] / _EPS
    else:  # All-zero features: the ratio does not enter the evidence.
        low = high = 1.0
    # Iterating MacKay's update from alpha = beta = 1 can climb to the
    # lower of two maxima (seen with d > n) and can take thousands of
    # steps to converge. Instead: the best point of a grid, then bisection
    # between its neighbours on the sign of (update - ratio), which is the
    # sign of the evidence's slope, so it stops at MacKay's fixed point.
    log_grid = np.linspace(np.log(low), np.log(high), _GRID_POINTS)
    on_grid = np.stack(
        [
            _evidence(sigma, x, rest, n, np.full(x.shape[1], np.exp(r)))[0]
            for r in log_grid
        ]
    )
    best = on_grid.argmax(axis=0)
    left = log_grid[np.maximum(best - 1, 0)]
    right = log_grid[np.minimum(best + 1, _GRID_POINTS - 1)]
    for _ in range(_BISECTIONS):
        middle = (left + right) / 2
        ratio = np.exp(middle)
        rising = _evidence(sigma, x, rest, n, ratio)[1] > ratio
        left = np.where(rising, middle, left)
        right = np.where(rising, right, middle)
    ratio = np.exp((left + right) / 2)
    return np.maximum(_evidence(sigma, x, rest, n, ratio)[0], on_grid.max(0))


def knn_scores(
    train_features,
    train_labels,
    query_features,
    *,
    num_classes,
    k=20,
    temperature=0.07,
    exclude_self=False,
):
    """Class scores from DINO's weighted k-nearest-neighbour vote.

    Features are L2-normalised; each query's `k` most cosine-similar
    training examples vote for their label(s) with weight
    `exp(similarity / temperature)`. A class's score is its share of the
    votes: the rows sum to 1 for single-label data, and for multi-hot
    labels each class's score is the weighted fraction of neighbours that
    have it. Ties in similarity are broken arbitrarily.

    Args:
        train_features: float `(n_train, d)`.
        train_labels: int `(n_train,)`, or multi-hot `(n_train, C)`.
        query_features: float `(n_query, d)`.
        num_classes: int `C`.
        k: int. Neighbours per query; at most `n_train` (`n_train - 1`
            with `exclude_self`). Defaults to 20.
        temperature: float. Lower weights the nearest more. Defaults to
            0.07, DINO's.
        exclude_self: bool. For `query_features` that are the training
            features: no example votes for itself (leave-one-out).

    Returns:
        float array `(n_query, num_classes)`.

    Example:
    ```python
    scores = kerastl.evaluate.transferability.knn_scores(
        train_x, train_y, val_x, num_classes=10
    )
    score = kerastl.evaluate.transferability.classification_score(
        scores, val_y, multi_label=False
    )
    ```
    """
    train, query = _unit_rows(train_features), _unit_rows(query_features)
    labels = np.asarray(train_labels)
    if len(labels) != len(train):
        raise ValueError(f"{len(train)} training rows, {len(labels)} labels.")
    if exclude_self and len(query) != len(train):
        raise ValueError("exclude_self needs the training set as queries.")
    k = min(k, len(train) - exclude_self)
    if k < 1:
        raise ValueError("kNN needs at least one neighbour to vote.")
    scores = np.zeros((len(query), num_classes))
    block = max(1, _BLOCK_ELEMENTS // len(train))
    for start in range(0, len(query), block):
        similarity = query[start : start + block] @ train.T
        rows = np.arange(len(similarity))
        if exclude_self:
            similarity[rows, start + rows] = -np.inf
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        nearest_similarity = np.take_along_axis(similarity, nearest, axis=1)
        # Shifting by the row's largest similarity cancels in the shares
        # and keeps exp() finite at any temperature.
        weights = np.exp(
            (nearest_similarity - nearest_similarity.max(axis=1, keepdims=True))
            / temperature
        )
        weights /= weights.sum(axis=1, keepdims=True)
        out = scores[start : start + block]
        if labels.ndim == 2:
            out[:] = np.einsum("qn,qnc->qc", weights, labels[nearest])
        else:
            np.add.at(out, (rows[:, None], labels[nearest]), weights)
    return scores


def _unit_rows(features):
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    # DINO's floor (torch's F.normalize): an all-zero row stays zero
    # instead of dividing by zero.
    return features / np.maximum(norms, 1e-12)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """A linear probe's validation score, the `C` that earned it, and the
    chosen model's validation probabilities `(n_val, num_classes)`."""

    score: float
    C: float
    probabilities: np.ndarray


def linear_probe(
    train_features,
    train_labels,
    val_features,
    val_labels,
    *,
    multi_label=False,
    Cs=(1e-3, 1e-2, 1e-1, 1, 10, 100),
    seed=0,
):
    """Logistic regression on standardised features, its inverse
    regularisation `C` chosen by validation score.

    The scaler is fitted on the training features. Single-label data gets
    one multinomial `LogisticRegression`; multi-label data one binary
    model per class (one-vs-rest), a class constant in training (absent,
    or always present) getting that constant as its probability. Of equal
    scores the smaller `C` (stronger regularisation) wins.

    Args:
        train_features: float `(n_train, d)`.
        train_labels: int `(n_train,)`, or multi-hot `(n_train, C)`.
        val_features: float `(n_val, d)`.
        val_labels: like `train_labels`.
        multi_label: bool.
        Cs: the `C` values to try.
        seed: int. `random_state` of the solver.

    Returns:
        `ProbeResult(score, C, probabilities)`; the probabilities have a
        column for every class, `0..max label` over both splits (or the
        multi-hot width), in order.

    Example:
    ```python
    result = kerastl.evaluate.transferability.linear_probe(
        train_x, train_y, val_x, val_y
    )
    print(f"accuracy {result.score:.3f} at C={result.C}")
    ```
    """
    train = np.asarray(train_features, dtype=np.float64)
    scaler = preprocessing.StandardScaler().fit(train)
    train = scaler.transform(train)
    val = scaler.transform(np.asarray(val_features, dtype=np.float64))
    labels = np.asarray(train_labels)
    if multi_label:
        # One-vs-rest by hand: OneVsRestClassifier warns on a class that is
        # constant in training, which gets that constant here.
        columns = labels.T
        num_classes = len(columns)
    else:
        columns = [labels]
        num_classes = int(max(labels.max(), np.max(val_labels))) + 1
        if len(np.unique(labels)) < 2:
            raise ValueError("A linear probe needs two classes in training.")
    best = None
    for C in sorted(Cs):
        model = linear_model.LogisticRegression(
            C=C, max_iter=1000, random_state=seed
        )
        probabilities = np.zeros((len(val), num_classes))
        for c, column in enumerate(columns):
            if column.min() == column.max():
                probabilities[:, c] = column[0]
                continue
            with warnings.catch_warnings():
                # At weak regularisation on separable features lbfgs can
                # stop at max_iter; the model still classifies, and the
                # sweep judges it by its validation score.
                warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
                model.fit(train, column)
            if multi_label:
                probabilities[:, c] = model.predict_proba(val)[:, 1]
            else:
                probabilities[:, model.classes_] = model.predict_proba(val)
        score = classification_score(probabilities, val_labels, multi_label)
        if best is None or score > best.score:
            best = ProbeResult(score, C, probabilities)
    return best


def classification_score(probabilities, labels, multi_label):
    """Accuracy, or for multi-label data the mean average precision over
    the classes with at least one positive (`map_macro`).

    Args:
        probabilities: float `(n, num_classes)`: scores of any scale.
        labels: int `(n,)`, or multi-hot `(n, num_classes)`.
        multi_label: bool.

    Returns:
        float in [0, 1].

    Example:
    ```python
    kerastl.evaluate.transferability.classification_score(
        [[0.9, 0.1], [0.3, 0.7]], [0, 0], multi_label=False
    )  # 0.5
    ```
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if not multi_label:
        return float(np.mean(probabilities.argmax(axis=1) == labels))
    present = np.flatnonzero(labels.sum(axis=0) > 0)
    if not len(present):
        raise ValueError("mAP needs a class with a positive example.")
    precisions = [
        metrics.average_precision_score(labels[:, c], probabilities[:, c])
        for c in present
    ]
    return float(np.mean(precisions))
