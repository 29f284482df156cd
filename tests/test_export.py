"""Exports: raw uint8 images in, the model's probabilities out, per format.

Each artifact is loaded in its own runtime (TensorFlow for SavedModel,
onnxruntime for ONNX, the LiteRT interpreter for LiteRT), never through
kerastl, and compared with the Keras model and with the softmax or sigmoid
of its temperature-scaled logits computed here with SciPy.
"""

import json

import keras
import kit
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import special

import kerastl
from kerastl.cli import cli
from kerastl.deploy import export
from kerastl.deploy import writers
from kerastl.runs import rundir

BACKEND = keras.config.backend()
FORMATS = ("saved_model", "onnx", "litert")
# What kerastl exports from each backend with Keras 3.15's exporters:
# jax2onnx cannot convert keras-hub models, and Keras' SavedModel and LiteRT
# exports from torch need torch_xla and litert-torch.
SUPPORT = {
    "tensorflow": ("saved_model", "onnx", "litert"),
    "jax": ("saved_model", "litert"),
    "torch": ("onnx",),
}
SUPPORTED = SUPPORT[BACKEND]
# The format each backend's quick checks and the CLI test export.
FILE_FORMAT = "onnx" if "onnx" in SUPPORTED else "litert"
SUFFIX = {"onnx": ".onnx", "litert": ".tflite"}
CLASS_NAMES = ["cat", "dog", "fox"]
TEMPERATURE = 1.7
THRESHOLDS = [0.3, 0.5, 0.7]
ATOL = 1e-4


def classifier(**kwargs):
    backbone, converter = kit.tiny_resnet()
    return kerastl.TransferClassifier(
        backbone,
        num_classes=3,
        image_converter=converter,
        class_names=CLASS_NAMES,
        **kwargs,
    )


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    return {
        "multi_class": classifier(),
        "multi_label": classifier(
            multi_label=True, thresholds=THRESHOLDS, temperature=TEMPERATURE
        ),
    }


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    """Exports each (model, format) once for every test that needs it."""
    done = {}

    def get(kind, export_format):
        if (kind, export_format) not in done:
            folder = tmp_path_factory.mktemp(f"{kind}-{export_format}")
            output = rundir.export_path(folder / "m.keras", export_format)
            done[kind, export_format] = export.export_model(
                models[kind], export_format, output
            )
        return done[kind, export_format]

    return get


def images(batch, model):
    rng = np.random.default_rng(batch)
    return rng.integers(0, 256, (batch, *model.image_size, 3), dtype=np.uint8)


def run_saved_model(path, pixels):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    # The signature TensorFlow Serving calls.
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    outputs = serve(images=tf.constant(pixels))
    return spec.dtype.as_numpy_dtype, outputs["probabilities"].numpy()


def run_onnx(path, pixels):
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    )
    (declared,) = session.get_inputs()
    assert declared.name == "images"
    assert declared.type == "tensor(uint8)"
    (output,) = session.run(["probabilities"], {"images": pixels})
    return np.uint8, output


def run_litert(path, pixels):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    dtype = runner.get_input_details()["images"]["dtype"]
    return dtype, runner(images=pixels)["probabilities"]


RUNTIMES = {
    "saved_model": run_saved_model,
    "onnx": run_onnx,
    "litert": run_litert,
}


def expected_probabilities(model, kind, pixels):
    """Softmax or sigmoid of the logits over the temperature, by SciPy."""
    logits = model.logits_model().predict(pixels.astype("float32"), verbose=0)
    if kind == "multi_label":
        return special.expit(logits / TEMPERATURE)
    return special.softmax(logits, axis=-1)


@pytest.mark.parametrize("kind", ["multi_class", "multi_label"])
@pytest.mark.parametrize("export_format", FORMATS)
def test_artifact_takes_uint8_and_reproduces_the_model(
    export_format, kind, models, exports, tmp_path
):
    model = models[kind]
    if export_format not in SUPPORTED:
        output = tmp_path / "artifact"
        with pytest.raises(ValueError) as error:
            export.export_model(model, export_format, output)
        message = str(error.value)
        assert f"The {BACKEND} backend cannot export" in message
        # It names the backends that can, how to pick one, and what this
        # backend exports instead.
        able = [b for b, formats in SUPPORT.items() if export_format in formats]
        assert all(backend in message for backend in able)
        assert f"--format {export_format} --backend {able[0]}" in message
        assert all(supported in message for supported in SUPPORTED)
        assert not output.exists()
        return
    artifact, _ = exports(kind, export_format)
    for batch in (5, 1):
        pixels = images(batch, model)
        dtype, got = RUNTIMES[export_format](artifact, pixels)
        assert dtype == np.uint8
        keras_probs = model.predict(pixels.astype("float32"), verbose=0)
        np.testing.assert_allclose(got, keras_probs, atol=ATOL)
        expected = expected_probabilities(model, kind, pixels)
        np.testing.assert_allclose(got, expected, atol=ATOL)
    if kind == "multi_label":
        # The temperature visibly changes these outputs: the calibration
        # really is inside the artifact.
        logits = model.logits_model().predict(
            pixels.astype("float32"), verbose=0
        )
        assert np.abs(special.expit(logits) - got).max() > 1e-3


