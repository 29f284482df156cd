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

import importlib.util
import json
import pathlib

import keras

import kerastl
from kerastl.deploy import writers
from kerastl.deploy.formats import FORMAT_NAMES
from kerastl.deploy.formats import FORMATS
from kerastl.deploy.formats import INPUT_NAME
from kerastl.deploy.formats import SUPPORTED_FORMATS
from kerastl.utils import atomic

_SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}
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
            f"{FORMAT_NAMES[export_format]}. {reason} Export from "
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
            f"Exporting {FORMAT_NAMES[export_format]} from the {backend} "
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
    with writers.quiet_converters(), atomic.atomic_path(output, suffix) as tmp:
        writers.write_and_check(serving, export_format, tmp)
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
        shape=tuple(model.input.shape[1:]),
        dtype="uint8",
        name=INPUT_NAME,
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
            f"{FORMAT_NAMES[export_format]} is a single file, but --output "
            f"names an existing folder: pass a file path ending in {suffix},"
            f" e.g. {output}/model{suffix}. Received: output={output}"
        )
    elif output.suffix != suffix:
        raise ValueError(
            f"{FORMAT_NAMES[export_format]} files end in {suffix}: pass an "
            f"--output ending in {suffix}, e.g. "
            f"{output.with_suffix(suffix)}. Received: output={output}"
        )
    return output
