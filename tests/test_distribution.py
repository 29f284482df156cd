import json
import os
import pathlib
import subprocess
import sys
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics

from kerastl.utils import distribution

BACKEND = keras.config.backend()
CHECK_SCRIPT = pathlib.Path(__file__).with_name("distributed_check.py")


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    """`distributed_check.py`'s results on two virtual CPU devices."""
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        KERAS_BACKEND=BACKEND,
    )
    work = tmp_path_factory.mktemp("two-devices")
    done = subprocess.run(
        [sys.executable, str(CHECK_SCRIPT), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    return json.loads(lines[-1].removeprefix("RESULT "))


# Every test that uses the `two_devices` fixture.
needs_data_parallel = pytest.mark.skip_backends(
    "torch", reason="Keras has no data-parallel training on PyTorch here"
)


@needs_data_parallel
def test_data_parallel_follows_the_one_device_loss_trajectory(two_devices):
    one, two = two_devices["none"], two_devices["data-parallel"]
    assert one["devices"] == ["cpu:0"]
    assert two["devices"] == ["cpu:0", "cpu:1"]
    # Same start, same global batches: the same updates, up to the order
    # in which the two halves' gradients are summed.
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    assert one["loss"][-1] < one["loss"][0]


@needs_data_parallel
def test_padded_rows_of_uneven_batches_do_not_count(two_devices):
    for mode in ("none", "data-parallel"):
        result = two_devices[mode]
        labels = np.array(result["predicted_labels"])
        logits = np.array(result["predicted_logits"])
        assert labels.tolist() == (np.arange(21) % 3).tolist()
        expected = metrics.accuracy_score(labels, logits.argmax(-1))
        assert result["uneven_accuracy"] == pytest.approx(expected)
    # After three training steps whose gradients were summed in another
    # order (and per-device batches that XLA tiles differently), float32
    # logits of about 1 agree to about 1e-5; CI measured 2.1e-5 apart.
    np.testing.assert_allclose(
        two_devices["data-parallel"]["predicted_logits"],
        two_devices["none"]["predicted_logits"],
        atol=1e-4,
    )


@needs_data_parallel
def test_fit_recipe_trains_data_parallel(two_devices):
    run = two_devices["run"]
    assert run["devices"] == ["cpu:0", "cpu:1"]
    # All 21 validation images, none of the padding.
    assert run["splits"]["validation"]["num_examples"] == 21


@pytest.mark.backends("torch", reason="what the PyTorch backend says")
@pytest.mark.skipif(
    distribution._keras_supports_torch_distribution(),
    reason="this Keras trains data parallel on PyTorch",
)
def test_pytorch_says_it_trains_on_one_device():
    placement = distribution.placement("data-parallel")
    assert placement.replicas == 1
    assert "cannot train data parallel on the PyTorch backend" in (
        placement.note
    )


def test_even_batches_pads_with_rows_of_weight_zero():
    placement = distribution.Placement(
        "data-parallel", ["cpu:0", "cpu:1"], "", _shards_evenly=True
    )
    images = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    labels = np.array([1, 2, 3, 4, 5])
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(3)
    batches = list(placement.even_batches(dataset).as_numpy_iterator())
    (x1, y1, w1), (x2, y2, w2) = batches
    np.testing.assert_array_equal(w1, [1, 1, 1, 0])
    np.testing.assert_array_equal(y1, [1, 2, 3, 0])
    np.testing.assert_array_equal(x1[3], [0, 0])
    np.testing.assert_array_equal(w2, [1, 1])
    np.testing.assert_array_equal(x2, images[3:])
    one_device = distribution.Placement("none", ["cpu:0"], "")
    assert one_device.even_batches(dataset) is dataset


def test_global_batch_must_split_evenly():
    placement = distribution.Placement("data-parallel", ["gpu:0", "gpu:1"], "")
    placement.check_batch_size(32)
    with pytest.raises(ValueError, match="multiple of 2"):
        placement.check_batch_size(33)


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="auto, none, data-parallel"):
        distribution.placement("model-parallel")


def test_auto_stays_on_one_cpu():
    placement = distribution.placement("auto")
    assert placement.replicas == 1
    assert placement.note.startswith("one device: cpu")


@pytest.mark.parametrize(
    "policy, env",
    [
        (None, {}),
        ("grow", {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}),
        ("preallocate", {"XLA_PYTHON_CLIENT_PREALLOCATE": "true"}),
        (
            "0.5",
            {
                "XLA_PYTHON_CLIENT_PREALLOCATE": "true",
                "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5",
            },
        ),
    ],
)
def test_gpu_memory_policy_for_jax(policy, env):
    assert distribution.jax_memory_env(policy) == env


@pytest.mark.parametrize("policy", ["all", "0", "1.5"])
def test_bad_gpu_memory_policy(policy):
    with pytest.raises(ValueError, match="'grow'"):
        distribution.check_gpu_memory(policy)


def test_tensorflow_stays_off_the_gpus_of_other_backends():
    with mock.patch.object(tf.config, "set_visible_devices") as hide:
        distribution.prepare_process()
    if BACKEND == "tensorflow":
        hide.assert_not_called()
    else:
        hide.assert_called_once_with([], "GPU")
