"""The `kerastl` command line.

Keras fixes its backend on first import, so the CLI imports neither Keras
nor kerastl's model modules at the top: each command imports them in its
body, after the backend is chosen (`options.select_backend`). One module
per command group: `train` (fit, lr-find), `evaluate` (evaluate, compare),
`deploy` (predict, export), `info` (info, presets, bench), `inspection`
(select, doctor, explain); `errors` turns
kerastl's exceptions into one-paragraph messages.
"""

import os
import warnings

import click

from kerastl import __version__
from kerastl.cli import deploy
from kerastl.cli import evaluate
from kerastl.cli import info
from kerastl.cli import inspection
from kerastl.cli import train
from kerastl.utils import logs


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


for _command in (
    train.fit,
    evaluate.evaluate,
    deploy.predict,
    deploy.export,
    evaluate.compare,
    info.presets,
    train.lr_find,
    info.info,
    info.bench,
    inspection.select,
    inspection.doctor,
    inspection.explain,
):
    cli.add_command(_command)
