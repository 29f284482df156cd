"""A recipe run, start to finish, and the run directory it leaves.

Data flows one way: recipe -> data pipeline -> `TransferClassifier` ->
stages -> calibration and thresholds -> evaluation -> run directory. The
directory holds `model.keras`, `preset/`, `recipe.json`, `history.csv`,
`metrics.json`, `report.md`, `plots/` (see `kerastl.evaluate.report`), and
`skipped_files.txt` when input files were skipped.
"""

import contextlib
import csv
import dataclasses
import io
import json
import pathlib
import shutil
import time

import keras

from kerastl.utils import atomic
from kerastl.models import backbones
from kerastl.evaluate import calibration
from kerastl.train import checkpoints
from kerastl.train import distillation
from kerastl.utils import distribution
from kerastl.utils import downloads
from kerastl.evaluate import metrics
from kerastl.models import preprocessing
from kerastl.models import presets
from kerastl.evaluate import report
from kerastl.runs import rundir
from kerastl.models import standins
from kerastl.evaluate import thresholds
from kerastl.train import stages
from kerastl.models.classifier import TransferClassifier
from kerastl.data import load_data
from kerastl.data import manifest
from kerastl.errors import PresetError
from kerastl.errors import TrainingDiverged
from kerastl.runs.recipe import Recipe
from kerastl.runs.recipe import RecipeError
from kerastl.runs.recipe import apply_overrides

# A smoke run trains each stage for one epoch of at most this many steps,
# of batches of at most this many images per device.
SMOKE_STEPS = 2
SMOKE_BATCH = 8
EVALUATED_SPLITS = ("validation", "test")
# The data files a run started with, kept with the checkpoint for --resume.
MANIFEST_FILE = "data_manifest.json"


@contextlib.contextmanager
def _preset_errors(preset):
    """Reports a preset that fails to load for any reason but a bad argument
    (kerastl's own `ValueError`s) or no network (`OfflineError`) as a
    possible download failure."""
    try:
        yield
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
    kerastl.runs.fit.load_converter(recipe).image_size  # (224, 224)
    ```
    """
    backbones.check_preset(recipe.preset)
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


def _smoke_preset(recipe, print_fn):
    """`(recipe, converter)`; in a smoke run, a preset that cannot be
    downloaded, or a local one still to be made (the preset of a run not
    trained yet), is replaced by a tiny random-weight stand-in of its
    family."""
    preset = str(recipe.preset)
    to_be_made = (
        backbones.is_preset_handle(preset)
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


def load_recipe_data(recipe, image_size, smoke=False, batch_size=None):
    """Loads the recipe's data at `image_size` (see `kerastl.data`), in
    batches of `batch_size` (default: the recipe's).

    Example:
    ```python
    bundle = kerastl.runs.fit.load_recipe_data(recipe, (224, 224))
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
    )


def predict_splits(model, bundle, splits=EVALUATED_SPLITS):
    """`metrics.predict_split` for each of `splits` the bundle has.

    Example:
    ```python
    kerastl.runs.fit.predict_splits(model, bundle)["validation"].labels
    ```
    """
    return {
        split: metrics.predict_split(model, bundle.splits[split])
        for split in splits
        if split in bundle.splits
    }


