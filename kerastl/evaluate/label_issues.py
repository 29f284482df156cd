"""Label issues: which images are likely labelled wrong, by confident
learning (Northcutt, Jiang and Chuang, JAIR 2021).

Probabilities only expose a wrong label if the model never learnt it, so
each example's come from a logistic regression fitted on the other folds
of frozen backbone features (`out_of_fold_probabilities`). Confident
learning counts the examples by given label `i` and class `j` they
confidently belong to (probability of `j` at least `t_j`, the mean over
the examples labelled `j`): the *confident joint*, rescaled so row `i` sums
to the examples labelled `i`. Its cell `(i, j)` estimates how many images
labelled `i` are really `j`; `find_label_issues` flags that many, those
with the largest margin `p_j - p_i` ("prune by noise rate"). Tolerances,
rounding and tie order follow cleanlab 2.9's defaults, which the tests
check against; kerastl does not depend on cleanlab.
"""

import dataclasses

import numpy as np
from sklearn import linear_model
from sklearn import model_selection
from sklearn import pipeline
from sklearn import preprocessing

# cleanlab's fuzzy comparison of probabilities, and its lower bound on the
# thresholds (twice that, so a threshold never becomes zero once fuzzed).
_TOLERANCE = 1e-6
_THRESHOLD_FLOOR = 2 * _TOLERANCE
# The threshold of a class no example is labelled with: above any
# probability, so no example is counted as confidently of that class.
_ABSENT_CLASS_THRESHOLD = 2.0


def out_of_fold_probabilities(
    features, labels, *, num_classes, folds=5, C=1.0, seed=0
):
    """Each example's class probabilities from a model that never saw it.

    `StandardScaler` + `LogisticRegression(C=C, max_iter=1000)` fitted on
    all folds but one of a shuffled stratified k-fold split.

    Args:
        features: float array `(n, d)`: pooled backbone features.
        labels: int array `(n,)` in `[0, num_classes)`.
        num_classes: int. Classes absent from a fold get probability 0.
        folds: int. Defaults to 5; fewer if the smallest class is smaller.
        C: float. Inverse L2 regularization strength. Defaults to 1.0.
        seed: int. Shuffles the folds. Defaults to 0.

    Returns:
        float64 array `(n, num_classes)` whose rows sum to 1.

    Raises:
        ValueError: fewer than two classes have two or more examples: no
            fold's model could tell two classes apart.

    Example:
    ```python
    probs = kerastl.evaluate.label_issues.out_of_fold_probabilities(
        features, labels, num_classes=10
    )
    ```
    """
    features = np.asarray(features)
    labels = _checked_labels(labels, num_classes, len(features))
    counts = np.bincount(labels, minlength=num_classes)
    if np.sum(counts >= 2) < 2:
        raise ValueError(
            "Out-of-fold probabilities need at least two classes with two "
            f"or more examples each; {len(labels)} examples in "
            f"{np.count_nonzero(counts)} classes do not have that."
        )
    splits = min(folds, int(counts[counts > 0].min()))
    if splits >= 2:
        splitter = model_selection.StratifiedKFold(
            splits, shuffle=True, random_state=seed
        )
    else:
        # A class with a single example cannot be stratified (it is in
        # the training part or the held-out fold, never both), and
        # StratifiedKFold would warn; a plain shuffled split is as good.
        splitter = model_selection.KFold(
            min(folds, len(labels)), shuffle=True, random_state=seed
        )
    probabilities = np.zeros((len(labels), num_classes))
    for train, held_out in splitter.split(features, labels):
        probabilities[held_out] = _fit_predict(
            features[train], labels[train], features[held_out], num_classes, C
        )
    return probabilities


