"""`import kerastl` as a Keras user expects it, each case in a fresh process.

What is checked happens at import time, so every test runs a new Python
on the backend under test: `keras.models.load_model` finds kerastl's classes
whichever of kerastl and Keras comes first, TensorFlow's native start-up
lines stay off stderr, and `import kerastl` alone imports no Keras (the CLI
chooses the backend after it).
"""

import ast
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# What TensorFlow's and absl's C++ logging prints at start-up (absl's
# I/W/E prefixes, oneDNN, the CPU-feature and CUDA probes).
NATIVE_LOG_MARKERS = (
    "absl::InitializeLog",
    "I0000",
    "W0000",
    "E0000",
    "oneDNN",
    "cpu_feature_guard",
    "cudart_stub",
    "tensorflow/core",
)

SAVE = """
import sys

import keras
import numpy as np

import kerastl
from kerastl.train import optimizers
import kit

out = sys.argv[1]
images = kit.random_images(4).astype("float32")
np.save(f"{out}/images.npy", images)

keras.utils.set_random_seed(0)
backbone, converter = kit.tiny_resnet()
softmax = kerastl.TransferClassifier(
    backbone=backbone, image_converter=converter, num_classes=3
)
# Soft labels compile kerastl's own loss and metric into the file.
softmax.compile(soft_labels=True)

backbone, converter = kit.tiny_resnet()
multi_label = kerastl.TransferClassifier(
    backbone=backbone,
    image_converter=converter,
    num_classes=3,
    multi_label=True,
    temperature=2.0,
    thresholds=[0.3, 0.5, 0.7],
)
multi_label.compile(
    optimizer=optimizers.LayerwiseAdam(
        1e-3,
        lr_multipliers=optimizers.layer_decay_multipliers(multi_label, 0.5),
    )
)
for name, model in [("softmax", softmax), ("multi_label", multi_label)]:
    model.save(f"{out}/{name}.keras")
    np.save(f"{out}/{name}.npy", model.predict(images, verbose=0))
"""

LOAD = """
import json
import sys

import numpy as np

out, order = sys.argv[1:]
registered = sorted(
    name for name in keras.saving.get_custom_objects()
    if name.startswith("kerastl>")
)
images = np.load(f"{out}/images.npy")
loaded = {}
for name in ("softmax", "multi_label"):
    model = keras.models.load_model(f"{out}/{name}.keras")
    np.save(f"{out}/{name}-{order}.npy", model.predict(images, verbose=0))
    loaded[name] = {
        "class": f"{type(model).__module__}.{type(model).__name__}",
        "temperature": float(model.temperature),
        "thresholds": model.thresholds,
        "optimizer": type(model.optimizer).__name__,
        "loss": type(model.loss).__name__,
    }
print(json.dumps({"registered": registered, "loaded": loaded}))
"""

IMPORTS = {
    "kerastl-first": "import kerastl\nimport keras\n",
    "keras-first": "import keras\nimport kerastl\n",
}


def run_python(code, *args):
    """Runs `code` in a new Python on this backend; returns the result.

    The child does not inherit the `TF_CPP_MIN_LOG_LEVEL` that conftest.py
    sets, nor `KERASTL_VERBOSE`, so it starts as a user's Python would.
    """
    env = dict(os.environ, KERAS_BACKEND=keras.config.backend())
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("KERASTL_VERBOSE", None)
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result


def native_log_lines(stderr):
    return [
        line
        for line in stderr.splitlines()
        if any(marker in line for marker in NATIVE_LOG_MARKERS)
    ]


def serializable_names():
    """`kerastl>Class` for each class kerastl decorates as serializable,
    read from the source rather than from what Keras registered."""
    names = []
    for path in sorted((REPO / "kerastl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                "register_keras_serializable" in ast.unparse(decorator)
                for decorator in node.decorator_list
            ):
                names.append(f"kerastl>{node.name}")
    return sorted(names)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("saved")
    run_python(SAVE, out)
    return out


CLASSIFIER = "kerastl.models.classifier.TransferClassifier"


def test_import_kerastl_imports_no_framework():
    result = run_python(
        "import sys\n"
        "import kerastl.cli\n"
        "frameworks = ('keras', 'keras_hub', 'tensorflow', 'jax', 'torch')\n"
        "print([name for name in frameworks if name in sys.modules])\n"
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("order", list(IMPORTS), ids=list(IMPORTS))
def test_load_model_finds_kerastl_classes(saved, order):
    result = run_python(IMPORTS[order] + LOAD, saved, order)
    report = json.loads(result.stdout.splitlines()[-1])

    assert report["registered"] == serializable_names()
    softmax, multi_label = report["loaded"].values()
    assert softmax["class"] == CLASSIFIER
    assert softmax["loss"] == "SoftTargetCrossentropy"
    assert (
        multi_label["class"] == "kerastl.models.classifier.TransferClassifier"
    )
    assert multi_label["temperature"] == 2.0
    assert multi_label["thresholds"] == [0.3, 0.5, 0.7]
    assert multi_label["optimizer"] == "LayerwiseAdam"
    for name in ("softmax", "multi_label"):
        np.testing.assert_allclose(
            np.load(saved / f"{name}-{order}.npy"),
            np.load(saved / f"{name}.npy"),
            atol=1e-5,
            rtol=0,
        )


@pytest.mark.parametrize(
    "code",
    [
        "import kerastl\nkerastl.TransferClassifier\n",
        "import kerastl\nimport keras\n",
    ],
    ids=["model-class", "then-keras"],
)
def test_imports_print_no_native_logs(code):
    stderr = run_python(code).stderr
    assert native_log_lines(stderr) == [], stderr
