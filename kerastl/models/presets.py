"""Reading and writing the preset directories a classifier comes from.

A kerastl preset is a keras-hub preset (`config.json`, `model.weights.h5`,
`image_converter.json`, `metadata.json`) plus two files for the head:
`kerastl.json` (its config: classes, head shape, multi-label) and
`kerastl_head.weights.h5` (its weights). keras-hub reads it as a plain
backbone preset; kerastl restores the whole classifier from it.

Backbones and image converters are always loaded through keras-hub, which
understands built-in names, `kaggle://` and `hf://` handles, and local
directories in keras-hub, Hugging Face transformers and timm formats.
"""

import contextlib
import json
import pathlib

import keras
import keras_hub

# keras-hub resolves every kind of preset handle (built-in, Kaggle, Hugging
# Face, local) in `get_file`, from its registry of built-in names; there is
# no public equivalent.
from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS
from keras_hub.src.utils.preset_utils import get_file

from kerastl.utils import atomic
from kerastl.utils import downloads
from kerastl.utils import keras_internals

HEAD_CONFIG_FILE = "kerastl.json"
HEAD_WEIGHTS_FILE = "kerastl_head.weights.h5"
HF_PREPROCESSOR_FILE = "preprocessor_config.json"

# The head config keys that change the shape of the head's weights.
HEAD_SHAPE_KEYS = ("num_classes", "multi_label", "pooling", "hidden_dim")

# Backbone arguments keras-hub's Hugging Face converters leave at their
# defaults although the checkpoint's config.json sets them: keras-hub 0.32
# builds every transformers ViT with LayerNorm epsilon 1e-6 where the
# checkpoint says 1e-12, shifting features by ~1e-3. Maps model_type to
# {backbone argument: config.json key}.
_HF_BACKBONE_ARGS = {"vit": {"layer_norm_epsilon": "layer_norm_eps"}}

# PIL resampling filters in Hugging Face image processor configs.
_HF_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}

# How to go on when a preset cannot be downloaded.
_LOCAL_PRESET_WAY = (
    "point the recipe at a local preset directory with `--set preset=PATH` "
    "(any directory written by `save_to_preset`)"
)


@contextlib.contextmanager
def _downloading(preset):
    """Turns a download of `preset` that failed offline into `OfflineError`.

    Any other error, a missing file included, passes through unchanged.
    """
    try:
        yield
    except downloads.OfflineError:
        # Already translated by a nested call; `OfflineError` is itself a
        # `ConnectionError`, so it would be wrapped twice.
        raise
    except Exception as error:
        if downloads.network_failure(error) is None:
            raise
        raise downloads.offline_error(
            _describe(preset), _LOCAL_PRESET_WAY, error
        ) from error


def _describe(preset):
    """`preset` and where it is downloaded from, for error messages."""
    preset = str(preset)
    handle = BUILTIN_PRESETS.get(preset, {}).get("kaggle_handle", preset)
    if handle.startswith("kaggle://"):
        where = "" if handle == preset else f" ({handle})"
        return f"the preset '{preset}' from Kaggle{where}"
    if handle.startswith("hf://"):
        return f"the preset '{preset}' from Hugging Face"
    return f"the preset '{preset}'"


def _file_exists(preset, name):
    # Like keras-hub's `check_file_exists`, except for the network: offline,
    # huggingface_hub raises "not found" for any file it has not cached, and
    # a missing optional file must not hide that.
    try:
        get_file(preset, name)
    except FileNotFoundError as error:
        if downloads.network_failure(error) is not None:
            raise
        return False
    return True


def load_backbone(preset, load_weights=True, dtype=None):
    """Loads the backbone of any preset through keras-hub.

    Args:
        preset: str. A built-in name, a `kaggle://` or `hf://` handle, or a
            local directory.
        load_weights: bool. Whether to load pretrained weights.
        dtype: str, `keras.DTypePolicy` or `None`. The backbone's dtype
            policy (`"mixed_bfloat16"`, ...); `None` keeps Keras' global
            policy.

    Raises:
        kerastl.errors.OfflineError: the preset had to be downloaded and the
            network could not be reached.

    Example:
    ```python
    backbone = kerastl.models.presets.load_backbone("resnet_50_imagenet")
    ```
    """
    with _downloading(preset):
        return _load_backbone(preset, load_weights, dtype)


