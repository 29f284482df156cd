"""Exporting a classifier for serving: raw uint8 images in, probabilities out.

`kerastl export MODEL --format saved_model|onnx|litert` writes an artifact
that needs neither Keras nor kerastl to run. It takes a batch of RGB images,
channels last, as `uint8` pixels 0-255 at the model's input size
(`model.image_size`), and returns the model's output: probabilities (softmax,
or sigmoid for multi-label), after temperature scaling. The preprocessing
(the model's `image_converter`) and the calibration (its
`temperature_scaling` layer) are inside the artifact, so a server only
decodes and resizes images. The input is named `images` and the output
`probabilities` (`logits` for a model built with `activation=None`) in
every format.

A sidecar JSON next to the artifact (`model.onnx.json`, `model.tflite.json`,
`saved_model.json`) holds what the artifact cannot: class names, the
multi-label flag and decision thresholds, the temperature, the input size,
the input and output description, the format, the Keras backend it was
exported from and the kerastl version.

What each Keras backend exports:

| backend    | saved_model | onnx              | litert            |
| ---------- | ----------- | ----------------- | ----------------- |
| tensorflow | yes         | yes, but not ViT  | yes               |
| jax        | yes         | no                | yes, but not ViT  |
| torch      | no          | yes               | no                |

A `.keras` file or a preset exports from any backend: pick it with
`kerastl export --backend`. Each backend converts with its own tools, which
cover different operations: tf2onnx has no ONNX form of the exact GELU in
ViT's MLPs, and the JAX-to-LiteRT conversion cannot take the class-token
slice with a batch size left open. Every export is run in its own runtime
before it is kept, so such a gap is an error that names the backend to use
instead, never a broken artifact. On JAX, the SavedModel holds the JAX
program serialized for CPU and CUDA (jax2tf), and the LiteRT model is
converted from it. Loading a SavedModel needs only TensorFlow, an ONNX
model only an ONNX runtime, a LiteRT model only the LiteRT interpreter
(`ai-edge-litert`).
"""

import contextlib
import importlib.util
import json
import logging
import pathlib
import tempfile
import warnings

import keras
import numpy as np

import kerastl
from kerastl.utils import atomic
from kerastl.utils import logs

FORMATS = ("saved_model", "onnx", "litert")
SUPPORTED_FORMATS = {
    "tensorflow": ("saved_model", "onnx", "litert"),
    "jax": ("saved_model", "litert"),
    "torch": ("onnx",),
}
INPUT_NAME = "images"
# How far the artifact's outputs may be from the Keras model's: converters
# reorder float32 arithmetic (1e-6 apart), a mistranslation is far larger.
_TOLERANCE = 1e-3

_SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}
_FORMAT_NAMES = {
    "saved_model": "a TensorFlow SavedModel",
    "onnx": "ONNX",
    "litert": "LiteRT",
}
# Why Keras' own exporter cannot serve a backend/format pair; completes the
# error that names the alternatives.
_UNSUPPORTED_REASONS = {
    ("jax", "onnx"): "Keras converts JAX models with jax2onnx, which cannot "
    "convert keras-hub image models: it lowers ResNet's max pooling to a "
    "MaxPool that onnxruntime rejects, and fails on ViT's weights.",
    ("torch", "saved_model"): "Keras writes SavedModels from PyTorch through "
    "torch_xla, which pins its own torch version and only exports a fixed "
    "batch size.",
    ("torch", "litert"): "Keras converts PyTorch models with litert-torch, "
    "which pins dependencies kerastl's cannot share and only exports a "
    "fixed batch size.",
}
# Packages a backend/format pair needs beyond kerastl's own dependencies;
# all of them come with `kerastl[export]`.
_REQUIREMENTS = {
    ("tensorflow", "onnx"): ("tf2onnx", "onnx", "onnxruntime"),
    ("torch", "onnx"): ("onnx", "onnxscript", "onnxruntime"),
}


