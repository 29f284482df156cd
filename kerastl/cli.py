"""The `kerastl` command line.

Keras fixes its backend on first import, so this module imports neither Keras
nor kerastl's model modules at the top: each command imports them in its body,
after the backend is chosen.
"""

import importlib.metadata
import importlib.util
import os

import click

from kerastl import __version__
from kerastl import logs

BACKENDS = ("jax", "tensorflow", "torch")


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


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _devices(backend):
    """Devices one backend sees, as short strings; imports it on the spot."""
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.id}" for d in jax.devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        return [
            f"{d.device_type.lower()}:{d.name.rsplit(':', 1)[-1]}"
            for d in tf.config.list_physical_devices()
        ]
    import torch

    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu:0", *cuda]


def _table(rows):
    widths = [max(len(str(row[i])) for row in rows) for i in range(2)]
    return "\n".join(
        f"{str(a).ljust(widths[0])}  {b}".rstrip() for a, b in rows
    )


@cli.command()
def info():
    """Print versions and the devices each installed backend sees."""
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
            devices = ", ".join(_devices(backend))
            rows.append((backend, f"{_version(backend)}  [{devices}]"))
    click.echo(_table(rows))
