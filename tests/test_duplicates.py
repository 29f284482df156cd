"""Duplicates: exact groups and splits by hand, near-duplicate pairs against
scikit-learn's all-pairs cosine similarity."""

import numpy as np
import pytest
from sklearn.metrics import pairwise

from kerastl.evaluate import duplicates


def _brute_force(features, threshold):
    """Every pair above the diagonal at or over `threshold`, as a dict."""
    similarity = pairwise.cosine_similarity(features)
    first, second = np.triu_indices(len(features), k=1)
    keep = similarity[first, second] >= threshold
    return {
        (int(a), int(b)): similarity[a, b]
        for a, b in zip(first[keep], second[keep], strict=True)
    }


def _as_dict(near):
    return {
        (int(a), int(b)): s
        for a, b, s in zip(
            near.first, near.second, near.similarity, strict=True
        )
    }


def test_exact_groups_by_hand():
    digests = [b"\xaa\x01", "ff", "AA01", "00", "ff", "aa01", b"\x00", "bb"]
    # Bytes and their hex spelling, in either case, are the same digest.
    assert duplicates.exact_duplicate_groups(digests) == [
        [0, 2, 5],
        [1, 4],
        [3, 6],
    ]
    assert duplicates.exact_duplicate_groups(["a", "b", b"\x0c"]) == []


@pytest.mark.parametrize(
    "dtype, tolerance", [("float64", 1e-12), ("float32", 1e-5)]
)
def test_near_pairs_equal_brute_force(dtype, tolerance):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(150, 12))
    # Near copies of some rows (noise and scale), and a chain of them.
    sources = rng.choice(100, size=20, replace=False)
    features[100:120] = features[sources] * rng.uniform(0.5, 2, (20, 1))
    features[100:120] += rng.normal(scale=0.1, size=(20, 12))
    features[120] = features[100] + rng.normal(scale=0.1, size=12)
    features[130] = 0.0
    features = features.astype(dtype)
    expected = _brute_force(features, 0.95)
    # No similarity so close to the threshold that rounding could flip it.
    similarity = pairwise.cosine_similarity(features)
    assert not np.any(np.abs(similarity - 0.95) < 10 * tolerance)
    assert len(expected) >= 20
    # Tiles of 16 rows: ten tiles, the last one short.
    near = duplicates.near_duplicate_pairs(features, threshold=0.95, block=16)
    found = _as_dict(near)
    assert found.keys() == expected.keys()
    np.testing.assert_allclose(
        [found[pair] for pair in expected],
        list(expected.values()),
        atol=tolerance,
    )
    assert np.all(np.diff(near.similarity) <= 0)
    assert np.all(near.first < near.second)
    assert not any(130 in pair for pair in found)


def test_near_pairs_ties_at_the_threshold_and_zero_rows():
    # (1, 0, 0) and (3, 4, 0) / 5 = (0.6, 0.8, 0) have cosine similarity
    # 0.6, the threshold, with no rounding in the products or the sum;
    # (6, 8, 0) is (3, 4, 0) twice; (0, 1, 0) has 0.8 with both. A zero
    # row has no direction.
    features = np.array(
        [
            [1, 0, 0],
            [3, 4, 0],
            [0, 0, 5],
            [0, 0, 0],
            [6, 8, 0],
            [0, 1, 0],
        ],
        dtype=float,
    )
    expected = {(1, 4): 1.0, (1, 5): 0.8, (4, 5): 0.8, (0, 1): 0.6, (0, 4): 0.6}
    assert _brute_force(features, 0.6) == pytest.approx(expected)
    near = duplicates.near_duplicate_pairs(features, threshold=0.6, block=2)
    assert _as_dict(near) == pytest.approx(expected)
    # Descending similarity, ties by index.
    assert near.pairs.tolist() == [[1, 4], [1, 5], [4, 5], [0, 1], [0, 4]]


def test_near_pairs_leave_out_known_groups():
    features = np.array(
        [[1, 0], [1, 0], [1, 0.01], [0, 1], [0, 1], [0.01, 1]], dtype=float
    )
    everything = duplicates.near_duplicate_pairs(features)
    assert len(everything.first) == 6
    # Rows 0 and 1 and rows 3 and 4 are known exact duplicates.
    near = duplicates.near_duplicate_pairs(features, exclude=[[0, 1], [3, 4]])
    assert sorted(near.pairs.tolist()) == [[0, 2], [1, 2], [3, 5], [4, 5]]


def test_threshold_out_of_range_is_a_clear_error():
    for threshold in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            duplicates.near_duplicate_pairs(np.eye(3), threshold=threshold)


def test_group_pairs_by_hand():
    pairs = [(0, 3), (5, 3), (1, 2), (7, 6)]
    # 0-3-5 chain; 4 is alone and left out.
    assert duplicates.group_pairs(pairs, 8) == [[0, 3, 5], [1, 2], [6, 7]]
    assert duplicates.group_pairs(np.zeros((0, 2), int), 4) == []


def test_cross_split_by_hand():
    splits = np.array(["train", "train", "test", "validation", "train"])
    pairs = np.array([[0, 1], [0, 2], [3, 4], [1, 4]])
    np.testing.assert_array_equal(
        duplicates.cross_split(pairs, splits), [False, True, True, False]
    )
    groups = [[0, 1, 4], [0, 1, 2], [2, 3]]
    np.testing.assert_array_equal(
        duplicates.cross_split(groups, splits), [False, True, True]
    )
    assert duplicates.cross_split([], splits).shape == (0,)
