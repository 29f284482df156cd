"""`Recipe`: a whole fine-tuning run as one typed object.

A recipe is a short Python file that defines one object named `recipe`, a
`kerastl.Recipe`. It is imported by path (never executed into globals), and
`--set KEY=VALUE` overrides are typed by the dataclass fields they replace.
"""

import dataclasses
import difflib
import importlib.util
import pathlib
import re
import sys
import traceback
import types
import typing

from kerastl.data import Augment
from kerastl.data import DataSpec
from kerastl.errors import RecipeError
from kerastl.models.preprocessing import NORMALIZATIONS
from kerastl.train.stage import Stage
from kerastl.utils import text
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
        name = str(self.name)
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            # The name is a folder of runs/: it must stay one folder there.
            raise RecipeError(
                "A recipe's name names its folder under runs/, so it must be "
                "a plain folder name: no '/', '\\', and not '.' or '..'. "
                f"Received: name={self.name!r}"
            )
        stages = tuple(self.stages)
        if not stages or not all(isinstance(s, Stage) for s in stages):
            raise RecipeError(
                "A recipe needs a non-empty sequence of kerastl.Stage in "
                f"`stages`. Received: stages={self.stages!r}"
            )
        named = tuple(
            s if s.name else dataclasses.replace(s, name=f"stage{i + 1}")
            for i, s in enumerate(stages)
        )
        object.__setattr__(self, "stages", named)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise RecipeError(
                "label_smoothing is the share of each target spread over all "
                f"classes, in [0, 1). Received: {self.label_smoothing}"
            )
        if self.target_precision is not None and not (
            0 < self.target_precision <= 1
        ):
            raise RecipeError(
                "target_precision is the precision each class's threshold "
                "must reach, in (0, 1], or None to maximize F1. Received: "
                f"target_precision={self.target_precision}"
            )
        if self.precision not in PRECISIONS:
            raise RecipeError(
                f"precision is one of {', '.join(PRECISIONS)}. Received: "
                f"precision={self.precision!r}"
            )
        if self.distribute not in DISTRIBUTE_MODES:
            raise RecipeError(
                f"distribute is one of {', '.join(DISTRIBUTE_MODES)}. "
                f"Received: distribute={self.distribute!r}"
            )
        if (
            self.preprocessing is not None
            and self.preprocessing not in NORMALIZATIONS
        ):
            raise RecipeError(
                "preprocessing is one of "
                f"{', '.join(NORMALIZATIONS)}, or none for the preset's own. "
                f"Received: preprocessing={self.preprocessing!r}"
            )
        if self.early_stopping < 0:
            raise RecipeError(
                "early_stopping is a patience in epochs, or 0 for none. "
                f"Received: early_stopping={self.early_stopping}"
            )
        if self.early_stopping and any(s.ema for s in named):
            # Keras would restore raw best weights and then overwrite them
            # with the moving average at the end of the fit.
            raise RecipeError(
                "early_stopping and a stage's ema cannot be combined: the "
                "best epoch's weights and the averaged weights would fight "
                "over the final model. Drop one of them."
            )
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(
                isinstance(side, int) and side >= MIN_IMAGE_SIDE
                for side in size
            ):
                raise RecipeError(
                    "image_size is (height, width) in pixels, two whole "
                    f"numbers of at least {MIN_IMAGE_SIDE}, e.g. "
                    f"`--set image_size=224,224`. Received: image_size="
                    f"{self.image_size!r}"
                )
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


def override_keys(recipe):
    """Every dotted key `--set` accepts for this recipe.

    Example:
    ```python
    "stages.1.epochs" in kerastl.runs.recipe.override_keys(recipe)  # True
    ```
    """
    keys = []

    def walk(obj, prefix):
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            key = f"{prefix}{field.name}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif field.name == "stages":
                for i, stage in enumerate(value):
                    walk(stage, f"{key}.{i + 1}.")
            else:
                keys.append(key)

    walk(recipe, "")
    return keys