def _fit_predict(train_x, train_y, test_x, num_classes, C):
    """Probabilities for `test_x` in all `num_classes` columns."""
    result = np.zeros((len(test_x), num_classes))
    present = np.unique(train_y)
    # Possible in the unstratified split: a training part of one class.
    # Its only honest model predicts that class.
    if len(present) == 1:
        result[:, present[0]] = 1.0
        return result
    model = pipeline.make_pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(C=C, max_iter=1000),
    )
    model.fit(train_x, train_y)
    # `predict_proba`'s columns are the classes the fold saw; the others
    # keep probability 0, so the rows still sum to 1.
    result[:, model.classes_] = model.predict_proba(test_x)
    return result


def confident_thresholds(labels, probabilities):
    """Per class `j`, the mean probability of `j` over examples labelled `j`.

    Clipped below at 2e-6; a class no example is labelled with gets 2, a
    threshold no probability reaches.

    Args:
        labels: int array `(n,)`: the given labels.
        probabilities: float array `(n, num_classes)`, out of sample.

    Returns:
        float array `(num_classes,)`.

    Example:
    ```python
    t = kerastl.evaluate.label_issues.confident_thresholds(labels, probs)
    ```
    """
    labels, probabilities = _checked(labels, probabilities)
    thresholds = [
        np.mean(probabilities[labels == j, j])
        if np.any(labels == j)
        else _ABSENT_CLASS_THRESHOLD
        for j in range(probabilities.shape[1])
    ]
    return np.clip(thresholds, _THRESHOLD_FLOOR, None)


def confident_joint(labels, probabilities, *, calibrate=True):
    """Counts of examples by given label `i` and confidently predicted `j`.

    Confidently `j`: probability of `j` at least `t_j` (less 1e-6); of
    several such classes the most probable. Examples confident of none are
    not counted; every diagonal cell is at least 1.

    Args:
        labels: int array `(n,)`: the given labels.
        probabilities: float array `(n, num_classes)`, out of sample.
        calibrate: bool. Rescale row `i` to the number of examples
            labelled `i`, then round preserving the row totals. Defaults
            to True.

    Returns:
        int array `(num_classes, num_classes)`, rows by given label.

    Example:
    ```python
    joint = kerastl.evaluate.label_issues.confident_joint(labels, probs)
    ```
    """
    labels, probabilities = _checked(labels, probabilities)
    num_classes = probabilities.shape[1]
    confident = probabilities >= (
        confident_thresholds(labels, probabilities) - _TOLERANCE
    )
    num_confident = confident.sum(axis=1)
    # Of several confident classes, the most probable.
    guess = np.where(
        num_confident > 1, probabilities.argmax(axis=1), confident.argmax(1)
    )
    counted = num_confident > 0
    joint = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(joint, (labels[counted], guess[counted]), 1)
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    if not calibrate:
        return joint
    label_counts = np.bincount(labels, minlength=num_classes)
    rows = joint.sum(axis=1)[:, None]
    scaled = joint / rows * label_counts[:, None]
    # Summed column by column, in the memory order of cleanlab's array:
    # the last bit of the total decides which way a row of halves rounds.
    scaled = scaled / scaled.ravel(order="F").sum() * label_counts.sum()
    return np.array([_round_preserving_sum(row) for row in scaled])


def _round_preserving_sum(values):
    """Rounds to ints whose sum is the rounded sum of `values`: the ones
    rounded furthest the other way move by one (cleanlab's order)."""
    ints = values.round()
    target = values.sum().round()
    while abs(ints.sum().round() - target) > _TOLERANCE:
        difference = np.round(target - ints.sum().round())
        step = -1 if difference < 0 else 1
        changes = min(int(abs(difference)), len(values))
        ints[np.argsort(values - ints)[::-step][:changes]] += step
    return ints.astype(int)