@pytest.mark.parametrize("kind", ["multi_class", "multi_label"])
@pytest.mark.parametrize("export_format", SUPPORTED)
def test_sidecar_describes_the_model(export_format, kind, models, exports):
    model = models[kind]
    artifact, sidecar = exports(kind, export_format)
    assert sidecar == artifact.with_name(artifact.name + ".json")
    info = json.loads(sidecar.read_text())
    assert info["format"] == export_format
    assert info["artifact"] == artifact.name
    assert info["backend"] == BACKEND
    assert info["kerastl_version"] == kerastl.__version__
    assert info["class_names"] == CLASS_NAMES
    assert info["multi_label"] is (kind == "multi_label")
    assert info["thresholds"] == (THRESHOLDS if kind == "multi_label" else None)
    assert info["temperature"] == (TEMPERATURE if kind == "multi_label" else 1)
    assert info["image_size"] == [*model.image_size]
    assert info["input"]["name"] == "images"
    assert info["input"]["dtype"] == "uint8"
    assert info["input"]["shape"] == [None, *model.image_size, 3]
    assert info["output"]["name"] == "probabilities"
    assert info["output"]["shape"] == [None, 3]
    activation = "sigmoid" if kind == "multi_label" else "softmax"
    assert info["output"]["activation"] == activation


def test_export_path_sits_beside_the_model(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.keras").touch()
    assert rundir.export_path(run_dir, "onnx") == (
        run_dir / "export" / "model.onnx"
    )
    assert rundir.export_path(run_dir, "saved_model") == (
        run_dir / "export" / "saved_model"
    )
    model_file = tmp_path / "pets.keras"
    assert rundir.export_path(model_file, "litert") == (
        tmp_path / "pets_export" / "model.tflite"
    )
    preset = tmp_path / "pets_preset"
    preset.mkdir()
    assert rundir.export_path(preset, "onnx") == (
        tmp_path / "pets_preset_export" / "model.onnx"
    )


def test_output_must_fit_the_format(models, tmp_path):
    model = models["multi_class"]
    suffix = SUFFIX[FILE_FORMAT]
    with pytest.raises(ValueError, match=f"end in {suffix}"):
        export.export_model(model, FILE_FORMAT, tmp_path / "model.bin")
    with pytest.raises(ValueError, match="existing folder"):
        export.export_model(model, FILE_FORMAT, tmp_path)
    with pytest.raises(ValueError, match="Unknown export format"):
        export.export_model(model, "tflite", tmp_path / "model.tflite")


@pytest.mark.skipif(
    "saved_model" not in SUPPORTED,
    reason=f"the {BACKEND} backend exports no SavedModel",
)
def test_saved_model_never_replaces_a_folder_of_other_files(models, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="no SavedModel"):
        export.export_model(models["multi_class"], "saved_model", tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(
    "onnx" not in SUPPORTED,
    reason=f"the {BACKEND} backend exports no ONNX, the only format with "
    "optional exporter packages",
)
def test_missing_exporter_says_what_to_install(models, tmp_path, monkeypatch):
    find_spec = export.importlib.util.find_spec
    monkeypatch.setattr(
        export.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnx" else find_spec(name, *a),
    )
    with pytest.raises(ValueError, match=r"kerastl\[export\]") as error:
        export.export_model(models["multi_class"], "onnx", tmp_path / "m.onnx")
    assert "onnx" in str(error.value)


def test_an_artifact_that_differs_is_never_written(
    models, tmp_path, monkeypatch
):
    # A converter that mistranslates an operation: the artifact's outputs
    # are off. The previous export must stay in place.
    run = writers._run_artifact
    monkeypatch.setattr(
        writers, "_run_artifact", lambda *args: run(*args) + 0.01
    )
    output = tmp_path / f"model{SUFFIX[FILE_FORMAT]}"
    output.write_bytes(b"previous export")
    with pytest.raises(ValueError, match="does not reproduce"):
        export.export_model(models["multi_class"], FILE_FORMAT, output)
    assert output.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == [output.name]


def test_cli_export(models, tmp_path):
    model_file = tmp_path / "m.keras"
    models["multi_label"].save(model_file)
    output = tmp_path / "served" / f"model{SUFFIX[FILE_FORMAT]}"
    args = ["export", str(model_file), "--format", FILE_FORMAT]
    result = CliRunner().invoke(cli, [*args, "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert f"Exported {output}" in result.output
    pixels = images(4, models["multi_label"])
    _, got = RUNTIMES[FILE_FORMAT](output, pixels)
    expected = expected_probabilities(
        models["multi_label"], "multi_label", pixels
    )
    np.testing.assert_allclose(got, expected, atol=ATOL)
    info = json.loads((output.parent / f"{output.name}.json").read_text())
    assert info["thresholds"] == THRESHOLDS
