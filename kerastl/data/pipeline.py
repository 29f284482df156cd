"""tf.data transforms: decode, crop, resize, augment, batch.

tf.data feeds every Keras backend; the Keras preprocessing layers used here
run inside it as TensorFlow ops whatever `KERAS_BACKEND` is.

Resize policy: each image is center-cropped to the target aspect ratio and
then resized bilinearly to `image_size`, as keras-hub's `ImageConverter`
does with `crop_to_aspect_ratio=True`, so nothing is stretched. With
`Augment(random_resized_crop=True)` a random crop of 8% to 100% of the
image, aspect ratio 3/4 to 4/3, replaces the center crop on training
images. Large image files are decoded reduced, to no less than twice the
model's size: see `decode_size`.

Randomness is stateless and keyed on the seed: shuffling, flips and crops
are the same on every run with the same seed, and differ between epochs.
RandAugment runs once per batch, sequentially, so its draws are seeded and
reproducible too.
"""

import functools
import os

import keras
import tensorflow as tf

from kerastl.data import images as image_io
from kerastl.data import mixing

# Encoded examples held for shuffling tfds data, whose images are decoded
# before the shuffle; file paths and arrays are shuffled whole.
_TFDS_SHUFFLE_BUFFER = 1024


# Large images are decoded reduced (JPEG in the decoder, at 1/2, 1/4 or 1/8
# scale) and then shrunk, antialiased, to the smallest size with each side
# at least this many times the model's side; the prepared-image cache
# stores them at that size. The center crop then spans twice the model's
# size, so the bilinear resize (which does not antialias) only halves it,
# averaging 2x2 pixels, and on smooth images the model sees the pixels of a
# full decode to within 1/255 on average (tests/test_hostile.py); on
# detailed ones, pixels closer to an antialiased resize. A 12 MP JPEG for
# 224x224 then takes a fifth of the time to decode and a sixteenth of the
# memory, and its cache entry about 200 KB. Random resized crops smaller
# than half the image are upsampled, as they are from ImageNet's own
# (about 400x350) images in the reference recipes and FFCV's 400-512 px
# stores.
_DECODE_FACTOR = 2


def decode_size(image_size):
    """The smallest `(height, width)` an image file is decoded at.

    Larger images are decoded reduced and shrunk; see `images.read_rgb`.

    Args:
        image_size: `(height, width)` of the model's input.

    Example:
    ```python
    decode_size((224, 224))  # (448, 448)
    ```
    """
    return tuple(_DECODE_FACTOR * int(side) for side in image_size)


def _read_file(path, min_size, max_pixels):
    read = functools.partial(
        image_io.read_rgb, min_size=min_size, max_pixels=max_pixels
    )
    image = tf.numpy_function(read, [path], tf.uint8)
    return tf.ensure_shape(image, (None, None, 3))


def _read_prepared(path, prepared):
    encoded = tf.numpy_function(prepared.read, [path], tf.string)
    image = tf.io.decode_image(
        tf.ensure_shape(encoded, ()), channels=3, expand_animations=False
    )
    return tf.ensure_shape(image, (None, None, 3))


def _to_rgb(image):
    image = tf.convert_to_tensor(image)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return image


