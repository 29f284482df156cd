"""The `kerastl` command line.

Keras fixes its backend on first import, so this module imports neither Keras
nor kerastl's model modules at the top: each command imports them in its body,
after the backend is chosen.
"""

import contextlib
import errno
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import sys
import warnings

import click

from kerastl import __version__
from kerastl import errors
from kerastl.utils import distribution
from kerastl.utils import logs
from kerastl.utils import text

BACKENDS = ("jax", "tensorflow", "torch")
EXPORT_FORMATS = ("saved_model", "onnx", "litert")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kerastl")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show TensorFlow's native logs, which kerastl hides by default.",
)
def cli(verbose):
    """Transfer learning for image classification on any Keras backend.

    The backend comes from KERAS_BACKEND (jax, tensorflow or torch).
    """
    if verbose:
        os.environ[logs.VERBOSE_ENV] = "1"
    logs.quiet_python_loggers()
    # kerastl reads every image's size from its header and skips those over
    # data.max_pixels with a reason; PIL's own warning would only repeat it.
    warnings.filterwarnings("ignore", message=".*decompression bomb")


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@cli.command()
def info():
    """Print versions, the devices each backend sees, and how fit uses them.

    With the JAX or PyTorch backend, TensorFlow (which only feeds data)
    sees no GPU: kerastl hides them from it so it claims no GPU memory.
    """
    _select_backend(None)
    with logs.quiet_native_logs():
        import keras

        rows = [
            ("kerastl", __version__),
            ("keras", keras.__version__),
            ("keras-hub", _version("keras-hub")),
            ("backend", keras.config.backend()),
        ]
        for backend in BACKENDS:
            if importlib.util.find_spec(backend) is None:
                rows.append((backend, "not installed"))
                continue
            devices = ", ".join(distribution.devices_seen_by(backend))
            rows.append((backend, f"{_version(backend)}  [{devices}]"))
        rows.append(("gpu-memory", distribution.gpu_memory_summary()))
        rows.append(
            ("distribute", "auto: " + distribution.placement("auto").note)
        )
    click.echo(text.columns(rows))


def _select_backend(backend, gpu_memory=None):
    """Sets KERAS_BACKEND before Keras is imported; refuses a late switch.

    Then prepares the devices (`kerastl.utils.distribution.prepare_process`)
    before anything can compute.
    """
    if backend is not None:
        _switch_backend(backend)
    with logs.quiet_native_logs():
        try:
            distribution.prepare_process(gpu_memory)
        except ValueError as error:
            raise click.BadParameter(str(error)) from error


def _switch_backend(backend):
    if "keras" in sys.modules:
        import keras

        if keras.config.backend() != backend:
            raise click.UsageError(
                f"Keras is already running on {keras.config.backend()!r} in "
                f"this process and cannot switch to {backend!r}. Set "
                "KERAS_BACKEND before starting Python instead."
            )
    os.environ["KERAS_BACKEND"] = backend


# Options `fit` and `lr-find` share.
_overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe field, e.g. --set stages.1.epochs=3 (stages "
    "count from 1, as in the stage headers, or go by name: "
    "stages.head.epochs=3) or --set preset=./my_preset. Repeatable; the "
    "fields are listed below.",
)
_backend_option = click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    help="Keras backend; defaults to KERAS_BACKEND.",
)


# Failed writes a user can fix: a full disk, a read-only or foreign folder.
_WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
}


@contextlib.contextmanager
def _user_errors():
    """Turns the errors a user can fix into one paragraph, no traceback.

    This is the one place kerastl's own errors (`kerastl.errors`, the
    library's `ValueError`s) become Click errors: a bad recipe or override
    is a usage error (exit 2), anything else exit 1.
    """
    try:
        yield
    except errors.RecipeError as error:
        raise click.UsageError(str(error)) from error
    except (
        ValueError,
        errors.OfflineError,
        errors.TrainingDiverged,
    ) as error:
        raise click.ClickException(str(error)) from error
    except OSError as error:
        if error.errno not in _WRITE_ERRNOS:
            raise
        where = f" {error.filename}" if error.filename else ""
        raise click.ClickException(
            f"Could not write{where}: {error.strerror}. Nothing half-written "
            "was left behind (kerastl writes files whole or not at all). "
            "Free some disk space or choose a writable --output-dir, then "
            "run the command again (an interrupted `fit` continues with "
            "--resume)."
        ) from error


