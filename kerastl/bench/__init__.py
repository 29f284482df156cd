"""`kerastl bench`: how fast kerastl trains and predicts, against its peers.

One process measures one backend (Keras fixes it per process), on synthetic
images fed through kerastl's own input pipeline:

- the input pipeline alone, in images per second, against the model's
  training speed: the pipeline must never be what the model waits for;
- kerastl's `TransferClassifier`, training the whole network and training
  the head on a frozen backbone, and predicting;
- the same backbone in keras-hub's own classifier (`ImageClassifier`, or
  `ViTImageClassifier` for ViTs), compiled the same way and fed by the same
  pipeline: the ratio is kerastl's overhead (target: under 3%);
- head-only training on cached features (`kerastl.train.features`) against the
  same epochs in-graph on a frozen backbone;
- on the PyTorch backend, a plain PyTorch training loop of the same
  architecture built with transformers, as the native peer;
- the photo pipeline: 12 MP camera JPEGs decoded whole, reduced, and read
  from the prepared-image cache (`kerastl.bench.photos`).

The machine's load is recorded around the timings (`kerastl.bench.load`),
and a note says when other processes took a share of the cores.

Throughput is timed after warm-up steps, so compilation is excluded; the
fastest of `repeats` timings counts, the one least disturbed by other
processes. Results go to the console as a table and, with `output`, to a
JSON file with the settings and the machine.
"""

import contextlib
import dataclasses
import functools
import os
import platform
import tempfile
import time

import keras
import keras_hub
import tensorflow as tf

from kerastl.bench import load
from kerastl.bench import peers
from kerastl.bench import photos
from kerastl.bench.table import format_table  # noqa: F401 (the bench's API)
from kerastl.data import Augment
from kerastl.data import DataSpec
from kerastl.data import load_data
from kerastl.data import synthetic
from kerastl.models import catalog
from kerastl.models.classifier import TransferClassifier
from kerastl.train import head_training
from kerastl.utils import distribution


@dataclasses.dataclass
class BenchSettings:
    """What `run_bench` measures.

    Args:
        model: str. `"resnet18"`, `"resnet50"`, `"vit_tiny"` or
            `"vit_base"` (built in, random weights), or a preset (name or
            directory) of any image backbone.
        image_size: int. Square input size. Defaults to `96`.
        batch_size: int. Defaults to `32`.
        steps: int. Timed steps of each measurement. Defaults to `10`.
        warmup: int. Untimed steps first (compilation). Defaults to `2`.
        repeats: int. Timings of each measurement; the fastest counts.
            Defaults to `2`.
        cache_epochs: int. Epochs of the feature-cache comparison; `0`
            skips it. Defaults to `3`.
        jit_compile: `"auto"`, `True` or `False`, as `Model.compile` takes
            it. Defaults to `"auto"`, what `kerastl fit` uses.
        peers: bool. Also time keras-hub's classifier and, on PyTorch, the
            transformers model. Defaults to `True`.
        photos: int. 12 MP JPEGs for the photo pipeline rows; `0` skips
            them. Defaults to `16`.
        photo_size: int. The model input size of the photo rows. Defaults
            to `224`.
        dtype_policy: str. The Keras dtype policy the models are built
            under: `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`
            (the PyTorch peer autocasts to the same half type). Defaults
            to `"float32"`.

    Example:
    ```python
    settings = kerastl.bench.BenchSettings(model="vit_tiny", steps=5)
    ```
    """

    model: str = "resnet18"
    image_size: int = 96
    batch_size: int = 32
    steps: int = 10
    warmup: int = 2
    repeats: int = 2
    cache_epochs: int = 3
    jit_compile: object = "auto"
    peers: bool = True
    photos: int = 16
    photo_size: int = 224
    dtype_policy: str = "float32"


def _model_parts(settings):
    size = (settings.image_size, settings.image_size)
    if settings.model in peers.BUILT_IN:
        return peers.built_in_backbone(settings.model, settings.image_size)
    catalog.check_preset(settings.model)
    converter = keras_hub.layers.ImageConverter.from_preset(
        settings.model, image_size=size
    )
    backbone = keras_hub.models.Backbone.from_preset(settings.model)
    return backbone, converter


