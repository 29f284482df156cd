"""Tiny random-weight stand-ins for presets that cannot be downloaded.

`kerastl fit --smoke` checks a recipe end to end, offline, on a fresh
install. A keras-hub preset it cannot download is replaced by a stand-in: a
backbone of the same family (ResNet, ViT, ...) with random weights, a few
layers deep and a few channels wide, at the real preset's input size and
with the real preset's preprocessing, saved as a keras-hub preset directory.
A model built on it has the real one's input contract (image size,
normalization, resizing, patch grid, prefix tokens) and the same kind of
layer groups, so the run's pipeline, pooling and freezing see what they
would see with the real weights.

The same building blocks make the tiny backbones of the tests
(`tests/kit.py`).
"""

import contextlib
import dataclasses
import hashlib
import inspect
import json
import pathlib
import random
import re

import keras_hub

from kerastl.models import backbones
from kerastl.models import preprocessing
from kerastl.utils import atomic
from kerastl.utils import cache

# A stand-in directory holds this file next to the keras-hub preset files.
# It marks the directory as a stand-in (never trained, never pretrained) and
# says what it stands in for.
MARKER_FILE = "kerastl_standin.json"

# Part of the marker: bump it when the stand-ins' architectures change, so
# cached stand-ins of an older layout are rebuilt.
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How a preset's image converter rescales and resizes pixels.

    Per-channel `(pixel / 255 - mean) / std` with one of kerastl's named
    normalizations (`kerastl.models.preprocessing.NORMALIZATIONS`), written
    the way keras-hub's converters built from timm and Hugging Face configs
    write it: `scale` is `1 / (255 * std)` and `offset` is `-mean / std`.

    Args:
        name: str. `"imagenet"`, `"minus_one_to_one"` or `"zero_one"`.
        interpolation: str. The converter's resize interpolation.
        crop_to_aspect_ratio: bool. Whether the converter center-crops to
            the target aspect ratio before resizing (else it squashes).
        antialias: bool. Whether the resize antialiases.

    Example:
    ```python
    normalization = kerastl.models.standins.Normalization("imagenet", "bicubic")
    converter = normalization.converter(
        keras_hub.layers.ResNetImageConverter, (224, 224)
    )
    ```
    """

    name: str
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = True
    antialias: bool = False

    def converter(self, converter_class, image_size):
        """A `converter_class` instance resizing to `image_size`."""
        return preprocessing.standard_converter(
            self.name,
            _pair(image_size),
            converter_class,
            interpolation=self.interpolation,
            crop_to_aspect_ratio=self.crop_to_aspect_ratio,
            antialias=self.antialias,
        )


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How to stand in for one family.

    `config` maps `(height, width)` to the tiny backbone's constructor
    arguments; `normalization` is the family's standard preprocessing, as
    the image_converter.json of its keras-hub presets holds it; `image_size`
    is used when no offline source states the preset's own.
    """

    config: object
    normalization: Normalization
    image_size: int = 224


def _resnet(size):
    # Four stages of bottleneck blocks like ResNet-50, so stage-wise
    # unfreezing addresses the same groups (stem, stack0-3). keras-hub
    # insists the first stage has 64 filters; the others stay narrow.
    return dict(
        input_conv_filters=[8],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block",
        use_pre_activation=False,
        image_shape=(*size, 3),
    )


# Transformers: the real patch size keeps the real token grid. Four blocks
# keep "unfreeze the last N blocks" meaningful, and the blocks must hold most
# of the weights, as in the real models, for `backbones.layer_groups` to
# split them (a 16x16x3 patch embedding is 768 weights per channel).
def _vit(size):
    return dict(
        image_shape=(*size, 3),
        patch_size=16,
        num_layers=4,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=128,
    )


def _deit(size):
    # The ViT stand-in's shape; keras-hub's DeiT names its MLP width apart.
    config = _vit(size)
    config["intermediate_dim"] = config.pop("mlp_dim")
    return config


