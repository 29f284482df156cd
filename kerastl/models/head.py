"""The classification head: pooling, dropout, an optional hidden layer,
the output layer and temperature scaling, built the same on every backend.
"""

import random

import keras
import numpy as np

from kerastl.models import backbones
from kerastl.models import decisions
from kerastl.models.pooling import POOLING_MODES
from kerastl.models.pooling import FeaturePooling


def head_layers(
    backbone,
    num_classes,
    *,
    multi_label,
    activation,
    pooling,
    dropout,
    hidden_dim,
    temperature,
    dtype,
):
    """The head's layers, in the order the features pass through them.

    Args:
        backbone: the keras-hub backbone the head sits on (its family
            decides `"auto"` pooling and the prefix tokens to skip).
        num_classes: int.
        multi_label: bool. Sigmoid head if `True`.
        activation: `"auto"`, `"softmax"`, `"sigmoid"` or `None` (logits).
        pooling: `"auto"` or one of `POOLING_MODES`.
        dropout: float. Dropout rate before the output layer.
        hidden_dim: int or `None`. Width of an optional ReLU layer.
        temperature: float > 0.
        dtype: the head's dtype policy (float32 under mixed precision).

    Returns:
        `(pooler, dropout, hidden or None, output_dense,
        temperature_scaling)`.

    Example:
    ```python
    layers = kerastl.models.head.head_layers(
        backbone, 37, multi_label=False, activation="auto", pooling="auto",
        dropout=0.0, hidden_dim=None, temperature=1.0, dtype="float32",
    )
    ```
    """
    output_activation = activation
    if activation == "auto":
        output_activation = "sigmoid" if multi_label else "softmax"
    mode = backbones.auto_pooling(backbone) if pooling == "auto" else pooling
    pooler = FeaturePooling(
        mode,
        num_prefix_tokens=backbones.num_prefix_tokens(backbone),
        dtype=dtype,
        name="pooler",
    )
    head_dropout = keras.layers.Dropout(
        dropout,
        # An explicit seed puts the masks under a SeedGenerator whose state
        # checkpoints save; unseeded dropout on torch draws from torch's
        # global generator, which a resumed run cannot replay. Drawn from
        # Python's generator, so `set_random_seed` fixes it.
        seed=random.randrange(2**31),
        dtype=dtype,
        name="head_dropout",
    )
    hidden = None
    if hidden_dim:
        hidden = keras.layers.Dense(
            hidden_dim, activation="relu", dtype=dtype, name="head_hidden"
        )
    output_dense = keras.layers.Dense(
        num_classes, dtype=dtype, name="predictions"
    )
    scaling = decisions.TemperatureScaling(
        temperature, output_activation, dtype=dtype, name="temperature_scaling"
    )
    return pooler, head_dropout, hidden, output_dense, scaling


def input_shape(backbone, image_converter):
    """`(height, width, channels)` of the images the classifier takes: the
    converter's size when it has one, else the backbone's input.

    Example:
    ```python
    kerastl.models.head.input_shape(backbone, converter)  # (224, 224, 3)
    ```
    """
    _, backbone_input = backbones.image_input(backbone)
    shape = tuple(backbone_input.shape[1:])
    if image_converter.image_size is not None:
        shape = (*image_converter.image_size, shape[-1])
    return shape


def logits(inputs, image_converter, backbone, layers):
    """The logits of `inputs`, as a symbolic tensor: the converter, the
    backbone, then the head's layers up to and including the output layer.

    Args:
        inputs: the classifier's `keras.Input` of raw images.
        image_converter: the preset's image converter.
        backbone: the keras-hub backbone.
        layers: the head's layers before temperature scaling, `None` for
            an absent one (`head_layers(...)[:4]`).

    Example:
    ```python
    x = kerastl.models.head.logits(inputs, converter, backbone, layers[:4])
    ```
    """
    x = image_converter(inputs)
    input_key = backbones.image_input(backbone)[0]
    x = backbone({input_key: x} if input_key else x)
    for layer in layers:
        if layer is not None:
            x = layer(x)
    return x


def initialize_dense(*layers):
    """Gives the head's Dense kernels the same start on every backend.

    Keras draws initial weights from the backend's own generator, so one
    seed gives three different heads on three backends. NumPy's generator
    (which `keras.utils.set_random_seed` seeds too) gives every backend the
    same start, and a recipe the same run.

    Example:
    ```python
    kerastl.models.head.initialize_dense(model.output_dense)
    ```
    """
    for dense in layers:
        if dense is not None:
            dense.kernel.assign(_glorot_uniform(dense.kernel.shape))


def _glorot_uniform(shape):
    """Glorot-uniform values from NumPy's global generator, as float32."""
    fan_in, fan_out = shape
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return np.random.uniform(-limit, limit, size=shape).astype(np.float32)


def check_head_args(num_classes, multi_label, activation, pooling):
    """Refuses head arguments that cannot work together, in one paragraph.

    Example:
    ```python
    kerastl.models.head.check_head_args(37, False, "auto", "avg")
    ```
    """
    minimum = 1 if multi_label else 2
    if not isinstance(num_classes, int) or num_classes < minimum:
        raise ValueError(
            f"`num_classes` must be an integer of at least {minimum} for a "
            f"{'multi-label' if multi_label else 'multi-class'} classifier. "
            f"Received: num_classes={num_classes!r}"
        )
    allowed = ("auto", None, "sigmoid" if multi_label else "softmax")
    if activation not in allowed:
        raise ValueError(
            f"`activation` must be one of {allowed} for multi_label="
            f"{multi_label}: a softmax head cannot score several labels per "
            "image and a sigmoid head does not give one distribution. "
            f"Received: activation={activation!r}"
        )
    if pooling != "auto" and pooling not in POOLING_MODES:
        raise ValueError(
            f"`pooling` must be 'auto' or one of {', '.join(POOLING_MODES)}. "
            f"Received: pooling={pooling!r}"
        )


def check_class_names(class_names, num_classes):
    """`class_names` as a list of distinct strings, one per class, or `None`.

    Example:
    ```python
    kerastl.models.head.check_class_names(["cat", "dog"], 2)
    ```
    """
    if class_names is None:
        return None
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes or len(set(class_names)) != len(
        class_names
    ):
        raise ValueError(
            f"`class_names` must hold {num_classes} distinct names, one per "
            f"class. Received: class_names={class_names!r}"
        )
    return class_names
