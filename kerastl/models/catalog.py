"""keras-hub's catalogue of image presets: which exist, their family and
input size, and the checks that turn a mistyped name into a clear error.
"""

import difflib
import os
import re

import keras_hub

from kerastl.models import backbones


def _registry():
    """`{name: (family, registry entry)}` for keras-hub's image presets."""
    registry = {}
    for family in backbones.FAMILIES:
        cls = getattr(keras_hub.models, family.backbone_class, None)
        if cls is not None:
            for name, entry in cls.presets.items():
                registry[name] = (family, entry)
    return registry


def image_presets():
    """Names of the built-in keras-hub presets of image backbones.

    Example:
    ```python
    "resnet_50_imagenet" in kerastl.models.catalog.image_presets()  # True
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
    family = kerastl.models.catalog.preset_family("resnet_50_imagenet")
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
    kerastl.models.catalog.check_preset("resnet_50_imagenett")
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
    from kerastl.models.catalog import preset_input_size

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
    kerastl.models.catalog.describe_presets("resnet_50")[0][:4]
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
