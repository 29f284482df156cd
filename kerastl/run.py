"""A recipe run, start to finish, and the run directory it leaves.

Data flows one way: recipe -> data pipeline -> `TransferClassifier` ->
stages -> evaluation -> run directory. The directory holds `model.keras`,
`preset/`, `recipe.json`, `history.csv`, `metrics.json`, `report.md`, and
`skipped_files.txt` when input files were skipped.
"""

import contextlib
import csv
import datetime
import io
import json
import pathlib
import shutil
import time

import click
import keras

from kerastl import atomic
from kerastl import backbones
from kerastl import distill
from kerastl import evaluation
from kerastl import presets
from kerastl import training
from kerastl.classifier import TransferClassifier
from kerastl.data import load_data
from kerastl.recipe import Recipe
from kerastl.recipe import apply_overrides
from kerastl.recipe import load_recipe

# A smoke run trains each stage for one epoch of at most this many steps.
SMOKE_STEPS = 2
CHECKPOINT_DIR = "checkpoint"
# What a run directory records about the run itself, for `--resume`.
RUN_FILE = "run.json"
EVALUATED_SPLITS = ("validation", "test")


def default_run_dir(recipe):
    """`runs/<recipe name>/<timestamp>`, relative to the working directory.

    Example:
    ```python
    kerastl.run.default_run_dir(recipe)  # runs/pets/20261123-140512
    ```
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs") / recipe.name / stamp


def _write_text(path, text):
    with atomic.atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def _preset_errors(preset):
    """Reports a preset that fails to load for any reason but a bad argument
    (kerastl's own `ValueError`s) as a possible download failure."""
    try:
        yield
    except ValueError:
        raise
    except Exception as error:
        raise click.ClickException(
            f"Preset '{preset}' could not be loaded: {error}. Built-in "
            "presets and hub handles download from Kaggle or Hugging Face on "
            "first use; without network access, point the recipe at a local "
            "preset directory with `--set preset=PATH` (any directory "
            "written by `save_to_preset` or downloaded beforehand)."
        ) from error


def load_converter(recipe):
    backbones.check_preset(recipe.preset)
    with _preset_errors(recipe.preset):
        converter = presets.load_image_converter(recipe.preset)
    if recipe.image_size is not None:
        converter.image_size = tuple(recipe.image_size)
    return converter


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
            # Training changes the logits; the run fits these again.
            temperature=1.0,
            thresholds=None,
        )


def load_recipe_data(recipe, image_size, smoke=False):
    """Loads the recipe's data at `image_size` (see `kerastl.data`)."""
    return load_data(
        recipe.data,
        image_size=image_size,
        batch_size=recipe.batch_size,
        multi_label=recipe.multi_label,
        seed=recipe.seed,
        augment=recipe.augment,
        num_classes=recipe.num_classes,
        smoke=smoke,
    )


def evaluate_splits(model, bundle, splits=EVALUATED_SPLITS):
    """`classification_metrics` for each split the bundle has.

    Example:
    ```python
    kerastl.run.evaluate_splits(model, bundle)["validation"]["accuracy"]
    ```
    """
    results = {}
    for split in splits:
        if split not in bundle.splits:
            continue
        y_true, probs = evaluation.predict_split(model, bundle.splits[split])
        results[split] = evaluation.classification_metrics(
            y_true, probs, model.multi_label, model.num_classes
        )
    return results