def artifact_name(export_format):
    """The artifact's name inside an export folder: `saved_model`,
    `model.onnx` or `model.tflite`, so the three formats live side by side.

    Args:
        export_format: `"saved_model"`, `"onnx"` or `"litert"`.

    Example:
    ```python
    kerastl.deploy.export.artifact_name("onnx")  # 'model.onnx'
    ```
    """
    _check_format(export_format)
    if export_format == "saved_model":
        return "saved_model"
    return f"model{_SUFFIXES[export_format]}"


def sidecar_path(artifact):
    """The sidecar JSON's path: the artifact's name plus `.json`.

    Args:
        artifact: str or path-like. The exported file or SavedModel folder.

    Example:
    ```python
    kerastl.deploy.export.sidecar_path("export/model.onnx")
    # PosixPath('export/model.onnx.json')
    ```
    """
    artifact = pathlib.Path(artifact)
    return artifact.with_name(f"{artifact.name}.json")


def check_supported(export_format):
    """Fails early, with a clear error, when this backend cannot export.

    `export_model` checks this first too; calling it before loading a model
    spares the wait when the answer is no.

    Args:
        export_format: `"saved_model"`, `"onnx"` or `"litert"`.

    Raises:
        ValueError: for an unknown format, a format this Keras backend
            cannot export (the message names the backends that can), or a
            missing exporter package (the message says what to install).

    Example:
    ```python
    kerastl.deploy.export.check_supported("onnx")
    ```
    """
    _check_format(export_format)
    backend = keras.config.backend()
    supported = SUPPORTED_FORMATS.get(backend, ())
    if export_format not in supported:
        able = [b for b, fs in SUPPORTED_FORMATS.items() if export_format in fs]
        reason = _UNSUPPORTED_REASONS.get((backend, export_format), "")
        raise ValueError(
            f"The {backend} backend cannot export "
            f"{_FORMAT_NAMES[export_format]}. {reason} Export from "
            f"{' or '.join(able)} instead, e.g. `kerastl export MODEL "
            f"--format {export_format} --backend {able[0]}`: the same model "
            f"file loads on any backend. From {backend}, kerastl exports "
            f"{' and '.join(supported)}. "
            f"Received: backend={backend}, export_format={export_format}"
        )
    missing = [
        name
        for name in _REQUIREMENTS.get((backend, export_format), ())
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ValueError(
            f"Exporting {_FORMAT_NAMES[export_format]} from the {backend} "
            f"backend needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: run "
            "`pip install 'kerastl[export]'`. "
            f"Received: missing={missing}"
        )


def export_model(model, export_format, output):
    """Exports a classifier for serving, with a sidecar JSON beside it.

    The artifact takes `uint8` images `(batch, height, width, 3)` at
    `model.image_size` and returns the model's probabilities, with the
    image converter's preprocessing and the temperature scaling inside (see
    the module docstring for what each backend can export). Before it
    takes the place of a previous export, the artifact is run in its own
    runtime on a few random images and must give the Keras model's outputs:
    a converter that mistranslates an operation is an error, never a
    silently wrong artifact. The artifact and the sidecar are each written
    atomically: an interrupted export leaves the previous ones whole.

    Args:
        model: a `kerastl.TransferClassifier`.
        export_format: `"saved_model"` (a folder), `"onnx"` (a `.onnx`
            file) or `"litert"` (a `.tflite` file).
        output: str or path-like. Where the artifact goes;
            `kerastl.runs.rundir.export_path` gives the usual place.

    Returns:
        `(artifact_path, sidecar_path)`, as `pathlib.Path`s.

    Raises:
        ValueError: for a format this backend cannot export (the message
            names the backends that can), a missing exporter package, an
            `output` that does not fit the format, or a conversion that
            fails or does not reproduce the model (the message suggests the
            other backends).

    Example:
    ```python
    model = kerastl.runs.rundir.load_classifier("runs/pets/20261123-140512")
    artifact, sidecar = kerastl.deploy.export.export_model(
        model, "onnx", "pets.onnx"
    )
    ```
    """
    check_supported(export_format)
    output = _check_output(pathlib.Path(output), export_format)
    serving = serving_model(model)
    suffix = _SUFFIXES.get(export_format, "")
    with _quiet_converters(), atomic.atomic_path(output, suffix) as tmp:
        _write_and_check(serving, export_format, tmp)
    sidecar = sidecar_path(output)
    with atomic.atomic_path(sidecar, suffix=".json") as tmp:
        description = describe(model, export_format, output.name)
        tmp.write_text(json.dumps(description, indent=2) + "\n")
    return output, sidecar


def serving_model(model):
    """The model exports wrap: uint8 images in, the model's output out.

    A functional `keras.Model` whose input is `uint8` (the classifier's own
    input is float, for training) and whose output is named `probabilities`
    (`logits` without an activation). It calls `model` in inference mode.

    Args:
        model: a `kerastl.TransferClassifier`.

    Example:
    ```python
    serving = kerastl.deploy.export.serving_model(model)
    serving(np.zeros((1, *model.image_size, 3), "uint8"))
    ```
    """
    images = keras.Input(
        shape=tuple(model.input.shape[1:]), dtype="uint8", name=INPUT_NAME
    )
    x = keras.ops.cast(images, "float32")
    # `training=False` spelled out: the image converter's Resizing layer
    # declares `training=True` as its default, and Keras hands that on to
    # the layers called after it, so a bare call would run the backbone's
    # BatchNorm on batch statistics (and update them).
    outputs = model(x, training=False)
    return keras.Model(images, outputs, name=_output_name(model))


def describe(model, export_format, artifact_name):
    """The sidecar's contents: what a server needs besides the artifact.

    Args:
        model: a `kerastl.TransferClassifier`.
        export_format: `"saved_model"`, `"onnx"` or `"litert"`.
        artifact_name: str. The artifact's file or folder name.

    Returns:
        A JSON-serializable dict.

    Example:
    ```python
    kerastl.deploy.export.describe(model, "onnx", "model.onnx")["class_names"]
    ```
    """
    height, width, channels = model.input.shape[1:]
    activation = model.temperature_scaling.activation
    if activation is None:
        meaning = "logits (no activation)"
    elif model.multi_label:
        meaning = "an independent sigmoid probability per class"
    else:
        meaning = "softmax probabilities over the classes"
    return {
        "format": export_format,
        "artifact": artifact_name,
        "backend": keras.config.backend(),
        "kerastl_version": kerastl.__version__,
        "keras_version": keras.__version__,
        "class_names": model.class_names,
        "num_classes": model.num_classes,
        "multi_label": model.multi_label,
        "thresholds": model.thresholds,
        "temperature": model.temperature,
        "image_size": [height, width],
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": [None, height, width, channels],
            "description": "RGB images, channels last, pixel values 0-255, "
            "already resized to image_size. Do not normalize them: the "
            "model's preprocessing is inside the artifact.",
        },
        "output": {
            "name": _output_name(model),
            "dtype": "float32",
            "shape": [None, model.num_classes],
            "activation": activation,
            "description": f"{meaning}, in class_names order, after "
            f"temperature scaling (temperature {model.temperature:g}, "
            "inside the artifact)."
            + (
                " A class is predicted when its probability is at least "
                "its threshold (0.5 where thresholds is null)."
                if model.multi_label and activation is not None
                else ""
            ),
        },
    }