def _clone(backbone):
    twin = backbone.__class__.from_config(backbone.get_config())
    twin.set_weights(backbone.get_weights())
    return twin


def _compile(model, jit_compile):
    """The same optimizer, loss and metric for kerastl and keras-hub.

    kerastl's model outputs probabilities and keras-hub's logits; each
    gets the cross-entropy that matches, as a user would compile it.
    """
    loss, metrics = "auto", "auto"
    if not isinstance(model, TransferClassifier):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=loss,
        metrics=metrics,
        jit_compile=jit_compile,
    )


def _seconds(function):
    """Wall-clock seconds of `function()`."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _train_steps(model, data, steps):
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)


def _predict_steps(model, data, steps):
    model.predict(data.map(lambda x, *_: x), steps=steps, verbose=0)


def _interleaved_speeds(tasks, settings):
    """Images per second of each `(name, run(steps))` task.

    Every task first runs `warmup` untimed steps; then the timings take
    turns (a, b, a, b, ...), so that a slow moment of the machine, or a
    process warming up, falls on all contenders alike, and the fastest of
    each task's `repeats` timings counts.
    """
    for _, run in tasks:
        run(settings.warmup)
    best = {name: float("inf") for name, _ in tasks}
    for _ in range(settings.repeats):
        for name, run in tasks:
            start = time.perf_counter()
            run(settings.steps)
            best[name] = min(best[name], time.perf_counter() - start)
    images = settings.steps * settings.batch_size
    return {name: images / seconds for name, seconds in best.items()}


def _pipeline_speed(data, settings):
    batches = settings.steps * 4
    iterator = iter(data)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * settings.batch_size / (time.perf_counter() - start)


def _synthetic_data(settings):
    """Train and validation splits through kerastl's pipeline, repeated."""
    count = settings.batch_size * max(settings.steps, 4)
    images, labels = synthetic.color_images(
        count, peers.NUM_CLASSES, image_size=settings.image_size
    )
    bundle = load_data(
        DataSpec(
            "arrays",
            arrays={"train": (images, labels), "validation": (images, labels)},
        ),
        image_size=(settings.image_size, settings.image_size),
        batch_size=settings.batch_size,
        multi_label=False,
        seed=0,
        # `kerastl fit`'s default training augmentation.
        augment=Augment(),
    )
    return bundle.splits["train"], bundle.splits["validation"]


def frozen_copies(classifier, jit_compile="auto"):
    """A function that returns fresh frozen-backbone copies of `classifier`.

    Each copy has the same weights and compiles its own functions (SGD,
    momentum 0.9, as `bench` compiles), so timings of two methods start
    from the same place.

    Args:
        classifier: a `kerastl.TransferClassifier`.
        jit_compile: as `Model.compile` takes it. Defaults to `"auto"`.

    Example:
    ```python
    fresh = kerastl.bench.frozen_copies(model)
    fresh().fit(train, epochs=3)
    ```
    """
    weights = classifier.get_weights()
    config = classifier.get_config()

    def fresh():
        model = TransferClassifier.from_config(config)
        model.set_weights(weights)
        model.freeze_backbone()
        _compile(model, jit_compile)
        return model

    return fresh


def _cache_speedup(classifier, train, validation, settings, scratch):
    """In-graph frozen-backbone epochs against cold cached-feature epochs."""
    fresh = frozen_copies(classifier, settings.jit_compile)
    epochs = settings.cache_epochs
    in_graph = _seconds(
        lambda: fresh().fit(
            train, validation_data=validation, epochs=epochs, verbose=0
        ),
    )

    def cold():
        head_training.fit_head_cached(
            fresh(),
            train,
            validation,
            cache_dir=tempfile.mkdtemp(dir=scratch),
            epochs=epochs,
            verbose=0,
            print_fn=lambda _: None,
        )

    cached = _seconds(cold)
    return {
        "epochs": epochs,
        "in_graph_seconds": round(in_graph, 2),
        "cached_cold_seconds": round(cached, 2),
        "speedup": round(in_graph / cached, 2),
    }


