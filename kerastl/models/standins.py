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
from kerastl.models import catalog
from kerastl.models import standin_configs as configs
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
    normalization: configs.Normalization
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


def _spec(family):
    if family not in configs.SPECS:
        raise ValueError(
            f"kerastl builds tiny stand-ins of the families "
            f"{', '.join(sorted(configs.SPECS))}. Received: family={family!r}"
        )
    return configs.SPECS[family]


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
    config = {**_spec(family).config(configs.pair(image_size)), **overrides}
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
    for word, family in configs.HANDLE_WORDS:
        if any(token.startswith(word) for token in tokens):
            return family, None
    return configs.FALLBACK_FAMILY, (
        f"no family named in '{text}', so {configs.FALLBACK_FAMILY} was guessed"
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
    has the preset's input size (`catalog.preset_input_size`, else the
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
    known = catalog.preset_family(text)
    if known:
        family = known.name
    else:
        family, note = _family_of_text(text)
        notes += [note] if note else []
    if family not in configs.SPECS:
        raise ValueError(
            f"kerastl has no offline stand-in for the {family} family of "
            f"preset '{text}', so this smoke run needs the real preset. "
            "Download it once with a network, or point the recipe at a "
            "local preset directory with `--set preset=PATH` (any directory "
            f"written by `save_to_preset`). Received: preset={text!r}"
        )
    spec = configs.SPECS[family]
    image_size = catalog.preset_input_size(text)
    if image_size is None:
        image_size = configs.pair(spec.image_size)
        notes.append(
            f"the preset's input size is unknown offline, so {family}'s "
            f"usual {image_size[0]}x{image_size[1]} was used"
        )
    normalization = configs.PRESET_NORMALIZATION.get(text, spec.normalization)
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
    return configs.Normalization("imagenet").converter(
        keras_hub.layers.ResNetImageConverter, image_size
    )
