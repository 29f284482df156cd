"""Reading image files with PIL: every mode becomes 3-channel RGB `uint8`.

PIL rather than `tf.io.decode_image` because it reads what cameras and the
web produce: palette, 16-bit, CMYK and EXIF-rotated images included.
"""

import concurrent.futures
import contextlib
import os

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError

# Modes `Image.convert("RGB")` handles correctly. 16-bit and float modes
# do not: `convert` clips them to 255 instead of rescaling.
_GRAY_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


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
        gray = np.clip(np.round(gray * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "P" and "transparency" in image.info:
        # Converting straight to RGB warns about the transparency.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def read_rgb(path):
    """Reads an image file as RGB `uint8` `(H, W, 3)`.

    Args:
        path: str or bytes. The image file.

    Example:
    ```python
    pixels = read_rgb("cat.png")
    ```
    """
    if isinstance(path, bytes):
        path = path.decode()
    with Image.open(path) as image:
        return to_rgb(image)


def check_file(path):
    """Returns why an image file cannot be read, or `None` if it can.

    The whole image is decoded, so truncated and corrupt files are caught.

    Args:
        path: str. The image file.

    Example:
    ```python
    reason = check_file("cat.jpg")  # None, "missing", "empty file", ...
    ```
    """
    if not os.path.isfile(path):
        return "missing"
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        read_rgb(path)
    except UnidentifiedImageError:
        return "not an image"
    except Exception as e:
        return f"corrupt: {e}"
    return None


def check_files(paths):
    """Checks image files in parallel; returns a reason or `None` for each.

    Args:
        paths: list of str. The image files.

    Example:
    ```python
    reasons = check_files(["a.jpg", "b.png"])
    ```
    """
    workers = min(32, (os.cpu_count() or 1) + 4)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(check_file, paths))