def fit_decisions(model, recipe, validation, print_fn=print):
    """Fits the recipe's temperature and thresholds on validation.

    Both are set on `model`, so they are saved with it.

    Args:
        model: the trained `TransferClassifier`.
        recipe: its `Recipe` (`calibrate`, `tune_thresholds`,
            `target_precision`).
        validation: the validation split's `metrics.Predictions`, or
            `None` when there is none (nothing is fitted, and it is said).
        print_fn: callable for console output.

    Example:
    ```python
    predictions = kerastl.runs.fit.predict_splits(model, bundle)
    kerastl.runs.fit.fit_decisions(model, recipe, predictions["validation"])
    ```
    """
    tune = recipe.tune_thresholds and model.multi_label
    if not (recipe.calibrate or tune):
        return
    if validation is None or not len(validation.labels):
        print_fn(
            "No validation split: temperature and thresholds are not "
            "fitted (the model keeps 1.0 and 0.5)."
        )
        return
    if recipe.calibrate:
        model.set_temperature(
            calibration.fit_temperature(
                validation.labels, validation.logits, model.multi_label
            )
        )
        print_fn(f"Temperature scaling: T = {model.temperature:.3f}")
    if tune:
        tuned, unmet = thresholds.tune_thresholds(
            validation.labels,
            validation.probabilities(model),
            target_precision=recipe.target_precision,
        )
        model.set_thresholds(tuned)
        print_fn(
            "Decision thresholds tuned on validation: "
            + ", ".join(f"{t:.2f}" for t in tuned)
        )
        if unmet:
            names = model.class_names or [str(i) for i in range(len(tuned))]
            print_fn(
                f"Precision {recipe.target_precision} is out of reach on "
                "validation for "
                + ", ".join(names[c] for c in unmet)
                + "; they got their best-F1 thresholds."
            )


def fit_recipe(
    recipe,
    output_dir=None,
    smoke=False,
    resume=False,
    origin=None,
    print_fn=print,
):
    """Runs a recipe and writes its run directory.

    Every epoch is checkpointed in the run directory's `checkpoint/`.

    Args:
        recipe: a `kerastl.Recipe`, overrides already applied.
        output_dir: path or `None`. Defaults to `default_run_dir(recipe)`.
        smoke: bool. Synthetic data of the recipe's spec and one short epoch
            per stage: checks a recipe end to end in seconds.
        resume: bool. Continue from the checkpoint in `output_dir` (see
            `resume_recipe`). Without it, a directory that holds a
            checkpoint is refused rather than overwritten.
        origin: dict or `None`. Where the recipe came from, `{"file": path,
            "overrides": [...]}`, recorded so `--resume` can rebuild
            recipes whose data `recipe.json` cannot hold (in-memory arrays).
        print_fn: callable for console output.

    Returns:
        The run directory, a `pathlib.Path`.

    Example:
    ```python
    run_dir = kerastl.runs.fit.fit_recipe(recipe, smoke=True)
    ```
    """
    start = time.perf_counter()
    target = output_dir or rundir.default_parent(recipe.name)
    if output_dir is not None:
        rundir.check_output_dir(output_dir, resume=resume)
    rundir.check_outside(target, data_folder(recipe.data), "the data")
    keras.utils.set_random_seed(recipe.seed)
    placement = distribution.placement(recipe.distribute)
    placement.check_batch_size(recipe.batch_size)
    print_fn(f"Devices: {placement.note}; precision {recipe.precision}")
    if recipe.precision == "bfloat16":
        print_fn(
            "Note: precision bfloat16 keeps the weights themselves in "
            "bfloat16, which drops updates under ~0.4% of a weight: at "
            "fine-tuning rates (1e-4) the backbone barely moves. "
            "mixed_bfloat16 keeps float32 weights with bfloat16 math."
        )
    run = _Run(
        recipe, output_dir, smoke, resume, origin, start, placement, print_fn
    )
    with placement.scope():
        return _fit_placed(run)


@dataclasses.dataclass
class _Run:
    """One `fit_recipe` call, as its steps pass it on."""

    recipe: Recipe
    output_dir: object
    smoke: bool
    resume: bool
    origin: object
    start: float
    placement: object
    print_fn: object
    run_dir: pathlib.Path | None = None


def data_folder(spec):
    """The folder a `DataSpec` reads its files from, or `None`.

    Example:
    ```python
    kerastl.runs.fit.data_folder(DataSpec("csv", "data/tags.csv"))  # data
    ```
    """
    if spec.source in ("folder", "idx") and spec.name:
        return pathlib.Path(spec.name)
    if spec.source == "csv" and spec.name:
        return pathlib.Path(spec.name).parent
    if spec.source == "tfds" and spec.data_dir:
        return pathlib.Path(spec.data_dir)
    return None


