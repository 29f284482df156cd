"""Evaluating a run's model, or any saved model, on data (`kerastl
evaluate`).

Without new data, a split of the run's own recipe data: the run's
`metrics.json` gets that split's metrics, `plots/` its figures, and
`evaluation_<split>.md` the report. With a folder or CSV of labelled
images, everything goes to a new evaluation directory.
"""

import json
import pathlib

import keras

from kerastl.data.loader import load_labelled_images
from kerastl.evaluate import metrics
from kerastl.evaluate import report
from kerastl.runs import build
from kerastl.runs import rundir
from kerastl.runs.recipe import Recipe
from kerastl.utils import atomic


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
    result = kerastl.runs.evaluation.evaluate_path(
        "runs/pets/20261123-140512", data="new_photos/"
    )
    result.metrics["accuracy"]
    ```
    """
    model_path = pathlib.Path(model_path)
    is_run = (model_path / rundir.METRICS_FILE).is_file()
    if data is None and not is_run:
        raise ValueError(
            f"{model_path} is not a finished run directory, so it has no "
            "recipe data to evaluate on. Pass labelled images with --data "
            "FOLDER_OR_CSV."
        )
    model = rundir.load_classifier(model_path)
    if data is None:
        dataset, name, output_dir, summary = _recipe_split(
            model, model_path, split, output_dir
        )
        report_file = rundir.evaluation_report_file(name)
    else:
        dataset, name, output_dir, summary = _new_data(
            model, model_path, data, split, output_dir, is_run
        )
        report_file = rundir.REPORT_FILE
    predictions = metrics.predict_split(model, dataset)
    result = report.evaluate_split(
        model, predictions, name, output_dir, rundir.PLOTS_DIR
    )
    summary["splits"][name] = result.metrics
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(
        output_dir / rundir.METRICS_FILE, json.dumps(summary, indent=2)
    )
    result.report_path = output_dir / report_file
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


def _recipe_split(model, run_dir, split, output_dir):
    """A split of the run's own recipe data; results go into the run."""
    recipe = Recipe.from_dict(rundir.read_recipe(run_dir))
    summary = rundir.read_metrics(run_dir)
    bundle = build.load_recipe_data(
        recipe, model.image_size, smoke=summary.get("smoke", False)
    )
    split = split or "validation"
    if split not in bundle.splits:
        raise ValueError(
            f"The recipe's data has no {split!r} split; it has "
            f"{', '.join(bundle.splits)}. Pick one with --split."
        )
    output_dir = pathlib.Path(output_dir or run_dir)
    rundir.check_evaluation_dir(output_dir, own_run=run_dir)
    return bundle.splits[split], split, output_dir, summary


def _new_data(model, model_path, data, split, output_dir, is_run):
    """Labelled images from a folder or CSV; results go to an evaluation
    directory of their own."""
    if output_dir is not None:
        rundir.check_evaluation_dir(output_dir)
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    limit = {}
    if is_run:
        # The run's own limit on image size applies to its evaluations.
        recorded = Recipe.from_dict(rundir.read_recipe(model_path))
        limit["max_pixels"] = recorded.data.max_pixels
    dataset, _, skipped, name = load_labelled_images(
        data,
        class_names=names,
        image_size=model.image_size,
        batch_size=32,
        multi_label=model.multi_label,
        split=split,
        **limit,
    )
    # Beside the model that was loaded: a run (the newest, for a folder of
    # runs), a preset, or a .keras file's folder; never in a folder that
    # only holds runs.
    source = pathlib.Path(rundir.model_source(model_path))
    home = source.parent if source.suffix == ".keras" else source
    output_dir = pathlib.Path(output_dir or home / "evaluations" / name)
    rundir.check_evaluation_dir(output_dir)
    rundir.write_skipped(skipped, output_dir)
    summary = {"model": str(model_path), "data": str(data), "splits": {}}
    return dataset, name, output_dir, summary