def run_bench(settings, print_fn=print):
    """Measures everything the module docstring lists on this backend.

    Args:
        settings: a `BenchSettings`.
        print_fn: callable for progress lines.

    Returns:
        dict, JSON-ready: `settings`, `machine`, `compile` (the resolved
        `jit_compile` and what it means on this backend), `images_per_second`
        (`pipeline`, `kerastl_train_full`, `kerastl_train_frozen`,
        `kerastl_predict`, and the `keras_hub_*` and `torch_*` peers),
        `ratios` (kerastl / peer), `feature_cache`, `photo_pipeline` (see
        `photos.photo_pipeline`; `None` when skipped), `load` (see
        `load.MachineLoad.report`), and `notes`.

    Example:
    ```python
    results = kerastl.bench.run_bench(kerastl.bench.BenchSettings())
    results["ratios"]["train_full_vs_keras_hub"]
    ```
    """
    keras.utils.set_random_seed(0)
    with (
        _dtype_policy(settings.dtype_policy),
        load.MachineLoad() as machine_load,
    ):
        backbone, converter = _model_parts(settings)
        speeds, classifier, cache = _measure(
            backbone, converter, settings, print_fn
        )
        photo_rows = None
        if settings.photos:
            photo_rows = photos.photo_pipeline(
                settings.photos,
                settings.photo_size,
                settings.repeats,
                print_fn,
            )
    notes = _notes(speeds)
    if machine_load.warning():
        notes.append(machine_load.warning())
        print_fn(machine_load.warning())
    return {
        "settings": dataclasses.asdict(settings),
        "backend": keras.config.backend(),
        "machine": machine_description(),
        "load": machine_load.report(),
        "compile": compile_description(classifier.jit_compile),
        "parameters": int(classifier.count_params()),
        "images_per_second": speeds,
        "ratios": _ratios(speeds),
        "feature_cache": cache,
        "photo_pipeline": photo_rows,
        "notes": notes,
    }