def _load_backbone(preset, load_weights, dtype):
    config = _read_json(preset, "config.json")
    local = pathlib.Path(preset)
    if load_weights and local.is_dir() and not _has_weights(local):
        raise ValueError(
            f"The preset directory {preset} holds an architecture but no "
            "weights (no model.weights.h5, safetensors or .bin file). Train "
            "it from random weights with `pretrained=False` in the recipe "
            "(`--set pretrained=false`) or `load_weights=False`, or point "
            "at a preset with weights."
        )
    fixes = _HF_BACKBONE_ARGS.get(config.get("model_type"), {})
    kwargs = {arg: config[key] for arg, key in fixes.items() if key in config}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return keras_hub.models.Backbone.from_preset(
        preset, load_weights=load_weights, **kwargs
    )


def _has_weights(folder):
    patterns = ("*.weights.h5", "*.safetensors", "*.bin", "*.pth")
    return any(any(folder.glob(pattern)) for pattern in patterns)


def load_image_converter(preset):
    """Loads the preprocessing a preset's weights were trained with.

    keras-hub presets carry an `image_converter.json`. Hugging Face
    checkpoints carry a `preprocessor_config.json` that keras-hub does not
    convert for every model type; it is read here (resize, rescale, mean/std
    normalization) so a transformers ViT, DeiT or DINOv2 gets the same inputs
    as in transformers.

    Args:
        preset: str. Any preset `load_backbone` accepts.

    Returns:
        A `keras_hub.layers.ImageConverter`.

    Raises:
        kerastl.errors.OfflineError: the preset had to be downloaded and the
            network could not be reached.

    Example:
    ```python
    converter = kerastl.models.presets.load_image_converter(
        "resnet_50_imagenet"
    )
    converter.image_size  # (224, 224)
    ```
    """
    with _downloading(preset):
        converter = _load_image_converter(preset)
    if converter is None:
        raise ValueError(
            f"Preset '{preset}' holds no image preprocessing (no "
            "`image_converter.json` or `preprocessor_config.json`), so "
            "kerastl cannot know how its weights expect images to be scaled. "
            "Name the normalization the backbone was trained with: in a "
            'recipe `preprocessing="imagenet"` (or `"minus_one_to_one"`, '
            '`"zero_one"`), on the command line `--set '
            "preprocessing=imagenet`; in Python pass `image_converter=kerastl."
            'preprocessing.standard_converter("imagenet", (224, 224))` to '
            f"`from_preset`. Received: preset={preset!r}"
        )
    return converter


def _load_image_converter(preset):
    # keras-hub turns a `config.json` it could not download into "no
    # config.json" without the cause; probing it first keeps the cause.
    _file_exists(preset, "config.json")
    converter = None
    try:
        # `None` for Hugging Face model types keras-hub does not convert.
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except FileNotFoundError as error:
        # A keras-hub preset saved without a converter has no such file;
        # offline, every file is missing, and `_downloading` says so.
        if downloads.network_failure(error) is not None:
            raise
    if converter is None and _file_exists(preset, HF_PREPROCESSOR_FILE):
        converter = _converter_from_hf(_read_json(preset, HF_PREPROCESSOR_FILE))
    return converter


def _converter_from_hf(config):
    size = config.get("crop_size") or config.get("size") or {}
    if isinstance(size, int):
        size = {"height": size, "width": size}
    image_size = None
    if config.get("do_resize", True) and "height" in size:
        image_size = (size["height"], size["width"])
    elif config.get("do_resize", True) and "shortest_edge" in size:
        image_size = (size["shortest_edge"], size["shortest_edge"])
    rescale = config.get("rescale_factor", 1 / 255)
    if not config.get("do_rescale", True):
        rescale = 1.0
    mean = config.get("image_mean", [0.0, 0.0, 0.0])
    std = config.get("image_std", [1.0, 1.0, 1.0])
    if not config.get("do_normalize", True):
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return keras_hub.layers.ImageConverter(
        image_size=image_size,
        scale=[rescale / s for s in std],
        offset=[-m / s for m, s in zip(mean, std, strict=True)],
        interpolation=_HF_RESAMPLE.get(config.get("resample"), "bilinear"),
    )


def _read_json(preset, name):
    with open(get_file(preset, name)) as f:
        return json.load(f)


def load_head_config(preset):
    """The head config of a kerastl preset, or `None` for any other preset.

    Args:
        preset: str. Any preset `load_backbone` accepts.

    Raises:
        kerastl.errors.OfflineError: the preset had to be downloaded and the
            network could not be reached.

    Example:
    ```python
    kerastl.models.presets.load_head_config("pets_preset")["class_names"][:2]
    ```
    """
    with _downloading(preset):
        if not _file_exists(preset, HEAD_CONFIG_FILE):
            return None
        return _read_json(preset, HEAD_CONFIG_FILE)["config"]