def center_crop_resize(image, image_size):
    """Center-crops `image` to the aspect ratio of `image_size`, resizes it.

    Args:
        image: `(H, W, 3)` tensor, any real dtype.
        image_size: `(height, width)` of the result.

    Returns:
        float32 `(height, width, 3)`.

    Example:
    ```python
    image = center_crop_resize(tf.zeros((480, 640, 3), tf.uint8), (224, 224))
    ```
    """
    height, width = image_size
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    # Integer arithmetic as keras' Resizing(crop_to_aspect_ratio=True).
    crop_h = tf.minimum(h, tf.maximum(1, (w * height) // width))
    crop_w = tf.minimum(w, tf.maximum(1, (h * width) // height))
    top = (h - crop_h) // 2
    left = (w - crop_w) // 2
    image = image[top : top + crop_h, left : left + crop_w]
    return _resize(image, image_size)


def _resize(image, image_size):
    image = tf.image.resize(tf.cast(image, tf.float32), image_size)
    return tf.clip_by_value(image, 0.0, 255.0)


def random_crop_resize(image, image_size, seed):
    """A random resized crop (Inception style), then resize.

    Args:
        image: `(H, W, 3)` tensor.
        image_size: `(height, width)` of the result.
        seed: int tensor of shape `(2,)`, for the stateless draws.

    Example:
    ```python
    crop = random_crop_resize(image, (224, 224), tf.constant([1, 2]))
    ```
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, size)
    return _resize(image, image_size)


def _format_label(label, num_classes, multi_label):
    if multi_label:
        if label.shape.rank == 0:
            label = tf.one_hot(label, num_classes)
        return tf.cast(label, tf.float32)
    return tf.cast(label, tf.int32)


def examples_dataset(examples):
    """Returns a dataset of `(image source, label)` for `Examples`.

    The image source is a path (decoded in `make_split`) or an image.
    Paths become `tf.string` tensors of the file system's bytes for each
    name (UTF-8 on Linux and macOS), so any file name works.

    Args:
        examples: `kerastl.data.examples.Examples`.

    Example:
    ```python
    dataset = examples_dataset(examples)
    ```
    """
    if examples.paths is not None:
        sources = tf.constant(
            [os.fsencode(path) for path in examples.paths],
            dtype=tf.string,
            shape=(len(examples.paths),),
        )
    else:
        sources = examples.images
    return tf.data.Dataset.from_tensor_slices((sources, examples.labels))


def make_split(
    dataset,
    *,
    image_size,
    batch_size,
    num_classes,
    multi_label,
    training,
    seed,
    augment,
    count,
    max_pixels=image_io.MAX_PIXELS,
    prepared=None,
):
    """Turns `(image or path, label)` examples into model-ready batches.

    Args:
        dataset: `tf.data.Dataset` of `(image, label)`: a file path
            (string), or a `uint8` image with 1 or 3 channels; an integer
            or multi-hot label.
        image_size: `(height, width)`.
        batch_size: int.
        num_classes: int.
        multi_label: bool. Multi-hot float32 labels if `True`, else int32.
        training: bool. Shuffle (seeded) and augment.
        seed: int.
        augment: `Augment` or `None`. Used only when `training`.
        count: int. Number of examples, for the shuffle buffer.
        max_pixels: int. The most pixels an image file may have; see
            `DataSpec.max_pixels`. Defaults to 50 million.
        prepared: `prepared.PreparedImages` or `None`. Read image files
            through this prepared-image cache (its `min_size` should be
            `decode_size(image_size)`); `None` decodes each file on every
            pass. Defaults to `None`.

    Returns:
        `tf.data.Dataset` of float32 `(B, H, W, 3)` images in [0, 255] and
        their labels; float32 class distributions when MixUp or CutMix mix
        the training batches.

    Example:
    ```python
    train = make_split(examples_dataset(examples), image_size=(224, 224),
                       batch_size=32, num_classes=10, multi_label=False,
                       training=True, seed=0, augment=Augment(), count=100)
    ```
    """
    image_size = tuple(int(s) for s in image_size)
    files = dataset.element_spec[0].dtype == tf.string
    augment = augment if training else None
    if training:
        # Paths and arrays shuffle whole and cheaply; decoded tfds images
        # are large, so they shuffle through a bounded buffer.
        buffer = (
            count
            if files or count < _TFDS_SHUFFLE_BUFFER
            else (_TFDS_SHUFFLE_BUFFER)
        )
        dataset = dataset.shuffle(
            max(1, buffer), seed=seed, reshuffle_each_iteration=True
        )
    if files:
        read = (
            functools.partial(
                _read_file,
                min_size=decode_size(image_size),
                max_pixels=max_pixels,
            )
            if prepared is None
            else functools.partial(_read_prepared, prepared=prepared)
        )
    else:
        read = _to_rgb
    prepare = _example_preparer(
        image_size, read, augment, num_classes, multi_label
    )
    if augment is not None:
        # One stateless seed pair per example, new values every epoch.
        seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda pair, pair_seeds: prepare(*pair, pair_seeds),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size)
    if augment is not None:
        dataset = _augment_batches(
            dataset, augment, seed, num_classes, multi_label
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _example_preparer(image_size, read, augment, num_classes, multi_label):
    """The per-example map: `read` the image (a file, or an array), crop
    and resize it, flip it, and format the label."""
    random_crop = augment is not None and augment.random_resized_crop

    def prepare(image, label, seeds=None):
        image = read(image)
        flip_seed = seeds
        if random_crop:
            crop_seed, flip_seed = tf.unstack(
                tf.random.experimental.stateless_split(seeds, 2)
            )
            image = random_crop_resize(image, image_size, crop_seed)
        else:
            image = center_crop_resize(image, image_size)
        if augment is not None and augment.flip:
            flip = tf.random.stateless_uniform((), flip_seed) < 0.5
            image = tf.cond(
                flip, lambda: tf.reverse(image, axis=[1]), lambda: image
            )
        image = tf.ensure_shape(image, (*image_size, 3))
        return image, _format_label(label, num_classes, multi_label)

    return prepare


def _augment_batches(dataset, augment, seed, num_classes, multi_label):
    """RandAugment, then MixUp or CutMix, on whole batches."""
    if augment.rand_augment:
        rand_augment = keras.layers.RandAugment(
            value_range=(0, 255),
            factor=augment.rand_augment / 10,
            seed=seed,
        )
        # Sequential: the layer's seed state then advances in order.
        dataset = dataset.map(
            lambda images, labels: (
                tf.clip_by_value(rand_augment(images, training=True), 0, 255),
                labels,
            )
        )
    if augment.mixup or augment.cutmix:
        dataset = mixing.mix_batches(
            dataset,
            mixup=augment.mixup,
            cutmix=augment.cutmix,
            num_classes=num_classes,
            multi_label=multi_label,
            # Its own stream, so turning mixing on leaves the crops alone.
            seed=seed + 1,
        )
    return dataset
