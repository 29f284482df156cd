"""The private Keras APIs kerastl needs, in one place.

Keras 3 has no public way to do the things below, so kerastl calls Keras'
own private methods, or relies on how Keras calls a layer, here and nowhere
else. Checked against Keras
3.15.1 (`keras/src/layers/layer.py`, `keras/src/trainers/trainer.py`,
`keras/src/backend/jax/nn.py`, `keras/src/ops/operation.py`,
`keras/src/layers/attention/multi_head_attention.py`); when
Keras changes, this is the one module to update, and `tests/test_keras_
internals.py` is the test that says so.
"""

import contextlib
import functools


def all_layers(layer, include_self=True, recursive=True):
    """Every layer inside `layer`, parents before their sublayers.

    `Model.layers` lists only a functional model's own nodes, not the layers
    nested inside them (a keras-hub backbone's blocks, a converter's
    `Resizing`); `Layer._flatten_layers` walks them all.

    Args:
        layer: a `keras.layers.Layer` or `keras.Model`.
        include_self: bool. Whether `layer` itself comes first.
        recursive: bool. Whether to descend below the direct children.

    Returns:
        A list of layers, each once.

    Example:
    ```python
    from kerastl.utils.keras_internals import all_layers

    [type(x).__name__ for x in all_layers(model.backbone)][:3]
    ```
    """
    return list(
        layer._flatten_layers(include_self=include_self, recursive=recursive)
    )


def forget_compiled_functions(model):
    """Makes the next `fit`, `evaluate` and `predict` trace anew.

    Keras traces `train_function`, `test_function` and `predict_function`
    once and caches them; a change those traces captured as a constant (a
    temperature, a trainable flag) needs them traced again. `compile` does
    this by setting them to `None`, which is all this does, without
    replacing the optimizer and metrics the way `compile` would.

    Args:
        model: a compiled `keras.Model`.

    Example:
    ```python
    from kerastl.utils.keras_internals import forget_compiled_functions

    forget_compiled_functions(model)  # the next predict() retraces
    ```
    """
    model.train_function = None
    model.test_function = None
    model.predict_function = None


def build_from_batch(model, data_batch):
    """Builds a compiled model's loss, metrics and optimizer from one batch.

    `fit` builds them from a batch it pulls off the data on JAX and
    PyTorch, which shifts a stream shared by several `fit` calls by one
    batch. `Trainer._symbolic_build(data_batch=...)` builds them from a
    given batch (zeros of the right shapes) instead and pulls nothing.

    Args:
        model: a compiled `keras.Model`.
        data_batch: a batch shaped like the training data, e.g.
            `(images, labels)` of batch size 1.

    Example:
    ```python
    from kerastl.utils.keras_internals import build_from_batch

    build_from_batch(model, (np.zeros((1, 32, 32, 3)), np.zeros((1,))))
    ```
    """
    model._symbolic_build(data_batch=data_batch)


def wrap_jax_conv(wrapper):
    """Replaces Keras' JAX convolution by `wrapper(original)`.

    Every Keras convolution layer and `keras.ops.conv` on the JAX backend
    reaches XLA through `keras.src.backend.jax.nn.conv`, looked up at each
    call; kerastl routes the shapes XLA's CPU convolution is slow at
    elsewhere (`kerastl.utils.jax_cpu`).

    Args:
        wrapper: callable taking Keras' `conv(inputs, kernel, strides,
            padding, data_format, dilation_rate)` and returning one with
            the same signature.

    Example:
    ```python
    wrap_jax_conv(lambda conv: functools.partial(conv, padding="same"))
    ```
    """
    from keras.src.backend.jax import nn as jax_nn

    jax_nn.conv = wrapper(jax_nn.conv)


@contextlib.contextmanager
def wrapped_call(layer, wrapper):
    """Routes `layer`'s calls through `wrapper` inside the `with` block.

    Keras has no forward hooks. It does look `call` up on the layer at
    each call (`Operation.__call__` runs `self.call`), on every backend and
    also inside a functional model's graph, so an instance attribute
    `call` stands in for the method until it is deleted again. kerastl uses
    it to read (and replace) the tensor entering a transformer block, and
    to ask attention layers for their scores.

    Args:
        layer: a `keras.layers.Layer` that is not already wrapped.
        wrapper: callable `wrapper(call, *args, **kwargs)`, given the
            layer's own bound `call` and the call's arguments.

    Example:
    ```python
    from kerastl.utils.keras_internals import wrapped_call

    def traced(call, x, **kwargs):
        print(x.shape)
        return call(x, **kwargs)

    with wrapped_call(block, traced):
        model(images)
    ```
    """
    if "call" in vars(layer):
        raise ValueError(
            f"Layer {layer.name!r} already has its `call` replaced; kerastl "
            "wraps a layer once at a time."
        )
    layer.call = functools.partial(wrapper, type(layer).call.__get__(layer))
    try:
        yield layer
    finally:
        del layer.call


def flash_attention(attention):
    """Whether a `MultiHeadAttention` layer computes with flash attention.

    Flash attention never forms the attention weights, so the layer refuses
    `return_attention_scores=True`; the setting is fixed when the layer is
    built (from `keras.config.is_flash_attention_enabled()`) and kept in
    a private attribute.

    Args:
        attention: a `keras.layers.MultiHeadAttention`.

    Example:
    ```python
    from kerastl.utils.keras_internals import flash_attention

    flash_attention(block.mha)  # False
    ```
    """
    return bool(attention._flash_attention)
