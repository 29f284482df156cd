"""Writing each export format and checking the artifact against the model.

One writer per format (SavedModel, ONNX, LiteRT), each atomic; then the
artifact runs on a probe batch and must reproduce the Keras model's
probabilities, or the export fails and says which backends can do it.
"""

import contextlib
import logging
import pathlib
import tempfile
import warnings

import keras
import numpy as np

from kerastl.deploy.formats import FORMAT_NAMES
from kerastl.deploy.formats import INPUT_NAME
from kerastl.deploy.formats import SUPPORTED_FORMATS
from kerastl.utils import logs

# How far the artifact's outputs may be from the Keras model's: converters
# reorder float32 arithmetic (1e-6 apart), a mistranslation is far larger.
_TOLERANCE = 1e-3


@contextlib.contextmanager
def quiet_converters():
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


def write_and_check(serving, export_format, path):
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
            f"Exporting {FORMAT_NAMES[export_format]} from the "
            f"{keras.config.backend()} backend failed: {lines[0][:500]} "
            f"{_other_backends(export_format)} "
            f"Received: export_format={export_format}"
        ) from error
    expected = keras.ops.convert_to_numpy(serving(images, training=False))
    difference = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, rtol=_TOLERANCE, atol=_TOLERANCE):
        raise ValueError(
            f"The exported {FORMAT_NAMES[export_format]} model does not "
            "reproduce the Keras model: its outputs differ by up to "
            f"{difference:.3g} on the same images, so it was not written. "
            f"{_other_backends(export_format)} "
            f"Received: export_format={export_format}"
        )


def _other_backends(export_format):
    backend = keras.config.backend()
    others = [
        b
        for b, able in SUPPORTED_FORMATS.items()
        if export_format in able and b != backend
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