def _output_name(model):
    if model.temperature_scaling.activation is None:
        return "logits"
    return "probabilities"


def _check_format(export_format):
    if export_format not in FORMATS:
        raise ValueError(
            f"Unknown export format {export_format!r}: pick one of "
            f"{', '.join(FORMATS)}. Received: export_format={export_format!r}"
        )


def _check_output(output, export_format):
    suffix = _SUFFIXES.get(export_format)
    if suffix is None:
        if output.is_file():
            raise ValueError(
                "A SavedModel is a folder, but --output names an existing "
                f"file: pass a folder path, e.g. {output.parent}/saved_model."
                f" Received: output={output}"
            )
        is_saved_model = (output / "saved_model.pb").is_file()
        if output.is_dir() and any(output.iterdir()) and not is_saved_model:
            # The export replaces the folder whole: never a folder of
            # other files.
            raise ValueError(
                "--output names a folder that holds files but no "
                "SavedModel; the export would replace it whole. Pass a new "
                f"folder path, e.g. {output}/saved_model. "
                f"Received: output={output}"
            )
    elif output.is_dir():
        raise ValueError(
            f"{_FORMAT_NAMES[export_format]} is a single file, but --output "
            f"names an existing folder: pass a file path ending in {suffix},"
            f" e.g. {output}/model{suffix}. Received: output={output}"
        )
    elif output.suffix != suffix:
        raise ValueError(
            f"{_FORMAT_NAMES[export_format]} files end in {suffix}: pass an "
            f"--output ending in {suffix}, e.g. "
            f"{output.with_suffix(suffix)}. Received: output={output}"
        )
    return output


