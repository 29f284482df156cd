"""`kerastl info`, `kerastl presets` and `kerastl bench`: this machine,
the presets, the speed.
"""

import importlib.metadata
import importlib.util
import json
import pathlib

import click

from kerastl import __version__
from kerastl.cli import options
from kerastl.cli.errors import user_errors
from kerastl.utils import distribution
from kerastl.utils import logs
from kerastl.utils import text


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@click.command()
def info():
    """Print versions, the devices each backend sees, and how fit uses them.

    With the JAX or PyTorch backend, TensorFlow (which only feeds data)
    sees no GPU: kerastl hides them from it so it claims no GPU memory.
    """
    options.select_backend(None)
    with logs.quiet_native_logs():
        import keras

        rows = [
            ("kerastl", __version__),
            ("keras", keras.__version__),
            ("keras-hub", _version("keras-hub")),
            ("backend", keras.config.backend()),
        ]
        for backend in options.BACKENDS:
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


@click.command()
@click.argument("pattern", required=False)
def presets(pattern):
    """List keras-hub image presets (optionally matching PATTERN)."""
    with logs.quiet_native_logs():
        from kerastl.models import catalog

    rows = catalog.describe_presets(pattern)
    if not rows:
        raise click.ClickException(
            f"No keras-hub image preset matches {pattern!r}. Run "
            "`kerastl presets` to list them all."
        )
    header = ("preset", "family", "params", "input", "description")
    click.echo(text.columns([header, *rows]))


def _jit_compile(value):
    return {"auto": "auto", "true": True, "false": False}[value]


@click.command()
@click.option(
    "--model",
    default="resnet18",
    show_default=True,
    help="resnet18, resnet50, vit_tiny or vit_base (built in, random "
    "weights, with a PyTorch twin), or any image preset name or directory.",
)
@click.option(
    "--dtype-policy",
    type=click.Choice(("float32", "mixed_bfloat16", "mixed_float16")),
    default="float32",
    show_default=True,
    help="Keras dtype policy of the models; the PyTorch peer autocasts to "
    "the same half type.",
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
    "--photos",
    default=16,
    show_default=True,
    type=click.IntRange(min=0),
    help="12 MP JPEGs to write and time through the photo pipeline (full "
    "decode, reduced decode, prepared-image cache); 0 skips it.",
)
@click.option(
    "--photo-size",
    default=224,
    show_default=True,
    type=click.IntRange(min=8),
    help="Model input size of the photo pipeline rows.",
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
@options.backend_option
def bench(
    model,
    dtype_policy,
    image_size,
    batch_size,
    steps,
    warmup,
    repeats,
    cache_epochs,
    photos,
    photo_size,
    jit_compile,
    no_peers,
    output,
    backend,
):
    """Measure training and inference speed on this backend and machine.

    Times kerastl's classifier (whole network and frozen backbone), the
    same backbone in keras-hub's classifier, the input pipeline, cached
    head training against in-graph, camera photos through the input
    pipeline, and on PyTorch a transformers model in a plain PyTorch loop;
    records the machine's load; prints tables (and JSON with --output).
    Run it once per backend: KERAS_BACKEND=jax kerastl bench.
    """
    options.select_backend(backend)
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
        photos=photos,
        photo_size=photo_size,
        dtype_policy=dtype_policy,
        jit_compile=_jit_compile(jit_compile),
        peers=not no_peers,
    )
    with user_errors():
        results = benchmark.run_bench(settings, print_fn=click.echo)
    click.echo()
    click.echo(benchmark.format_table(results))
    if output is not None:
        from kerastl.utils import atomic

        atomic.write_text(output, json.dumps(results, indent=2))
        click.echo(f"Results: {output}")
