"""Duplicates: images stored twice, and images that look alike, within a
dataset and across its splits.

Exact duplicates share a file digest. Near duplicates (re-encodings,
resizes, crops, burst shots) have nearly the same pooled backbone features:
their cosine similarity reaches a threshold, 0.95 by default, as in the
embedding-space deduplication of SemDeDup (Abbas et al., 2023). A pair
that spans train and test leaks the answer into evaluation; a cluster
within one split weighs that image more than the others.

All-pairs similarity is computed in tiles of `block` rows, so a 60,000
image dataset never holds a 60,000 x 60,000 matrix.
"""

import dataclasses

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph


def exact_duplicate_groups(digests):
    """The examples that share a digest, grouped.

    Args:
        digests: one digest per example: `bytes`, or a hex `str` (case
            does not matter; `bytes` and their hex spelling are the same).

    Returns:
        list of lists of int: each group's indices, ascending, two or more
        per group; the groups ordered by their first index.

    Example:
    ```python
    groups = kerastl.evaluate.duplicates.exact_duplicate_groups(
        [hashlib.sha256(p.read_bytes()).digest() for p in paths]
    )
    ```
    """
    groups = {}
    for index, digest in enumerate(digests):
        key = digest.hex() if isinstance(digest, bytes) else digest.lower()
        groups.setdefault(key, []).append(index)
    # Dicts keep insertion order: the groups come by first index.
    return [group for group in groups.values() if len(group) > 1]


@dataclasses.dataclass(frozen=True, eq=False)
class NearDuplicates:
    """Pairs of examples whose features point the same way.

    Args:
        first: int array `(p,)`: the lower index of each pair.
        second: int array `(p,)`: the higher index.
        similarity: float array `(p,)`: their cosine similarity, in
            descending order (ties by `first`, then `second`).
        found: int. How many pairs reached the threshold; more than `p`
            when a `limit` kept only the most similar.

    Example:
    ```python
    near = kerastl.evaluate.duplicates.near_duplicate_pairs(features)
    for a, b, s in zip(near.first, near.second, near.similarity):
        print(paths[a], paths[b], f"{s:.3f}")
    ```
    """

    first: np.ndarray
    second: np.ndarray
    similarity: np.ndarray
    found: int = 0

    @property
    def pairs(self):
        """The pairs as an int array `(p, 2)`, for `group_pairs` and
        `cross_split`."""
        return np.stack([self.first, self.second], axis=1)


def near_duplicate_pairs(
    features, *, threshold=0.95, exclude=None, block=1024, limit=None
):
    """Every pair whose features have cosine similarity >= `threshold`.

    The features are L2-normalised and multiplied in tiles of `block` rows
    against the rows from the tile's first row on (the upper triangle), so
    besides a normalised copy of `features` the memory in use is one
    `block x n` tile and its boolean mask: for 1024 x 60,000 float32
    similarities, 246 MB and 61 MB. float32 features stay float32; others
    are computed in float64.

    A zero feature vector has no direction: it normalises to zero, its
    similarity to anything is 0, and (`threshold` being positive) it is
    never a near duplicate.

    Args:
        features: float array `(n, d)`: pooled backbone features.
        threshold: float in (0, 1]. Defaults to 0.95.
        exclude: optional disjoint groups of indices, such as
            `exact_duplicate_groups`'s: pairs within one group are left
            out, since they are already known.
        block: int. Rows per tile. Defaults to 1024.
        limit: int or `None`. Keep only this many pairs, the most similar:
            with features that do not tell images apart, nearly every
            pair passes and the list would not fit in memory. `None`
            keeps all.

    Returns:
        `NearDuplicates`.

    Raises:
        ValueError: `threshold` outside (0, 1]: at 0 or below, every
            unrelated (orthogonal) pair would be listed.

    Example:
    ```python
    near = kerastl.evaluate.duplicates.near_duplicate_pairs(
        features, exclude=exact_groups
    )
    ```
    """
    if not 0 < threshold <= 1:
        raise ValueError(
            f"The similarity threshold must lie in (0, 1]; got {threshold}."
        )
    features = np.asarray(features)
    if features.dtype != np.float32:
        features = features.astype(np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms > 0, norms, 1)
    group = np.full(len(unit), -1)
    for number, members in enumerate(exclude or ()):
        group[list(members)] = number
    empty = np.zeros(0, dtype=np.intp)
    # One empty part, so that no features still concatenate.
    parts = [(empty, empty, np.zeros(0, dtype=unit.dtype))]
    found = 0
    for start in range(0, len(unit), block):
        tile = unit[start : start + block] @ unit[start:].T
        rows, columns = np.nonzero(tile >= threshold)
        similarity = tile[rows, columns]
        rows, columns = rows + start, columns + start
        keep = (columns > rows) & (
            (group[rows] != group[columns]) | (group[rows] < 0)
        )
        parts.append((rows[keep], columns[keep], similarity[keep]))
        found += int(keep.sum())
        if limit is not None and sum(len(p[0]) for p in parts) > 2 * limit:
            parts = [_most_similar(parts, limit)]
    first, second, similarity = _most_similar(parts, limit)
    order = np.lexsort((second, first, -similarity))
    return NearDuplicates(first[order], second[order], similarity[order], found)


def _most_similar(parts, limit):
    """The parts concatenated, cut to the `limit` most similar pairs."""
    first, second, similarity = (
        np.concatenate(part) for part in zip(*parts, strict=True)
    )
    if limit is not None and len(similarity) > limit:
        top = np.argpartition(-similarity, limit - 1)[:limit]
        first, second, similarity = first[top], second[top], similarity[top]
    return first, second, similarity


def group_pairs(pairs, n):
    """The connected components of the graph the pairs draw on `n` nodes.

    Near-duplicate pairs chain (a~b, b~c): the components are the clusters
    to show together.

    Args:
        pairs: int array-like `(p, 2)`, such as `NearDuplicates.pairs`.
        n: int. The number of examples.

    Returns:
        list of lists of int: each component of two or more examples, its
        indices ascending; the components ordered by their first index.

    Example:
    ```python
    clusters = kerastl.evaluate.duplicates.group_pairs(near.pairs, len(paths))
    ```
    """
    pairs = np.asarray(pairs, dtype=np.intp).reshape(-1, 2)
    graph = sparse.coo_matrix(
        (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)
    )
    _, component = csgraph.connected_components(graph, directed=False)
    groups = {}
    for index, label in enumerate(component):
        groups.setdefault(label, []).append(index)
    # Dicts keep insertion order: the components come by first index.
    return [group for group in groups.values() if len(group) > 1]


def cross_split(pairs_or_groups, splits):
    """Which pairs or groups hold examples of more than one split.

    Such a pair is leakage: the same image, or nearly, is trained on and
    evaluated on (or tuned on).

    Args:
        pairs_or_groups: a sequence of index sequences: an int array
            `(p, 2)` such as `NearDuplicates.pairs`, or the lists
            `exact_duplicate_groups` and `group_pairs` return.
        splits: array-like `(n,)`: each example's split name (`"train"`,
            `"validation"`, `"test"`).

    Returns:
        bool array, one per pair or group.

    Example:
    ```python
    leaks = kerastl.evaluate.duplicates.cross_split(groups, splits)
    leaking = [g for g, leak in zip(groups, leaks) if leak]
    ```
    """
    splits = np.asarray(splits)
    return np.array(
        [
            bool(np.any(splits[list(group)] != splits[group[0]]))
            for group in pairs_or_groups
        ],
        dtype=bool,
    )