@contextlib.contextmanager
def _quiet_converters():
    """Keeps the converters' chatter off the console.

    tf2onnx logs every graph rewrite and each op it cannot convert,
    TensorFlow logs asset writes and the TFLite converter's native progress,
    and the tracers warn about their own internals: nothing a user can act
    on, and a failed conversion is reported as one error anyway. Native
    output is replayed if the export fails.
    """
    loggers = [logging.getLogger(n) for n in ("tf2onnx", "tensorflow")]
    levels = [logger.level for logger in loggers]
    with logs.quiet_native_logs(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _write_and_check(serving, export_format, path):
    """Writes the artifact, then runs it against the Keras model."""
    writer = {
        "saved_model": _write_saved_model,
        "onnx": _write_onnx,
        "litert": _write_litert,
    }[export_format]
    shape = tuple(serving.input.shape[1:])
    # Three images: a batch size the exporters did not trace with.
    images = np.random.default_rng(0).integers(0, 256, (3, *shape), "uint8")
    try:
        writer(serving, path)
        got = _run_artifact(export_format, path, images, serving.name)
    except Exception as error:
        # Converters fail on operations they do not cover, deep inside;
        # what a user can do is try another backend's converter.
        lines = str(error).strip().splitlines() or [type(error).__name__]
        raise ValueError(
            f"Exporting {_FORMAT_NAMES[export_format]} from the "
            f"{keras.config.backend()} backend failed: {lines[0][:500]} "
            f"{_other_backends(export_format)} "
            f"Received: export_format={export_format}"
        ) from error
    expected = keras.ops.convert_to_numpy(serving(images, training=False))
    difference = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, rtol=_TOLERANCE, atol=_TOLERANCE):
        raise ValueError(
            f"The exported {_FORMAT_NAMES[export_format]} model does not "
            "reproduce the Keras model: its outputs differ by up to "
            f"{difference:.3g} on the same images, so it was not written. "
            f"{_other_backends(export_format)} "
            f"Received: export_format={export_format}"
        )


def _other_backends(export_format):
    backend = keras.config.backend()
    others = [
        b
        for b, formats in SUPPORTED_FORMATS.items()
        if export_format in formats and b != backend
    ]
    return (
        "Each backend converts with its own tools: export from "
        f"{' or '.join(others)} instead, e.g. `kerastl export MODEL "
        f"--format {export_format} --backend {others[0]}`."
    )


def _run_artifact(export_format, path, images, output_name):
    """The artifact's outputs on `images`, computed by its own runtime."""
    if export_format == "saved_model":
        import tensorflow as tf

        # Held in a name: the loaded object owns the variables `serve` reads.
        loaded = tf.saved_model.load(str(path))
        return loaded.serve(images)[output_name].numpy()
    if export_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
        return session.run([output_name], {INPUT_NAME: images})[0]
    runner = _litert_interpreter(path).get_signature_runner()
    return runner(**{INPUT_NAME: images})[output_name]


