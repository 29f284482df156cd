"""Small synthetic data for `--smoke` runs of tfds recipes."""

import numpy as np

from kerastl.data.examples import Examples


def random_examples(count, image_size, num_classes, multi_label, seed):
    """Random images and labels shaped like the real data.

    Args:
        count: int. Number of examples.
        image_size: `(height, width)`.
        num_classes: int.
        multi_label: bool. Multi-hot float32 labels if `True`, else int64.
        seed: int.

    Example:
    ```python
    examples = random_examples(8, (32, 32), 10, False, seed=0)
    ```
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, *image_size, 3), dtype=np.uint8)
    if multi_label:
        labels = (rng.random((count, num_classes)) < 0.3).astype(np.float32)
    else:
        # Every class appears before any repeats, as far as count allows.
        labels = (np.arange(count) % num_classes).astype(np.int64)
    return Examples(labels, images=images)


def color_images(num_images, num_classes, image_size=32, seed=0):
    """A learnable toy problem: each class is a colour, plus noise.

    Returns:
        `(images, labels)`: uint8 images and integer labels.

    Example:
    ```python
    images, labels = kerastl.data.synthetic.color_images(32, num_classes=3)
    ```
    """
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(num_classes, 3))
    labels = np.arange(num_images) % num_classes
    noise = rng.normal(0, 20, size=(num_images, image_size, image_size, 3))
    images = palette[labels][:, None, None, :] + noise
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int32)


def square_images(
    num_images, num_classes=3, image_size=64, square_size=16, seed=0
):
    """A toy problem with a known answer to "where does the model look?".

    Each image is coloured, textured noise with one small square of a
    class's colour at a random position: the square alone decides the
    class. A saliency map of a model that learned the task peaks inside
    the square (`kerastl.evaluate.explain`'s tests and docs).

    Args:
        num_images: int.
        num_classes: int, at most 6 (red, green, blue, yellow, magenta,
            cyan squares).
        image_size: int. Height and width.
        square_size: int. The square's side.
        seed: int.

    Returns:
        `(images, labels, corners)`: uint8 `(n, size, size, 3)` images,
        int32 labels, and int `(n, 2)` top-left corners `(row, column)` of
        the squares.

    Example:
    ```python
    images, labels, corners = kerastl.data.synthetic.square_images(64)
    ```
    """
    palette = np.array(
        [[230, 25, 25], [25, 200, 25], [25, 25, 230]]
        + [[230, 230, 25], [230, 25, 230], [25, 230, 230]]
    )
    if not 2 <= num_classes <= len(palette):
        raise ValueError(
            f"`num_classes` must be in [2, {len(palette)}]. "
            f"Received: num_classes={num_classes}"
        )
    rng = np.random.default_rng(seed)
    # Texture: coarse blobs of colour plus fine grain, so no single pixel
    # colour or position gives the class away.
    coarse = rng.uniform(40, 215, (num_images, 8, 8, 3))
    scale = -(-image_size // 8)
    texture = np.repeat(np.repeat(coarse, scale, 1), scale, 2)
    texture = texture[:, :image_size, :image_size]
    images = texture + rng.normal(0, 25, texture.shape)
    labels = (np.arange(num_images) % num_classes).astype(np.int32)
    corners = rng.integers(0, image_size - square_size + 1, (num_images, 2))
    for image, label, (row, column) in zip(
        images, labels, corners, strict=True
    ):
        image[row : row + square_size, column : column + square_size] = palette[
            label
        ]
    return np.clip(images, 0, 255).astype(np.uint8), labels, corners
