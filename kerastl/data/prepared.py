"""The prepared-image cache: each photo decoded once, at the size it is used.

A 12-megapixel camera JPEG takes about 150 ms to decode whole and 30 ms
reduced, every epoch; the model needs a few hundred pixels a side. As FFCV
does, kerastl decodes each image file once, shrinks it to the size the
pipeline reads it at (`pipeline.decode_size`: twice the model's side),
and stores it as a small JPEG that `tf.io.decode_jpeg` reads in about
2 ms, with no PIL and no Python decoding in the training loop. Preparing
doubles as the check of every file before training: a file that cannot be
prepared is unreadable, and is skipped and listed.

Under `cache_root()/images/`:

- `files/<ab>/<file key>`: for each image file as it is now (its real
  path, size, modification time and inode), the SHA-256 of its bytes and
  its pixel count. A file that is changed, replaced or moved gets a new
  file key and is read again, and the cache stays keyed by contents: the
  same photo under another name or folder finds its prepared image;
- `v1-<height>x<width>-q95/<cd>/<content SHA-256>`: the image as the
  pipeline reads it for one decode size, followed by the SHA-256 of its
  bytes. An image that was shrunk is a JPEG of quality 95 without chroma
  subsampling; one kept whole (no larger than that size) is a PNG, so the
  model sees exactly its pixels, as it does for an image over 65,500
  pixels long, which JPEG cannot hold.

Every entry is checked against its checksum when it is read; a missing or
damaged one is prepared again from the image file, in the training loop if
need be, so deleting the cache, or any part of it, is always safe. Files
appear by atomic rename: a run killed mid-write, or two runs preparing the
same image at once, never leave a partial entry (both write the same
bytes). The image files themselves are only read.
"""

import concurrent.futures
import hashlib
import io
import os
import pathlib

import keras
from PIL import Image

from kerastl.data import images
from kerastl.data.spec import MAX_PIXELS
from kerastl.data.spec import DataError
from kerastl.utils import atomic
from kerastl.utils.cache import CACHE_DIR_ENV
from kerastl.utils.cache import cache_root

# Part of every entry's folder name: bump it when what an entry holds
# changes, so old entries are never read as new ones.
_FORMAT_VERSION = 1
# Quality 95 without chroma subsampling: the model's input differs from the
# uncached pipeline's by 1.3/255 on average on the bench's grainy 12 MP
# photos and under 1/255 on smooth ones, and entries decode as fast as at
# quality 90 (2.4 against 2.3 ms at 597x448), for 40% more disk.
_QUALITY = 95
_CHECKSUM_BYTES = hashlib.sha256().digest_size
# JPEG's largest side. A longer image (a panorama strip) is stored as PNG;
# `tf.io.decode_image` reads either.
_JPEG_MAX_SIDE = 65_500