def fit_recipe(
    recipe,
    output_dir=None,
    smoke=False,
    resume=False,
    origin=None,
    print_fn=click.echo,
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
    run_dir = kerastl.run.fit_recipe(recipe, smoke=True)
    ```
    """
    start = time.perf_counter()
    run_dir = pathlib.Path(output_dir or default_run_dir(recipe))
    if not resume and (
        (run_dir / CHECKPOINT_DIR).exists()
        or (run_dir / "metrics.json").exists()
    ):
        raise click.UsageError(
            f"{run_dir} already holds a run. Continue it with `kerastl fit "
            f"--resume {run_dir}`, or choose another --output-dir."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text(run_dir / "recipe.json", json.dumps(recipe.to_dict(), indent=2))
    _write_text(
        run_dir / RUN_FILE, json.dumps({"smoke": smoke, **(origin or {})})
    )
    keras.utils.set_random_seed(recipe.seed)

    converter = load_converter(recipe)
    bundle = load_recipe_data(recipe, converter.image_size, smoke=smoke)
    _report_skipped(bundle.skipped, run_dir, print_fn)
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
        trainee = distill.Distiller.from_teacher_path(
            model,
            recipe.teacher,
            alpha=recipe.distill_alpha,
            temperature=recipe.distill_temperature,
        )
        print_fn(
            f"Distillation: teacher {trainee.teacher_source}, alpha "
            f"{recipe.distill_alpha}, temperature {recipe.distill_temperature}"
        )
    with _interruptions(run_dir, print_fn):
        rows = _fine_tune(recipe, trainee, bundle, run_dir, smoke, print_fn)
    model.save(run_dir / "model.keras")
    model.save_to_preset(run_dir / "preset")
    _write_text(run_dir / "history.csv", _history_csv(rows))

    splits = evaluate_splits(model, bundle)
    summary = {
        "backend": keras.config.backend(),
        "smoke": smoke,
        "wall_clock_seconds": round(time.perf_counter() - start, 2),
        "splits": splits,
    }
    _write_text(run_dir / "metrics.json", json.dumps(summary, indent=2))
    _write_text(run_dir / "report.md", _report(recipe, summary, rows))
    # model.keras now holds what the checkpoint did.
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    if splits:
        print_fn(evaluation.metrics_table(splits))
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
    except training.TrainingDiverged as error:
        raise click.ClickException(
            f"{error} Run directory: {run_dir}"
        ) from error


def _fine_tune(recipe, model, bundle, run_dir, smoke, print_fn):
    return training.fine_tune(
        model,
        bundle.splits["train"],
        bundle.splits.get("validation"),
        recipe.stages,
        max_steps=SMOKE_STEPS if smoke else None,
        label_smoothing=recipe.label_smoothing,
        early_stopping=recipe.early_stopping,
        monitor=recipe.monitor,
        # The teacher of a distillation run needs the images themselves.
        feature_cache=recipe.feature_cache
        and not recipe.teacher
        and not _randomized(recipe.augment),
        seed=recipe.seed,
        checkpoint_dir=run_dir / CHECKPOINT_DIR,
        print_fn=print_fn,
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


def resume_recipe(run_dir, recipe=None, overrides=(), print_fn=click.echo):
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
    kerastl.run.resume_recipe("runs/pets/20261123-140512")
    ```
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / RUN_FILE).exists():
        raise click.UsageError(
            f"{run_dir} is not a kerastl run directory (it has no "
            f"{RUN_FILE}); --resume takes the directory an interrupted "
            "`kerastl fit` wrote."
        )
    if (run_dir / "metrics.json").exists():
        raise click.UsageError(
            f"The run in {run_dir} has finished; there is nothing to resume."
        )
    run = json.loads((run_dir / RUN_FILE).read_text())
    if recipe is None:
        recipe = _recorded_recipe(run_dir, run)
    recipe = apply_overrides(recipe, overrides)
    if (run_dir / CHECKPOINT_DIR / "state.json").exists():
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


def _recorded_recipe(run_dir, run):
    """The recipe a run directory was started with."""
    data = json.loads((run_dir / "recipe.json").read_text())
    if data["data"]["source"] != "arrays":
        return Recipe.from_dict(data)
    # In-memory arrays are not in recipe.json: import the file again.
    if "file" not in run or not pathlib.Path(run["file"]).exists():
        raise click.UsageError(
            f"The run in {run_dir} trained on in-memory arrays, which "
            "recipe.json cannot hold, and its recipe file is gone. Resume "
            "with the recipe file: kerastl fit RECIPE --resume RUN_DIR."
        )
    return apply_overrides(load_recipe(run["file"]), run["overrides"])


def _report_skipped(skipped, run_dir, print_fn):
    if not skipped:
        return
    lines = [f"{item.path}\t{item.reason}" for item in skipped]
    _write_text(run_dir / "skipped_files.txt", "\n".join(lines) + "\n")
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


def _report(recipe, summary, rows):
    lines = [
        f"# {recipe.name}",
        "",
        f"- preset: `{recipe.preset}`",
        f"- backend: {summary['backend']}",
        f"- wall-clock time: {summary['wall_clock_seconds']} s",
        f"- smoke run: {'yes' if summary['smoke'] else 'no'}",
        "",
        "## Metrics",
        "",
        evaluation.metrics_table(summary["splits"])
        if summary["splits"]
        else "No validation or test split was evaluated.",
        "",
        "## Training",
        "",
        "| stage | epoch | learning rate | loss | val_loss |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        val = row.get("val_loss")
        lines.append(
            f"| {row['stage']} | {row['epoch']} | {row['learning_rate']:g} "
            f"| {row['loss']:.4f} | "
            f"{'' if val is None else f'{val:.4f}'} |"
        )
    return "\n".join(lines) + "\n"


def load_run(run_dir):
    """The recipe and model of a finished run directory.

    Example:
    ```python
    recipe, model = kerastl.run.load_run("runs/pets/20261123-140512")
    ```
    """
    run_dir = pathlib.Path(run_dir)
    recipe = Recipe.from_dict(json.loads((run_dir / "recipe.json").read_text()))
    model = keras.models.load_model(run_dir / "model.keras")
    return recipe, model
