"""`kerastl select`, `kerastl doctor` and `kerastl explain`: knowing the
backbone and the data before training, and what the model looks at after."""

import pathlib

import click

from kerastl.cli import options
from kerastl.cli.errors import user_errors
from kerastl.utils import logs

_SOURCE = click.argument(
    "source",
    metavar="RECIPE|DATA",
    type=click.Path(exists=True, path_type=pathlib.Path),
)
_SMOKE = click.option(
    "--smoke",
    is_flag=True,
    help="The recipe's smoke data, and tiny random-weight stand-ins for "
    "presets that cannot load offline: checks the command end to end.",
)
_MULTI_LABEL = click.option(
    "--multi-label",
    is_flag=True,
    help="DATA has several labels per image (a CSV).",
)


def _output_dir(kind):
    return click.option(
        "--output-dir",
        type=click.Path(file_okay=False, path_type=pathlib.Path),
        help=f"A new or empty folder for the report. Defaults to "
        f"runs/<name>/{kind}/<timestamp>.",
    )


@click.command()
@_SOURCE
@click.option(
    "--presets",
    help="Comma-separated candidate presets (names, handles or local "
    "directories). Defaults to the recipe's preset and resnet_50_imagenet, "
    "vit_base_patch16_224_imagenet, efficientnet_b0_ra_imagenet, "
    "mobilenet_v3_large_100_imagenet and dinov2_small.",
)
@click.option(
    "--write-recipe",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Write a recipe (a new .py file) that fine-tunes the winner on "
    "the same data.",
)
@_output_dir("select")
@_MULTI_LABEL
@_SMOKE
@options.backend_option
def select(
    source, presets, write_recipe, output_dir, multi_label, smoke, backend
):
    """Rank candidate backbones on RECIPE's data (or DATA) without training.

    Each preset's frozen features of the training and validation images
    (computed once, through the feature cache) are scored three ways:
    LogME, kNN accuracy and a linear probe's validation accuracy (mAP for
    multi-label data). Candidates are ranked by their mean rank; the table
    also shows parameters and inference speed. Writes report.md,
    select.json and a score-vs-speed plot.
    """
    options.select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl.runs import select as selecting

    candidates = None
    if presets:
        candidates = [p.strip() for p in presets.split(",") if p.strip()]
    with user_errors():
        selecting.select(
            source,
            candidates,
            output_dir=output_dir,
            smoke=smoke,
            write_recipe=write_recipe,
            multi_label=multi_label,
            print_fn=click.echo,
        )


@click.command()
@_SOURCE
@click.option(
    "--preset",
    help="The backbone whose features are compared. Defaults to the "
    "recipe's; required for DATA.",
)
@click.option(
    "--fix-into",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="A new or empty folder to write fixes.csv into: the suggested "
    "removals and relabels, for you to review. The data is never changed.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Cosine similarity of the centred backbone features from which "
    "two images are near-duplicates. Defaults to 0.98.",
)
@_output_dir("doctor")
@_MULTI_LABEL
@_SMOKE
@options.backend_option
def doctor(
    source, preset, fix_into, threshold, output_dir, multi_label, smoke, backend
):
    """Check RECIPE's data (or DATA) for problems before training.

    Lists unreadable files, class counts, image sizes and grayscale share;
    exact and near-duplicate images within and across splits (leakage);
    and likely label errors, found by confident learning on a 5-fold
    linear probe over the backbone's features. Writes report.md with
    thumbnails and doctor.json.
    """
    options.select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl.runs import doctor as doctoring

    with user_errors():
        doctoring.doctor(
            source,
            preset,
            output_dir=output_dir,
            smoke=smoke,
            fix_into=fix_into,
            threshold=threshold,
            multi_label=multi_label,
            print_fn=click.echo,
        )


@click.command()
@options.model_argument
@options.inputs_argument
@click.option(
    "--class",
    "class_name",
    help="Explain this class for every image (Grad-CAM). Defaults to what "
    "the model predicted: its top class, or each class over its threshold "
    "for a multi-label model.",
)
@click.option(
    "--method",
    type=click.Choice(("auto", "gradcam", "rollout")),
    default="auto",
    show_default=True,
    help="gradcam: Grad-CAM, every backbone family. rollout: attention "
    "rollout, for ViT, DeiT and DINOv2; class-agnostic. auto: rollout where "
    "it works, else (or with --class) gradcam.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="A new or empty folder for the maps. Defaults to "
    "<run>/explanations/<timestamp>, or runs/<model name>/explanations/"
    "<timestamp> for a .keras file or preset.",
)
@options.backend_option
def explain(model_path, inputs, class_name, method, output_dir, backend):
    """Show what the model looks at: saliency maps over the images.

    Each image is read as `kerastl predict` reads it, and drawn with its
    heatmaps below it (red: the evidence the class's score rests on),
    16 images to a PNG page. explanations.json lists each image's
    predictions and maps.
    """
    options.select_backend(backend)
    with logs.quiet_native_logs():
        from kerastl.runs import explanation

    with user_errors():
        explanation.explain_files(
            model_path,
            inputs,
            method=method,
            class_name=class_name,
            output_dir=output_dir,
            print_fn=click.echo,
        )