class PreparedImages:
    """Image files decoded once and kept at the size the pipeline reads.

    Args:
        min_size: `(height, width)`. Images are shrunk to the smallest
            size, aspect ratio kept, with each side at least this (see
            `images.read_rgb`); smaller images are kept whole.
        max_pixels: int. Larger images are refused (from their header,
            before decoding). Defaults to `MAX_PIXELS`.
        root: path or `None`. The cache folder; `None` for
            `cache_root() / "images"`. Defaults to `None`.

    Example:
    ```python
    cache = PreparedImages((448, 448))
    reasons = cache.prepare(["cat.jpg", "dog.jpg"])  # None where readable
    jpeg_bytes = cache.read("cat.jpg")
    ```
    """

    def __init__(self, min_size, max_pixels=MAX_PIXELS, root=None):
        self.min_size = tuple(int(side) for side in min_size)
        self.max_pixels = int(max_pixels)
        self.root = pathlib.Path(root) if root else cache_root() / "images"
        height, width = self.min_size
        self.folder = (
            self.root / f"v{_FORMAT_VERSION}-{height}x{width}-q{_QUALITY}"
        )
        self._entries = {}

    def prepare(self, paths, print_fn=print, verbose=True):
        """Makes sure every file has an entry; returns why each cannot.

        Files whose entry is there already cost a `stat` and two small
        reads; the others are decoded, in parallel threads, with a
        progress bar.

        Args:
            paths: list of str. The image files.
            print_fn: callable for the one-line summary. Defaults to
                `print`.
            verbose: bool. Show the summary and the progress bar.
                Defaults to `True`.

        Returns:
            A list with, for each path, `None` if it is ready, else the
            reason it cannot be read (as `images.check_file`).

        Example:
        ```python
        reasons = PreparedImages((448, 448)).prepare(paths)
        ```
        """
        reasons = [None] * len(paths)
        missing = []
        for i, path in enumerate(paths):
            entry = self._known_entry(path)
            if entry is None:
                missing.append(i)
            else:
                self._entries[path] = entry
        if not missing:
            return reasons
        if verbose:
            print_fn(
                f"Preparing {len(missing):,} of {len(paths):,} images once "
                f"(decoded and shrunk to at least {self.min_size[1]}x"
                f"{self.min_size[0]}); later epochs and runs read them from "
                f"{self.folder}"
            )
        bar = keras.utils.Progbar(len(missing)) if verbose else None
        workers = min(32, (os.cpu_count() or 1) + 4)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = {
                pool.submit(self._prepare_one, paths[i]): i for i in missing
            }
            for done, future in enumerate(
                concurrent.futures.as_completed(futures), start=1
            ):
                try:
                    future.result()
                except images.UnreadableImageError as e:
                    reasons[futures[future]] = e.reason
                if bar is not None:
                    bar.update(done)
        return reasons

    def read(self, path):
        """The prepared image of a file, as encoded bytes (JPEG or PNG).

        A missing or damaged entry is prepared again from the file.

        Args:
            path: str or bytes (the file system's encoding of the name,
                as `tf.numpy_function` passes a `tf.string`).

        Raises:
            images.UnreadableImageError: the file cannot be read.

        Example:
        ```python
        image = tf.io.decode_image(cache.read("cat.jpg"))
        ```
        """
        path = os.fsdecode(path)
        entry = self._entries.get(path) or self._known_entry(path)
        if entry is not None:
            body = _checked_body(entry)
            if body is not None:
                return body
        return self._prepare_one(path)

    def _file_key(self, path):
        info = os.stat(path)
        real = os.fsencode(os.path.realpath(path))
        facts = f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}".encode()
        return hashlib.sha256(real + b"\0" + facts).hexdigest()

    def _index_path(self, file_key):
        return self.root / "files" / file_key[:2] / file_key

    def _entry_path(self, digest):
        return self.folder / digest[:2] / digest

    def _known_entry(self, path):
        """The entry of `path` if the index knows it and it exists."""
        try:
            index = self._index_path(self._file_key(path))
            digest, pixels = index.read_text(encoding="ascii").split()
            if int(pixels) > self.max_pixels:
                return None
            entry = self._entry_path(digest)
            return entry if entry.is_file() else None
        except (OSError, ValueError, UnicodeDecodeError):
            # No entry yet, or an unreadable index file: prepare again.
            return None

    def _prepare_one(self, path):
        """Decodes `path`, writes its entry and index file; the entry's
        image bytes."""
        file_key = self._file_key_or_none(path)
        pixels = images.read_rgb(path, self.min_size, self.max_pixels)
        with open(path, "rb") as file:
            contents = file.read()
        digest = hashlib.sha256(contents).hexdigest()
        with Image.open(io.BytesIO(contents)) as image:
            width, height = image.size
        body = _encode(pixels, shrunk=pixels.size < width * height * 3)
        entry = self._entry_path(digest)
        try:
            with atomic.atomic_path(entry) as tmp:
                tmp.write_bytes(body + hashlib.sha256(body).digest())
            if file_key is not None:
                atomic.write_text(
                    self._index_path(file_key), f"{digest} {width * height}\n"
                )
        except OSError as e:
            raise DataError(
                f"Cannot write the prepared-image cache in {self.root}: "
                f"{e.strerror or e}. Point {CACHE_DIR_ENV} to a writable "
                "folder with free space, or set data.cache_images = False "
                "to decode every image on every epoch instead."
            ) from e
        self._entries[path] = entry
        return body

    def _file_key_or_none(self, path):
        # Taken before the file is read: a file changed while it is being
        # prepared gets a new key next time, and is prepared again.
        try:
            return self._file_key(path)
        except OSError:
            return None


def _encode(pixels, shrunk):
    """The entry's image bytes: JPEG for a shrunk image, else PNG.

    An image kept whole is small (at most twice the model's size on its
    short side): PNG keeps its pixels exact at little cost. Shrunk ones
    are stored as JPEG, a quarter of the size.
    """
    buffer = io.BytesIO()
    if not shrunk or max(pixels.shape[:2]) > _JPEG_MAX_SIDE:
        Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    else:
        Image.fromarray(pixels).save(
            buffer, "JPEG", quality=_QUALITY, subsampling=0
        )
    return buffer.getvalue()


def _checked_body(entry):
    """An entry's image bytes if its checksum matches, else `None`."""
    try:
        data = entry.read_bytes()
    except OSError:
        return None
    body, checksum = data[:-_CHECKSUM_BYTES], data[-_CHECKSUM_BYTES:]
    if len(data) <= _CHECKSUM_BYTES:
        return None
    return body if hashlib.sha256(body).digest() == checksum else None