@contextlib.contextmanager
def _dtype_policy(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _measure(backbone, converter, settings, print_fn):
    """The pipeline, kerastl and its peers, and the feature cache; returns
    `(speeds, kerastl's classifier, feature-cache comparison)`."""
    train, validation = _synthetic_data(settings)
    repeated = train.repeat()
    speeds = {"pipeline": _pipeline_speed(repeated, settings)}
    print_fn(f"input pipeline: {speeds['pipeline']:.0f} images/s")
    contenders = _contenders(backbone, converter, settings)
    classifier = contenders[0][1]
    native = []
    built_in = settings.model in peers.BUILT_IN
    if settings.peers and keras.config.backend() == "torch" and built_in:
        native = peers.torch_native_tasks(settings, repeated)
    speeds.update(_contender_speeds(contenders, native, repeated, settings))
    _print_speeds(speeds, contenders, print_fn)
    cache = None
    if settings.cache_epochs:
        with tempfile.TemporaryDirectory() as scratch:
            cache = _cache_speedup(
                classifier, train, validation, settings, scratch
            )
        print_fn(
            f"feature cache, {cache['epochs']} head epochs: "
            f"{cache['speedup']:.1f}x faster than in-graph"
        )
    # Rounded first, so the JSON's ratios are those of its own numbers.
    speeds = {key: round(value, 2) for key, value in speeds.items()}
    return speeds, classifier, cache


def _contenders(backbone, converter, settings):
    """`[(name, model, freeze)]`: kerastl's classifier, and keras-hub's on
    the same backbone when peers are timed; whole networks trainable."""
    classifier = TransferClassifier(
        _clone(backbone),
        num_classes=peers.NUM_CLASSES,
        image_converter=converter,
    )
    classifier.unfreeze_backbone()
    _compile(classifier, settings.jit_compile)
    contenders = [("kerastl", classifier, classifier.freeze_backbone)]
    if settings.peers:
        peer = peers.keras_hub_classifier(_clone(backbone))
        _compile(peer, settings.jit_compile)

        def freeze_peer(peer=peer):
            peer.backbone.trainable = False

        contenders.append(("keras_hub", peer, freeze_peer))
    return contenders


def _contender_speeds(contenders, native, repeated, settings):
    """Images/s of training the whole network, predicting, then training
    frozen: each kind timed across contenders at once. (On JAX, a
    TransferClassifier recompiles its train step on the first `fit` after
    a `predict`; runs never alternate the two, so neither do these
    timings.)"""
    speeds = {}
    for kind, run in (
        ("train_full", _train_steps),
        ("predict", _predict_steps),
    ):
        tasks = [
            (f"{name}_{kind}", functools.partial(run, model, repeated))
            for name, model, _ in contenders
        ]
        tasks += [task for task in native if task[0] == f"torch_{kind}"]
        speeds.update(_interleaved_speeds(tasks, settings))
    for _, model, freeze in contenders:
        freeze()
        _compile(model, settings.jit_compile)
    frozen = [
        (
            f"{name}_train_frozen",
            functools.partial(_train_steps, model, repeated),
        )
        for name, model, _ in contenders
    ]
    speeds.update(_interleaved_speeds(frozen, settings))
    return speeds


def _print_speeds(speeds, contenders, print_fn):
    for name, _, _ in contenders:
        print_fn(
            f"{name}: train {speeds[f'{name}_train_full']:.0f} (frozen "
            f"backbone {speeds[f'{name}_train_frozen']:.0f}), predict "
            f"{speeds[f'{name}_predict']:.0f} images/s"
        )
    if "torch_train_full" in speeds:
        print_fn(
            f"torch native: train {speeds['torch_train_full']:.0f}, predict "
            f"{speeds['torch_predict']:.0f} images/s"
        )


def _ratios(speeds):
    """kerastl's speed over each peer's, per kind of work."""
    ratios = {}
    for peer_name in ("keras_hub", "torch"):
        for kind in ("train_full", "train_frozen", "predict"):
            if f"{peer_name}_{kind}" in speeds:
                ratios[f"{kind}_vs_{peer_name}"] = round(
                    speeds[f"kerastl_{kind}"] / speeds[f"{peer_name}_{kind}"], 3
                )
    return ratios


def _notes(speeds):
    if speeds["pipeline"] >= speeds["kerastl_train_frozen"]:
        return []
    return [
        "The input pipeline is the bottleneck: it delivers "
        f"{speeds['pipeline']:.0f} images/s, training on a frozen "
        f"backbone takes {speeds['kerastl_train_frozen']:.0f}."
    ]


def compile_description(jit_compile):
    """What a resolved `jit_compile` means on this backend, in words.

    Example:
    ```python
    kerastl.bench.compile_description(True)  # on JAX: 'jax.jit (XLA)'
    ```
    """
    backend = keras.config.backend()
    if backend == "jax":
        # Keras always jits on JAX; jit_compile=False runs eagerly.
        return "jax.jit (XLA)" if jit_compile else "eager"
    if backend == "tensorflow":
        return "tf.function + XLA" if jit_compile else "tf.function"
    return "torch.compile" if jit_compile else "eager"


def machine_description():
    """This machine: processor, cores, accelerators, library versions.

    Example:
    ```python
    kerastl.bench.machine_description()["cpu_count"]
    ```
    """
    processor = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln for ln in f if ln.startswith("model name")]
        processor = names[0].split(":", 1)[1].strip() if names else processor
    except OSError:
        pass
    backend = keras.config.backend()
    return {
        "processor": processor,
        "cpu_count": os.cpu_count(),
        "devices": distribution.devices_seen_by(backend),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "backend_version": _backend_version(backend),
    }


def _backend_version(backend):
    if backend == "jax":
        import jax

        return jax.__version__
    if backend == "torch":
        import torch

        return torch.__version__
    return tf.__version__
