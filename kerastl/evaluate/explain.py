"""Saliency maps: which parts of an image a classifier's decision rests on.

A fine-tuned classifier can be right for the wrong reason (the background,
a watermark, the studio's lighting) and still pass every metric. Two
methods show where it looks, on every backend and backbone family:

- **Grad-CAM** (Selvaraju et al., ICCV 2017): a late feature map `A`, each
  channel weighted by the mean gradient of the class's logit over the
  positions, `ReLU(sum_k mean_ij(dy_c / dA_kij) * A_k)`. Convnets use the
  backbone's last feature map. Transformers use the tokens entering their
  last block: after it only the class token reaches the head, so the patch
  tokens there get no gradient; the class, distillation and register tokens
  are dropped and the patch grid restored.
- **Attention rollout** (Abnar & Zuidema, 2020): each block's attention,
  averaged over heads, plus the identity for the residual connection, rows
  renormalized, multiplied from the first block to the last; the map is
  the row of the token(s) the head pools. It does not depend on the class.
  For families whose blocks use Keras' `MultiHeadAttention` (ViT, DeiT,
  DINOv2).

Maps are of the logits (before temperature and activation: the class
score itself), taken with the backend's own autodiff
(`kerastl.utils.autodiff`), upsampled bilinearly to the input size and
scaled to [0, 1] per image: a map shows where, not how strongly.
"""

import contextlib
import dataclasses
import math

import keras
import numpy as np

from kerastl.models import backbones
from kerastl.models import decisions
from kerastl.models import grouping
from kerastl.utils import autodiff
from kerastl.utils import keras_internals

METHODS = ("auto", "gradcam", "rollout")
HEAD_FUSIONS = ("mean", "max", "min")

# Images per forward and backward pass. PyTorch keeps the whole forward
# graph of a batch for the backward pass: about 1 GB for 8 images through
# ViT-B/16 at 224x224.
BATCH_SIZE = 8


def gradcam(model, images, class_index=None, batch_size=BATCH_SIZE):
    """Grad-CAM heatmaps of a classifier's class scores.

    Args:
        model: a `kerastl.TransferClassifier` (any backbone family; its
            temperature, thresholds and dtype policy may be anything).
        images: `(n, height, width, 3)` raw images at `model.image_size`,
            uint8 or float in [0, 255], as the model takes them.
        class_index: `None`, an int, or one int per image. The class whose
            logit is explained. `None` explains each image's top class.
        batch_size: int. Images per forward and backward pass.

    Returns:
        float32 `(n, height, width)` heatmaps in [0, 1]; an image whose
        map is zero everywhere (no positive evidence) gives zeros.

    Example:
    ```python
    from kerastl import explain

    heatmaps = explain.gradcam(model, images)  # the predicted classes
    heatmaps = explain.gradcam(model, images, class_index=3)
    ```
    """
    images = _check_images(model, images)
    tap = _Tap(saliency_layer(model))
    logits_model = model.logits_model()
    classes = _class_indices(class_index, len(images), model.num_classes)
    maps = []
    with keras_internals.wrapped_call(tap.target.layer, tap.call):
        for batch, chosen, count in _batches(images, classes, batch_size):
            maps.append(
                _gradcam_batch(logits_model, tap, batch, chosen)[:count]
            )
    return _finish(_concatenate(maps), model.image_size)


