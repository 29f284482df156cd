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
import difflib
import math
import os
import re

import keras
import keras_hub

# A stage of a flat convolutional backbone is named `stack0_...` (ResNet,
# DenseNet), `block1a_...` (EfficientNet), `block_1_...` (MobileNet),
# `block1_...` (VGG, Xception) or `stage_0_...` (CSPNet, Swin). DenseNet's
# `transition1` follows `stack1` and belongs to the same stage.
_STAGE_PATTERN = re.compile(r"^(stack|block|stage|transition)_?(\d+)")


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
    family = kerastl.backbones.family_of(backbone)
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
    kerastl.backbones.family_of(backbone).name  # "resnet"
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
    key, images = kerastl.backbones.image_input(backbone)
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
    kerastl.backbones.num_prefix_tokens(vit_backbone)  # 1: the class token
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
    kerastl.backbones.auto_pooling(resnet_backbone)  # "avg"
    kerastl.backbones.auto_pooling(vit_backbone)  # "token"
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


@dataclasses.dataclass
class LayerGroup:
    """An ordered slice of a backbone that is frozen or trained as one.

    Args:
        name: str. The keras-hub name of the group's first layer or stage
            (`"stem"`, `"stack0"`, `"transformer_block_1"`, ...).
        layers: list of `keras.layers.Layer`. The layers of the group.

    Example:
    ```python
    for group in model.layer_groups():
        print(group.name, group.count_params())
    ```
    """

    name: str
    layers: list

    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    def count_params(self):
        return count_params(self.weights)


def _children(layer):
    return [
        child
        for child in layer._flatten_layers(include_self=False, recursive=False)
        if not isinstance(child, keras.layers.InputLayer)
    ]


def count_params(weights):
    """Number of scalars in a list of weights, read from their shapes.

    Example:
    ```python
    kerastl.backbones.count_params(model.trainable_weights)
    ```
    """
    return sum(math.prod(w.shape) for w in weights)


def _param_count(layer):
    return count_params(layer.weights)


def _units(backbone):
    """Top-level layers, with the encoder of a nested model opened up.

    Transformers keep their blocks inside one encoder layer. The layer holding
    most of the parameters is opened while it is made of repeated blocks, so
    each block becomes a unit of its own. Returns the units and the ids of
    those that are blocks.
    """
    units = _children(backbone)
    blocks = set()
    total = max(_param_count(backbone), 1)
    while True:
        biggest = max(units, key=_param_count)
        if 2 * _param_count(biggest) < total:
            break
        children = _children(biggest)
        classes = [type(child) for child in children if child.weights]
        repeated = {cls for cls in classes if classes.count(cls) > 1}
        if not repeated:
            break
        blocks.update(id(c) for c in children if type(c) in repeated)
        index = units.index(biggest)
        units[index : index + 1] = children
    return units, blocks


def layer_groups(backbone):
    """Splits a backbone into ordered `LayerGroup`s, input to output.

    ResNet-style convnets give `stem` then one group per stage (`stack0`,
    `stack1`, ...); layers after the last stage (a final BatchNorm) join it.
    Transformers give their embedding layer, one group per block and the final
    normalization. Other keras-hub backbones are split the same way, by their
    stage names or their repeated blocks.

    Args:
        backbone: a `keras_hub.models.Backbone` instance.

    Example:
    ```python
    [g.name for g in kerastl.backbones.layer_groups(resnet_backbone)]
    # ["stem", "stack0", "stack1", "stack2", "stack3"]
    ```
    """
    units, blocks = _units(backbone)
    has_stages = any(_STAGE_PATTERN.match(unit.name) for unit in units)
    groups, keys = [], []

    def start(name, key, unit):
        groups.append(LayerGroup(name, [unit]))
        keys.append(key)

    for unit in units:
        match = _STAGE_PATTERN.match(unit.name)
        if id(unit) in blocks:
            start(unit.name, "block", unit)
        elif match:
            key = f"stage{match.group(2)}"
            if keys and keys[-1] == key:
                groups[-1].layers.append(unit)
            else:
                start(match.group(0), key, unit)
        elif not groups:
            start("stem" if has_stages else unit.name, "stem", unit)
        elif not unit.weights or keys[-1] != "block":
            # Weightless glue, the rest of the stem, and layers after the
            # last stage (`post_bn`, `top_conv`) join the group before them.
            groups[-1].layers.append(unit)
        else:
            # A transformer's final normalization is a group of its own.
            start(unit.name, "norm", unit)
    return [group for group in groups if group.weights]