@dataclasses.dataclass(frozen=True, eq=False)
class LabelIssues:
    """The examples whose given labels are likely wrong.

    Args:
        indices: int array: the flagged examples, lowest probability of
            their given label (most likely wrong) first.
        self_confidence: float array: each one's probability of its label.
        suggested: int array: each one's most probable class.
        confident_joint: int array `(num_classes, num_classes)`, calibrated:
            cell `(i, j)` estimates how many labelled `i` are really `j`.

    Example:
    ```python
    issues = kerastl.evaluate.label_issues.find_label_issues(labels, probs)
    for i, label in zip(issues.indices[:10], issues.suggested[:10]):
        print(paths[i], class_names[labels[i]], "->", class_names[label])
    ```
    """

    indices: np.ndarray
    self_confidence: np.ndarray
    suggested: np.ndarray
    confident_joint: np.ndarray


def find_label_issues(labels, probabilities):
    """Confident learning's label issues, pruned by noise rate.

    Per off-diagonal cell `(i, j)` of the calibrated confident joint, the
    `n_ij` examples labelled `i` with the largest margin `p_j - p_i`;
    classes of one example are left alone, and an example whose most
    probable class is its label (within 1e-6) is never flagged. The same,
    in the same order, as cleanlab 2.9's `filter.find_label_issues(...,
    filter_by="prune_by_noise_rate", return_indices_ranked_by=
    "self_confidence")`.

    Args:
        labels: int array `(n,)`: the given labels.
        probabilities: float array `(n, num_classes)`, out of sample (see
            `out_of_fold_probabilities`).

    Returns:
        `LabelIssues`.

    Example:
    ```python
    issues = kerastl.evaluate.label_issues.find_label_issues(labels, probs)
    ```
    """
    labels, probabilities = _checked(labels, probabilities)
    joint = confident_joint(labels, probabilities)
    # A class whose calibrated diagonal rounded to 0 keeps one example:
    # its nonzero off-diagonal counts give up that one, shared evenly and
    # rounded down. (So a class of one example, whose calibrated row is a
    # single 1, is never pruned: cleanlab's `min_examples_per_class=1`.)
    diagonal = joint.diagonal()
    raised = np.maximum(diagonal, 1) - diagonal
    sharing = np.maximum(np.count_nonzero(joint, axis=1) - 1.0, 1.0)
    prune = np.maximum(joint - (raised / sharing)[:, None], 0).astype(int)
    np.fill_diagonal(prune, 0)
    flagged = np.zeros(len(labels), dtype=bool)
    for i, j in zip(*np.nonzero(prune), strict=True):
        members = np.flatnonzero(labels == i)
        margin = probabilities[members, j] - probabilities[members, i]
        # NumPy's default sort, on the same array, breaks ties as
        # cleanlab does.
        flagged[members[np.argsort(-margin)[: prune[i, j]]]] = True
    # A label within 1e-6 of the top probability counts as predicted.
    rows = np.arange(len(labels))
    lifted = probabilities.copy()
    lifted[rows, labels] += _TOLERANCE
    flagged &= lifted.argmax(axis=1) != labels
    indices = rows[flagged]
    self_confidence = probabilities[indices, labels[indices]]
    order = np.argsort(self_confidence)
    return LabelIssues(
        indices=indices[order],
        self_confidence=self_confidence[order],
        suggested=probabilities[indices[order]].argmax(axis=1),
        confident_joint=joint,
    )


def _checked_labels(labels, num_classes, n):
    labels = np.asarray(labels)
    if not (
        n > 0
        and labels.shape == (n,)
        and np.issubdtype(labels.dtype, np.integer)
        and 0 <= labels.min() <= labels.max() < num_classes
    ):
        raise ValueError(
            f"Expected one label in [0, {num_classes}) per example, for "
            f"{n} examples; got {labels.dtype} labels of shape "
            f"{labels.shape}."
        )
    return labels


def _checked(labels, probabilities):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(
            "Probabilities must be (n, num_classes); got shape "
            f"{probabilities.shape}."
        )
    return (
        _checked_labels(labels, probabilities.shape[1], len(probabilities)),
        probabilities,
    )
