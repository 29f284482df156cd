"""Feature cache: train a head on backbone features computed once.

While only the head trains and the data has no random augmentation, the
frozen backbone turns each image into the same pooled features every epoch.
`fit_head_cached` computes them once, in inference mode, keeps them on disk,
and trains the model's own head layers on them: a linear probe (or a small
MLP head) at the cost of the head alone.

The cache is content-addressed. Under `cache_dir/<model key>/` each entry
`<data key>/` holds one dataset's features, labels and per-image digests:

- the model key is a SHA-256 over the backbone's config and weights, the
  image converter's config, the image size and the pooling config, so any
  change to what computes features gives a new directory;
- the data key is a SHA-256 over the bytes of every image and label as the
  dataset yields them, independent of their order, so a dataset that
  reshuffles on each pass still finds its entry;
- images are matched one by one by digest, so an image seen before under
  the same model key never runs through the backbone again, whichever
  entry holds it (changed labels or a few new images cost little).

Entries are never trusted blindly. Each entry's `meta.json` holds the
SHA-256 of its other files, and an entry is used only if every file
matches. A damaged entry (truncated, altered or unreadable) is ignored:
its images run through the backbone again, the entry of the data being
read is rewritten, any other damaged entry is removed, and one warning
line says how many were found. Entries appear by an atomic rename of a
complete directory, so a run killed mid-write or two runs writing the same
entry at once never leave a partial one; deleting the cache directory is
always safe.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import keras
import numpy as np

from kerastl.utils import atomic
from kerastl.utils.cache import cache_root

# Part of the model key: bump it when the entry layout changes, so old
# entries are not read with the new layout. Version 2 added checksums.
_FORMAT_VERSION = 2
# The files of an entry whose SHA-256 `meta.json` records.
_CHECKED_FILES = ("features.npy", "labels.npy", "images.npy")


@dataclasses.dataclass(frozen=True)
class CachedFeatures:
    """A dataset's pooled backbone features, in the order it yielded them.

    Attributes:
        features: `(num_examples, feature_dim)` array.
        labels: `(num_examples, ...)` array, as the dataset yielded them.
        batch_size: int. Size of the dataset's first batch.
        path: `pathlib.Path` of the cache entry.
        hit: bool. Whether an intact entry existed already (a damaged
            one is rebuilt, and is no hit).
        computed: int. How many images ran through the backbone.
        digests: list of bytes. Each example's image SHA-256, as the model
            receives it (after decoding, cropping and resizing): equal
            digests are identical images.

    Example:
    ```python
    cached = kerastl.train.features.cache_features(model, train_ds)
    print(cached.path, cached.hit, cached.features.shape)
    ```
    """

    features: np.ndarray
    labels: np.ndarray
    batch_size: int
    path: pathlib.Path
    hit: bool
    computed: int
    digests: list


def default_cache_dir():
    """The feature cache: `cache_root() / "features"`.

    Example:
    ```python
    kerastl.train.features.default_cache_dir()  # ~/.cache/kerastl/features
    ```
    """
    return cache_root() / "features"


def model_key(model):
    """SHA-256 (hex) of everything that maps an image to its features.

    The backbone's config and weights (including BatchNorm statistics), the
    image converter's config, the image size and the pooling config. Layer
    names are left out: they count up with every model built in a process,
    and do not change what the layers compute.

    Args:
        model: a `kerastl.TransferClassifier`.

    Example:
    ```python
    kerastl.train.features.model_key(model)[:12]
    ```
    """
    digest = hashlib.sha256(f"kerastl-features-{_FORMAT_VERSION}".encode())
    for layer in (model.backbone, model.image_converter, model.pooler):
        digest.update(_config_bytes(layer))
    digest.update(repr(tuple(model.image_size)).encode())
    for weight in model.backbone.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(memoryview(value).cast("B"))
    return digest.hexdigest()


def _config_bytes(layer):
    config = dict(layer.get_config())
    config.pop("name", None)
    config["class"] = type(layer).__qualname__
    return json.dumps(config, sort_keys=True, default=repr).encode()


def _array_digest(array):
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.digest()


class _FeatureIndex:
    """Image digest -> features, over the entries of one model key and the
    batches computed during this pass (a dataset may repeat an image).

    Only entries whose files match their checksums are indexed; the
    others are listed in `damaged`.
    """

    def __init__(self, root):
        self.sources = []
        self.rows = {}
        self.entries = set()
        self.damaged = []
        entries = sorted(root.iterdir()) if root.is_dir() else []
        for entry in entries:
            # Skip `atomic_path` temporaries of writes still in progress.
            if entry.name.startswith("."):
                continue
            loaded = _load_entry(entry)
            if loaded is None:
                self.damaged.append(entry)
            else:
                self.entries.add(entry.name)
                self.add(*loaded)

    def add(self, digests, features):
        source = len(self.sources)
        self.sources.append(features)
        for row, digest in enumerate(digests):
            self.rows.setdefault(bytes(digest), (source, row))

    def lookup(self, digests):
        """The features of every digest, or `None` if any is unknown."""
        found = [self.rows.get(digest) for digest in digests]
        if any(place is None for place in found):
            return None
        return np.stack([self.sources[s][row] for s, row in found])


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _load_entry(entry):
    """An entry's `(image digests, features)`, or `None` if it is damaged.

    Damaged: a file missing or unreadable, or not matching the SHA-256 in
    `meta.json`, or arrays whose lengths disagree.
    """
    try:
        meta = json.loads((entry / "meta.json").read_text())
        checksums = meta["sha256"]
        for name in _CHECKED_FILES:
            if _file_sha256(entry / name) != checksums[name]:
                return None
        digests = np.load(entry / "images.npy")
        # Hashing just read the file, so mapping it reads the page cache.
        features = np.load(entry / "features.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not len(digests) == len(features) == meta.get("examples"):
        return None
    return digests, features


def _remove_entry(entry):
    # Renamed away first, so a reader lists the whole entry or none of it.
    aside = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent)
    )
    # Another run may have removed it first.
    with contextlib.suppress(FileNotFoundError):
        os.replace(entry, aside)
    shutil.rmtree(aside, ignore_errors=True)


def cache_features(
    model,
    dataset,
    *,
    cache_dir=None,
    name="data",
    verbose="auto",
    print_fn=print,
):
    """Pooled backbone features of every image in `dataset`, cached on disk.

    Reads the dataset once. Each batch whose images all have cached features
    (same model key, same image bytes) is looked up; any other batch runs
    through `model.feature_extractor()` in inference mode. The result is
    stored as a new entry unless an intact one with the same data key
    exists. Prints one line saying which, and where, and a warning line
    when damaged entries were found (see the module docstring).

    Args:
        model: a `kerastl.TransferClassifier`.
        dataset: a `tf.data.Dataset` (or any iterable) of `(images, labels)`
            batches, without random augmentation.
        cache_dir: str, path-like or `None`. Defaults to
            `default_cache_dir()`.
        name: str. What to call the dataset in the printed line.
        verbose: `"auto"`, 0 or 1. 0 hides the progress bar.
        print_fn: callable for the one-line cache report.

    Returns:
        A `CachedFeatures`, in the order the dataset yielded the examples.

    Example:
    ```python
    cached = kerastl.train.features.cache_features(model, train_ds)
    cached.features.shape  # (num_examples, feature width)
    ```
    """
    cache = FeatureCache(model, cache_dir)
    cached = cache.read(dataset, name=name, verbose=verbose, print_fn=print_fn)
    cache.report_damage(print_fn)
    return cached


class _Extractor:
    """`model.feature_extractor()`, built on first use.

    A short (last) batch is padded to the first batch's size: under JAX and
    TensorFlow every new batch shape compiles the whole backbone again,
    which costs more than the padded rows.
    """

    def __init__(self, model):
        self.model = model
        self.extractor = None
        self.batch_size = None

    def __call__(self, images):
        if self.extractor is None:
            self.extractor = self.model.feature_extractor()
            self.batch_size = len(images)
        count = len(images)
        if count < self.batch_size:
            padding = np.zeros(
                (self.batch_size - count, *images.shape[1:]), images.dtype
            )
            images = np.concatenate([images, padding])
        features = self.extractor.predict_on_batch(images)
        return keras.ops.convert_to_numpy(features)[:count]


class FeatureCache:
    """The cache entries of one model, read and written dataset by dataset.

    The datasets of one `fit_head_cached` call share the model key, the
    compiled backbone and the image index (so validation images that are
    also training images are not computed twice).

    Example:
    ```python
    cache = kerastl.train.features.FeatureCache(model, cache_dir)
    cached = cache.read(train_ds, name="train", verbose=0, print_fn=print)
    ```
    """

    def __init__(self, model, cache_dir):
        root = pathlib.Path(cache_dir or default_cache_dir())
        self.root = root / model_key(model)
        self.index = _FeatureIndex(self.root)
        self.extractor = _Extractor(model)
        self.rebuilt = []

    def read(self, dataset, *, name, verbose, print_fn):
        read = self._read(dataset, name, verbose)
        examples = sorted(map(bytes.__add__, read.images, read.labels_digests))
        entry = self.root / hashlib.sha256(b"".join(examples)).hexdigest()
        cached = CachedFeatures(
            features=np.concatenate(read.features),
            labels=np.concatenate(read.labels),
            batch_size=read.batch_size,
            path=entry,
            hit=entry.name in self.index.entries,
            computed=read.computed,
            digests=read.images,
        )
        if cached.hit:
            print_fn(f"Feature cache hit ({name}): {entry}")
        else:
            _write_entry(cached, read.images)
            self.index.entries.add(entry.name)
            if entry in self.index.damaged:
                self.rebuilt.append(entry)
            print_fn(
                f"Feature cache written ({name}): {entry} ({read.computed} "
                f"of {len(cached.features)} images through the backbone)"
            )
        return cached

    def report_damage(self, print_fn):
        """Removes the damaged entries no read rebuilt; warns about all."""
        removed = []
        for entry in self.index.damaged:
            if entry in self.rebuilt or not entry.is_dir():
                continue
            # Checked again: another run may have rebuilt it meanwhile.
            if _load_entry(entry) is None:
                _remove_entry(entry)
                removed.append(entry)
        count = len(self.rebuilt) + len(removed)
        if not count:
            return
        parts = []
        if self.rebuilt:
            parts.append(
                f"{len(self.rebuilt)} rebuilt ({_paths(self.rebuilt)})"
            )
        if removed:
            parts.append(
                f"{len(removed)} removed ({_paths(removed)}), to be "
                "computed again when the data is next read"
            )
        one = count == 1
        print_fn(
            f"Warning: {count} damaged feature-cache "
            f"{'entry' if one else 'entries'} (truncated, altered or "
            f"unreadable) {'was' if one else 'were'} not used: "
            f"{'; '.join(parts)}. {'Its' if one else 'Their'} features were "
            "computed again from the images; results are unaffected. If "
            "this recurs, check the disk holding the cache."
        )

    def _read(self, dataset, name, verbose):
        """Hashes every example; runs the backbone only on unknown images."""
        read = _Pass()
        progress = _progress_bar(dataset, verbose)
        for step, batch in enumerate(dataset, start=1):
            images, labels = _split_batch(batch, name)
            read.batch_size = read.batch_size or len(images)
            digests = [_array_digest(image) for image in images]
            features = self.index.lookup(digests)
            if features is None:
                features = self.extractor(images)
                self.index.add(digests, features)
                read.computed += len(images)
            read.features.append(features)
            read.labels.append(labels)
            read.images.extend(digests)
            read.labels_digests.extend(_array_digest(y) for y in labels)
            if progress is not None:
                progress.update(step)
        if not read.features:
            raise ValueError(
                f"The {name} dataset is empty, so there are no features to "
                "train the head on. Check the data source and any `take()` "
                "or filter applied to it."
            )
        if progress is not None and progress.target is None:
            # A bar without a known length ends only when told to.
            progress.update(step, finalize=True)
        return read


@dataclasses.dataclass
class _Pass:
    """What one pass over a dataset collected, batch by batch."""

    features: list = dataclasses.field(default_factory=list)
    labels: list = dataclasses.field(default_factory=list)
    images: list = dataclasses.field(default_factory=list)
    labels_digests: list = dataclasses.field(default_factory=list)
    batch_size: int = 0
    computed: int = 0


def _split_batch(batch, name):
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(
            f"The feature cache needs the {name} dataset to yield "
            "`(images, labels)` batches; it yielded "
            f"{type(batch).__name__} with "
            f"{len(batch) if isinstance(batch, (tuple, list)) else 1} "
            "part(s). Sample weights and dict inputs are not supported: "
            "train in-graph (model.fit) for those."
        )
    return np.asarray(batch[0]), np.asarray(batch[1])


def _progress_bar(dataset, verbose):
    if verbose == 0:
        return None
    target = None
    if hasattr(dataset, "cardinality"):
        target = int(dataset.cardinality())
    elif hasattr(dataset, "__len__"):
        target = len(dataset)
    return keras.utils.Progbar(
        target if target and target > 0 else None,
        verbose=2 if verbose == 2 else 1,
        unit_name="batch",
    )


def _paths(entries):
    return ", ".join(str(entry) for entry in entries)


def _write_entry(cached, digests):
    """Publishes the entry whole, by renaming a complete directory.

    An existing (damaged) entry is swapped out atomically by
    `atomic_path`. If another run publishes the same entry in the instant
    between that check and the rename, the rename fails; its entry is
    then kept, as it holds the same features.
    """
    try:
        with atomic.atomic_path(cached.path) as tmp:
            tmp.mkdir()
            np.save(tmp / "features.npy", cached.features)
            np.save(tmp / "labels.npy", cached.labels)
            # One row of 32 SHA-256 bytes per image, in the rows' order.
            np.save(
                tmp / "images.npy",
                np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32),
            )
            meta = {
                "format": _FORMAT_VERSION,
                "examples": len(cached.features),
                "feature_dim": int(cached.features.shape[-1]),
                "backend": keras.config.backend(),
                "sha256": {
                    name: _file_sha256(tmp / name) for name in _CHECKED_FILES
                },
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    except OSError:
        if _load_entry(cached.path) is None:
            raise