class _FitCommand(click.Command):
    """`kerastl fit`, whose `--help` ends with every recipe field."""

    def format_epilog(self, ctx, formatter):
        with logs.quiet_native_logs():
            from kerastl.runs import recipe as recipes

        formatter.write_paragraph()
        formatter.write_text(
            "Recipe fields, with their defaults (set any with --set KEY=VALUE):"
        )
        formatter.write_paragraph()
        for line in recipes.fields_help().splitlines():
            formatter.write(line + "\n")


@cli.command(cls=_FitCommand)
@click.argument(
    "recipe_path",
    metavar="[RECIPE]",
    required=False,
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
)
@_overrides_option
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Run directory. Defaults to runs/<recipe name>/<timestamp>.",
)
@_backend_option
@click.option(
    "--smoke",
    is_flag=True,
    help="Synthetic data of the recipe's spec and one epoch of at most two "
    "steps per stage: checks a recipe end to end in seconds.",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path),
    help="Continue an interrupted run directory from its last completed "
    "epoch (RECIPE defaults to its recipe.json; --set still applies).",
)
@click.option(
    "--distribute",
    type=click.Choice(distribution.MODES),
    help="Use several devices: data-parallel splits each (global) batch "
    "over all of them; auto does so when there are several accelerators. "
    "Same as --set distribute=... [recipe default: auto]",
)
@click.option(
    "--precision",
    type=click.Choice(distribution.PRECISIONS),
    help="Train in 16-bit math: mixed_bfloat16 (GPUs since Ampere, TPUs), "
    "mixed_float16 (older GPUs; loss scaling) or bfloat16 weights too. "
    "The head and loss stay float32. Same as --set precision=... "
    "[recipe default: float32]",
)
@click.option(
    "--gpu-memory",
    metavar="grow|preallocate|FRACTION",
    help="How much GPU memory the backend may take: as needed, most of it "
    "at start, or a fraction of each GPU. Defaults to the backend's own "
    f"behaviour, or ${distribution.GPU_MEMORY_ENV}.",
)
def fit(
    recipe_path,
    overrides,
    output_dir,
    backend,
    smoke,
    resume_dir,
    distribute,
    precision,
    gpu_memory,
):
    """Fine-tune a model as RECIPE says and write a run directory.

    Every epoch is checkpointed; after a crash, a kill or Ctrl-C,
    `kerastl fit --resume RUN_DIR` continues where the run stopped.
    """
    _select_backend(backend, gpu_memory)
    overrides = list(overrides)
    for key, value in (("distribute", distribute), ("precision", precision)):
        if value is not None:
            overrides.append(f"{key}={value}")
    with logs.quiet_native_logs():
        from kerastl.runs import fit
        from kerastl.runs import recipe as recipes

    if recipe_path is None and resume_dir is None:
        raise click.UsageError("Give a RECIPE file, or --resume RUN_DIR.")
    if resume_dir is not None and (smoke or output_dir):
        raise click.UsageError(
            "--resume continues a run in its own directory with its own "
            "settings; drop --smoke and --output-dir."
        )
    with _user_errors():
        recipe = None
        if recipe_path is not None:
            recipe = recipes.apply_overrides(
                recipes.load_recipe(recipe_path), overrides
            )
            click.echo(
                f"Recipe {recipe_path} (in full: recipe.json in the run)"
            )
            click.echo(recipes.describe(recipe))
        if resume_dir is not None:
            fit.resume_recipe(resume_dir, recipe, () if recipe else overrides)
        else:
            origin = {
                "file": str(recipe_path.resolve()),
                "overrides": list(overrides),
            }
            fit.fit_recipe(
                recipe, output_dir=output_dir, smoke=smoke, origin=origin
            )


@cli.command()
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
@_backend_option
def evaluate(model_path, data, split, output_dir, backend):
    """Recompute metrics, calibration and plots on a split or new data.

    RUN_DIR|MODEL is a run directory, a .keras file or a preset. Without
    --data it evaluates a split of the run's recipe data and updates the
    run's metrics.json and plots/; with --data, any folder or CSV of
    labelled images (e.g. a new test set), written to --output-dir.
    """
    _select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl.evaluate import metrics
        from kerastl.runs import fit

    with _user_errors():
        result = fit.evaluate_path(
            model_path, data=data, split=split, output_dir=output_dir
        )
    click.echo(metrics.metrics_table({result.name: result.metrics}))
    click.echo(f"Report: {result.report_path}")


