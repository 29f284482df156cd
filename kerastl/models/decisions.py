"""How a classifier turns logits into answers: temperature and thresholds.

`TransferClassifier(temperature=T)` divides its logits by `T` before the
output activation (`TemperatureScaling`), and a multi-label model predicts
class `c` when its probability reaches `thresholds[c]` (0.5 by default).
Both are plain numbers in the model's config, set after training:
`kerastl.evaluate.calibration.fit_temperature` and
`kerastl.evaluate.thresholds.tune_thresholds` fit them on validation.
"""

import keras
import numpy as np

DEFAULT_THRESHOLD = 0.5


@keras.saving.register_keras_serializable(package="kerastl")
class TemperatureScaling(keras.layers.Layer):
    """Divides logits by a temperature, then applies the output activation.

    The temperature is a plain float, part of the config rather than a
    weight: it is set after training (`TransferClassifier.set_temperature`)
    and saved with the model's config and presets.

    Args:
        temperature: float > 0. `1.0` leaves the logits as they are.
        activation: `"softmax"`, `"sigmoid"` or `None` (logits out).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    ```python
    layer = kerastl.models.decisions.TemperatureScaling(2.0, "softmax")
    layer(keras.ops.array([[2.0, 0.0]]))  # softmax([1.0, 0.0])
    ```
    """

    def __init__(self, temperature=1.0, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.temperature = check_temperature(temperature)
        self.activation = activation
        self._activation = keras.activations.get(activation)

    def call(self, logits):
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return self._activation(logits)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "activation": self.activation,
        }


def check_temperature(temperature):
    """`temperature` as a float, or a clear error if it is not positive."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not np.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(
            "`temperature` must be a positive number (1.0 for none; "
            "`kerastl.evaluate.calibration.fit_temperature` fits one on "
            f"validation logits). Received: temperature={temperature!r}"
        )
    return float(temperature)


def check_thresholds(thresholds, num_classes, multi_label):
    """`thresholds` as a list of floats, or a clear error.

    Example:
    ```python
    kerastl.models.decisions.check_thresholds(
        [0.3, 0.6], 2, multi_label=True
    )
    ```
    """
    if thresholds is None:
        return None
    if not multi_label:
        raise ValueError(
            "Decision thresholds apply to multi-label (sigmoid) classifiers; "
            "a multi-class model predicts its top class. Build the model "
            "with multi_label=True, or leave thresholds=None. Received: "
            f"thresholds={thresholds!r}"
        )
    values = [float(t) for t in thresholds]
    if len(values) != num_classes or not all(0 < t <= 1 for t in values):
        raise ValueError(
            f"`thresholds` must hold {num_classes} numbers in (0, 1], one "
            f"per class. Received: thresholds={thresholds!r}"
        )
    return values


def apply_thresholds(probs, thresholds):
    """Multi-hot decisions: `probs >= thresholds` (0.5 when `None`).

    Example:
    ```python
    labels = kerastl.models.decisions.apply_thresholds(
        probs, model.thresholds
    )
    ```
    """
    cut = DEFAULT_THRESHOLD if thresholds is None else np.asarray(thresholds)
    return (np.asarray(probs) >= cut).astype(int)
