"""JAX on CPU: convolutions whose output is smaller than their kernel.

XLA's CPU convolution falls off a cliff when a convolution's output is
smaller than its kernel: a 3x3 convolution of 512 channels over a 2x2
feature map (batch 32) runs at 2.2 GFLOP/s on this project's CPU, against
160 to 190 GFLOP/s for 3x3 maps and larger, and 9.5 GFLOP/s over a 1x1
map; the gradient of a stride-2 3x3 convolution from 4x4 to 2x2 takes
71 ms instead of 7. A ResNet's last stage has such maps whenever its input is
under 96 px: at 64 px, keras-hub's ResNet-18 spent 810 of its 870 ms per
predicted batch of 32 in them, and trained 10x slower on JAX than on
TensorFlow (1.7x with this module). The XLA flags that change CPU
convolutions (the thunk runtime, oneDNN, XNNPACK, the fusion emitters) do
not help (docs/benchmarks.md, "JAX on CPU"), so kerastl sets none.

`install()` makes Keras' JAX convolution compute those convolutions, and
only those (larger maps are faster through XLA), as an im2col matrix
product (the kernel's taps gathered, then one `einsum`), which XLA runs at
full speed: 5 ms instead of 270 for the case above, equal within float32
rounding, gradients included. Every other
convolution goes to XLA unchanged, and so does every convolution while
JAX's default backend is a GPU or TPU, and every one traced with a
symbolic size (an export, whose converters reproduce XLA's convolution).
"""

import functools

from kerastl.utils import keras_internals

_state = {}
# Below this many input x output channels a convolution over a tiny map
# takes well under a millisecond even on XLA's slow path (16 x 16
# channels, batch 32, 2x2 map: about 0.3 ms), and the rewrite would only
# add compile time; ResNets' last stages have 256 x 256 and more.
_MIN_CHANNEL_PAIRS = 128 * 128


def _is_small(inputs, kernel, strides, padding, data_format, dilation_rate):
    """Whether a convolution has the slow shape: 2-D, channels last, not
    grouped, not dilated, at least `_MIN_CHANNEL_PAIRS` channels, output
    smaller than the kernel."""
    if inputs.ndim != 4 or data_format != "channels_last":
        return False
    if not all(isinstance(size, int) for size in inputs.shape):
        # A symbolic size: the function is being exported (a batch size
        # left open), to run elsewhere; TFLite reproduces XLA's convolution
        # there, not this rewrite.
        return False
    if any(value != 1 for value in _pair(dilation_rate)):
        return False
    if kernel.shape[2] != inputs.shape[3]:
        return False
    if kernel.shape[2] * kernel.shape[3] < _MIN_CHANNEL_PAIRS:
        return False
    output = _output_size(
        inputs.shape[1:3], kernel.shape[:2], _pair(strides), padding
    )
    return all(
        out < size for out, size in zip(output, kernel.shape[:2], strict=True)
    )


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _output_size(spatial, kernel_size, strides, padding):
    if padding.lower() == "same":
        return tuple(
            -(-size // step)
            for size, step in zip(spatial, strides, strict=True)
        )
    return tuple(
        (size - k) // step + 1
        for size, k, step in zip(spatial, kernel_size, strides, strict=True)
    )


def _im2col_conv(inputs, kernel, strides, padding):
    """A 2-D convolution as one matrix product (channels last)."""
    import jax.numpy as jnp
    from jax import lax

    kernel_size = kernel.shape[:2]
    strides = _pair(strides)
    output = _output_size(inputs.shape[1:3], kernel_size, strides, padding)
    if padding.lower() == "same":
        # XLA's (and TensorFlow's) "same": the odd pixel of padding goes
        # after.
        totals = [
            max((out - 1) * step + k - size, 0)
            for out, step, k, size in zip(
                output, strides, kernel_size, inputs.shape[1:3], strict=True
            )
        ]
        inputs = jnp.pad(
            inputs,
            ((0, 0), *((t // 2, t - t // 2) for t in totals), (0, 0)),
        )
    # Slices, not indexing, which can become a gather.
    rows = [
        lax.slice_in_dim(
            inputs, i, i + (output[0] - 1) * strides[0] + 1, strides[0], axis=1
        )
        for i in range(kernel_size[0])
    ]
    taps = jnp.stack(
        [
            lax.slice_in_dim(
                row, j, j + (output[1] - 1) * strides[1] + 1, strides[1], axis=2
            )
            for row in rows
            for j in range(kernel_size[1])
        ],
        axis=3,
    )
    weights = kernel.reshape(-1, *kernel.shape[2:])
    return jnp.einsum("nhwkc,kco->nhwo", taps, weights)


def install():
    """Routes Keras' small-output JAX convolutions through `einsum` on CPU.

    Does nothing unless Keras runs on JAX; calling it again is harmless.

    Example:
    ```python
    kerastl.utils.jax_cpu.install()
    ```
    """
    import keras

    if keras.config.backend() != "jax" or _state.get("installed"):
        return
    keras_internals.wrap_jax_conv(_small_maps_by_einsum)
    _state["installed"] = True


def _small_maps_by_einsum(xla_conv):
    import jax
    import keras

    @functools.wraps(xla_conv)
    def conv(
        inputs,
        kernel,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
    ):
        data_format = data_format or keras.config.image_data_format()
        if jax.default_backend() == "cpu" and _is_small(
            inputs, kernel, strides, padding, data_format, dilation_rate
        ):
            kernel = jax.numpy.asarray(kernel)
            inputs = jax.numpy.asarray(inputs, dtype=kernel.dtype)
            return _im2col_conv(inputs, kernel, strides, padding)
        return xla_conv(
            inputs, kernel, strides, padding, data_format, dilation_rate
        )

    return conv
