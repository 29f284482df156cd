"""`kerastl predict` and `kerastl export`: using a trained model."""

import json
import pathlib

import click

from kerastl.cli import options
from kerastl.cli.errors import user_errors
from kerastl.utils import logs

EXPORT_FORMATS = ("saved_model", "onnx", "litert")


@click.command()
@options.model_argument
@options.inputs_argument
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
    options.select_backend(None)
    with logs.quiet_native_logs():
        from kerastl.deploy import predict as predicting
        from kerastl.runs import rundir

    with user_errors():
        model = rundir.load_classifier(model_path)
        results = predicting.predict_files(model, inputs, top_k=top_k, tta=tta)
    if as_json or output_format == "json":
        click.echo(json.dumps(results, indent=2))
        return
    if output_format == "csv":
        click.echo(predicting.as_csv(results), nl=False)
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


@click.command()
@options.model_argument
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
@options.backend_option
def export(model_path, export_format, output, backend):
    """Export a model for serving: raw uint8 images in, probabilities out.

    Preprocessing and calibration are inside the artifact; a sidecar JSON
    next to it holds the class names, the multi-label thresholds and the
    input size.
    """
    options.select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl.deploy import export as exporting
        from kerastl.runs import rundir

    with user_errors():
        # Before loading: an unsupported backend/format pair fails at once.
        exporting.check_supported(export_format)
        model = rundir.load_classifier(model_path)
        artifact, sidecar = exporting.export_model(
            model,
            export_format,
            output or rundir.export_path(model_path, export_format),
        )
    click.echo(f"Exported {artifact}\nSidecar {sidecar}")
