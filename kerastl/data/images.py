"""Reading image files with PIL: every mode becomes 3-channel RGB `uint8`.

PIL rather than `tf.io.decode_image` because it reads what cameras and the
web produce: palette, 16-bit, CMYK and EXIF-rotated images included.

Any file name works (paths are the file system's own bytes end to end), and
no file can hang or exhaust a run: only regular files are opened (a named
pipe would block forever, a device never ends), an image's size is read
from its header and refused over `max_pixels` before anything is decoded,
and large images are decoded reduced to the size the model needs.
"""

import concurrent.futures
import contextlib
import dataclasses
import errno
import os
import stat

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

from kerastl.data.spec import MAX_PIXELS

# Modes `Image.convert("RGB")` handles correctly. 16-bit and float modes
# do not: `convert` clips them to 255 instead of rescaling.
_GRAY_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")

# Checking a file decodes it at the smallest size: a JPEG then decodes at
# 1/8 scale, which still parses its whole bitstream, so truncated and
# corrupt files are caught at a fraction of the cost.
_CHECK_SIZE = (1, 1)


class UnreadableImageError(ValueError):
    """An input file that cannot be used as an image, and why.

    Args:
        reason: str. Why, in a few words: `"missing"`, `"empty file"`,
            `"not an image"`, `"not a regular file: a named pipe (FIFO)"`,
            `"too large: ..."`, `"corrupt: ..."`.

    Example:
    ```python
    try:
        pixels = read_rgb("cat.jpg")
    except UnreadableImageError as e:
        print(e.reason)
    ```
    """

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def to_rgb(image):
    """Returns a PIL image as RGB `uint8` `(H, W, 3)`, EXIF rotation applied.

    Alpha is dropped (transparent pixels keep their stored colour, as
    `tf.io.decode_png(channels=3)` and torchvision do), 16-bit and float
    grayscale are rescaled to 0..255, and CMYK, palette and 1-bit images go
    through PIL's own conversion.

    Args:
        image: a `PIL.Image.Image`.

    Example:
    ```python
    with PIL.Image.open("photo.jpg") as image:
        pixels = to_rgb(image)
    ```
    """
    # A broken EXIF block leaves the pixels good: keep them unrotated.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    if image.mode in _GRAY_HIGH_DEPTH:
        gray = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            # Float images are stored in [0, 1] or already in [0, 255].
            scale = 255.0 if gray.max(initial=0.0) <= 1.0 else 1.0
        else:
            # 16-bit sensors and PNGs store 0..65535.
            scale = 255.0 / 65535.0
        # In place: a float copy of a large image is its biggest cost.
        gray *= scale
        np.round(gray, out=gray)
        gray = np.clip(gray, 0, 255, out=gray).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "P" and "transparency" in image.info:
        # Converting straight to RGB warns about the transparency.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _kind_reason(mode):
    """Why a file of this `st_mode` is not read, or `None` (regular)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        kind = "a folder (links to folders are not followed)"
    elif stat.S_ISFIFO(mode):
        kind = "a named pipe (FIFO)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device file"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "a special file"
    return f"not a regular file: {kind}"


def _open_regular(path):
    """Opens `path` for reading if it is a regular file (or a link to one).

    Raises `UnreadableImageError` for anything else, without opening it:
    opening a named pipe waits for a writer, reading a device never ends.
    """
    try:
        kind = _kind_reason(os.stat(path).st_mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnreadableImageError("a symbolic link loop") from e
        if e.errno == errno.ENOENT:
            broken = os.path.islink(path)
            reason = "a broken symbolic link" if broken else "missing"
            raise UnreadableImageError(reason) from e
        raise UnreadableImageError(f"cannot be read: {e.strerror}") from e
    if kind is not None:
        raise UnreadableImageError(kind)
    try:
        # Non-blocking, and checked again once open: a file replaced by a
        # pipe since the `stat` is refused instead of waited on.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise UnreadableImageError(f"cannot be read: {e.strerror}") from e
    file = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    reason = _kind_reason(info.st_mode)
    if reason is None and info.st_size == 0:
        reason = "empty file"
    if reason is not None:
        file.close()
        raise UnreadableImageError(reason)
    return file


def _too_large(width, height, max_pixels):
    return UnreadableImageError(
        f"too large: {width} x {height} pixels, over the max_pixels limit "
        f"of {max_pixels:,}; raise data.max_pixels to use it"
    )


def _allow_pil(max_pixels):
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and max_pixels > limit:
        # PIL would refuse images the user allowed. kerastl's own check,
        # from the header and before decoding, takes the place of PIL's.
        Image.MAX_IMAGE_PIXELS = max_pixels


def _decode(file, min_size, max_pixels):
    """Decodes an open image file, refusing it over `max_pixels`."""
    with Image.open(file) as image:
        width, height = image.size
        # `Image.open` reads only the header: nothing is decoded yet.
        if width * height > max_pixels:
            raise _too_large(width, height, max_pixels)
        if min_size is not None:
            # The same side for both axes, as an EXIF rotation may swap
            # them. JPEG decodes at the smallest 1/2, 1/4 or 1/8 scale
            # that keeps both sides at least that; other formats ignore it.
            side = max(min_size)
            image.draft("RGB", (side, side))
        return to_rgb(image)


def shrink(pixels, min_size):
    """Resizes `pixels` down to the smallest size, aspect ratio kept, with
    each side at least `min_size`; smaller images come back unchanged.

    PIL's resize filters over the whole footprint of each output pixel
    (antialiased), so no detail aliases into the model's input.

    Args:
        pixels: `uint8` array `(H, W, 3)`.
        min_size: `(height, width)`.

    Example:
    ```python
    shrink(np.zeros((3000, 4000, 3), np.uint8), (448, 448)).shape
    # (448, 597, 3)
    ```
    """
    height, width = pixels.shape[:2]
    scale = max(min_size[0] / height, min_size[1] / width)
    if scale >= 1.0:
        return pixels
    size = (
        max(min_size[1], round(width * scale)),
        max(min_size[0], round(height * scale)),
    )
    resized = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(resized)


def _read(path, min_size, max_pixels):
    """`read_rgb` without the reduction: each failure as its reason."""
    _allow_pil(max_pixels)
    with _open_regular(os.fsdecode(path)) as file:
        try:
            return _decode(file, min_size, max_pixels)
        except UnreadableImageError:
            raise
        except UnidentifiedImageError as e:
            raise UnreadableImageError("not an image") from e
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            # PIL refuses the image before kerastl sees its size (or warns
            # and warnings are errors): over its limit, so over ours too.
            raise UnreadableImageError(
                f"too large: over {Image.MAX_IMAGE_PIXELS:,} pixels, over the "
                f"max_pixels limit of {max_pixels:,}; raise data.max_pixels "
                "to use it"
            ) from None
        except Exception as e:
            raise UnreadableImageError(f"corrupt: {e}") from e


def read_rgb(path, min_size=None, max_pixels=MAX_PIXELS):
    """Reads an image file as RGB `uint8` `(H, W, 3)`.

    Only regular files (or links to them) are opened. The image's size is
    read from its header first, and an image over `max_pixels` is refused
    before it is decoded. With `min_size`, a large image comes back
    shrunk to the smallest size with each side at least `min_size`
    (aspect ratio kept, antialiased): JPEGs are first decoded reduced in
    the decoder (a fraction of the time and memory), other formats are
    decoded whole.

    Args:
        path: str, bytes or path-like. The image file; bytes are the file
            system's encoding of the name, as in a `tf.string` tensor.
        min_size: `(height, width)` or `None`. The smallest size the image
            may be shrunk to; `None` keeps it whole. Defaults to `None`.
        max_pixels: int. The most pixels (width x height) an image may
            have. Defaults to `MAX_PIXELS` (50 million).

    Raises:
        UnreadableImageError: the file cannot be read as an image; its
            `reason` says why.

    Example:
    ```python
    pixels = read_rgb("cat.png")
    small = read_rgb("photo.jpg", min_size=(448, 448))
    ```
    """
    pixels = _read(path, min_size, max_pixels)
    return pixels if min_size is None else shrink(pixels, min_size)


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, without decoding its pixels.

    Args:
        height: int. As stored (before any EXIF rotation).
        width: int.
        grayscale: bool. One channel (PIL modes `1`, `L`, `LA`, `I`,
            `I;16`, `F`).

    Example:
    ```python
    kerastl.data.images.header("cat.png").width
    ```
    """

    height: int
    width: int
    grayscale: bool


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def header(path):
    """Reads an image file's size and colour mode from its header.

    Args:
        path: str or path-like. A readable image file.

    Returns:
        An `ImageHeader`.

    Raises:
        UnreadableImageError: the file cannot be read as an image.

    Example:
    ```python
    kerastl.data.images.header("cat.png")  # ImageHeader(375, 500, False)
    ```
    """
    with _open_regular(path) as file:
        try:
            with Image.open(file) as image:
                width, height = image.size
                return ImageHeader(height, width, image.mode in _GRAY_MODES)
        except (OSError, ValueError) as error:
            raise UnreadableImageError(f"corrupt: {error}") from error


def check_file(path, max_pixels=MAX_PIXELS):
    """Returns why an image file cannot be read, or `None` if it can.

    The whole image is decoded (at the smallest size its format allows),
    so truncated and corrupt files are caught.

    Args:
        path: str or path-like. The image file.
        max_pixels: int. The most pixels an image may have. Defaults to
            `MAX_PIXELS`.

    Example:
    ```python
    reason = check_file("cat.jpg")  # None, "missing", "empty file", ...
    ```
    """
    try:
        _read(path, _CHECK_SIZE, max_pixels)
    except UnreadableImageError as e:
        return e.reason
    return None


def check_files(paths, max_pixels=MAX_PIXELS):
    """Checks image files in parallel; returns a reason or `None` for each.

    Args:
        paths: list of str. The image files.
        max_pixels: int. The most pixels an image may have. Defaults to
            `MAX_PIXELS`.

    Example:
    ```python
    reasons = check_files(["a.jpg", "b.png"])
    ```
    """
    workers = min(32, (os.cpu_count() or 1) + 4)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: check_file(p, max_pixels), paths))