def image_presets():
    """Names of the built-in keras-hub presets of image backbones.

    Example:
    ```python
    "resnet_50_imagenet" in kerastl.backbones.image_presets()  # True
    ```
    """
    names = set()
    for family in FAMILIES:
        cls = getattr(keras_hub.models, family.backbone_class, None)
        if cls is not None:
            names.update(cls.presets.keys())
    return sorted(names)


def is_preset_handle(preset):
    """Whether `preset` names a hub handle or a local path, not a built-in."""
    preset = str(preset)
    return "://" in preset or os.sep in preset or os.path.exists(preset)


def check_preset(preset):
    """Raises a short `ValueError` for a preset that cannot exist.

    Built-in names are checked against keras-hub's registry, so a typo is
    reported with the closest known names instead of a traceback from inside
    keras-hub; a local path must be a directory. Hub handles (`kaggle://`,
    `hf://`) pass through to keras-hub.

    Args:
        preset: str or path-like. What the user passed to `from_preset`.

    Example:
    ```python
    kerastl.backbones.check_preset("resnet_50_imagenett")
    # ValueError: Unknown preset 'resnet_50_imagenett'. Did you mean ...
    ```
    """
    text = str(preset)
    if "://" in text:
        return
    if is_preset_handle(text):
        if not os.path.isdir(text):
            raise ValueError(
                f"Preset directory '{text}' does not exist. Pass the name of a "
                "keras-hub preset (see `kerastl presets`), a `kaggle://` or "
                "`hf://` handle, or the path of a directory written by "
                "`save_to_preset`. Received: preset={text!r}"
            )
        return
    known = image_presets()
    if text in known:
        return
    close = difflib.get_close_matches(text, known, n=5, cutoff=0.5)
    hint = (
        f"Did you mean one of: {', '.join(close)}?"
        if close
        else "Run `kerastl presets` to list them."
    )
    raise ValueError(
        f"Unknown preset '{text}'. It is not a keras-hub image preset, a "
        f"`kaggle://` or `hf://` handle, or a local directory. {hint} "
        f"Received: preset={text!r}"
    )


def _input_size_from_name(name):
    # keras-hub preset metadata has no input size; names carry it
    # ("vit_base_patch16_384_imagenet", "efficientnet_b1_..._r240_...").
    sizes = [int(s) for s in re.findall(r"(?:^|_|r)(\d{3,4})(?=_|$)", name)]
    sizes = [s for s in sizes if 96 <= s <= 1024]
    return f"{sizes[-1]}x{sizes[-1]}" if sizes else "-"


def _human_count(count):
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def describe_presets(pattern=None):
    """Rows describing keras-hub image presets, for `kerastl presets`.

    Args:
        pattern: str or `None`. Keeps presets whose name or family contains
            it (case-insensitive).

    Returns:
        A list of `(name, family, params, input size, description)` string
        tuples, sorted by name. The input size comes from the preset's
        name where it states one, else `"-"`.

    Example:
    ```python
    kerastl.backbones.describe_presets("resnet_50")[0][:3]
    # ("resnet_50_imagenet", "resnet", "23.6M")
    ```
    """
    rows = []
    for family in FAMILIES:
        cls = getattr(keras_hub.models, family.backbone_class, None)
        if cls is None:
            continue
        for name, preset in cls.presets.items():
            if pattern and pattern.lower() not in f"{name} {family.name}":
                continue
            metadata = preset.get("metadata", {})
            description = " ".join(metadata.get("description", "").split())
            rows.append(
                (
                    name,
                    family.name,
                    _human_count(metadata.get("params", 0)),
                    _input_size_from_name(name),
                    description[:70],
                )
            )
    return sorted(rows)