@cli.command()
@click.argument(
    "model_path",
    metavar="MODEL_OR_RUN_DIR",
    type=click.Path(exists=True, path_type=pathlib.Path),
)
@click.argument(
    "inputs",
    metavar="IMAGE_OR_FOLDER...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, path_type=pathlib.Path),
)
@click.option(
    "--top-k",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Classes shown.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(("table", "json", "csv")),
    default="table",
    show_default=True,
    help="How to print the predictions.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--tta",
    is_flag=True,
    help="Test-time augmentation: average each image's probabilities with "
    "its mirror image's (twice the compute, usually a bit more accurate).",
)
def predict(model_path, inputs, top_k, output_format, as_json, tta):
    """Predict the classes of images with a run directory or saved model.

    Multi-class models print their top-k classes; multi-label models the
    classes over their tuned thresholds (0.5 if none were tuned), then the
    top-k probabilities.
    """
    _select_backend(None)
    with logs.quiet_native_logs():
        from kerastl.deploy import predict

    with _user_errors():
        model = predict.load_model(model_path)
        results = predict.predict_files(model, inputs, top_k=top_k, tta=tta)
    if as_json or output_format == "json":
        click.echo(json.dumps(results, indent=2))
        return
    if output_format == "csv":
        click.echo(predict.as_csv(results), nl=False)
        return
    for result in results:
        if "error" in result:
            click.echo(f"{result['path']}: unreadable ({result['error']})")
            continue
        shown = ", ".join(
            f"{p['class']} {p['probability']:.3f}"
            for p in result["predictions"]
        )
        if "labels" in result:
            chosen = ", ".join(p["class"] for p in result["labels"])
            shown = f"labels [{chosen or 'none'}]; top: {shown}"
        click.echo(f"{result['path']}: {shown}")


@cli.command()
@click.argument(
    "model_path",
    metavar="MODEL_OR_RUN_DIR",
    type=click.Path(exists=True, path_type=pathlib.Path),
)
@click.option(
    "--format",
    "export_format",
    required=True,
    type=click.Choice(EXPORT_FORMATS),
    help="saved_model (TensorFlow Serving, TF.js), onnx (onnxruntime, "
    "TensorRT) or litert (mobile and edge; formerly TFLite).",
)
@click.option(
    "--output",
    type=click.Path(path_type=pathlib.Path),
    help="Where the artifact goes (a folder for saved_model). Defaults to "
    "<run dir>/export/{saved_model,model.onnx,model.tflite}, or "
    "<model>_export/ next to a .keras file or preset.",
)
@_backend_option
def export(model_path, export_format, output, backend):
    """Export a model for serving: raw uint8 images in, probabilities out.

    Preprocessing and calibration are inside the artifact; a sidecar JSON
    next to it holds the class names, the multi-label thresholds and the
    input size.
    """
    _select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl.deploy import export as exporting
        from kerastl.deploy import predict

    with _user_errors():
        # Before loading: an unsupported backend/format pair fails at once.
        exporting.check_supported(export_format)
        model = predict.load_model(model_path)
        artifact, sidecar = exporting.export_model(
            model,
            export_format,
            output or exporting.default_output(model_path, export_format),
        )
    click.echo(f"Exported {artifact}\nSidecar {sidecar}")


@cli.command()
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
    with _user_errors():
        folder, table = comparing.compare_runs(run_dirs, output_dir)
    click.echo(table)
    click.echo(f"Written to {folder}")


@cli.command()
@click.argument("pattern", required=False)
def presets(pattern):
    """List keras-hub image presets (optionally matching PATTERN)."""
    with logs.quiet_native_logs():
        from kerastl.models import backbones

    rows = backbones.describe_presets(pattern)
    if not rows:
        raise click.ClickException(
            f"No keras-hub image preset matches {pattern!r}. Run "
            "`kerastl presets` to list them all."
        )
    header = ("preset", "family", "params", "input", "description")
    click.echo(text.columns([header, *rows]))


