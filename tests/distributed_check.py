"""Trains on one device and data parallel on two, in one process; prints JSON.

`tests/test_distribution.py` runs this in a subprocess: the two devices
must exist before the backend starts (JAX: `XLA_FLAGS=
--xla_force_host_platform_device_count=2`; TensorFlow: two logical CPUs,
configured below), which a pytest process that already imported Keras
cannot do.

Usage: python tests/distributed_check.py WORK_DIR
"""

import json
import pathlib
import sys

import keras
import numpy as np
import tensorflow as tf

if keras.config.backend() == "tensorflow":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import kit  # noqa: E402

import kerastl  # noqa: E402
from kerastl.data import DataSpec  # noqa: E402
from kerastl.evaluate import metrics  # noqa: E402
from kerastl.runs import fit  # noqa: E402
from kerastl.utils import distribution  # noqa: E402

work = pathlib.Path(sys.argv[1])
preset = work / "tiny_vit"
kit.save_tiny_preset("vit", preset)
keras.utils.set_random_seed(0)
images = kit.random_images(21)
labels = np.arange(21) % 3
even = tf.data.Dataset.from_tensor_slices((images[:16], labels[:16])).batch(8)
# 21 examples in batches of 8: the last batch (5) does not split over 2.
uneven = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
weights = work / "start.weights.h5"
kerastl.TransferClassifier.from_preset(preset, num_classes=3).save_weights(
    weights
)

result = {}
for mode in ("none", "data-parallel"):
    placement = distribution.placement(mode)
    with placement.scope():
        model = kerastl.TransferClassifier.from_preset(preset, num_classes=3)
        model.load_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        history = model.fit(placement.even_batches(even), epochs=3, verbose=0)
        scores = model.evaluate(
            placement.even_batches(uneven), return_dict=True, verbose=0
        )
        predicted = metrics.predict_split(model, placement.even_batches(uneven))
    result[mode] = {
        "devices": placement.devices,
        "loss": history.history["loss"],
        "uneven_accuracy": scores["accuracy"],
        "predicted_labels": predicted.labels.tolist(),
        "predicted_logits": predicted.logits.tolist(),
    }

# The whole `kerastl fit` path: placement, padding, training, evaluation.
recipe = kerastl.Recipe(
    name="distributed",
    preset=str(preset),
    data=DataSpec(
        "arrays",
        arrays={"train": (images, labels), "validation": (images, labels)},
    ),
    stages=(kerastl.Stage(epochs=1),),
    batch_size=8,
    distribute="data-parallel",
)
run_dir = fit.fit_recipe(recipe, output_dir=work / "run", print_fn=print)
result["run"] = json.loads((run_dir / "metrics.json").read_text())
print("RESULT " + json.dumps(result))