def _dinov2(size):
    # DINOv2 keeps its position embeddings interpolated to the image's patch
    # grid as a weight: 1370 of them at 518x518. Learning them on a 5x5 grid
    # and a width of 64 leave most weights in the blocks.
    return dict(
        patch_size=14,
        num_layers=4,
        hidden_dim=64,
        num_heads=2,
        intermediate_dim=256,
        image_shape=(*size, 3),
        position_embedding_shape=(70, 70, 3),
    )


def _swin(size):
    return dict(
        image_shape=(*size, 3),
        patch_size=4,
        window_size=7,
        embed_dim=8,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 2, 2),
    )


def _efficientnet(size):
    # keras-hub 0.32 leaves `num_features` out of the saved config, so the
    # top convolution keeps its default width of 1280 to load back.
    stages = 3
    return dict(
        stackwise_width_coefficients=[1.0] * stages,
        stackwise_depth_coefficients=[1.0] * stages,
        stackwise_kernel_sizes=[3, 3, 5],
        stackwise_num_repeats=[1] * stages,
        stackwise_input_filters=[8, 8, 16],
        stackwise_output_filters=[8, 16, 24],
        stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.25] * stages,
        stackwise_strides=[1, 2, 2],
        stackwise_block_types=["v1"] * stages,
        stackwise_force_input_filters=[0] * stages,
        stackwise_nores_option=[False] * stages,
        input_shape=(*size, 3),
    )


def _mobilenet(size):
    # One block per stage with MobileNetV3's activations, sized so that no
    # block holds most of the weights (`backbones.layer_groups` would split
    # it into its layers).
    return dict(
        stackwise_expansion=[[16], [24], [32], [32]],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_filters=[[8], [16], [16], [16]],
        stackwise_kernel_size=[[3], [3], [5], [5]],
        stackwise_num_strides=[[2], [2], [2], [1]],
        stackwise_se_ratio=[[None], [None], [0.25], [0.25]],
        stackwise_activation=[["relu"], ["relu"]] + [["hard_swish"]] * 3,
        stackwise_padding=[[1], [1], [2], [2]],
        output_num_filters=32,
        input_activation="hard_swish",
        output_activation="hard_swish",
        input_num_filters=8,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        squeeze_and_excite=0.5,
        last_layer_filter=32,
        image_shape=(*size, 3),
    )


def _densenet(size):
    return dict(
        stackwise_num_repeats=[1, 1, 1, 1],
        growth_rate=4,
        image_shape=(*size, 3),
    )


def _vgg(size):
    return dict(
        stackwise_num_repeats=[1, 1, 1, 1, 1],
        stackwise_num_filters=[4, 8, 8, 16, 16],
        image_shape=(*size, 3),
    )


def _cspnet(size):
    return dict(
        stem_filters=8,
        stem_kernel_size=3,
        stem_strides=2,
        stem_padding="same",
        stackwise_strides=2,
        stackwise_depth=[1, 1, 1],
        stackwise_num_filters=[8, 16, 32],
        block_type="dark_block",
        stage_type="csp",
        down_growth=True,
        bottle_ratio=(0.5, 1.0),
        block_ratio=(1.0, 0.5),
        expand_ratio=(2.0, 1.0),
        image_shape=(*size, 3),
    )


def _xception(size):
    return dict(
        stackwise_conv_filters=[[8, 8], [16, 16], [32, 32], [32, 32]],
        stackwise_pooling=[False, True, True, True],
        image_shape=(*size, 3),
    )