def _write_run_files(run):
    atomic.write_text(
        run.run_dir / rundir.RECIPE_FILE,
        json.dumps(run.recipe.to_dict(), indent=2),
    )
    atomic.write_text(
        run.run_dir / rundir.RUN_FILE,
        json.dumps({"smoke": run.smoke, **(run.origin or {})}),
    )


def _fit_placed(run):
    """`fit_recipe` from the data on, inside the devices' scope.

    The run directory is created (or claimed) and locked only once the
    preset, the data and the model have loaded, so a bad preset or bad data
    leaves no empty run behind.
    """
    recipe, placement, print_fn = run.recipe, run.placement, run.print_fn
    if run.smoke:
        recipe, converter = _smoke_preset(recipe, print_fn)
        run.recipe = recipe
    else:
        converter = load_converter(recipe)
    batch_size = recipe.batch_size
    if run.smoke:
        # A smoke run checks code paths, not throughput: small batches keep
        # it to seconds on a CPU at any input size (each device still gets
        # a share).
        batch_size = min(batch_size, SMOKE_BATCH * placement.replicas)
    bundle = load_recipe_data(
        recipe, converter.image_size, smoke=run.smoke, batch_size=batch_size
    )
    bundle.splits = {
        name: placement.even_batches(split)
        for name, split in bundle.splits.items()
    }
    model = build_model(recipe, bundle.class_names, converter)
    print_fn(
        f"Model: {recipe.preset} ({backbones.family_of(model.backbone).name}), "
        f"{len(bundle.class_names)} classes, images "
        f"{model.image_size[0]}x{model.image_size[1]}, "
        f"train {bundle.num_examples.get('train', 0)} examples"
    )
    trainee = model
    if recipe.teacher:
        # The student trains through a Distiller; the student is saved.
        trainee = _distiller(
            recipe, model, bundle, converter, run.smoke, print_fn
        )
        print_fn(
            f"Distillation: teacher {trainee.teacher_source}, alpha "
            f"{recipe.distill_alpha}, temperature {recipe.distill_temperature}"
        )
    if run.output_dir is None:
        lock = rundir.new_run_dir(rundir.default_parent(recipe.name))
    else:
        lock = rundir.claim(run.output_dir, resume=run.resume)
    with lock:
        run.run_dir = lock.run_dir
        return _train_and_report(run, model, trainee, bundle)


def _train_and_report(run, model, trainee, bundle):
    """`fit_recipe` from training on, holding the run directory's lock."""
    recipe, run_dir, print_fn = run.recipe, run.run_dir, run.print_fn
    checkpoint = run_dir / rundir.CHECKPOINT_DIR
    resuming = run.resume and (checkpoint / checkpoints.STATE_FILE).exists()
    if resuming:
        changed = manifest.changes(recipe.data, checkpoint / MANIFEST_FILE)
        if changed:
            print_fn(
                f"Warning: {changed} data file(s) were added, removed or "
                "changed since this run started; the resumed epochs train "
                "on the data as it is now, so the run no longer matches an "
                "uninterrupted one."
            )
    else:
        _write_run_files(run)
    _report_skipped(bundle.skipped, run_dir, print_fn)

    def record_resumed_settings():
        # A resumed run's recipe (with its new --set values) is recorded
        # once its checkpoint has been restored; a checkpoint that does not
        # fit leaves recipe.json as it was, so a plain --resume still works.
        _write_run_files(run)

    train_start = time.perf_counter()
    with _interruptions(run_dir, print_fn):
        if not resuming:
            manifest.record(recipe.data, checkpoint / MANIFEST_FILE)
        rows = _fine_tune(
            run, trainee, bundle, record_resumed_settings if resuming else None
        )
    train_seconds = time.perf_counter() - train_start
    predict_start = time.perf_counter()
    predictions = predict_splits(model, bundle)
    predicted = sum(len(p.labels) for p in predictions.values())
    # Data pipeline included: what a user predicting a folder gets.
    images_per_second = predicted / (time.perf_counter() - predict_start)
    fit_decisions(model, recipe, predictions.get("validation"), print_fn)
    model.save(run_dir / rundir.MODEL_FILE)
    model.save_to_preset(run_dir / rundir.PRESET_DIR)
    atomic.write_text(run_dir / rundir.HISTORY_FILE, _history_csv(rows))

    evaluations = [
        report.evaluate_split(model, split_predictions, split, run_dir)
        for split, split_predictions in predictions.items()
    ]
    splits = {item.name: item.metrics for item in evaluations}
    summary = {
        "backend": keras.config.backend(),
        "precision": recipe.precision,
        "devices": run.placement.devices,
        "smoke": run.smoke,
        "wall_clock_seconds": round(time.perf_counter() - run.start, 2),
        "train_seconds": round(train_seconds, 2),
        "eval_images_per_second": round(images_per_second, 1),
        "num_parameters": int(model.count_params()),
        "temperature": model.temperature,
        "thresholds": model.thresholds,
        "splits": splits,
    }
    atomic.write_text(
        run_dir / rundir.METRICS_FILE, json.dumps(summary, indent=2)
    )
    _write_report(run_dir, recipe, summary, rows, evaluations)
    # model.keras now holds what the checkpoint did.
    shutil.rmtree(run_dir / rundir.CHECKPOINT_DIR, ignore_errors=True)
    if splits:
        print_fn(metrics.metrics_table(splits))
    print_fn(f"Run directory: {run_dir}")
    return run_dir


