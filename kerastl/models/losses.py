"""Cross-entropy and accuracy for soft targets (label smoothing, MixUp).

Keras' sparse losses take integer labels and its categorical ones take
distributions; a run that trains on MixUp's soft labels but validates on
integer labels needs both at once. `SoftTargetCrossentropy` and
`SoftTargetAccuracy` accept either, decided per call from the label's
shape, so one compiled model serves training and validation.
"""

import keras
from keras import ops


def _dense_targets(y_true, y_pred):
    """Class distributions of shape `(B, C)` from int or soft labels."""
    num_classes = y_pred.shape[-1]
    soft = len(y_true.shape) == len(y_pred.shape) and (
        y_true.shape[-1] == num_classes and num_classes != 1
    )
    if soft:
        return ops.cast(y_true, y_pred.dtype)
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    return ops.one_hot(labels, num_classes, dtype=y_pred.dtype)


@keras.saving.register_keras_serializable(package="kerastl")
class SoftTargetCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy of integer or soft labels, with smoothing.

    Integer labels (`(B,)` or `(B, 1)`) are one-hot encoded; labels shaped
    like the predictions are used as given (MixUp, CutMix). Label smoothing
    then mixes the target with the uniform distribution, as in Szegedy et
    al. (2016): `(1 - label_smoothing) * y + label_smoothing / C`.

    Args:
        from_logits: bool. Whether predictions are logits. Defaults to
            `False`.
        label_smoothing: float in `[0, 1)`. Defaults to `0.0`.
        name: str. Defaults to `"soft_target_crossentropy"`.
        **kwargs: other `keras.losses.Loss` arguments.

    Example:
    ```python
    loss = kerastl.models.losses.SoftTargetCrossentropy(label_smoothing=0.1)
    loss(np.array([2, 0]), np.array([[0.1, 0.1, 0.8], [0.6, 0.2, 0.2]]))
    ```
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        name="soft_target_crossentropy",
        **kwargs,
    ):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                "label_smoothing is the share of the target spread over all "
                "classes, in [0, 1). Received: "
                f"label_smoothing={label_smoothing}"
            )
        super().__init__(name=name, **kwargs)
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(
            _dense_targets(y_true, y_pred),
            y_pred,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
        )
        return config


def _soft_target_accuracy(y_true, y_pred):
    targets = _dense_targets(y_true, y_pred)
    return ops.cast(
        ops.equal(ops.argmax(targets, axis=-1), ops.argmax(y_pred, axis=-1)),
        "float32",
    )


@keras.saving.register_keras_serializable(package="kerastl")
class SoftTargetAccuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy against integer labels or the top class of soft labels.

    Args:
        name: str. Defaults to `"accuracy"`.
        dtype: the metric's dtype. Defaults to `None`.

    Example:
    ```python
    metric = kerastl.models.losses.SoftTargetAccuracy()
    metric.update_state(np.array([[0.7, 0.3]]), np.array([[0.9, 0.1]]))
    ```
    """

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(_soft_target_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