# Each family's preprocessing is its presets' image_converter.json. keras-hub
# builds it from the source checkpoint's config (tools/checkpoint_conversion/
# convert_<family>_checkpoints.py): timm presets through `TimmPresetLoader.
# load_image_converter` (mean, std, interpolation of timm's pretrained_cfg,
# read in timm 1.0.31's default_cfgs), Hugging Face ones from the
# checkpoint's preprocessor_config.json.
_SPECS = {
    # timm resnet50.a1_in1k (and the other resnet_*_imagenet): ImageNet
    # mean/std, bicubic.
    "resnet": _Spec(_resnet, Normalization("imagenet", "bicubic")),
    # google/vit-* image processors: mean = std = 0.5, bilinear
    # (convert_vit_checkpoints.py).
    "vit": _Spec(_vit, Normalization("minus_one_to_one")),
    # facebook/deit-*: ImageNet mean/std, bicubic (convert_deit_checkpoints.py
    # and timm's deit cfgs).
    "deit": _Spec(_deit, Normalization("imagenet", "bicubic")),
    # facebook/dinov2-*: ImageNet mean/std, bicubic, at the config's 518x518
    # (convert_dinov2_checkpoints.py).
    "dinov2": _Spec(_dinov2, Normalization("imagenet", "bicubic"), 518),
    # microsoft/swin-*: ImageNet mean/std, bicubic with antialiasing,
    # squashed rather than cropped (keras-hub's convert_swin_transformer).
    "swin": _Spec(
        _swin,
        Normalization(
            "imagenet",
            "bicubic",
            crop_to_aspect_ratio=False,
            antialias=True,
        ),
    ),
    # timm efficientnet _cfg: ImageNet mean/std, bicubic.
    "efficientnet": _Spec(_efficientnet, Normalization("imagenet", "bicubic")),
    # timm mobilenetv3_*.lamb_in1k / .ra_in1k: ImageNet mean/std, bicubic.
    "mobilenet": _Spec(_mobilenet, Normalization("imagenet", "bicubic")),
    # timm densenet _cfg: ImageNet mean/std, bicubic.
    "densenet": _Spec(_densenet, Normalization("imagenet", "bicubic")),
    # timm vgg _cfg: ImageNet mean/std, bilinear.
    "vgg": _Spec(_vgg, Normalization("imagenet")),
    # timm cspnet _cfg: ImageNet mean/std, bilinear, 256x256.
    "cspnet": _Spec(_cspnet, Normalization("imagenet"), 256),
    # convert_xception_checkpoints.py: scale 1 / 127.5, offset -1 (Keras'
    # Xception preprocessing), 299x299.
    "xception": _Spec(_xception, Normalization("minus_one_to_one"), 299),
}

# Presets whose preprocessing differs from their family's (timm 1.0.31).
_PRESET_NORMALIZATION = {
    # efficientnet_b{0,1}.ra4_e3600_*: Inception mean/std.
    "efficientnet_b0_ra4_e3600_r224_imagenet": Normalization(
        "minus_one_to_one", "bicubic"
    ),
    "efficientnet_b1_ra4_e3600_r240_imagenet": Normalization(
        "minus_one_to_one", "bicubic"
    ),
    # mobilenetv3_large_100.miil_in21k_ft_in1k: pixels in [0, 1], bilinear.
    "mobilenet_v3_large_100_imagenet_21k": Normalization("zero_one"),
}

# Words in a hub handle that name a family, most specific first: a
# "dinov3_vit" handle is DINOv3, a "cspresnet" one CSPNet. A word matches
# the start of a token of the handle (`resnet50`, `vit-base`).
_HANDLE_WORDS = (
    ("dinov3", "dinov3"),
    ("dinov2", "dinov2"),
    ("deit", "deit"),
    ("swin", "swin"),
    ("efficientnet", "efficientnet"),
    ("mobilenet", "mobilenet"),
    ("densenet", "densenet"),
    ("xception", "xception"),
    ("hgnet", "hgnetv2"),
    ("csp", "cspnet"),
    ("darknet", "cspnet"),
    ("segformer", "mit"),
    ("mit", "mit"),
    ("vgg", "vgg"),
    ("vit", "vit"),
    ("resnet", "resnet"),
)

# What a handle naming no family gets: the family of the bundled recipes.
_FALLBACK_FAMILY = "resnet"


