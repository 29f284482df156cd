"""Small-output convolutions as matrix products on JAX's CPU backend."""

import keras
import numpy as np
import pytest

import kerastl
from kerastl.bench import peers
from kerastl.utils import jax_cpu

pytestmark = pytest.mark.backends(
    "jax", reason="rewrites Keras' JAX convolution only"
)


@pytest.fixture(autouse=True)
def installed():
    # What any use of kerastl's models does first.
    kerastl.TransferClassifier  # noqa: B018
    from keras.src.backend.jax import nn as jax_nn

    return jax_nn.conv


def _xla(conv):
    """Keras' own JAX convolution, as it was before `install`."""
    return conv.__wrapped__


CASES = [
    # (input shape, kernel shape, strides, padding): outputs smaller than
    # kernels.
    ((2, 2, 2, 128), (3, 3, 128, 128), 1, "same"),
    ((2, 1, 1, 128), (3, 3, 128, 128), 1, "same"),
    ((2, 4, 5, 128), (3, 3, 128, 128), 1, "valid"),
    ((2, 2, 3, 128), (5, 3, 128, 128), 1, "same"),
    ((2, 4, 4, 128), (3, 3, 128, 128), 2, "same"),
    ((2, 3, 4, 128), (3, 3, 128, 128), (2, 2), "same"),
    ((2, 6, 5, 128), (3, 3, 128, 128), 2, "valid"),
]


@pytest.mark.parametrize(
    "shapes",
    CASES,
    ids=["2x2", "1x1", "valid", "5x3", "stride-2", "odd-stride-2", "valid-2"],
)
def test_small_maps_match_xla_values_and_gradients(installed, shapes):
    import jax

    input_shape, kernel_shape, strides, padding = shapes
    rng = np.random.default_rng(0)
    x = rng.normal(size=input_shape).astype("float32")
    w = rng.normal(size=kernel_shape).astype("float32")

    def loss(conv):
        return lambda x, w: (
            conv(x, w, 1, padding, "channels_last", 1) ** 2
        ).sum()

    ours = installed(x, w, strides, padding, "channels_last", 1)
    xla = _xla(installed)(x, w, strides, padding, "channels_last", 1)
    assert ours.shape == xla.shape
    np.testing.assert_allclose(ours, xla, rtol=1e-5, atol=1e-4)
    for a, b in zip(
        jax.grad(loss(installed), argnums=(0, 1))(x, w),
        jax.grad(loss(_xla(installed)), argnums=(0, 1))(x, w),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_only_small_maps_on_the_cpu_take_the_matrix_product(
    installed, monkeypatch
):
    import jax

    calls = []
    im2col = jax_cpu._im2col_conv
    monkeypatch.setattr(
        jax_cpu, "_im2col_conv", lambda *a: calls.append(a) or im2col(*a)
    )
    w = np.ones((3, 3, 128, 128), "float32")

    def conv(shape, **kwargs):
        arguments = dict(strides=1, padding="same", data_format=None)
        arguments.update(kwargs)
        installed(np.ones(shape, "float32"), w, **arguments)
        return len(calls)

    assert conv((1, 2, 2, 128)) == 1
    assert conv((1, 3, 3, 128)) == 1  # 3x3 maps: XLA is fast there
    assert conv((1, 6, 6, 128), strides=2) == 1  # 3x3 out: XLA is fast
    assert conv((1, 4, 4, 128), strides=2) == 2  # 2x2 out
    small = np.ones((3, 3, 16, 16), "float32")
    installed(np.ones((1, 2, 2, 16), "float32"), small, 1, "same", None, 1)
    assert len(calls) == 2  # few channels: fast enough through XLA
    assert conv((1, 128, 2, 2), data_format="channels_first") == 2
    # Exported with the batch size left open, to run elsewhere (TFLite):
    # XLA's own convolution, which the converters reproduce.
    (batch,) = jax.export.symbolic_shape("b")
    exported = jax.export.export(
        jax.jit(lambda x: installed(x, w, 1, "same", None, 1))
    )(jax.ShapeDtypeStruct((batch, 2, 2, 128), "float32"))
    assert exported.out_avals[0].shape[1:] == (2, 2, 128)
    assert len(calls) == 2
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert conv((1, 2, 2, 128)) == 2  # never on a GPU or TPU


def test_a_resnet_at_64_px_predicts_as_with_xla(installed, monkeypatch):
    import jax

    backbone, _ = peers.built_in_backbone("resnet18", 64)
    images = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3))
    ours = np.asarray(backbone(images.astype("float32")))
    # The same layers, every convolution through XLA.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    xla = np.asarray(backbone(images.astype("float32")))
    assert ours.shape == (2, 2, 2, 512)
    np.testing.assert_allclose(ours, xla, rtol=1e-4, atol=1e-4)
    assert keras.config.backend() == "jax"