def _litert_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        # TensorFlow's copy of the interpreter, slated for removal but
        # always installed with kerastl.
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


def _input_signature(serving):
    return [
        keras.InputSpec(
            shape=(None, *serving.input.shape[1:]),
            dtype="uint8",
            name=INPUT_NAME,
        )
    ]


def _write_saved_model(serving, path, platforms=("cpu", "cuda")):
    archive = keras.export.ExportArchive()
    archive.track(serving)
    kwargs = {}
    if keras.config.backend() == "jax":
        kwargs["jax2tf_kwargs"] = {
            # jax2tf serializes the program for named platforms only (by
            # default the exporting machine's): CPU and CUDA serve anywhere.
            "native_serialization_platforms": platforms,
            # A serving artifact is never differentiated; without gradients
            # it is smaller and loads without warnings.
            "with_gradient": False,
        }
    archive.add_endpoint(
        "serve",
        _serve_function(serving),
        input_signature=_input_signature(serving),
        **kwargs,
    )
    archive.write_out(str(path), verbose=False)


def _serve_function(serving):
    def serve(images):
        return {serving.name: serving(images, training=False)}

    if keras.config.backend() != "jax":
        return serve

    import tensorflow as tf

    def serve_jax(images):
        # jax2tf traces this function while TensorFlow builds a graph. The
        # image converter (keras-hub) and its Resizing layer (Keras) take
        # TensorFlow's graph mode as "running in tf.data" and switch to
        # TensorFlow ops, which cannot take JAX values. `init_scope` leaves
        # graph mode for the trace; every op here is a JAX op, so nothing
        # is lifted out of the graph.
        with tf.init_scope():
            return serve(images)

    return serve_jax


def _write_onnx(serving, path):
    if keras.config.backend() == "torch":
        _write_onnx_torch(serving, path)
        return
    serving.export(
        str(path),
        format="onnx",
        verbose=False,
        input_signature=_input_signature(serving),
    )
    _rename_onnx_output(path, serving.name)


def _write_onnx_torch(serving, path):
    import torch

    # Keras exports a dynamic batch size with the TorchScript exporter,
    # which fails on ViT's LayerNorm; torch.export (the "dynamo" exporter)
    # converts ResNets and ViTs alike.
    serving.eval()
    # A batch of 2 on Keras' default device, where the weights are:
    # torch.export would fix a batch size of 1 as a constant.
    sample = keras.ops.zeros((2, *serving.input.shape[1:]), dtype="uint8")
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        serving,
        (sample,),
        dynamo=True,
        # A Keras layer's `forward(*args)`: one spec per positional input.
        dynamic_shapes=(({0: batch},),),
        input_names=[INPUT_NAME],
        output_names=[serving.name],
        verbose=False,
    )
    program.optimize()
    program.save(str(path))


def _rename_onnx_output(path, name):
    import onnx

    # tf2onnx names the output after a graph tensor ("Identity:0"); every
    # format's output gets the same name instead.
    graph = onnx.load(str(path))
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = [name if n == old else n for n in node.output]
        node.input[:] = [name if n == old else n for n in node.input]
    graph.graph.output[0].name = name
    onnx.save(graph, str(path))


def _write_litert(serving, path):
    import tensorflow as tf

    # Keras' own LiteRT exporter takes this road on TensorFlow (SavedModel,
    # then the TFLite converter); going through kerastl's SavedModel makes
    # it work on JAX too, with the same input and output names.
    with tempfile.TemporaryDirectory() as folder:
        saved_model = pathlib.Path(folder) / "saved_model"
        _write_saved_model(serving, saved_model, platforms=("cpu",))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        # As Keras does: TensorFlow ops with no LiteRT builtin still convert
        # (they then need the Flex delegate) rather than fail.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS,
            tf.lite.OpsSet.SELECT_TF_OPS,
        ]
        converter.experimental_enable_resource_variables = True
        path.write_bytes(converter.convert())