@dataclasses.dataclass(frozen=True)
class StandIn:
    """A stand-in preset directory and what it stands in for.

    Attributes:
        path: `pathlib.Path` of the keras-hub preset directory.
        preset: str. The preset it replaces.
        family: str. The kerastl family name (`"resnet"`, `"vit"`, ...).
        image_size: `(height, width)` its image converter resizes to.
        normalization: `Normalization` of its image converter.
        notes: tuple of str. What was guessed rather than known.

    Example:
    ```python
    standin = kerastl.models.standins.standin_preset("resnet_50_imagenet")
    print(standin.message)
    ```
    """

    path: pathlib.Path
    preset: str
    family: str
    image_size: tuple
    normalization: Normalization
    notes: tuple = ()

    @property
    def message(self):
        """One line saying what replaces the preset, for the run's log."""
        height, width = self.image_size
        notes = "".join(f"; {note}" for note in self.notes)
        return (
            f"Preset '{self.preset}' is not available offline: a tiny "
            f"random-weight {self.family} stand-in replaces it ({height}x"
            f"{width}, {self.normalization.name} normalization{notes}): "
            f"{self.path}"
        )


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def _spec(family):
    if family not in _SPECS:
        raise ValueError(
            f"kerastl builds tiny stand-ins of the families "
            f"{', '.join(sorted(_SPECS))}. Received: family={family!r}"
        )
    return _SPECS[family]


def _backbone_class(family):
    (found,) = [f for f in backbones.FAMILIES if f.name == family]
    return getattr(keras_hub.models, found.backbone_class)


def _converter_class(family):
    """The keras-hub converter class registered for a family's backbone, or
    the base class where keras-hub registers none."""
    backbone_class = _backbone_class(family)
    for _, cls in inspect.getmembers(keras_hub.layers, inspect.isclass):
        if (
            issubclass(cls, keras_hub.layers.ImageConverter)
            and getattr(cls, "backbone_cls", None) is backbone_class
        ):
            return cls
    return keras_hub.layers.ImageConverter


def tiny_backbone(family, image_size, **overrides):
    """A tiny keras-hub backbone of a family, with random weights.

    Args:
        family: str. A kerastl family name with a stand-in: `"resnet"`,
            `"vit"`, `"deit"`, `"dinov2"`, `"swin"`, `"efficientnet"`,
            `"mobilenet"`, `"densenet"`, `"vgg"`, `"cspnet"`,
            `"xception"`.
        image_size: int or `(height, width)`. The input size.
        **overrides: constructor arguments of the family's keras-hub
            backbone class that replace the tiny defaults.

    Example:
    ```python
    backbone = kerastl.models.standins.tiny_backbone("vit", 224, patch_size=32)
    ```
    """
    config = {**_spec(family).config(_pair(image_size)), **overrides}
    return _backbone_class(family)(**config)