@cli.command("lr-find")
@click.argument(
    "recipe_path",
    metavar="RECIPE",
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
)
@click.option(
    "--stage",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Which stage to test, 1-based. Earlier stages are not trained "
    "first: the test starts from the preset's weights with this stage's "
    "trainable layer groups and optimizer.",
)
@_overrides_option
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Where lr_find.png and lr_find.json go. Defaults to "
    "runs/<recipe name>/lr-find-<timestamp>.",
)
@click.option(
    "--steps",
    default=100,
    show_default=True,
    type=click.IntRange(min=2),
    help="Training steps from --start-lr to --end-lr.",
)
@click.option(
    "--start-lr",
    default=1e-7,
    show_default=True,
    type=float,
    help="Learning rate of the first step.",
)
@click.option(
    "--end-lr",
    default=10.0,
    show_default=True,
    type=float,
    help="Learning rate of the last step, unless the loss diverges first.",
)
@_backend_option
@click.option(
    "--smoke",
    is_flag=True,
    help="Synthetic data of the recipe's spec and a few steps: checks the "
    "range test end to end in seconds.",
)
def lr_find(
    recipe_path,
    stage,
    overrides,
    output_dir,
    steps,
    start_lr,
    end_lr,
    backend,
    smoke,
):
    """Suggest a learning rate for a stage of RECIPE with a range test.

    Trains for --steps steps while the learning rate grows exponentially,
    stops once the loss diverges, and writes the loss curve (lr_find.png,
    lr_find.json) and fastai's suggestions (valley, steep, minimum/10).
    Only these results are kept; no model is saved.
    """
    _select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl.runs import recipe as recipes
        from kerastl.train import lr_find as finder

    with _user_errors():
        recipe = recipes.apply_overrides(
            recipes.load_recipe(recipe_path), overrides
        )
        finder.lr_find_recipe(
            recipe,
            stage,
            output_dir=output_dir,
            smoke=smoke,
            num_steps=steps,
            start_lr=start_lr,
            end_lr=end_lr,
        )


def _jit_compile(value):
    return {"auto": "auto", "true": True, "false": False}[value]


@cli.command()
@click.option(
    "--model",
    default="resnet18",
    show_default=True,
    help="resnet18 or vit_tiny (built in, random weights, with a PyTorch "
    "twin), or any image preset name or directory.",
)
@click.option("--image-size", default=96, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option(
    "--steps",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed steps per measurement, after --warmup untimed ones.",
)
@click.option("--warmup", default=2, show_default=True, type=int)
@click.option(
    "--repeats",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timings per measurement; the fastest counts.",
)
@click.option(
    "--cache-epochs",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Head epochs of the feature-cache comparison; 0 skips it.",
)
@click.option(
    "--jit-compile",
    type=click.Choice(("auto", "true", "false")),
    default="auto",
    show_default=True,
    help="Model.compile's jit_compile: XLA on TensorFlow, eager JAX when "
    "false, torch.compile when true on PyTorch. auto is what fit uses.",
)
@click.option(
    "--no-peers",
    is_flag=True,
    help="Time kerastl only, not keras-hub's classifier or PyTorch.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Also write the results as JSON here.",
)
@_backend_option
def bench(
    model,
    image_size,
    batch_size,
    steps,
    warmup,
    repeats,
    cache_epochs,
    jit_compile,
    no_peers,
    output,
    backend,
):
    """Measure training and inference speed on this backend and machine.

    Times kerastl's classifier (whole network and frozen backbone), the
    same backbone in keras-hub's classifier, the input pipeline, cached
    head training against in-graph, and on PyTorch a transformers model in
    a plain PyTorch loop; prints a table (and JSON with --output). Run it
    once per backend: KERAS_BACKEND=jax kerastl bench.
    """
    _select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl import bench as benchmark

    settings = benchmark.BenchSettings(
        model=model,
        image_size=image_size,
        batch_size=batch_size,
        steps=steps,
        warmup=warmup,
        repeats=repeats,
        cache_epochs=cache_epochs,
        jit_compile=_jit_compile(jit_compile),
        peers=not no_peers,
    )
    with _user_errors():
        results = benchmark.run_bench(settings, print_fn=click.echo)
    click.echo()
    click.echo(benchmark.format_table(results))
    if output is not None:
        from kerastl.utils import atomic

        atomic.write_text(output, json.dumps(results, indent=2))
        click.echo(f"Results: {output}")