def _distiller(recipe, student, bundle, converter, smoke, print_fn):
    """The recipe's `Distiller`. A smoke run whose teacher does not exist
    yet (a run still to be trained) gets a stand-in: a second, untrained
    copy of the student's starting model."""
    teacher = recipe.teacher
    missing = "://" not in teacher and not pathlib.Path(teacher).exists()
    if not (smoke and missing):
        return distillation.Distiller.from_teacher_path(
            student,
            teacher,
            alpha=recipe.distill_alpha,
            temperature=recipe.distill_temperature,
        )
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


@contextlib.contextmanager
def _interruptions(run_dir, print_fn):
    """Ctrl-C and a diverged loss end the run with a way to resume it."""
    try:
        yield
    except KeyboardInterrupt:
        print_fn(
            f"\nInterrupted. Every completed epoch is checkpointed; continue "
            f"with: kerastl fit --resume {run_dir}"
        )
        raise
    except TrainingDiverged as error:
        raise TrainingDiverged(f"{error} Run directory: {run_dir}") from error


def _fine_tune(run, model, bundle, on_resumed):
    recipe = run.recipe
    return stages.fine_tune(
        model,
        bundle.splits["train"],
        bundle.splits.get("validation"),
        recipe.stages,
        max_steps=SMOKE_STEPS if run.smoke else None,
        label_smoothing=recipe.label_smoothing,
        early_stopping=recipe.early_stopping,
        monitor=recipe.monitor,
        # The teacher of a distillation run needs the images themselves;
        # the cache computes features on one device.
        feature_cache=recipe.feature_cache
        and not recipe.teacher
        and not _randomized(recipe.augment)
        and run.placement.replicas == 1,
        seed=recipe.seed,
        checkpoint_dir=run.run_dir / rundir.CHECKPOINT_DIR,
        on_resumed=on_resumed,
        print_fn=run.print_fn,
    )


def _randomized(augment):
    """Whether training images differ from epoch to epoch."""
    return augment is not None and bool(
        augment.flip
        or augment.random_resized_crop
        or augment.rand_augment
        or augment.mixup
        or augment.cutmix
    )


