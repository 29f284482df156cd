"""Gradients through the backend's own autodiff, in one place.

Keras 3 trains through each backend's autodiff but has no public,
backend-neutral `gradient(f, x)` for use outside `fit`. Saliency maps
(`kerastl.evaluate.explain`) need one: TensorFlow's `GradientTape`,
`jax.grad` and PyTorch's autograd each differentiate a function of a tensor,
and this module is the only place in kerastl that knows which one runs.
"""

import contextlib

import keras


def value_and_gradient(fn, x):
    """`fn(x)` and its gradient with respect to `x`, as NumPy arrays.

    `fn` must be a pure function of `x` as far as the gradient goes: it may
    call Keras layers and models eagerly (inference mode, no variable
    updates), and must return a scalar tensor.

    Args:
        fn: callable from a tensor shaped like `x` to a scalar tensor.
        x: a backend tensor or NumPy array; the point to differentiate at.

    Returns:
        `(value, gradient)`: a float and an array shaped like `x`.

    Example:
    ```python
    from kerastl.utils import autodiff

    value, grad = autodiff.value_and_gradient(
        lambda t: keras.ops.sum(t**2), np.array([1.0, 2.0])
    )
    grad  # array([2., 4.])
    ```
    """
    backend = keras.config.backend()
    x = keras.ops.convert_to_tensor(x)
    if backend == "tensorflow":
        import tensorflow as tf

        # Only what depends on `x`: the model's weights are not watched.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            value = fn(x)
        grad = tape.gradient(value, x)
    elif backend == "jax":
        import jax

        value, grad = jax.value_and_grad(fn)(x)
    elif backend == "torch":
        import torch

        # A leaf of its own: `x` may be the output of a graph that must not
        # receive the gradient (or was built under `no_grad`).
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = fn(x)
            (grad,) = torch.autograd.grad(value, x)
    else:
        raise ValueError(
            "kerastl differentiates on the tensorflow, jax and torch backends "
            f"only. Received: backend={backend!r}"
        )
    return float(to_numpy(value)), to_numpy(grad)


def to_numpy(x):
    """A backend tensor as a float32 NumPy array.

    `keras.ops.convert_to_numpy` goes through `np.array(tensor)` on
    PyTorch, which NumPy 2 warns about for every tensor (torch's
    `__array__` takes no `copy` argument); torch's own `.numpy()` does not.

    Example:
    ```python
    autodiff.to_numpy(model(images))  # float32 ndarray
    ```
    """
    x = keras.ops.cast(x, "float32")
    if keras.config.backend() == "torch":
        return x.detach().cpu().numpy()
    return keras.ops.convert_to_numpy(x)


def no_gradient():
    """A context in which eager calls record nothing for autodiff.

    PyTorch records every eager operation on weights that require
    gradients, so a forward pass only read from would hold the memory of
    a backward pass; TensorFlow and JAX record only inside
    `value_and_gradient`.

    Example:
    ```python
    with autodiff.no_gradient():
        logits = model(images)
    ```
    """
    if keras.config.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()
