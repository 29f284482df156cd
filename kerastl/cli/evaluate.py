"""`kerastl evaluate` and `kerastl compare`: judging trained models."""

import pathlib

import click

from kerastl.cli import options
from kerastl.cli.errors import user_errors
from kerastl.utils import logs


@click.command()
@click.argument(
    "model_path",
    metavar="RUN_DIR|MODEL",
    type=click.Path(exists=True, path_type=pathlib.Path),
)
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=pathlib.Path),
    help="Labelled images to evaluate instead of the run's own data: a "
    "folder with one subfolder per class, or a CSV (path,labels).",
)
@click.option(
    "--split",
    help="Which split: of the run's recipe data (default validation), or "
    "of --data with split subfolders or a split column (default test, "
    "else all images).",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Where metrics.json, report.md and plots/ go. Defaults to the run "
    "directory for its own data, else <run dir or model folder>/"
    "evaluations/<data name>.",
)
@options.backend_option
def evaluate(model_path, data, split, output_dir, backend):
    """Recompute metrics, calibration and plots on a split or new data.

    RUN_DIR|MODEL is a run directory, a .keras file or a preset. Without
    --data it evaluates a split of the run's recipe data and updates the
    run's metrics.json and plots/; with --data, any folder or CSV of
    labelled images (e.g. a new test set), written to --output-dir.
    """
    options.select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl.evaluate import metrics
        from kerastl.runs import evaluation

    with user_errors():
        result = evaluation.evaluate_path(
            model_path, data=data, split=split, output_dir=output_dir
        )
    click.echo(metrics.metrics_table({result.name: result.metrics}))
    click.echo(f"Report: {result.report_path}")


@click.command()
@click.argument(
    "run_dirs",
    metavar="RUN_DIR...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path),
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Where comparison.md and comparison.png go. Defaults to "
    "runs/compare/<timestamp>.",
)
def compare(run_dirs, output_dir):
    """Compare finished runs side by side: a table and a plot.

    Accuracy (mAP for multi-label), macro F1, calibration error,
    parameters, training time and evaluation images/second, on the test
    split when every run has one, else validation; e.g. ResNet-50 against
    ViT-B/16 on the same recipe.
    """
    from kerastl.runs import compare as comparing

    if len(run_dirs) < 2:
        raise click.UsageError("Give at least two run directories.")
    with user_errors():
        folder, table = comparing.compare_runs(run_dirs, output_dir)
    click.echo(table)
    click.echo(f"Written to {folder}")