def resume_recipe(run_dir, recipe=None, overrides=(), print_fn=print):
    """Continues an interrupted run from its last completed epoch.

    The model, optimizer, early-stopping state, data order and history come
    back from the checkpoint; the run ends as it would have uninterrupted.

    Args:
        run_dir: path of the run directory.
        recipe: a `kerastl.Recipe`, or `None` for the run's `recipe.json`
            (which cannot hold in-memory arrays: pass the recipe for those).
        overrides: sequence of `KEY=VALUE` strings, as `--set` takes, e.g.
            a lower learning rate after a diverged stage.
        print_fn: callable for console output.

    Returns:
        The run directory, a `pathlib.Path`.

    Example:
    ```python
    kerastl.runs.fit.resume_recipe("runs/pets/20261123-140512")
    ```
    """
    run_dir = pathlib.Path(run_dir)
    rundir.check_output_dir(run_dir, resume=True)
    run = json.loads((run_dir / rundir.RUN_FILE).read_text())
    if recipe is None:
        recipe = _recorded_recipe(run_dir)
    recipe = apply_overrides(recipe, overrides)
    state = run_dir / rundir.CHECKPOINT_DIR / checkpoints.STATE_FILE
    if state.exists():
        print_fn(f"Resuming {run_dir} ({recipe.name}).")
    else:
        print_fn(f"{run_dir} has no checkpoint yet: starting it over.")
    return fit_recipe(
        recipe,
        output_dir=run_dir,
        smoke=run["smoke"],
        resume=True,
        origin={k: v for k, v in run.items() if k != "smoke"},
        print_fn=print_fn,
    )


def _recorded_recipe(run_dir):
    """The recipe a run directory was started with, from its recipe.json.

    A run directory is data: no code in it, or named by it, is run.
    """
    data = json.loads((run_dir / rundir.RECIPE_FILE).read_text())
    if data["data"]["source"] == "arrays":
        raise RecipeError(
            f"The run in {run_dir} trained on in-memory arrays, which "
            "recipe.json cannot hold, and kerastl never runs code named by a "
            "run directory. Resume it with its recipe file named: kerastl "
            f"fit RECIPE --resume {run_dir}"
        )
    return Recipe.from_dict(data)


def _report_skipped(skipped, run_dir, print_fn):
    if not skipped:
        return
    lines = [f"{item.path}\t{item.reason}" for item in skipped]
    atomic.write_text(run_dir / rundir.SKIPPED_FILE, "\n".join(lines) + "\n")
    shown = "\n".join(f"  {line}" for line in lines[:10])
    more = f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else ""
    print_fn(
        f"Skipped {len(skipped)} unreadable file(s), listed in "
        f"{run_dir / 'skipped_files.txt'}:\n{shown}{more}"
    )


