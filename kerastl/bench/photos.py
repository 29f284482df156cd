"""The photo pipeline: camera-sized JPEGs through kerastl's input pipeline.

What most users feed kerastl is folders of photos, not arrays. This part of
`kerastl bench` writes 12-megapixel JPEGs like a phone's (4000x3000, about
3 MB each; a few progressive, as web images are, and EXIF-rotated) and times
three ways of turning them into model-ready batches, at `photo_size`:

- `full`: each file decoded whole with PIL, then center-cropped and
  resized, as kerastl did before 0.2 (and as Keras' own folder loader
  does);
- `reduced`: the pipeline with `data.cache_images = False`: JPEGs decoded
  at 1/2, 1/4 or 1/8 scale in the decoder, then shrunk to twice the
  model's size;
- `cached`: the prepared-image cache, after its one preparing pass (timed
  separately): small JPEGs decoded by TensorFlow, no PIL in the loop.

Images per second are for the whole machine and per core; the cache's
disk cost is given per 1,000 images, and how far the cached pipeline's
model input is from the uncached one's.
"""

import functools
import os
import pathlib
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from kerastl.data import images
from kerastl.data import pipeline
from kerastl.data.prepared import PreparedImages

# A phone's 12 MP photo.
_PHOTO_SIZE = (4000, 3000)
_EXIF_ORIENTATION = 0x0112
_ROTATED_90 = 6


def write_photos(folder, count, size=_PHOTO_SIZE):
    """Writes `count` camera-like JPEGs; returns their paths.

    Smooth colour fields, texture and per-pixel grain at quality 92 give
    files of a phone's size (about 3 MB at 12 MP). Every fourth file is
    progressive (as many web images are; these decode 2.5 times slower
    reduced), every third carries an EXIF rotation.

    Args:
        folder: path. Where to write them.
        count: int.
        size: `(width, height)`. Defaults to 4000x3000.

    Example:
    ```python
    paths = write_photos("/tmp/photos", 8)
    ```
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    paths = []
    for i in range(count):
        rng = np.random.default_rng(i)
        colours = Image.fromarray(rng.integers(0, 256, (6, 8, 3), np.uint8))
        texture = Image.fromarray(
            rng.integers(0, 256, (height // 12, width // 12, 3), np.uint8)
        )
        grain = Image.fromarray(rng.integers(0, 256, (height, width), np.uint8))
        photo = Image.blend(
            colours.resize(size, Image.Resampling.BICUBIC),
            texture.resize(size, Image.Resampling.BILINEAR),
            0.3,
        )
        photo = Image.blend(photo, grain.convert("RGB"), 0.04)
        exif = Image.Exif()
        if i % 3 == 2:
            exif[_EXIF_ORIENTATION] = _ROTATED_90
        path = folder / f"photo {i:03d}.jpg"
        photo.save(path, quality=92, progressive=i % 4 == 3, exif=exif)
        paths.append(str(path))
    return paths


def _full_decode(path, image_size):
    pixels = tf.numpy_function(images.read_rgb, [path], tf.uint8)
    pixels = tf.ensure_shape(pixels, (None, None, 3))
    return pipeline.center_crop_resize(pixels, image_size)


def _batches(paths, image_size, prepared=None, full=False):
    dataset = tf.data.Dataset.from_tensor_slices(
        [os.fsencode(path) for path in paths]
    )
    if full:
        # The whole file decoded, as before reduced decoding.
        return (
            dataset.map(
                functools.partial(_full_decode, image_size=image_size),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            .batch(8)
            .prefetch(tf.data.AUTOTUNE)
        )
    labelled = tf.data.Dataset.zip(
        (dataset, tf.data.Dataset.from_tensor_slices(np.zeros(len(paths))))
    )
    return pipeline.make_split(
        labelled,
        image_size=image_size,
        batch_size=8,
        num_classes=1,
        multi_label=False,
        training=False,
        seed=0,
        augment=None,
        count=len(paths),
        prepared=prepared,
    ).map(lambda x, _: x)


def _speed(dataset, count, repeats):
    """Images/s of the fastest of `repeats` full passes."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in dataset:
            pass
        best = min(best, time.perf_counter() - start)
    return count / best


def photo_pipeline(count, photo_size=224, repeats=2, print_fn=print):
    """Times the full, reduced and cached photo pipelines.

    Args:
        count: int. Number of 12 MP JPEGs to write and read.
        photo_size: int. The model's square input size. Defaults to `224`.
        repeats: int. Passes over the photos per way; the fastest counts.
            Defaults to `2`.
        print_fn: callable for progress lines. Defaults to `print`.

    Returns:
        dict, JSON-ready: `photos`, `photo_size`, `images_per_second` and
        `images_per_second_per_core` (`full`, `reduced`, `cached`),
        `prepare_images_per_second` (the cache's one preparing pass),
        `cache_mb_per_1000_images`, `cached_vs_reduced_mean_abs` (in
        0-255 pixel values) and `speedup_cached_vs_full`.

    Example:
    ```python
    results = photo_pipeline(16)
    results["images_per_second"]["cached"]
    ```
    """
    image_size = (photo_size, photo_size)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        print_fn(f"photo pipeline: writing {count} 12 MP JPEGs")
        paths = write_photos(pathlib.Path(scratch) / "photos", count)
        cache = PreparedImages(
            pipeline.decode_size(image_size),
            root=pathlib.Path(scratch) / "cache",
        )
        start = time.perf_counter()
        reasons = cache.prepare(paths, verbose=False)
        prepare_seconds = time.perf_counter() - start
        if any(reasons):
            raise RuntimeError(f"Generated photos unreadable: {reasons}")
        ways = {
            "full": _batches(paths, image_size, full=True),
            "reduced": _batches(paths, image_size),
            "cached": _batches(paths, image_size, prepared=cache),
        }
        speeds = {
            way: _speed(dataset, count, repeats)
            for way, dataset in ways.items()
        }
        reduced = np.concatenate(list(ways["reduced"].as_numpy_iterator()))
        cached = np.concatenate(list(ways["cached"].as_numpy_iterator()))
        disk = sum(
            entry.stat().st_size
            for entry in cache.folder.rglob("*")
            if entry.is_file()
        )
    print_fn(
        "photo pipeline (images/s): "
        + ", ".join(f"{way} {speed:.1f}" for way, speed in speeds.items())
    )
    return {
        "photos": count,
        "photo_size": photo_size,
        "images_per_second": _rounded(speeds),
        "images_per_second_per_core": _rounded(
            {way: speed / cores for way, speed in speeds.items()}
        ),
        "prepare_images_per_second": round(count / prepare_seconds, 2),
        "cache_mb_per_1000_images": round(disk / count * 1000 / 1e6, 1),
        "cached_vs_reduced_mean_abs": round(
            float(np.abs(cached - reduced).mean()), 3
        ),
        "speedup_cached_vs_full": round(speeds["cached"] / speeds["full"], 1),
    }


def _rounded(speeds):
    return {way: round(speed, 2) for way, speed in speeds.items()}