def _head_weights_skip(model):
    # Everything but the head: the backbone is saved by keras-hub, the image
    # converter has no weights, and a preset carries no training state.
    skip = keras_internals.all_layers(model.backbone)
    skip.append(model.image_converter)
    return skip + ([model.optimizer] if model.optimizer else [])


def load_head_weights(model, preset):
    """Loads a kerastl preset's head weights into `model`.

    Args:
        model: a `kerastl.TransferClassifier` whose head matches the preset's.
        preset: str. A kerastl preset.

    Raises:
        kerastl.errors.OfflineError: the preset had to be downloaded and the
            network could not be reached.

    Example:
    ```python
    kerastl.models.presets.load_head_weights(model, "pets_preset")
    ```
    """
    with _downloading(preset):
        path = get_file(preset, HEAD_WEIGHTS_FILE)
    keras.saving.load_weights(
        model, path, objects_to_skip=_head_weights_skip(model)
    )


def save_preset(model, preset_dir):
    """Writes `model` as a kerastl preset directory, atomically.

    Args:
        model: a `kerastl.TransferClassifier`.
        preset_dir: str or path-like. Created, or replaced whole.

    Example:
    ```python
    kerastl.models.presets.save_preset(model, "pets_preset")
    ```
    """
    with atomic.atomic_path(preset_dir) as tmp:
        tmp.mkdir()
        model.backbone.save_to_preset(str(tmp))
        model.image_converter.save_to_preset(str(tmp))
        head_config = {
            "class_name": type(model).__name__,
            "config": model.head_config(),
        }
        (tmp / HEAD_CONFIG_FILE).write_text(json.dumps(head_config, indent=2))
        keras.saving.save_weights(
            model,
            str(tmp / HEAD_WEIGHTS_FILE),
            objects_to_skip=_head_weights_skip(model),
        )


def input_size(preset):
    """The `(height, width)` a preset's backbone was built for, or `None`.

    Read from the backbone's `config.json` (`image_shape`); `None` when the
    backbone takes images of any size.

    Args:
        preset: str. Any preset `load_backbone` accepts.

    Example:
    ```python
    # None or (224, 224)
    kerastl.models.presets.input_size("resnet_50_imagenet")
    ```
    """
    with _downloading(preset):
        config = _read_json(preset, "config.json").get("config", {})
    shape = config.get("image_shape") or (None, None)
    if shape[0] is None or shape[1] is None:
        return None
    return (int(shape[0]), int(shape[1]))


def head_arguments(preset, num_classes, multi_label, class_names, overrides):
    """The head's arguments for a classifier built from `preset`, and
    whether the preset's saved head is the right one to reuse.

    A kerastl preset's saved head is only the right head for the same
    classes: a preset pretrained on other classes of the same count
    (Fashion-MNIST 0-4, then 5-9) must start a new one. So the saved head
    is reused when every shape argument (`HEAD_SHAPE_KEYS`) and the class
    names agree; a new head also drops the saved temperature and
    thresholds, which were fitted on the old head's logits.

    Args:
        preset: str. The preset.
        num_classes: int or `None`.
        multi_label: bool or `None` (keep the preset's).
        class_names: list of str or `None`.
        overrides: dict of other `TransferClassifier` arguments given.

    Returns:
        `(head, reuse_head)`: a dict of `TransferClassifier` arguments and a
        bool.

    Example:
    ```python
    head, reuse = kerastl.models.presets.head_arguments(
        "pets_preset", None, None, None, {}
    )
    ```
    """
    saved = load_head_config(preset) or {}
    head = {**saved, **overrides}
    if multi_label is not None:
        head["multi_label"] = multi_label
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    if num_classes is not None:
        head["num_classes"] = num_classes
    if "num_classes" not in head:
        raise ValueError(
            f"Preset '{preset}' has no kerastl head, so the number of "
            "classes is unknown. Pass `num_classes=` or `class_names=`. "
            f"Received: num_classes=None"
        )
    same_names = (
        class_names is None
        or saved.get("class_names") is None
        or list(class_names) == list(saved["class_names"])
    )
    reuse_head = (
        bool(saved)
        and all(head.get(key) == saved.get(key) for key in HEAD_SHAPE_KEYS)
        and same_names
    )
    if class_names is not None:
        head["class_names"] = class_names
    elif not reuse_head:
        head["class_names"] = None
    if not reuse_head:
        for key in ("temperature", "thresholds"):
            if key not in overrides:
                head.pop(key, None)
    return head, reuse_head