def _history_csv(rows):
    fields = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _write_report(run_dir, recipe, summary, rows, evaluations):
    facts = {
        "preset": f"`{recipe.preset}`",
        "backend": summary["backend"],
        "parameters": f"{summary['num_parameters']:,}",
        "wall-clock time": f"{summary['wall_clock_seconds']} s",
        "smoke run": "yes" if summary["smoke"] else "no",
        "temperature": f"{summary['temperature']:.3f}",
    }
    if summary["thresholds"] is not None:
        facts["thresholds"] = ", ".join(
            f"{t:.2f}" for t in summary["thresholds"]
        )
    table = [
        "| stage | epoch | learning rate | loss | val_loss |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        val = row.get("val_loss")
        table.append(
            f"| {row['stage']} | {row['epoch']} | {row['learning_rate']:g} "
            f"| {row['loss']:.4f} | "
            f"{'' if val is None else f'{val:.4f}'} |"
        )
    curves = report.training_curves(rows, run_dir) if rows else {}
    training_section = "\n".join(table)
    if curves:
        training_section += "\n\n" + report.figure_links(curves)
    report.write_report(
        run_dir / rundir.REPORT_FILE,
        recipe.name,
        facts,
        evaluations,
        sections=[("Training", training_section)],
    )


def load_run(run_dir):
    """The recipe and model of a finished run directory.

    Example:
    ```python
    recipe, model = kerastl.runs.fit.load_run("runs/pets/20261123-140512")
    ```
    """
    run_dir = pathlib.Path(run_dir)
    recipe = Recipe.from_dict(
        json.loads((run_dir / rundir.RECIPE_FILE).read_text())
    )
    model = keras.models.load_model(run_dir / rundir.MODEL_FILE)
    return recipe, model


def evaluate_path(model_path, data=None, split=None, output_dir=None):
    """Evaluates a run's model (or any saved model) and writes the results.

    Without `data`, a split of the run's own recipe data: the run's
    `metrics.json` gets that split's metrics, `plots/` its figures, and
    `evaluation_<split>.md` the report. With `data` (a folder or CSV of
    labelled images), every image there: `metrics.json`, `report.md` and
    `plots/` in `output_dir`.

    Args:
        model_path: a run directory, a `.keras` file or a preset.
        data: path or `None`. See `kerastl.data.loader.load_labelled_images`.
        split: str or `None`. Recipe split (default `"validation"`), or
            split of `data`.
        output_dir: path or `None`. Defaults to the run directory for its
            own data, else `<run dir or model folder>/evaluations/<name>`.

    Returns:
        A `report.SplitEvaluation` with `report_path` set.

    Example:
    ```python
    result = kerastl.runs.fit.evaluate_path("runs/pets/x", data="new_photos/")
    result.metrics["accuracy"]
    ```
    """
    from kerastl.deploy import predict
    from kerastl.data.loader import load_labelled_images

    model_path = pathlib.Path(model_path)
    is_run = (model_path / rundir.METRICS_FILE).is_file()
    if data is None and not is_run:
        raise ValueError(
            f"{model_path} is not a finished run directory, so it has no "
            "recipe data to evaluate on. Pass labelled images with --data "
            "FOLDER_OR_CSV."
        )
    model = predict.load_model(model_path)
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    if data is None:
        recipe = Recipe.from_dict(
            json.loads((model_path / rundir.RECIPE_FILE).read_text())
        )
        summary = json.loads((model_path / rundir.METRICS_FILE).read_text())
        bundle = load_recipe_data(
            recipe, model.image_size, smoke=summary.get("smoke", False)
        )
        split = split or "validation"
        if split not in bundle.splits:
            raise ValueError(
                f"The recipe's data has no {split!r} split; it has "
                f"{', '.join(bundle.splits)}. Pick one with --split."
            )
        dataset, name = bundle.splits[split], split
        output_dir = pathlib.Path(output_dir or model_path)
        rundir.check_evaluation_dir(output_dir, own_run=model_path)
    else:
        if output_dir is not None:
            rundir.check_evaluation_dir(output_dir)
        limit = {}
        if is_run:
            # The run's own limit on image size applies to its evaluations.
            recorded = json.loads((model_path / rundir.RECIPE_FILE).read_text())
            limit["max_pixels"] = Recipe.from_dict(recorded).data.max_pixels
        dataset, _, skipped, name = load_labelled_images(
            data,
            class_names=names,
            image_size=model.image_size,
            batch_size=32,
            multi_label=model.multi_label,
            split=split,
            **limit,
        )
        home = model_path if model_path.is_dir() else model_path.parent
        output_dir = pathlib.Path(output_dir or home / "evaluations" / name)
        rundir.check_evaluation_dir(output_dir)
        _report_skipped(skipped, output_dir, print)
        summary = {"model": str(model_path), "data": str(data), "splits": {}}
    predictions = metrics.predict_split(model, dataset)
    result = report.evaluate_split(model, predictions, name, output_dir)
    summary["splits"][name] = result.metrics
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(
        output_dir / rundir.METRICS_FILE, json.dumps(summary, indent=2)
    )
    result.report_path = output_dir / (
        f"evaluation_{name}.md" if data is None else "report.md"
    )
    report.write_report(
        result.report_path,
        f"Evaluation of {model_path} on {name}",
        {
            "model": f"`{model_path}`",
            "data": f"`{data or 'the run recipe'}`",
            "backend": keras.config.backend(),
            "temperature": f"{model.temperature:.3f}",
        },
        [result],
    )
    return result
