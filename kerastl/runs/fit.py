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

from kerastl.data import manifest
from kerastl.errors import TrainingDiverged
from kerastl.evaluate import calibration
from kerastl.evaluate import metrics
from kerastl.evaluate import report
from kerastl.evaluate import thresholds
from kerastl.models import backbones
from kerastl.runs import build
from kerastl.runs import rundir
from kerastl.runs.overrides import apply_overrides
from kerastl.runs.recipe import Recipe
from kerastl.runs.recipe import RecipeError
from kerastl.train import checkpoints
from kerastl.train import stages
from kerastl.utils import atomic
from kerastl.utils import distribution

# A smoke run trains each stage for one epoch of at most this many steps,
# of batches of at most this many images per device.
SMOKE_STEPS = 2
SMOKE_BATCH = 8
EVALUATED_SPLITS = ("validation", "test")


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
        recipe, converter = build.smoke_preset(recipe, print_fn)
        run.recipe = recipe
    else:
        converter = build.load_converter(recipe)
    batch_size = recipe.batch_size
    if run.smoke:
        # A smoke run checks code paths, not throughput: small batches keep
        # it to seconds on a CPU at any input size (each device still gets
        # a share).
        batch_size = min(batch_size, SMOKE_BATCH * placement.replicas)
    bundle = build.load_recipe_data(
        recipe, converter.image_size, smoke=run.smoke, batch_size=batch_size
    )
    bundle.splits = {
        name: placement.even_batches(split)
        for name, split in bundle.splits.items()
    }
    model = build.build_model(recipe, bundle.class_names, converter)
    print_fn(
        f"Model: {recipe.preset} ({backbones.family_of(model.backbone).name}), "
        f"{len(bundle.class_names)} classes, images "
        f"{model.image_size[0]}x{model.image_size[1]}, "
        f"train {bundle.num_examples.get('train', 0)} examples"
    )
    trainee = model
    if recipe.teacher:
        # The student trains through a Distiller; the student is saved.
        trainee = build.distiller(
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
    train_start = time.perf_counter()
    rows = _train(run, trainee, bundle)
    train_seconds = time.perf_counter() - train_start
    return _save_and_report(run, model, bundle, rows, train_seconds)


def _train(run, trainee, bundle):
    """Trains through the recipe's stages, from the run's checkpoint when
    it is resumed; returns the history rows."""
    recipe, run_dir, print_fn = run.recipe, run.run_dir, run.print_fn
    checkpoint = run_dir / rundir.CHECKPOINT_DIR
    resuming = run.resume and (checkpoint / checkpoints.STATE_FILE).exists()
    if resuming:
        changed = manifest.changes(
            recipe.data, checkpoint / rundir.MANIFEST_FILE
        )
        if changed:
            print_fn(
                f"Warning: {changed} data file(s) were added, removed or "
                "changed since this run started; the resumed epochs train "
                "on the data as it is now, so the run no longer matches an "
                "uninterrupted one."
            )
    else:
        _write_run_files(run)
    rundir.write_skipped(bundle.skipped, run_dir, print_fn)

    def record_resumed_settings():
        # A resumed run's recipe (with its new --set values) is recorded
        # once its checkpoint has been restored; a checkpoint that does not
        # fit leaves recipe.json as it was, so a plain --resume still works.
        _write_run_files(run)

    with _interruptions(run_dir, print_fn):
        if not resuming:
            manifest.record(recipe.data, checkpoint / rundir.MANIFEST_FILE)
        return _fine_tune(
            run, trainee, bundle, record_resumed_settings if resuming else None
        )


def _save_and_report(run, model, bundle, rows, train_seconds):
    """Fits the decision settings, saves the model and writes the metrics
    and the report; returns the run directory."""
    recipe, run_dir, print_fn = run.recipe, run.run_dir, run.print_fn
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
        report.evaluate_split(
            model, split_predictions, split, run_dir, rundir.PLOTS_DIR
        )
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
    curves = (
        report.training_curves(rows, run_dir, rundir.PLOTS_DIR) if rows else {}
    )
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
