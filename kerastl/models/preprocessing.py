"""The standard pixel normalizations pretrained image backbones expect.

A preset normally carries its own preprocessing (`image_converter.json`, or
a Hugging Face `preprocessor_config.json`). A backbone saved with
`backbone.save_to_preset(dir)` alone has none, and kerastl will not guess:
wrong preprocessing is the most common silent failure of transfer
learning. The recipe field `preprocessing` (`--set preprocessing=imagenet`)
names one of these normalizations instead.
"""

import keras_hub

# name: (mean, std) of pixels scaled to [0, 1]; the converter computes
# (pixel / 255 - mean) / std per channel.
NORMALIZATIONS = {
    # torchvision's ImageNet statistics: keras-hub's ResNet, EfficientNet,
    # MobileNet, ConvNeXt, DenseNet and DINOv2 presets use them.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # [-1, 1]: keras-hub's (Google) ViT presets, Inception-style models.
    "minus_one_to_one": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # [0, 1]: models trained on plainly rescaled pixels.
    "zero_one": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def standard_converter(name, image_size, converter_cls=None, **kwargs):
    """An image converter that resizes and applies a named normalization.

    Args:
        name: str. One of `NORMALIZATIONS`: `"imagenet"`,
            `"minus_one_to_one"` or `"zero_one"`.
        image_size: `(height, width)` or `None` (no resizing).
        converter_cls: a `keras_hub.layers.ImageConverter` subclass, e.g.
            `keras_hub.layers.ResNetImageConverter`. Defaults to the base
            class.
        **kwargs: other converter arguments (`interpolation`,
            `crop_to_aspect_ratio`, `antialias`).

    Returns:
        A `keras_hub.layers.ImageConverter`.

    Example:
    ```python
    converter = kerastl.models.preprocessing.standard_converter(
        "imagenet", (224, 224)
    )
    ```
    """
    if name not in NORMALIZATIONS:
        raise ValueError(
            "preprocessing is one of "
            f"{', '.join(repr(n) for n in NORMALIZATIONS)}, or None for the "
            f"preset's own. Received: preprocessing={name!r}"
        )
    mean, std = NORMALIZATIONS[name]
    cls = converter_cls or keras_hub.layers.ImageConverter
    return cls(
        image_size=None if image_size is None else tuple(image_size),
        scale=[1 / (255 * s) for s in std],
        offset=[-m / s for m, s in zip(mean, std, strict=True)],
        **kwargs,
    )