def apply_overrides(recipe, overrides):
    """Returns `recipe` with `KEY=VALUE` overrides applied.

    Keys are dotted paths (`stages.1.epochs`, `data.data_dir`, `preset`).
    Stages are numbered from 1 as in the stage headers, or named
    (`stages.head.learning_rate`).
    Values are parsed by the field's type: `true`/`false` for booleans,
    numbers, comma-separated tuples (`image_size=224,224`), `none` for
    optional fields. An unknown key names the closest valid keys.

    Args:
        recipe: a `kerastl.Recipe`.
        overrides: iterable of `"KEY=VALUE"` strings.

    Example:
    ```python
    recipe = kerastl.runs.recipe.apply_overrides(recipe, ["stages.1.epochs=5"])
    ```
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(
                f"Overrides are written KEY=VALUE. Received: --set {item!r}"
            )
        try:
            recipe = _override(recipe, key, value.strip(), key)
        except _UnknownKey:
            close = difflib.get_close_matches(key, override_keys(recipe), n=4)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            if key.startswith("stages."):
                hint += (
                    f" Stages are numbered 1 to {len(recipe.stages)}, as in "
                    "the stage headers, or named: "
                    + ", ".join(f"stages.{s.name}" for s in recipe.stages)
                    + "."
                )
            raise RecipeError(
                f"Unknown recipe key '{key}'.{hint} `kerastl fit --help` "
                "lists the recipe fields."
            ) from None
    return recipe


class _UnknownKey(Exception):
    pass


def _override(obj, key, value, full_key):
    head, _, rest = key.partition(".")
    names = {f.name: f for f in dataclasses.fields(obj)}
    if head not in names:
        raise _unknown_key(full_key)
    current = getattr(obj, head)
    if head == "stages" and rest:
        ref, _, rest = rest.partition(".")
        index = stage_index(current, ref)
        if index is None or not rest:
            raise _unknown_key(full_key)
        stages = list(current)
        stages[index] = _override(stages[index], rest, value, full_key)
        return dataclasses.replace(obj, stages=tuple(stages))
    if dataclasses.is_dataclass(current):
        if not rest:
            raise _unknown_key(full_key)
        return dataclasses.replace(
            obj, **{head: _override(current, rest, value, full_key)}
        )
    if rest:
        raise _unknown_key(full_key)
    hint = typing.get_type_hints(type(obj))[head]
    try:
        parsed = _parse(value, hint)
    except ValueError as error:
        raise RecipeError(
            f"--set {full_key}={value}: {error}. Received: {value!r}"
        ) from None
    return dataclasses.replace(obj, **{head: parsed})


def _unknown_key(key):
    return _UnknownKey(key)


def stage_index(stages, ref):
    """The 0-based position of the stage `ref` names, or `None`.

    Stages are numbered from 1, as the stage headers of `kerastl fit` and
    `kerastl lr-find --stage` number them, or named by their `name`.

    Args:
        stages: the recipe's stages.
        ref: str. `"2"` (the second stage) or a stage name (`"head"`).

    Example:
    ```python
    kerastl.runs.recipe.stage_index(recipe.stages, "head")  # 0
    ```
    """
    if ref.isdigit():
        number = int(ref)
        return number - 1 if 1 <= number <= len(stages) else None
    names = [stage.name for stage in stages]
    return names.index(ref) if ref in names else None


def _parse(text, hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if text.lower() == "none" and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _parse(text, option)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError("; ".join(errors))
    if hint is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("expected true or false")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("expected an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    if hint is tuple or origin is tuple:
        items = [item.strip() for item in text.split(",") if item.strip()]
        return tuple(_number_or_text(item) for item in items)
    if hint is str:
        return text
    raise ValueError(f"fields of type {hint} cannot be set from the CLI")


def _number_or_text(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _changed(obj, skip=()):
    """`(field, value)` of `obj`'s fields that differ from their defaults."""
    changed = []
    for field in dataclasses.fields(obj):
        if field.name in skip:
            continue
        value = getattr(obj, field.name)
        default = field.default
        if default is dataclasses.MISSING or value != default:
            changed.append((field.name, value))
    return changed


