"""Benchmark: a head-only stage trained in-graph vs on cached features.

For each epoch count E it times, end to end (model compile and feature
pass included), on the current `KERAS_BACKEND`:

- in-graph: `model.freeze_backbone()` then `model.fit` for E epochs;
- cold: `kerastl.train.head_training.fit_head_cached` with an empty cache
  directory (one backbone pass, then E epochs of the head);
- warm: the same call again from a fresh model object with the same
  weights, as a later run would make it (no backbone pass at all).

and prints a Markdown table with the speedups. Every run gets a fresh
model with the same weights (so it compiles its own functions), and an
untimed epoch of each method first warms up the backend itself. The
table shows the fastest of `--repeats` runs.

    KERAS_BACKEND=jax python benchmarks/feature_cache.py --epochs 1,3,10
"""

import argparse
import os
import tempfile
import time

from kerastl.utils import logs

# TensorFlow's native start-up chatter stays out of the benchmark's output.
with logs.quiet_native_logs():
    import keras
    import keras_hub
    import tensorflow as tf

    from kerastl import TransferClassifier
    from kerastl import bench
    from kerastl.bench import peers
    from kerastl.data import synthetic
    from kerastl.train import head_training

NUM_CLASSES = 10


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset",
        default=None,
        help="A local preset directory (or a keras-hub preset name where "
        "downloads work). Default: a ResNet-18 with random weights, built "
        "in.",
    )
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument(
        "--validation-examples",
        type=int,
        default=128,
        help="Validated after every epoch, as `kerastl fit` does. "
        "Default: 128; 0 for none.",
    )
    parser.add_argument(
        "--epochs",
        default="1,3,10",
        help="Comma-separated epoch counts to time. Default: 1,3,10.",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="Runs of each measurement; the table shows the fastest, which "
        "is the least disturbed by other processes. Default: 3.",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def model_factory(args):
    """A function returning identical fresh models: same weights each time."""
    if args.preset:
        size = (args.image_size, args.image_size)
        converter = keras_hub.layers.ImageConverter.from_preset(
            args.preset, image_size=size
        )
        first = TransferClassifier.from_preset(
            args.preset, num_classes=NUM_CLASSES, image_converter=converter
        )
        description = args.preset
    else:
        backbone, converter = peers.built_in_backbone(
            "resnet18", args.image_size
        )
        first = TransferClassifier(
            backbone, num_classes=NUM_CLASSES, image_converter=converter
        )
        description = "ResNet-18 (random weights)"
    params = first.backbone.count_params()
    description = f"{description}, {params:,} backbone parameters"
    return bench.frozen_copies(first), description


def timed(repeats, setup, function, *args, **kwargs):
    """The fastest wall-clock and CPU seconds of `function(setup(), ...)`.

    CPU seconds (all of this process's threads) barely change when other
    processes share the cores, so they compare the methods' work on a busy
    machine; wall-clock is what a user waits. `setup` (building the model,
    the same work for every method) is not timed.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        first = setup()
        wall, cpu = time.perf_counter(), time.process_time()
        function(first, *args, **kwargs)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def measure(args, fresh, train, validation, epochs, scratch, repeats=None):
    """`(in-graph, cold, warm)` timings of one epoch count."""
    repeats = repeats or args.repeats
    in_graph = timed(
        repeats,
        fresh,
        TransferClassifier.fit,
        train,
        validation_data=validation,
        epochs=epochs,
        verbose=0,
    )
    options = dict(epochs=epochs, verbose=0, print_fn=lambda _: None)

    def cold_fit(model):
        cache_dir = tempfile.mkdtemp(dir=scratch)  # empty every time
        head_training.fit_head_cached(
            model, train, validation, cache_dir=cache_dir, **options
        )

    cold = timed(repeats, fresh, cold_fit)
    warm_dir = tempfile.mkdtemp(dir=scratch)
    head_training.fit_head_cached(
        fresh(), train, validation, cache_dir=warm_dir, **options
    )
    warm = timed(
        repeats,
        fresh,
        head_training.fit_head_cached,
        train,
        validation,
        cache_dir=warm_dir,
        **options,
    )
    return in_graph, cold, warm


def main():
    args = parse_args()
    epoch_counts = [int(e) for e in args.epochs.split(",")]
    fresh, description = model_factory(args)
    images, labels = synthetic.color_images(
        args.examples + args.validation_examples,
        NUM_CLASSES,
        image_size=args.image_size,
        seed=args.seed,
    )

    def batches(start, stop):
        return (
            tf.data.Dataset.from_tensor_slices(
                (images[start:stop], labels[start:stop])
            )
            .batch(args.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )

    train = batches(0, args.examples)
    validation = None
    if args.validation_examples:
        validation = batches(args.examples, len(images))

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        # An untimed epoch of each method first: a process's first runs
        # pay for warming up the backend (kernels, memory allocator; the
        # first torch fit takes about 3x as long as the next ones), which
        # would otherwise land on whichever measurement comes first.
        measure(args, fresh, train, validation, 1, scratch, repeats=1)
        for epochs in epoch_counts:
            in_graph, cold, warm = measure(
                args, fresh, train, validation, epochs, scratch
            )
            rows.append((epochs, in_graph, cold, warm))
            print(
                f"E={epochs}: in-graph {in_graph[0]:.1f}s, cold "
                f"{cold[0]:.1f}s, warm {warm[0]:.1f}s (wall-clock)",
                flush=True,
            )

    print()
    print(
        f"Backend `{keras.config.backend()}`, {description}; "
        f"{args.examples} training and {args.validation_examples} "
        f"validation images of {args.image_size}x{args.image_size}, batch "
        f"{args.batch_size}, {os.cpu_count()} CPU cores; fastest of "
        f"{args.repeats} runs."
    )
    print()
    print("Seconds as wall-clock / CPU; speedups as wall-clock / CPU.")
    print()
    print(
        "| E | in-graph (s) | cached, cold (s) | cached, warm (s) "
        "| speedup cold | speedup warm | cold >= E | warm >= E |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | :---: | :---: |")
    for epochs, in_graph, cold, warm in rows:
        cold_speedup = [i / c for i, c in zip(in_graph, cold, strict=True)]
        warm_speedup = [i / w for i, w in zip(in_graph, warm, strict=True)]
        print(
            f"| {epochs} | {_pair(in_graph, '.1f')} | {_pair(cold, '.1f')} "
            f"| {_pair(warm, '.1f')} | {_pair(cold_speedup, '.1f', 'x')} "
            f"| {_pair(warm_speedup, '.1f', 'x')} "
            f"| {_verdict(cold_speedup, epochs)} "
            f"| {_verdict(warm_speedup, epochs)} |"
        )


def _pair(values, spec, unit=""):
    return " / ".join(f"{value:{spec}}{unit}" for value in values)


def _verdict(speedups, epochs):
    return " / ".join("yes" if s >= epochs else "no" for s in speedups)


if __name__ == "__main__":
    main()
