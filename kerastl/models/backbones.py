"""Per-family knowledge about keras-hub image backbones.

A `TransferClassifier` wraps any `keras_hub.models.Backbone`. What it needs to
know about a backbone lives here, so that no other module has to branch on the
architecture:

- how to pool its output into one vector per image (`auto_pooling`),
- how many leading tokens of a token sequence are not patches
  (`num_prefix_tokens`),
- how its layers split into ordered groups for freezing (`layer_groups`),
- which learning rate fine-tuning it usually wants (`fine_tune_learning_rate`),
- which presets exist, and what the user meant by a misspelled one
  (`image_presets`, `check_preset`).
"""

import dataclasses

import keras_hub


@dataclasses.dataclass(frozen=True)
class BackboneFamily:
    """What kerastl knows about one keras-hub backbone family.

    Args:
        name: str. Short family name, e.g. `"resnet"`.
        backbone_class: str. Name of the class in `keras_hub.models`.
        kind: str. `"convnet"` for backbones that output a feature map,
            `"transformer"` for backbones that output a token sequence.
        prefix_tokens: callable or None. Maps a backbone instance to the
            number of non-patch tokens at the start of its output sequence
            (class, distillation and register tokens).

    Example:
    ```python
    family = kerastl.models.backbones.family_of(backbone)
    family.name  # "vit"
    ```
    """

    name: str
    backbone_class: str
    kind: str
    prefix_tokens: object = None

    @property
    def fine_tune_learning_rate(self):
        # Transformers fine-tune best about ten times more gently than
        # convnets (AdamW 1e-5 for ViT-B/16 against 1e-4 for ResNet-50 in the
        # CNN-vs-ViT transfer comparison kerastl grew from).
        return 1e-5 if self.kind == "transformer" else 1e-4


FAMILIES = (
    BackboneFamily("resnet", "ResNetBackbone", "convnet"),
    BackboneFamily("efficientnet", "EfficientNetBackbone", "convnet"),
    BackboneFamily("mobilenet", "MobileNetBackbone", "convnet"),
    BackboneFamily("densenet", "DenseNetBackbone", "convnet"),
    BackboneFamily("vgg", "VGGBackbone", "convnet"),
    BackboneFamily("cspnet", "CSPNetBackbone", "convnet"),
    BackboneFamily("xception", "XceptionBackbone", "convnet"),
    BackboneFamily("hgnetv2", "HGNetV2Backbone", "convnet"),
    BackboneFamily("mit", "MiTBackbone", "convnet"),
    BackboneFamily("swin", "SwinTransformerBackbone", "transformer"),
    BackboneFamily(
        "vit",
        "ViTBackbone",
        "transformer",
        prefix_tokens=lambda b: int(b.use_class_token),
    ),
    # DeiT prepends a class token and a distillation token.
    BackboneFamily("deit", "DeiTBackbone", "transformer", lambda b: 2),
    BackboneFamily(
        "dinov2",
        "DINOV2Backbone",
        "transformer",
        prefix_tokens=lambda b: 1 + b.num_register_tokens,
    ),
    BackboneFamily(
        "dinov3",
        "DINOV3Backbone",
        "transformer",
        prefix_tokens=lambda b: 1 + b.num_register_tokens,
    ),
)

_GENERIC_CONVNET = BackboneFamily("convnet", "Backbone", "convnet")
_GENERIC_TRANSFORMER = BackboneFamily("transformer", "Backbone", "transformer")


def family_of(backbone):
    """Returns the `BackboneFamily` of a keras-hub backbone instance.

    Backbones of families kerastl has no entry for get a generic family chosen
    from the rank of their output: a feature map is a convnet, a token
    sequence a transformer without prefix tokens.

    Args:
        backbone: a `keras_hub.models.Backbone` instance.

    Example:
    ```python
    backbone = keras_hub.models.Backbone.from_preset("resnet_50_imagenet")
    kerastl.models.backbones.family_of(backbone).name  # "resnet"
    ```
    """
    for family in FAMILIES:
        cls = getattr(keras_hub.models, family.backbone_class, None)
        if cls is not None and isinstance(backbone, cls):
            return family
    rank = len(backbone.output.shape)
    return _GENERIC_TRANSFORMER if rank == 3 else _GENERIC_CONVNET


def image_input(backbone):
    """The backbone's image input, and its key if inputs are a dict.

    Most backbones take a tensor of images; some (DINOv2) take a dict with
    one `"images"` entry.

    Args:
        backbone: a `keras_hub.models.Backbone` instance.

    Returns:
        `(key, input_tensor)`, `key` being `None` for a plain tensor input.

    Example:
    ```python
    key, images = kerastl.models.backbones.image_input(backbone)
    images.shape  # (None, 224, 224, 3)
    ```
    """
    inputs = backbone.input
    if not isinstance(inputs, dict):
        return None, inputs
    if len(inputs) != 1:
        raise ValueError(
            f"{type(backbone).__name__} takes several inputs "
            f"({', '.join(inputs)}); kerastl classifies from images alone. "
            f"Received: backbone={type(backbone).__name__}"
        )
    ((key, tensor),) = inputs.items()
    return key, tensor


def num_prefix_tokens(backbone):
    """Number of class/distillation/register tokens before the patches.

    Args:
        backbone: a `keras_hub.models.Backbone` whose output is a sequence.

    Example:
    ```python
    # 1: the class token
    kerastl.models.backbones.num_prefix_tokens(vit_backbone)
    ```
    """
    family = family_of(backbone)
    if family.prefix_tokens is None:
        return 0
    return family.prefix_tokens(backbone)


def auto_pooling(backbone):
    """The pooling `pooling="auto"` resolves to for a backbone.

    Global average pooling for feature maps; the class token for token
    sequences that have one, else the mean of the tokens.

    Args:
        backbone: a `keras_hub.models.Backbone` instance.

    Example:
    ```python
    kerastl.models.backbones.auto_pooling(resnet_backbone)  # "avg"
    kerastl.models.backbones.auto_pooling(vit_backbone)  # "token"
    ```
    """
    rank = len(backbone.output.shape)
    if rank == 4:
        return "avg"
    if rank == 3:
        return "token" if num_prefix_tokens(backbone) else "mean_tokens"
    raise ValueError(
        "kerastl can pool a backbone that outputs a feature map "
        "(batch, height, width, channels) or a token sequence (batch, tokens, "
        f"channels), but {type(backbone).__name__} outputs a tensor of shape "
        f"{backbone.output.shape}. Pick a keras-hub image backbone. "
        f"Received: backbone={type(backbone).__name__}"
    )
