"""Building a run from a recipe: preprocessing, data, model, teacher.

`kerastl fit`, `kerastl lr-find` and `kerastl bench` build what they train
here, the same way, before any run directory exists.
"""

import contextlib
import dataclasses
import json
import pathlib

from kerastl.data import load_data
from kerastl.errors import PresetError
from kerastl.models import catalog
from kerastl.models import preprocessing
from kerastl.models import presets
from kerastl.models import standins
from kerastl.models.classifier import TransferClassifier
from kerastl.runs import rundir
from kerastl.train import distillation
from kerastl.utils import downloads


@contextlib.contextmanager
def _preset_errors(preset):
    """Reports a preset that fails to load for any reason but a bad argument
    (kerastl's own `ValueError`s) or no network (`OfflineError`) as a
    possible download failure."""
    try:
        yield
    except json.JSONDecodeError as error:
        raise PresetError(
            f"Preset '{preset}' could not be loaded: one of its JSON files "
            f"is damaged ({error}). Download or save the preset again."
        ) from error
    except (ValueError, downloads.OfflineError):
        raise
    except Exception as error:
        raise PresetError(
            f"Preset '{preset}' could not be loaded: {error}. Built-in "
            "presets and hub handles download from Kaggle or Hugging Face on "
            "first use; without network access, point the recipe at a local "
            "preset directory with `--set preset=PATH` (any directory "
            "written by `save_to_preset` or downloaded beforehand)."
        ) from error


def load_converter(recipe):
    """The recipe's image converter: the preset's own preprocessing, or the
    normalization `recipe.preprocessing` names, at `recipe.image_size` when
    set.

    Example:
    ```python
    kerastl.runs.build.load_converter(recipe).image_size  # (224, 224)
    ```
    """
    catalog.check_preset(recipe.preset)
    if recipe.preprocessing is None:
        with _preset_errors(recipe.preset):
            converter = presets.load_image_converter(recipe.preset)
    else:
        with _preset_errors(recipe.preset):
            image_size = recipe.image_size or presets.input_size(recipe.preset)
        if image_size is None:
            raise ValueError(
                f"Preset '{recipe.preset}' takes images of any size, so "
                f"preprocessing={recipe.preprocessing!r} needs an input size: "
                "set image_size in the recipe (`--set image_size=224,224`)."
            )
        converter = preprocessing.standard_converter(
            recipe.preprocessing, image_size
        )
    if recipe.image_size is not None:
        converter.image_size = tuple(recipe.image_size)
    return converter


def smoke_preset(recipe, print_fn=print):
    """`(recipe, converter)` for a smoke run, which needs no network.

    A preset that cannot be downloaded, or a local one still to be made
    (the preset of a run not trained yet), is replaced by a tiny
    random-weight stand-in of its family (`kerastl.models.standins`), and
    the recipe is changed to point at it.

    Args:
        recipe: a `kerastl.Recipe`.
        print_fn: callable that says when a stand-in is used.

    Example:
    ```python
    recipe, converter = kerastl.runs.build.smoke_preset(recipe)
    ```
    """
    preset = str(recipe.preset)
    to_be_made = (
        catalog.is_preset_handle(preset)
        and "://" not in preset
        and not pathlib.Path(preset).is_dir()
    )
    if not to_be_made:
        try:
            return recipe, load_converter(recipe)
        except downloads.OfflineError:
            pass
    standin = standins.standin_preset(preset)
    if to_be_made:
        print_fn(
            f"Smoke run: preset directory '{preset}' does not exist yet (a "
            "run still to be trained?); a tiny random-weight "
            f"{standin.family} stands in for it: {standin.path}"
        )
    else:
        print_fn(f"Smoke run: {standin.message}")
    recipe = dataclasses.replace(recipe, preset=str(standin.path))
    return recipe, load_converter(recipe)


def build_model(recipe, class_names, converter):
    """The recipe's `TransferClassifier`, loaded from its preset.

    With `recipe.pretrained=False` the preset gives only the architecture
    (and preprocessing): every weight starts random, under `recipe.seed`.

    Args:
        recipe: a `kerastl.Recipe`.
        class_names: list of str, one per output.
        converter: the image converter (`load_converter`).

    Example:
    ```python
    converter = kerastl.runs.build.load_converter(recipe)
    model = kerastl.runs.build.build_model(recipe, ["cat", "dog"], converter)
    ```
    """
    with _preset_errors(recipe.preset):
        return TransferClassifier.from_preset(
            recipe.preset,
            class_names=class_names,
            load_weights=recipe.pretrained,
            multi_label=recipe.multi_label,
            image_converter=converter,
            dropout=recipe.dropout,
            pooling=recipe.pooling,
            dtype=recipe.precision,
            # Training changes the logits; the run fits these again.
            temperature=1.0,
            thresholds=None,
        )


def load_recipe_data(
    recipe, image_size, smoke=False, batch_size=None, ordered=False
):
    """Loads the recipe's data at `image_size` (see `kerastl.data`), in
    batches of `batch_size` (default: the recipe's); `ordered` as in
    `kerastl.data.load_data`.

    Example:
    ```python
    bundle = kerastl.runs.build.load_recipe_data(recipe, (224, 224))
    ```
    """
    return load_data(
        recipe.data,
        image_size=image_size,
        batch_size=batch_size or recipe.batch_size,
        multi_label=recipe.multi_label,
        seed=recipe.seed,
        augment=recipe.augment,
        num_classes=recipe.num_classes,
        smoke=smoke,
        ordered=ordered,
    )


def distiller(recipe, student, bundle, converter, smoke=False, print_fn=print):
    """The recipe's `Distiller`, its teacher loaded from `recipe.teacher`.

    A smoke run whose teacher does not exist yet (a run still to be
    trained) gets a stand-in: a second, untrained copy of the student's
    starting model.

    Args:
        recipe: a `kerastl.Recipe` with a `teacher`.
        student: the `TransferClassifier` that trains.
        bundle: the run's `DataBundle` (its class names).
        converter: the student's image converter.
        smoke: bool. Whether this is a smoke run.
        print_fn: callable that says when a stand-in is used.

    Example:
    ```python
    trainee = kerastl.runs.build.distiller(recipe, model, bundle, converter)
    trainee.teacher_source  # 'runs/cifar10_vit/20261123-140512/model.keras'
    ```
    """
    teacher = recipe.teacher
    missing = "://" not in teacher and not pathlib.Path(teacher).exists()
    if not (smoke and missing):
        source = rundir.model_source(teacher, role="teacher")
        distiller = distillation.Distiller(
            student,
            rundir.load_classifier(source, role="teacher"),
            alpha=recipe.distill_alpha,
            temperature=recipe.distill_temperature,
        )
        distiller.teacher_source = source
        return distiller
    print_fn(
        f"Smoke run: teacher '{teacher}' does not exist yet; an untrained "
        "copy of the student stands in for it."
    )
    distiller = distillation.Distiller(
        student,
        build_model(recipe, bundle.class_names, converter),
        alpha=recipe.distill_alpha,
        temperature=recipe.distill_temperature,
    )
    distiller.teacher_source = f"stand-in for {teacher}"
    return distiller
