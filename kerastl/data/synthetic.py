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