def rollout(
    model, images, head_fusion="mean", discard_ratio=0.0, batch_size=BATCH_SIZE
):
    """Attention-rollout heatmaps of a transformer classifier.

    Args:
        model: a `kerastl.TransferClassifier` on a ViT, DeiT or DINOv2
            backbone.
        images: `(n, height, width, 3)` raw images at `model.image_size`.
        head_fusion: `"mean"`, `"max"` or `"min"`. How a block's heads are
            combined. Defaults to `"mean"` (Abnar & Zuidema).
        discard_ratio: float in [0, 1). The fraction of each image's
            weakest fused attention weights set to zero before the identity
            is added (vit-explain's noise filter), never the class token's
            own. Defaults to `0.0`.
        batch_size: int. Images per forward pass.

    Returns:
        float32 `(n, height, width)` heatmaps in [0, 1].

    Example:
    ```python
    from kerastl import explain

    heatmaps = explain.rollout(vit_model, images)
    ```
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(
            f"`head_fusion` must be one of {', '.join(HEAD_FUSIONS)}. "
            f"Received: head_fusion={head_fusion!r}"
        )
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(
            "`discard_ratio` is the fraction of attention weights dropped, "
            f"in [0, 1). Received: discard_ratio={discard_ratio!r}"
        )
    images = _check_images(model, images)
    layers = attention_layers(model)
    prefix = _prefix_tokens(model.backbone)
    logits_model = model.logits_model()
    maps = []
    for batch, _, count in _batches(images, None, batch_size):
        weights = [
            w[:count] for w in _attention_weights(logits_model, layers, batch)
        ]
        rolled = rollout_matrix(weights, head_fusion, discard_ratio)
        rows = _pooled_rows(model.pooler.mode, prefix, rolled.shape[1])
        heat = rolled[:, rows, :].mean(axis=1)[:, prefix:]
        maps.append(_grid(heat[..., None], 0, model.image_size)[..., 0])
    return _finish(_concatenate(maps), model.image_size)


def explain(model, images, method="auto", class_index=None, **kwargs):
    """Heatmaps by `method`: `gradcam(...)`, `rollout(...)` or the default.

    Args:
        model: a `kerastl.TransferClassifier`.
        images: `(n, height, width, 3)` raw images at `model.image_size`.
        method: `"auto"`, `"gradcam"` (every family) or `"rollout"` (ViT,
            DeiT, DINOv2). `"auto"` is `default_method(model)`, or Grad-CAM
            when a class is given. Defaults to `"auto"`.
        class_index: as in `gradcam`; rollout does not depend on the class
            and refuses one.
        **kwargs: other arguments of the method.

    Example:
    ```python
    from kerastl import explain

    heatmaps = explain.explain(model, images)  # rollout for a ViT
    heatmaps = explain.explain(model, images, method="gradcam")
    ```
    """
    if method == "auto":
        method = "gradcam" if class_index is not None else default_method(model)
    if method == "gradcam":
        return gradcam(model, images, class_index=class_index, **kwargs)
    if method == "rollout":
        if class_index is not None:
            raise ValueError(
                "Attention rollout follows the attention from the pooled "
                "token back to the patches, whatever the class, so it takes "
                "no class. Use method='gradcam' to explain one class. "
                f"Received: class_index={class_index!r}"
            )
        return rollout(model, images, **kwargs)
    raise ValueError(
        f"`method` must be one of {', '.join(METHODS)}. "
        f"Received: method={method!r}"
    )


def default_method(model):
    """The method whose maps point at the evidence best, by family.

    Attention rollout for transformers it works on (ViT, DeiT, DINOv2),
    Grad-CAM for every other family. Measured on coloured squares whose
    position alone carries the class (`experiments/explain_squares.py`):
    a ResNet's Grad-CAM peaks inside the square for 99% of images, a ViT's
    rollout for 63-66%, and a ViT's Grad-CAM for 15-16%, no better than
    the same ViT trained on shuffled labels.

    Example:
    ```python
    kerastl.explain.default_method(model)  # "gradcam" or "rollout"
    ```
    """
    try:
        attention_layers(model)
    except ValueError:
        return "gradcam"
    return "rollout"


def classes_to_explain(model, probabilities, max_classes=3):
    """The classes worth a map per image: what the model predicted.

    Multi-class: the top class. Multi-label: every class over its decision
    threshold (the model's tuned `thresholds`, else 0.5), most probable
    first, at most `max_classes`; the most probable class when none is.

    Args:
        model: a `kerastl.TransferClassifier`.
        probabilities: `(n, num_classes)` of the model.
        max_classes: int. The most maps per multi-label image.

    Returns:
        A list of `n` lists of class indices.

    Example:
    ```python
    probs = model.predict(images)
    kerastl.explain.classes_to_explain(model, probs)  # [[3], [0], ...]
    ```
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    top = probabilities.argmax(axis=1)
    if not model.multi_label:
        return [[int(index)] for index in top]
    chosen = decisions.apply_thresholds(probabilities, model.thresholds)
    result = []
    for row, picked, best in zip(probabilities, chosen, top, strict=True):
        order = [int(i) for i in np.argsort(-row, kind="stable") if picked[i]]
        result.append(order[:max_classes] or [int(best)])
    return result


@dataclasses.dataclass(frozen=True)
class SaliencyLayer:
    """Where Grad-CAM reads a model's feature map.

    Attributes:
        layer: the `keras.layers.Layer` whose input or output is the map.
        side: `"input"` or `"output"`.
        prefix_tokens: int. Leading non-patch tokens of a token sequence
            (class, distillation, register), dropped from the map.
    """

    layer: object
    side: str
    prefix_tokens: int


def saliency_layer(model):
    """The layer whose feature map Grad-CAM weighs, for any family.

    Transformers with repeated blocks (ViT, DeiT, DINOv2): the input of the
    last block. Everything else (convnets, Swin): the backbone's output, a
    feature map or a grid of patch tokens.

    Args:
        model: a `kerastl.TransferClassifier`.

    Example:
    ```python
    kerastl.explain.saliency_layer(model).layer.name  # "transformer_block_12"
    ```
    """
    backbone = model.backbone
    prefix = _prefix_tokens(backbone)
    blocks = grouping.blocks(backbone)
    if blocks and len(backbone.output.shape) == 3:
        return SaliencyLayer(blocks[-1], "input", prefix)
    return SaliencyLayer(backbone, "output", prefix)


def attention_layers(model):
    """The backbone's attention layers, one per block, input to output.

    Raises:
        ValueError: for a backbone without one global `MultiHeadAttention`
            per block (a convnet, Swin's windowed attention, DINOv3's own
            attention), or one that computes it with flash attention.

    Example:
    ```python
    len(kerastl.explain.attention_layers(vit_model))  # 12
    ```
    """
    backbone = model.backbone
    layers = [
        layer
        for layer in keras_internals.all_layers(backbone)
        if isinstance(layer, keras.layers.MultiHeadAttention)
    ]
    blocks = grouping.blocks(backbone)
    if not layers or len(layers) != len(blocks):
        family = backbones.family_of(backbone).name
        raise ValueError(
            "Attention rollout needs a transformer whose blocks each hold one "
            "global self-attention layer (ViT, DeiT, DINOv2); this "
            f"{family} backbone has {len(blocks)} such blocks and "
            f"{len(layers)} attention layers. Use method='gradcam', which "
            f"works for every family. Received: backbone={family}"
        )
    if any(keras_internals.flash_attention(layer) for layer in layers):
        raise ValueError(
            "This model computes attention with flash attention, which never "
            "forms the attention weights that rollout multiplies. Call "
            "`keras.config.disable_flash_attention()` before loading the "
            "model, or use method='gradcam'."
        )
    return layers


def rollout_matrix(attentions, head_fusion="mean", discard_ratio=0.0):
    """How much each token draws on each input token through all blocks.

    Args:
        attentions: list over blocks, first block first, of attention
            weights `(batch, heads, tokens, tokens)`; rows sum to 1.
        head_fusion: `"mean"`, `"max"` or `"min"` over the heads.
        discard_ratio: float. Fraction of each image's weakest fused weights
            set to zero first (token 0's attention to itself is kept).

    Returns:
        float64 `(batch, tokens, tokens)`, rows summing to 1:
        `A_L ... A_1` with `A_l = rownorm((fused_l + I) / 2)`.

    Example:
    ```python
    kerastl.explain.rollout_matrix([np.full((1, 1, 2, 2), 0.5)])
    # array([[[0.75, 0.25], [0.25, 0.75]]])
    ```
    """
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[head_fusion]
    rolled = None
    for weights in attentions:
        fused = fuse(np.asarray(weights, dtype=np.float64), axis=1)
        if discard_ratio:
            fused = _discard_weakest(fused, discard_ratio)
        # The residual connection carries each token on unchanged.
        fused = (fused + np.eye(fused.shape[-1])) / 2
        fused /= fused.sum(axis=-1, keepdims=True)
        rolled = fused if rolled is None else fused @ rolled
    return rolled


def upsample(maps, size):
    """Bilinear resize of `(n, h, w)` maps to `size`, half-pixel centred.

    The sampling of `cv2.resize` and `tf.image.resize` (no antialiasing),
    in NumPy so that every backend's maps are resized identically.

    Args:
        maps: `(n, h, w)` array.
        size: `(height, width)` of the result.

    Example:
    ```python
    kerastl.explain.upsample(np.eye(2)[None], (4, 4)).shape  # (1, 4, 4)
    ```
    """
    maps = np.asarray(maps, dtype=np.float64)
    (y0, y1, fy), (x0, x1, fx) = (
        _sample_points(out, size_in)
        for out, size_in in zip(size, maps.shape[1:], strict=True)
    )
    rows = maps[:, y0] * (1 - fy)[:, None] + maps[:, y1] * fy[:, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def normalize(maps):
    """Scales each map to [0, 1]; a constant map becomes zeros.

    Example:
    ```python
    kerastl.explain.normalize(np.array([[[1.0, 3.0]]]))  # [[[0., 1.]]]
    ```
    """
    maps = np.asarray(maps, dtype=np.float64)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    # A guard, not a floor: an all-zero map stays zero instead of NaN.
    return (maps - low) / np.maximum(span, 1e-12)


class _Tap:
    """Reads, and on request replaces, the tensor at a `SaliencyLayer`."""

    def __init__(self, target):
        self.target = target
        self.value = None
        self.replacement = None

    def call(self, call, inputs, *args, **kwargs):
        if self.target.side == "input":
            return call(self._swap(inputs), *args, **kwargs)
        if self.replacement is not None:
            # Nothing before the map matters to its gradient.
            return self.replacement
        return self._swap(call(inputs, *args, **kwargs))

    def _swap(self, tensor):
        if self.replacement is not None:
            return self.replacement
        self.value = tensor
        return tensor


def _batches(images, classes, batch_size):
    """`(images, classes, real count)` per batch. A short batch is padded
    to `batch_size` (repeating its last image): JAX compiles each eager
    operation once per shape, so one shape serves every call."""
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        chosen = (
            None if classes is None else classes[start : start + batch_size]
        )
        count = len(batch)
        missing = batch_size - count
        if missing:
            batch = np.concatenate([batch, np.repeat(batch[-1:], missing, 0)])
            if chosen is not None:
                chosen = np.concatenate(
                    [chosen, np.repeat(chosen[-1:], missing)]
                )
        yield batch, chosen, count


def _gradcam_batch(logits_model, tap, images, classes):
    with autodiff.no_gradient():
        logits = logits_model(images, training=False)
    activations = tap.value
    if classes is None:
        classes = autodiff.to_numpy(logits).argmax(axis=1)
    one_hot = keras.ops.one_hot(
        keras.ops.convert_to_tensor(classes), logits.shape[-1], dtype="float32"
    )

    def score(feature_map):
        tap.replacement = feature_map
        try:
            logits = logits_model(images, training=False)
        finally:
            tap.replacement = None
        # Images are independent (inference mode), so the gradient of the
        # sum is each image's own.
        return keras.ops.sum(keras.ops.cast(logits, "float32") * one_hot)

    _, grads = autodiff.value_and_gradient(score, activations)
    activations = autodiff.to_numpy(activations)
    size = logits_model.input.shape[1:3]
    activations = _grid(activations, tap.target.prefix_tokens, size)
    grads = _grid(grads, tap.target.prefix_tokens, size)
    weights = grads.mean(axis=(1, 2))
    cam = np.einsum("bhwc,bc->bhw", activations.astype(np.float64), weights)
    return np.maximum(cam, 0.0)


def _attention_weights(logits_model, layers, images):
    """Each attention layer's weights for `images`, in call order."""
    weights = []

    def record(call, *args, **kwargs):
        wanted = kwargs.get("return_attention_scores", False)
        kwargs["return_attention_scores"] = True
        output, scores = call(*args, **kwargs)
        weights.append(autodiff.to_numpy(scores).astype(np.float64))
        return (output, scores) if wanted else output

    with contextlib.ExitStack() as stack, autodiff.no_gradient():
        for layer in layers:
            stack.enter_context(keras_internals.wrapped_call(layer, record))
        logits_model(images, training=False)
    return weights


def _pooled_rows(mode, prefix, tokens):
    """The tokens whose rows the head's pooling reads."""
    if mode == "token":
        return [0]
    if mode == "mean_tokens":
        return list(range(prefix, tokens))
    return list(range(tokens))


def _prefix_tokens(backbone):
    if len(backbone.output.shape) != 3:
        return 0
    return backbones.num_prefix_tokens(backbone)


def _grid(tensor, prefix, image_size):
    """A feature map `(n, h, w, c)`; tokens lose their prefix and are laid
    out on the patch grid, whose shape follows the image's."""
    tensor = np.asarray(tensor, dtype=np.float32)
    if tensor.ndim == 4:
        return tensor
    patches = tensor[:, prefix:]
    count = patches.shape[1]
    height, width = image_size
    rows = max(1, round(math.sqrt(count * height / width)))
    if count % rows:
        raise ValueError(
            f"Cannot lay {count} patch tokens out on a grid shaped like a "
            f"{height}x{width} image; kerastl explains backbones whose "
            "tokens are a full patch grid after the class, distillation "
            f"and register tokens. Received: tokens={tensor.shape[1]}"
        )
    return patches.reshape(len(patches), rows, count // rows, -1)


def _sample_points(size_out, size_in):
    centres = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
    centres = np.clip(centres, 0, size_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, centres - low


def _discard_weakest(fused, ratio):
    flat = fused.reshape(len(fused), -1).copy()
    count = int(flat.shape[1] * ratio)
    weakest = np.argsort(flat, axis=1, kind="stable")[:, :count]
    for row, indices in zip(flat, weakest, strict=True):
        row[indices[indices != 0]] = 0.0
    return flat.reshape(fused.shape)


def _finish(maps, image_size):
    return normalize(upsample(maps, image_size)).astype(np.float32)


def _concatenate(maps):
    return np.concatenate(maps) if maps else np.zeros((0, 1, 1))


def _class_indices(class_index, count, num_classes):
    if class_index is None:
        return None
    classes = np.asarray(class_index)
    if classes.ndim == 0:
        classes = np.full(count, classes)
    if (
        classes.shape != (count,)
        or not np.issubdtype(classes.dtype, np.integer)
        or (count and (classes.min() < 0 or classes.max() >= num_classes))
    ):
        raise ValueError(
            f"`class_index` must be an int in [0, {num_classes}) or one such "
            f"int per image ({count}). Received: class_index={class_index!r}"
        )
    return classes.astype(int)


def _check_images(model, images):
    images = np.asarray(images)
    expected = (*model.image_size, 3)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"Explaining this model takes images of shape (n, {expected[0]}, "
            f"{expected[1]}, 3), raw pixels at the model's input size. "
            "Resize and crop them first, as `kerastl predict` does "
            "(`kerastl.data.pipeline.center_crop_resize`). Received: "
            f"images of shape {images.shape}"
        )
    return images.astype(np.float32)
