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
import time

import click
import keras

from kerastl import atomic
from kerastl import backbones
from kerastl import evaluation
from kerastl import presets
from kerastl import training
from kerastl.classifier import TransferClassifier
from kerastl.data import load_data
from kerastl.recipe import Recipe

# A smoke run trains each stage for one epoch of at most this many steps.
SMOKE_STEPS = 2
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


def _load_converter(recipe):
    backbones.check_preset(recipe.preset)
    with _preset_errors(recipe.preset):
        converter = presets.load_image_converter(recipe.preset)
    if recipe.image_size is not None:
        converter.image_size = tuple(recipe.image_size)
    return converter


def build_model(recipe, class_names, converter):
    """The recipe's `TransferClassifier`, loaded from its preset."""
    with _preset_errors(recipe.preset):
        return TransferClassifier.from_preset(
            recipe.preset,
            class_names=class_names,
            multi_label=recipe.multi_label,
            image_converter=converter,
            dropout=recipe.dropout,
            pooling=recipe.pooling,
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


def fit_recipe(recipe, output_dir=None, smoke=False, print_fn=click.echo):
    """Runs a recipe and writes its run directory.

    Args:
        recipe: a `kerastl.Recipe`, overrides already applied.
        output_dir: path or `None`. Defaults to `default_run_dir(recipe)`.
        smoke: bool. Synthetic data of the recipe's spec and one short epoch
            per stage: checks a recipe end to end in seconds.
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
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text(run_dir / "recipe.json", json.dumps(recipe.to_dict(), indent=2))
    keras.utils.set_random_seed(recipe.seed)

    converter = _load_converter(recipe)
    bundle = load_recipe_data(recipe, converter.image_size, smoke=smoke)
    _report_skipped(bundle.skipped, run_dir, print_fn)
    model = build_model(recipe, bundle.class_names, converter)
    print_fn(
        f"Model: {recipe.preset} ({backbones.family_of(model.backbone).name}), "
        f"{len(bundle.class_names)} classes, images "
        f"{model.image_size[0]}x{model.image_size[1]}, "
        f"train {bundle.num_examples.get('train', 0)} examples"
    )
    rows = training.fine_tune(
        model,
        bundle.splits["train"],
        bundle.splits.get("validation"),
        recipe.stages,
        max_steps=SMOKE_STEPS if smoke else None,
        print_fn=print_fn,
    )
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
    if splits:
        print_fn(evaluation.metrics_table(splits))
    print_fn(f"Run directory: {run_dir}")
    return run_dir


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
