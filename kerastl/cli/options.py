"""What every command shares: the backend, chosen before Keras is imported,
and the options of several commands.
"""

import os
import pathlib
import sys

import click

from kerastl.utils import distribution
from kerastl.utils import logs

BACKENDS = ("jax", "tensorflow", "torch")

# The trained model `predict`, `export` and `explain` take.
model_argument = click.argument(
    "model_path",
    metavar="MODEL_OR_RUN_DIR",
    type=click.Path(exists=True, path_type=pathlib.Path),
)
# The image files and folders `predict` and `explain` read.
inputs_argument = click.argument(
    "inputs",
    metavar="IMAGE_OR_FOLDER...",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, path_type=pathlib.Path),
)


def select_backend(backend, gpu_memory=None):
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
overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe field, e.g. --set stages.1.epochs=3 (stages "
    "count from 1, as in the stage headers, or go by name: "
    "stages.head.epochs=3) or --set preset=./my_preset. Repeatable; the "
    "fields are listed below.",
)
backend_option = click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    help="Keras backend; defaults to KERAS_BACKEND.",
)
