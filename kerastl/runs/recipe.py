"""`Recipe`: a whole fine-tuning run as one typed object.

A recipe is a short Python file that defines one object named `recipe`, a
`kerastl.Recipe`. It is imported by path (never executed into globals), and
`--set KEY=VALUE` overrides are typed by the dataclass fields they replace.
"""

import dataclasses
import importlib.util
import pathlib
import sys
import traceback

from kerastl.data import Augment
from kerastl.data import DataSpec
from kerastl.errors import RecipeError
from kerastl.models.preprocessing import NORMALIZATIONS
from kerastl.train.stage import Stage
from kerastl.utils.distribution import MODES as DISTRIBUTE_MODES
from kerastl.utils.distribution import PRECISIONS

# The smallest image side a recipe may ask for: a ViT's smallest patch or a
# convnet's first strides leave nothing of smaller images.
MIN_IMAGE_SIDE = 8


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A fine-tuning run: preset, data, and the stages that train it.

    Args:
        name: str. Names the run directory (`runs/<name>/<timestamp>`).
        preset: str. A keras-hub preset name, handle or local directory.
        data: `kerastl.data.DataSpec`. Where the images come from.
        stages: tuple of `kerastl.Stage`. Run in order; the model is
            recompiled between stages and epochs count on across them.
        multi_label: bool. Sigmoid head and multi-hot labels. Defaults to
            `False`.
        num_classes: int or `None`. Checked against the data; `None` takes
            the data's. Defaults to `None`.
        image_size: `(height, width)` or `None`. Defaults to `None`: the
            preset's input size.
        batch_size: int. Defaults to `32`.
        augment: `kerastl.data.Augment`. Training augmentation. Defaults to
            a random horizontal flip.
        seed: int. Seeds data order, augmentation and initialization.
            Defaults to `0`.
        dropout: float. Dropout before the head. Defaults to `0.0`.
        pooling: str. `TransferClassifier` pooling. Defaults to `"auto"`.
        pretrained: bool. Load the preset's weights; `False` builds the
            preset's architecture with random weights (training from
            scratch). Defaults to `True`.
        label_smoothing: float. Label smoothing of the cross-entropy loss.
            Defaults to `0.0`.
        early_stopping: int. Patience in epochs: a stage stops when
            `monitor` has not improved for this many epochs and keeps its
            best weights. `0` disables it. Defaults to `0`.
        monitor: str. The logged metric early stopping watches; `"loss"`
            or `"val_loss"` are minimized, anything else maximized.
            Defaults to `"val_loss"`.
        feature_cache: bool. Train head-only stages without random
            augmentation on cached backbone features (`kerastl.train.features`).
            Defaults to `True`.
        teacher: str or `None`. Knowledge distillation: a run directory or
            preset of a trained classifier whose predictions the model
            learns from (`kerastl.train.distillation`). Defaults to `None`.
        distill_alpha: float. Weight of the hard-label loss; the
            distillation loss gets `1 - distill_alpha`. Defaults to `0.5`.
        distill_temperature: float. Softmax temperature of the
            distillation loss. Defaults to `4.0`.
        calibrate: bool. Fit a temperature on the validation split after
            training (`kerastl.evaluate.calibration`); it is stored with the
            model and applied by predict, evaluate and exports. Accuracy is
            unchanged; probabilities become honest. Defaults to `False`.
        tune_thresholds: bool. Multi-label: tune per-class decision
            thresholds on the validation split (`kerastl.evaluate.thresholds`),
            stored with the model. Defaults to `True`.
        target_precision: float or `None`. With `tune_thresholds`, pick
            each class's threshold for the most recall at this precision
            instead of the best F1. Defaults to `None`.
        precision: str. `"float32"`, `"bfloat16"` (weights and math in
            bfloat16), `"mixed_bfloat16"` or `"mixed_float16"` (float32
            weights, math in 16 bits, loss scaling for float16). The head
            and the loss stay in float32. Defaults to `"float32"`.
        distribute: str. `"auto"`, `"none"` or `"data-parallel"`
            (`kerastl.utils.distribution`); `batch_size` is the global batch,
            split over the devices. Defaults to `"auto"`: data parallel
            when there are several accelerators.
        preprocessing: str or `None`. The pixel normalization the preset's
            weights expect, for a preset that does not record it (a
            backbone saved with `save_to_preset` alone): `"imagenet"`
            (ImageNet mean/std), `"minus_one_to_one"` or `"zero_one"`
            (`kerastl.models.preprocessing`). Replaces the preset's own
            when set. Defaults to `None`: the preset's own.

    Example:
    ```python
    recipe = kerastl.Recipe(
        name="pets",
        preset="resnet_50_imagenet",
        data=kerastl.DataSpec("tfds", "oxford_iiit_pet", test="test"),
        stages=(kerastl.Stage(epochs=3), kerastl.Stage(epochs=2, train=1)),
    )
    ```
    """

    name: str
    preset: str
    data: DataSpec
    stages: tuple = (Stage(),)
    multi_label: bool = False
    num_classes: int | None = None
    image_size: tuple | None = None
    batch_size: int = 32
    augment: Augment = Augment()
    seed: int = 0
    dropout: float = 0.0
    pooling: str = "auto"
    pretrained: bool = True
    label_smoothing: float = 0.0
    early_stopping: int = 0
    monitor: str = "val_loss"
    feature_cache: bool = True
    teacher: str | None = None
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    calibrate: bool = False
    tune_thresholds: bool = True
    target_precision: float | None = None
    precision: str = "float32"
    distribute: str = "auto"
    preprocessing: str | None = None

    def __post_init__(self):
        _check_name(self.name)
        object.__setattr__(self, "stages", _named_stages(self.stages))
        _check_decision_fields(self)
        _check_choices(self)
        _check_early_stopping(self)
        if self.image_size is not None:
            size = _image_size(self.image_size)
            object.__setattr__(self, "image_size", size)

    def to_dict(self):
        """The recipe as JSON-ready data (what `recipe.json` holds).

        Example:
        ```python
        json.dumps(recipe.to_dict())
        ```
        """
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data):
        """Rebuilds a recipe from `to_dict` output.

        Example:
        ```python
        kerastl.Recipe.from_dict(json.load(open("run/recipe.json")))
        ```
        """
        data = dict(data)
        data["data"] = DataSpec(**_tuples(data["data"]))
        data["augment"] = Augment(**data["augment"])
        data["stages"] = tuple(Stage(**s) for s in data["stages"])
        return cls(**_tuples(data))


def _check_name(name):
    name = str(name)
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        # The name is a folder of runs/: it must stay one folder there.
        raise RecipeError(
            "A recipe's name names its folder under runs/, so it must be "
            "a plain folder name: no '/', '\\', and not '.' or '..'. "
            f"Received: name={name!r}"
        )


def _named_stages(stages):
    """The stages as a tuple, each with a name (`stage<N>` by default)."""
    named = tuple(stages)
    if not named or not all(isinstance(s, Stage) for s in named):
        raise RecipeError(
            "A recipe needs a non-empty sequence of kerastl.Stage in "
            f"`stages`. Received: stages={stages!r}"
        )
    return tuple(
        s if s.name else dataclasses.replace(s, name=f"stage{i + 1}")
        for i, s in enumerate(named)
    )


def _check_decision_fields(recipe):
    if not 0.0 <= recipe.label_smoothing < 1.0:
        raise RecipeError(
            "label_smoothing is the share of each target spread over all "
            f"classes, in [0, 1). Received: {recipe.label_smoothing}"
        )
    target = recipe.target_precision
    if target is not None and not 0 < target <= 1:
        raise RecipeError(
            "target_precision is the precision each class's threshold "
            "must reach, in (0, 1], or None to maximize F1. Received: "
            f"target_precision={target}"
        )


def _check_choices(recipe):
    if recipe.precision not in PRECISIONS:
        raise RecipeError(
            f"precision is one of {', '.join(PRECISIONS)}. Received: "
            f"precision={recipe.precision!r}"
        )
    if recipe.distribute not in DISTRIBUTE_MODES:
        raise RecipeError(
            f"distribute is one of {', '.join(DISTRIBUTE_MODES)}. "
            f"Received: distribute={recipe.distribute!r}"
        )
    if recipe.preprocessing not in (None, *NORMALIZATIONS):
        raise RecipeError(
            "preprocessing is one of "
            f"{', '.join(NORMALIZATIONS)}, or none for the preset's own. "
            f"Received: preprocessing={recipe.preprocessing!r}"
        )


def _check_early_stopping(recipe):
    if recipe.early_stopping < 0:
        raise RecipeError(
            "early_stopping is a patience in epochs, or 0 for none. "
            f"Received: early_stopping={recipe.early_stopping}"
        )
    if recipe.early_stopping and any(s.ema for s in recipe.stages):
        # Keras would restore raw best weights and then overwrite them
        # with the moving average at the end of the fit.
        raise RecipeError(
            "early_stopping and a stage's ema cannot be combined: the "
            "best epoch's weights and the averaged weights would fight "
            "over the final model. Drop one of them."
        )


def _image_size(image_size):
    size = tuple(image_size)
    if len(size) != 2 or not all(
        isinstance(side, int) and side >= MIN_IMAGE_SIDE for side in size
    ):
        raise RecipeError(
            "image_size is (height, width) in pixels, two whole "
            f"numbers of at least {MIN_IMAGE_SIDE}, e.g. "
            f"`--set image_size=224,224`. Received: image_size="
            f"{image_size!r}"
        )
    return size


def _to_jsonable(value):
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    # In-memory arrays cannot go to JSON; the run records that they existed.
    return f"<{type(value).__name__}>"


def _tuples(data):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def load_recipe(path):
    """Imports a recipe file by path and returns its `Recipe`.

    The file's object named `recipe` is used; failing that, its single
    `Recipe` instance. Errors are `RecipeError`s: a missing file, a file with
    no recipe or several, a file that raises on import (its traceback is
    shown), an object of the wrong type.

    Args:
        path: str or path-like. The recipe file.

    Example:
    ```python
    recipe = kerastl.runs.recipe.load_recipe("recipes/pets.py")
    ```
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file '{path}' does not exist.")
    module_name = f"kerastl_recipe_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        trace = "".join(traceback.format_exception(error))
        raise RecipeError(
            f"Recipe file '{path}' raised an error while being imported:\n\n"
            f"{trace}"
        ) from error
    finally:
        sys.modules.pop(module_name, None)
    return _find_recipe(module, path)


def _find_recipe(module, path):
    found = getattr(module, "recipe", None)
    if found is not None:
        if not isinstance(found, Recipe):
            raise RecipeError(
                f"`recipe` in '{path}' must be a kerastl.Recipe. "
                f"Received: recipe of type {type(found).__name__}"
            )
        return found
    candidates = [v for v in vars(module).values() if isinstance(v, Recipe)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise RecipeError(
            f"'{path}' defines {len(candidates)} kerastl.Recipe objects and "
            "none is named `recipe`. Name the one to run `recipe`."
        )
    raise RecipeError(
        f"'{path}' defines no kerastl.Recipe. A recipe file must define "
        "`recipe = kerastl.Recipe(...)`."
    )