@contextlib.contextmanager
def _seeded(seed):
    """Seeds the weights Keras initializes inside the block.

    Keras initializers without a seed draw one from Python's `random`
    module. Seeding it makes the build repeatable; restoring its state
    afterwards leaves the caller's random stream, which the run has seeded
    with the recipe's seed, as it was.
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _family_of_text(text):
    """`(family, note)` for a preset that is not a built-in name."""
    tokens = re.split(r"[/_.:\-]+", text.lower())
    for word, family in _HANDLE_WORDS:
        if any(token.startswith(word) for token in tokens):
            return family, None
    return _FALLBACK_FAMILY, (
        f"no family named in '{text}', so {_FALLBACK_FAMILY} was guessed"
    )


def _name_overrides(family, text):
    """Backbone arguments the preset's name fixes: patch and window size,
    register tokens."""
    text = text.lower()
    overrides = {}
    patch = re.search(r"patch(\d+)", text)
    if patch and family in ("vit", "deit", "swin"):
        overrides["patch_size"] = int(patch.group(1))
    if family == "vit" and overrides.get("patch_size", 16) > 16:
        # A 32x32 patch embedding has 3072 weights per channel: wider
        # blocks keep most of the weights in the blocks.
        overrides.update(hidden_dim=96, mlp_dim=384)
    window = re.search(r"window(\d+)", text)
    if window and family == "swin":
        overrides["window_size"] = int(window.group(1))
    if family == "dinov2" and "registers" in text:
        # DINOv2 with registers prepends four register tokens.
        overrides["num_register_tokens"] = 4
    return overrides


def _slug(text):
    """A folder name for a preset: built-in names as they are, handles
    made safe and kept apart by a digest of the full text."""
    if re.fullmatch(r"[\w.-]+", text):
        return text
    safe = re.sub(r"[^\w.-]+", "_", text).strip("_")[-60:]
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def default_directory(preset):
    """Where `standin_preset` keeps a preset's stand-in by default.

    `standins/<preset>` under kerastl's cache directory
    (`$KERASTL_CACHE_DIR`, see `kerastl.utils.cache.cache_root`).

    Example:
    ```python
    kerastl.models.standins.default_directory("resnet_50_imagenet")
    ```
    """
    return cache.cache_root() / "standins" / _slug(str(preset))


def standin_preset(preset, directory=None, seed=0):
    """A tiny random-weight preset of `preset`'s family, saved offline.

    The family comes from keras-hub's preset registry for built-in names,
    else from the words of a `kaggle://` or `hf://` handle ("resnet",
    "vit", "deit", "dinov2", "efficientnet", ...); a handle that names no
    family gets a ResNet, and the returned `notes` say so. The backbone
    has the preset's input size (`backbones.preset_input_size`, else the
    family's usual size, noted), patch and window size and register tokens,
    and the converter the family's presets ship with. A directory that
    already holds this stand-in is reused; otherwise it is written
    atomically, so concurrent runs never see half of one.

    Args:
        preset: str. The preset that cannot be downloaded.
        directory: str, path-like or `None`. Where to write the preset;
            defaults to `default_directory(preset)`. An existing directory
            that is not a stand-in is never overwritten.
        seed: int. Seeds the random weights: on a Keras backend, a seed
            always gives the same stand-in.

    Returns:
        A `StandIn`: `.path` is the preset directory, `.message` one line
        for the log.

    Raises:
        ValueError: for families kerastl has no stand-in of (MiT, DINOv3,
            HGNetV2), naming the fix: `--set preset=PATH`.

    Example:
    ```python
    standin = kerastl.models.standins.standin_preset("resnet_50_imagenet")
    model = kerastl.TransferClassifier.from_preset(standin.path, num_classes=3)
    ```
    """
    text = str(preset)
    notes = []
    known = backbones.preset_family(text)
    if known:
        family = known.name
    else:
        family, note = _family_of_text(text)
        notes += [note] if note else []
    if family not in _SPECS:
        raise ValueError(
            f"kerastl has no offline stand-in for the {family} family of "
            f"preset '{text}', so this smoke run needs the real preset. "
            "Download it once with a network, or point the recipe at a "
            "local preset directory with `--set preset=PATH` (any directory "
            f"written by `save_to_preset`). Received: preset={text!r}"
        )
    spec = _SPECS[family]
    image_size = backbones.preset_input_size(text)
    if image_size is None:
        image_size = _pair(spec.image_size)
        notes.append(
            f"the preset's input size is unknown offline, so {family}'s "
            f"usual {image_size[0]}x{image_size[1]} was used"
        )
    normalization = _PRESET_NORMALIZATION.get(text, spec.normalization)
    path = pathlib.Path(directory or default_directory(text))
    standin = StandIn(
        path, text, family, image_size, normalization, tuple(notes)
    )
    marker = {
        "preset": text,
        "family": family,
        "image_size": list(image_size),
        "seed": seed,
        "version": _FORMAT_VERSION,
        "keras_hub": keras_hub.__version__,
    }
    if _read_marker(path) == marker:
        return standin
    occupied = path.exists() and (not path.is_dir() or any(path.iterdir()))
    if occupied and _read_marker(path) is None:
        raise ValueError(
            f"{path} exists and is not a kerastl stand-in; it is left "
            "alone. Pass another directory. "
            f"Received: directory={str(path)!r}"
        )
    with _seeded(seed):
        backbone = tiny_backbone(
            family, image_size, **_name_overrides(family, text)
        )
    converter = normalization.converter(_converter_class(family), image_size)
    with atomic.atomic_path(path) as tmp:
        backbone.save_to_preset(str(tmp))
        converter.save_to_preset(str(tmp))
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    return standin


def _read_marker(path):
    try:
        return json.loads((path / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def imagenet_converter(image_size):
    """A ResNet image converter with ImageNet mean/std normalization.

    Example:
    ```python
    converter = kerastl.models.standins.imagenet_converter(96)
    ```
    """
    return Normalization("imagenet").converter(
        keras_hub.layers.ResNetImageConverter, image_size
    )