def _show(value):
    if isinstance(value, (list, tuple)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return f"<{len(value)} arrays>"
    return str(value)


# Stage fields shown as columns of the stage table; others go to "other".
_STAGE_COLUMNS = ("train", "epochs", "optimizer", "learning_rate")


def describe(recipe):
    """The recipe in a few lines: what `kerastl fit` prints at the start.

    Name, preset and data, then every other field that differs from its
    default, then the stages as a table numbered as `--set stages.N` and
    the stage headers number them. `recipe.json` holds all of it.

    Args:
        recipe: a `kerastl.Recipe`.

    Returns:
        A str of several lines.

    Example:
    ```python
    print(kerastl.runs.recipe.describe(recipe))
    ```
    """
    data = recipe.data
    where = " ".join(str(v) for v in (data.source, data.name) if v)
    details = ", ".join(
        f"{key} {_show(value)}"
        for key, value in _changed(data, skip=("source", "name"))
    )
    lines = [
        f"{recipe.name}: {recipe.preset} on {where}"
        + (f" ({details})" if details else "")
    ]
    settings = [
        f"{key}={_show(value)}"
        for key, value in _changed(
            recipe, skip=("name", "preset", "data", "stages", "augment")
        )
    ]
    settings += [
        f"augment.{key}={_show(value)}"
        for key, value in _changed(recipe.augment)
    ]
    if settings:
        lines.append("  " + ", ".join(settings))
    rows = [("stage", "name", *_STAGE_COLUMNS[:3], "lr", "other")]
    for number, stage in enumerate(recipe.stages, start=1):
        other = ", ".join(
            f"{key}={_show(value)}"
            for key, value in _changed(stage, skip=(*_STAGE_COLUMNS, "name"))
        )
        rows.append(
            (
                str(number),
                stage.name,
                *(_show(getattr(stage, key)) for key in _STAGE_COLUMNS),
                other,
            )
        )
    lines.append(text.columns(rows, indent="  "))
    return "\n".join(lines)


def _field_docs(cls):
    """`{field: first sentence}` from the `Args:` section of `cls`'s
    docstring, where every field is documented as `name: type. Text`."""
    docs = {}
    current = None
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        head, sep, text = stripped.partition(": ")
        indent = len(line) - len(line.lstrip())
        if sep and indent == 8 and head.isidentifier():
            current = head
            docs[current] = text
        elif current and stripped and indent > 8:
            docs[current] += " " + stripped
        else:
            current = None
    summaries = {}
    for name, text in docs.items():
        # "int. Patience in epochs: ... Defaults to `0`.": drop the type
        # (the default is shown apart), keep the first sentence after it.
        text = " ".join(text.split()).replace("e.g. ", "e.g.\0")
        sentences = text.split(". ")
        # A type is short ("str or `None`"); a long first sentence is the
        # description itself.
        if len(sentences[0]) <= 32:
            sentences = sentences[1:]
        summary = sentences[0].rstrip(".") if sentences else ""
        summary = summary.replace("e.g.\0", "e.g. ")
        if re.fullmatch(r"Defaults to `[^`]*`", summary):
            summary = ""
        summaries[name] = summary
    return summaries


def fields_help():
    """Every recipe field with its default and a line on what it does.

    What `kerastl fit --help` ends with; the same keys `--set` takes.

    Example:
    ```python
    print(kerastl.runs.recipe.fields_help())
    ```
    """
    sections = (
        ("Recipe", Recipe, ""),
        ("DataSpec (data.*)", DataSpec, "data."),
        ("Augment (augment.*)", Augment, "augment."),
        (
            "Stage (stages.N.*: N from 1, as in the stage headers, or the "
            "stage's name)",
            Stage,
            "stages.N.",
        ),
    )
    lines = []
    for title, cls, prefix in sections:
        lines.append(f"{title}:")
        docs = _field_docs(cls)
        for field in dataclasses.fields(cls):
            if field.default is dataclasses.MISSING:
                default = "required"
            elif dataclasses.is_dataclass(field.default):
                default = f"{type(field.default).__name__}()"
            elif field.name == "stages":
                default = "(Stage(),)"
            else:
                default = repr(field.default)
            text = docs.get(field.name, "")
            lines.append(f"  {prefix}{field.name} [{default}] {text}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip()
