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
    kerastl.models.backbones.count_params(model.trainable_weights)
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
    [g.name for g in kerastl.models.backbones.layer_groups(resnet_backbone)]
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


def _registry():
    """`{name: (family, registry entry)}` for keras-hub's image presets."""
    registry = {}
    for family in FAMILIES:
        cls = getattr(keras_hub.models, family.backbone_class, None)
        if cls is not None:
            for name, entry in cls.presets.items():
                registry[name] = (family, entry)
    return registry


def image_presets():
    """Names of the built-in keras-hub presets of image backbones.

    Example:
    ```python
    "resnet_50_imagenet" in kerastl.models.backbones.image_presets()  # True
    ```
    """
    return sorted(_registry())


def _builtin_name(preset):
    """The built-in preset `preset` is, or whose handle path names it."""
    text = str(preset)
    registry = _registry()
    if text in registry:
        return text
    # keras-hub's own Kaggle handles carry the name as a path component:
    # `kaggle://keras/resnetv1/keras/resnet_50_imagenet/3`.
    names = [part for part in text.split("/") if part in registry]
    return names[-1] if "://" in text and names else None


def preset_family(preset):
    """The `BackboneFamily` of a built-in preset, read offline.

    Looks the name up in keras-hub's preset registry, which ships with the
    package; nothing is downloaded. A handle whose path names a built-in
    preset (keras-hub's own `kaggle://keras/resnetv1/keras/
    resnet_50_imagenet/3`) counts as that preset.

    Args:
        preset: str. A keras-hub preset name or hub handle.

    Returns:
        The `BackboneFamily`, or `None` when `preset` names no image preset
        of keras-hub's registry (another handle, a path, a typo).

    Example:
    ```python
    family = kerastl.models.backbones.preset_family("resnet_50_imagenet")
    family.name  # "resnet"
    ```
    """
    name = _builtin_name(preset)
    return _registry()[name][0] if name else None


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
    kerastl.models.backbones.check_preset("resnet_50_imagenett")
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
                f"`save_to_preset`. Received: preset={text!r}"
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


# Input sizes of built-in presets whose keras-hub description and name do not
# state one, as their image_converter.json sets it. keras-hub converted them
# from timm (tools/checkpoint_conversion/convert_{efficientnet,hgnetv2}_
# checkpoints.py), whose loader copies `pretrained_cfg["input_size"]`; the
# sizes are timm 1.0.31's default_cfgs (efficientnet_b2.ra_in1k: 256, ...).
# Xception and DINOv2 come from their conversion scripts: Xception's
# converter is built at 299x299, DINOv2's at the Hugging Face config's
# image_size, 518 (also the size DINOV2Backbone's docstring feeds the preset).
# Left out: efficientnet_{el,em,es} (keras-hub's registry points their
# handles at efficientnet_b1_ft_imagenet), efficientnet2_rw_* (uploaded under
# those same handles), MiT (its name's 512/640/1024 is the segmentation
# crop, not the backbone's input) and DINOv3.
_INPUT_SIZES = {
    "efficientnet_b0_ra_imagenet": 224,
    "efficientnet_b1_ft_imagenet": 224,
    "efficientnet_b2_ra_imagenet": 256,
    "efficientnet_b3_ra2_imagenet": 288,
    "efficientnet_b4_ra2_imagenet": 320,
    "efficientnet_b5_sw_imagenet": 416,
    "efficientnet_b5_sw_ft_imagenet": 448,
    "efficientnet_lite0_ra_imagenet": 224,
    "hgnetv2_b4_ssld_stage2_ft_in1k": 224,
    "hgnetv2_b5_ssld_stage1_in22k_in1k": 224,
    "hgnetv2_b5_ssld_stage2_ft_in1k": 224,
    "hgnetv2_b6_ssld_stage1_in22k_in1k": 224,
    "hgnetv2_b6_ssld_stage2_ft_in1k": 224,
    "xception_41_imagenet": 299,
    **dict.fromkeys(
        [
            f"dinov2_{kind}{size}"
            for kind in ("", "with_registers_")
            for size in ("small", "base", "large", "giant")
        ],
        518,
    ),
}

# A resolution in a name: timm's `r240` token, or the number after the patch
# or window size (`vit_base_patch16_384`, `swin_base_patch4_window12_384`,
# `google/vit-base-patch16-224-in21k`). Other numbers in names are depths
# (`resnet_101`), widths (`mobilenet_v3_small_100`) or crops (`ade20k_512`).
_SIZE_IN_NAME = re.compile(
    r"(?:^|[_./-])(?:r|(?:patch|window)\d+[_-])(\d{3,4})(?=$|[_./-])"
)
_SIZE_IN_DESCRIPTION = re.compile(r"\b(\d{2,4})x(\d{2,4})\b")


def preset_input_size(preset):
    """The image size a preset's image converter resizes to, offline.

    In order: the size keras-hub's registry description states ("at a
    224x224 resolution"), kerastl's table of sizes looked up in keras-hub's
    conversion scripts and timm's configs, then a resolution the name
    states: the number after a patch or window size
    (`vit_base_patch16_384`) or timm's `r240`. Numbers that name a depth or
    width (`resnet_101_imagenet`) are never read as a size.

    Args:
        preset: str. A keras-hub preset name, or a `kaggle://`/`hf://`
            handle (a handle that names a built-in preset counts as it;
            of other handles only the text is read).

    Returns:
        `(height, width)`, or `None` when no offline source states it.

    Example:
    ```python
    from kerastl.models.backbones import preset_input_size

    preset_input_size("resnet_101_imagenet")  # (224, 224)
    preset_input_size("mit_b0_ade20k_512")  # None
    ```
    """
    name = _builtin_name(preset)
    if name:
        entry = _registry()[name][1]
        description = entry.get("metadata", {}).get("description", "")
        match = _SIZE_IN_DESCRIPTION.search(description)
        if match:
            return int(match.group(1)), int(match.group(2))
        if name in _INPUT_SIZES:
            return _INPUT_SIZES[name], _INPUT_SIZES[name]
    text = (name or str(preset)).lower()
    sizes = [int(size) for size in _SIZE_IN_NAME.findall(text)]
    return (sizes[-1], sizes[-1]) if sizes else None


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
        tuples, sorted by name. The input size is `preset_input_size`'s,
        `"-"` where no offline source states it.

    Example:
    ```python
    kerastl.models.backbones.describe_presets("resnet_50")[0][:4]
    # ("resnet_50_imagenet", "resnet", "23.6M", "224x224")
    ```
    """
    rows = []
    for name, (family, entry) in _registry().items():
        if pattern and pattern.lower() not in f"{name} {family.name}":
            continue
        metadata = entry.get("metadata", {})
        description = " ".join(metadata.get("description", "").split())
        size = preset_input_size(name)
        rows.append(
            (
                name,
                family.name,
                _human_count(metadata.get("params", 0)),
                f"{size[0]}x{size[1]}" if size else "-",
                description[:70],
            )
        )
    return sorted(rows)
