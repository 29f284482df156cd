"""MixUp and CutMix: batches blended with a shuffled copy of themselves.

MixUp (Zhang et al., 2018) blends whole images, `lam * x + (1 - lam) *
x[perm]`; CutMix (Yun et al., 2019) pastes a box of `x[perm]` covering a
`1 - lam` share of the image. Labels are mixed by the same `lam` (for CutMix,
the box's exact area), so multi-class labels become class distributions and
multi-hot labels soft multi-hot vectors. `lam` is drawn from
Beta(alpha, alpha) once per batch, as timm does.

The draws are stateless and keyed on per-batch seeds from a
`tf.data.Dataset.random` stream: the same seed gives the same batches, each
epoch new ones, and a resumed run replays them.
"""

import tensorflow as tf


def _beta(alpha, seed):
    """One Beta(alpha, alpha) draw from two stateless gamma draws."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma((), seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma((), seeds[1], alpha=alpha)
    return a / (a + b)


def _mixup(images, labels, perm, lam):
    images = lam * images + (1.0 - lam) * tf.gather(images, perm)
    return images, lam


def _cutmix(images, labels, perm, lam, seed):
    height, width = images.shape[1], images.shape[2]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(ratio * height, tf.int32)
    cut_w = tf.cast(ratio * width, tf.int32)
    center = tf.random.stateless_uniform(
        (2,), seed, minval=0, maxval=1 << 30, dtype=tf.int32
    )
    cy, cx = center[0] % height, center[1] % width
    y1 = tf.clip_by_value(cy - cut_h // 2, 0, height)
    y2 = tf.clip_by_value(cy + cut_h // 2, 0, height)
    x1 = tf.clip_by_value(cx - cut_w // 2, 0, width)
    x2 = tf.clip_by_value(cx + cut_w // 2, 0, width)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    mask = tf.cast(inside, images.dtype)[None, :, :, None]
    images = images * (1.0 - mask) + tf.gather(images, perm) * mask
    # A box clipped at the border is smaller than asked: mix labels by the
    # area actually pasted.
    area = tf.cast((y2 - y1) * (x2 - x1), tf.float32)
    return images, 1.0 - area / float(height * width)


def mix_batches(dataset, *, mixup, cutmix, num_classes, multi_label, seed):
    """Applies MixUp and/or CutMix to a dataset of `(images, labels)` batches.

    With both alphas set, each batch uses one of the two, chosen with equal
    odds.

    Args:
        dataset: `tf.data.Dataset` of float32 `(B, H, W, 3)` images and
            int32 `(B,)` labels, or float32 `(B, C)` multi-hot labels.
        mixup: float. MixUp's Beta alpha; `0` disables it.
        cutmix: float. CutMix's Beta alpha; `0` disables it.
        num_classes: int.
        multi_label: bool.
        seed: int. Seeds the per-batch draws.

    Returns:
        A dataset of mixed images and float32 `(B, C)` soft labels.

    Example:
    ```python
    train = mix_batches(train, mixup=0.2, cutmix=1.0, num_classes=10,
                        multi_label=False, seed=0)
    ```
    """
    seeds = tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True
    ).batch(2)

    def mix(batch, batch_seed):
        images, labels = batch
        if not multi_label:
            labels = tf.one_hot(labels, num_classes)
        labels = tf.cast(labels, tf.float32)
        perm_seed, beta_seed, box_seed, pick_seed = tf.unstack(
            tf.random.experimental.stateless_split(batch_seed, 4)
        )
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(images)[0]), perm_seed
        )
        if mixup and cutmix:
            use_cutmix = tf.random.stateless_uniform((), pick_seed) < 0.5
        else:
            use_cutmix = tf.constant(bool(cutmix))

        def do_cutmix():
            return _cutmix(
                images, labels, perm, _beta(cutmix or 1.0, beta_seed), box_seed
            )

        def do_mixup():
            return _mixup(images, labels, perm, _beta(mixup or 1.0, beta_seed))

        images, lam = tf.cond(use_cutmix, do_cutmix, do_mixup)
        labels = lam * labels + (1.0 - lam) * tf.gather(labels, perm)
        return images, labels

    return tf.data.Dataset.zip((dataset, seeds)).map(mix)
