"""The private Keras APIs in `kerastl.utils.keras_internals` still do what
kerastl relies on; when Keras changes them, this file fails first."""

import keras
import numpy as np
import pytest

from kerastl.utils import keras_internals


def nested_model():
    inner = keras.Sequential(
        [keras.layers.Dense(4), keras.layers.BatchNormalization()],
        name="inner",
    )
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="head")(inner(inputs))
    return keras.Model(inputs, outputs), inner


def test_all_layers_reaches_nested_sublayers():
    model, inner = nested_model()
    layers = keras_internals.all_layers(model)
    assert layers[0] is model
    # Parents before their sublayers, each layer once.
    assert layers.index(inner) < layers.index(inner.layers[0])
    assert len({id(x) for x in layers}) == len(layers)
    assert sum(isinstance(x, keras.layers.BatchNormalization) for x in layers)
    children = keras_internals.all_layers(
        model, include_self=False, recursive=False
    )
    assert model not in children and inner in children
    assert inner.layers[0] not in children


def test_forgotten_functions_are_traced_again():
    model, _ = nested_model()
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((4, 3), "float32")
    model.predict(x, verbose=0)
    traced = model.predict_function
    assert traced is not None
    keras_internals.forget_compiled_functions(model)
    assert model.train_function is None
    assert model.test_function is None
    assert model.predict_function is None
    model.predict(x, verbose=0)
    assert model.predict_function is not None
    assert model.predict_function is not traced


def test_build_from_batch_builds_without_reading_the_data():
    model, _ = nested_model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    assert not model.optimizer.built
    batch = (np.zeros((1, 3), "float32"), np.zeros((1, 2), "float32"))
    keras_internals.build_from_batch(model, batch)
    assert model.optimizer.built
    # Adam's two moments exist for every trainable weight, and the compiled
    # metrics hold their state variables, before any data was seen.
    assert len(model.optimizer.variables) >= 2 * len(model.trainable_weights)
    assert all(metric.variables for metric in model.metrics)


@pytest.mark.backends("jax", reason="Keras' JAX convolution")
def test_wrap_jax_conv_reaches_keras_convolution_layers():
    from keras.src.backend.jax import nn as jax_nn

    calls = []
    before = jax_nn.conv

    def counting(conv):
        def wrapped(*args, **kwargs):
            calls.append(args[0].shape)
            return conv(*args, **kwargs)

        return wrapped

    try:
        keras_internals.wrap_jax_conv(counting)
        layer = keras.layers.Conv2D(2, 3, padding="same")
        out = layer(np.ones((1, 5, 5, 3), "float32"))
    finally:
        jax_nn.conv = before
    assert calls == [(1, 5, 5, 3)]
    # 3x3 of ones over 3 channels: the centre sees all 27 kernel taps.
    kernel = np.asarray(layer.kernel).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(out)[0, 2, 2], kernel, rtol=1e-5)


def test_wrapped_call_reads_and_replaces_a_nested_layers_input():
    model, inner = nested_model()
    head = model.get_layer("head")
    x = np.ones((2, 3), "float32")
    before = keras.ops.convert_to_numpy(model(x))
    seen = []

    def zero_input(call, inputs, *args, **kwargs):
        seen.append(keras.ops.convert_to_numpy(inputs))
        return call(keras.ops.zeros_like(inputs), *args, **kwargs)

    with keras_internals.wrapped_call(head, zero_input):
        # Inside a functional model's graph too: the head's input is the
        # inner model's output, and zeros leave only the bias.
        replaced = keras.ops.convert_to_numpy(model(x))
        with (
            pytest.raises(ValueError, match="already"),
            keras_internals.wrapped_call(head, zero_input),
        ):
            pass
    np.testing.assert_allclose(seen[0], keras.ops.convert_to_numpy(inner(x)))
    bias = keras.ops.convert_to_numpy(head.bias)
    np.testing.assert_allclose(replaced, np.tile(bias, (2, 1)))
    # Unwrapped again: the layer's own call.
    assert "call" not in vars(head)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), before)


def test_attention_weights_are_returned_unless_flash_attention_is_on():
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    x = np.random.default_rng(0).random((1, 5, 8)).astype("float32")
    _, scores = attention(x, x, return_attention_scores=True)
    assert tuple(scores.shape) == (1, 2, 5, 5)
    assert not keras_internals.flash_attention(attention)
    flash = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=4, flash_attention=True
    )
    assert keras_internals.flash_attention(flash)
