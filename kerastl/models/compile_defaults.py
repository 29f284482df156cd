"""What `TransferClassifier.compile` picks when told `"auto"`.

keras-hub's `ImageClassifier.compile` resolves `"auto"` from its head the
same way: the loss from the head's activation (softmax or sigmoid, logits
or probabilities), the metrics from the loss, Adam at a learning rate set
by what trains. A loss that does not fit the head is refused here, before
it silently trains the wrong objective. `CompileState` remembers what
`compile` was told, so freezing or unfreezing can compile again with the
same settings.
"""

import re

import keras

from kerastl.models import backbones
from kerastl.models import losses

_CATEGORICAL_LOSSES = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "categorical_hinge",
    "soft_target_crossentropy",
)
_BINARY_LOSSES = ("binary_crossentropy", "binary_focal_crossentropy")

# Adam's learning rate for training a new head on a frozen backbone; a
# partly or fully unfrozen backbone takes its family's gentler rate.
HEAD_LEARNING_RATE = 1e-3


def _snake_case(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def learning_rate(backbone):
    """Adam's learning rate: the head's while the backbone is frozen, the
    backbone family's fine-tuning rate once any of it trains.

    Args:
        backbone: the classifier's keras-hub backbone.

    Example:
    ```python
    kerastl.models.compile_defaults.learning_rate(model.backbone)  # 1e-3
    ```
    """
    if not any(w.trainable for w in backbone.weights):
        return HEAD_LEARNING_RATE
    return backbones.family_of(backbone).fine_tune_learning_rate


def loss_scaled(optimizer, backbone):
    """`optimizer`, wrapped in loss scaling when the backbone computes in
    float16.

    float16 gradients underflow without loss scaling. Keras adds it only for
    models whose own policy is mixed_float16, and a functional model's
    policy is always the global one, so the backbone's policy decides here.

    Args:
        optimizer: an optimizer, its name, or `None`.
        backbone: the classifier's keras-hub backbone.

    Example:
    ```python
    optimizer = kerastl.models.compile_defaults.loss_scaled("adam", backbone)
    ```
    """
    if backbone.dtype_policy.name != "mixed_float16" or optimizer is None:
        return optimizer
    optimizer = keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def loss(multi_label, from_logits, label_smoothing=0.0, soft_labels=False):
    """The `"auto"` loss of a softmax or sigmoid head.

    Args:
        multi_label: bool. Sigmoid head.
        from_logits: bool. Whether the head outputs logits.
        label_smoothing: float.
        soft_labels: bool. Whether a softmax head's labels may be class
            distributions (MixUp, CutMix).

    Example:
    ```python
    kerastl.models.compile_defaults.loss(False, from_logits=False)
    # SparseCategoricalCrossentropy
    ```
    """
    if multi_label:
        # Binary cross-entropy takes soft multi-hot targets as they are.
        return keras.losses.BinaryCrossentropy(
            from_logits=from_logits, label_smoothing=label_smoothing
        )
    if soft_labels or label_smoothing:
        return losses.SoftTargetCrossentropy(
            from_logits=from_logits, label_smoothing=label_smoothing
        )
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


def metrics(loss, multi_label, from_logits, num_classes):
    """The `"auto"` metrics: accuracy of the loss's kind of labels, or
    binary accuracy and multi-label AUC.

    Args:
        loss: the loss compiled with (its label format decides).
        multi_label: bool. Sigmoid head.
        from_logits: bool. Whether the head outputs logits.
        num_classes: int.

    Example:
    ```python
    kerastl.models.compile_defaults.metrics("binary_crossentropy", True,
                                            False, 20)
    ```
    """
    if multi_label:
        return [
            keras.metrics.BinaryAccuracy(threshold=0.0 if from_logits else 0.5),
            keras.metrics.AUC(
                multi_label=True,
                num_labels=num_classes,
                from_logits=from_logits,
                name="auc",
            ),
        ]
    if isinstance(loss, losses.SoftTargetCrossentropy):
        return [losses.SoftTargetAccuracy(name="accuracy")]
    if loss_name(loss) in ("categorical_crossentropy",):
        return [keras.metrics.CategoricalAccuracy(name="accuracy")]
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def check_loss(loss, multi_label, activation):
    """Refuses a loss that does not fit the head, in one paragraph.

    Args:
        loss: `"auto"`, a loss name or instance.
        multi_label: bool. Sigmoid head.
        activation: the head's activation; `None` means logits out.

    Example:
    ```python
    kerastl.models.compile_defaults.check_loss(
        "binary_crossentropy", False, "softmax"
    )  # ValueError: ... does not fit this model's softmax head
    ```
    """
    if loss == "auto":
        return
    name = loss_name(loss)
    head = "sigmoid (multi-label)" if multi_label else "softmax"
    wrong = _CATEGORICAL_LOSSES if multi_label else _BINARY_LOSSES
    if name in wrong:
        right = _BINARY_LOSSES[0] if multi_label else _CATEGORICAL_LOSSES[0]
        raise ValueError(
            f"Loss {name!r} does not fit this model's {head} head. Use "
            f"loss='auto' or {right!r}, or build the model with "
            f"multi_label={not multi_label}. Received: loss={loss!r}"
        )
    outputs_logits = activation is None
    from_logits = loss_from_logits(loss)
    if from_logits is not None and from_logits != outputs_logits:
        outputs = "logits" if outputs_logits else "probabilities"
        raise ValueError(
            f"This model outputs {outputs} (activation={activation!r}), but "
            f"the loss has from_logits={from_logits}. Pass from_logits="
            f"{outputs_logits} or use loss='auto'. Received: loss={loss!r}"
        )


def loss_name(loss):
    """A loss's snake-case name, whether given as a name or an instance.

    Example:
    ```python
    kerastl.models.compile_defaults.loss_name(keras.losses.Hinge())
    ```
    """
    if isinstance(loss, str):
        return loss
    if isinstance(loss, keras.losses.Loss):
        return _snake_case(type(loss).__name__)
    return getattr(loss, "__name__", None)


def loss_from_logits(loss):
    """A loss's `from_logits`, or `None` when it has none.

    Example:
    ```python
    kerastl.models.compile_defaults.loss_from_logits("binary_crossentropy")
    ```
    """
    if isinstance(loss, keras.losses.Loss):
        return loss.get_config().get("from_logits")
    if isinstance(loss, str) and loss in _CATEGORICAL_LOSSES + _BINARY_LOSSES:
        return False
    return None


def compile_arguments(model, arguments):
    """`keras.Model.compile` arguments for `model`, every `"auto"` resolved.

    Args:
        model: a `kerastl.TransferClassifier`.
        arguments: dict of what `TransferClassifier.compile` was called
            with: `optimizer`, `loss`, `metrics`, `label_smoothing`,
            `soft_labels` and other `keras.Model.compile` arguments.

    Returns:
        A dict of `keras.Model.compile` arguments.

    Example:
    ```python
    arguments = kerastl.models.compile_defaults.compile_arguments(
        model, {"optimizer": "auto", "loss": "auto", "metrics": "auto"}
    )
    ```
    """
    arguments = dict(arguments)
    label_smoothing = arguments.pop("label_smoothing", 0.0)
    soft_labels = arguments.pop("soft_labels", False)
    check_loss(arguments["loss"], model.multi_label, model.activation)
    if arguments["optimizer"] == "auto":
        rate = learning_rate(model.backbone)
        arguments["optimizer"] = keras.optimizers.Adam(rate)
    arguments["optimizer"] = loss_scaled(arguments["optimizer"], model.backbone)
    if arguments["loss"] == "auto":
        arguments["loss"] = loss(
            model.multi_label,
            model.outputs_logits,
            label_smoothing,
            soft_labels,
        )
    if arguments["metrics"] == "auto":
        arguments["metrics"] = metrics(
            arguments["loss"],
            model.multi_label,
            model.outputs_logits,
            model.num_classes,
        )
        if "weighted_metrics" not in arguments:
            # As weighted metrics, rows of sample weight 0 (the padding of a
            # data-parallel batch) do not count; with no sample weights they
            # are the same metrics.
            arguments["weighted_metrics"] = arguments.pop("metrics")
            arguments["metrics"] = None
    return arguments


def _trainable_signature(model):
    return tuple(bool(w.trainable) for w in model.weights)


class CompileState:
    """What `compile` was called with, and which weights were trainable.

    A plain object, kept out of Keras' attribute tracking: a tracked list of
    metrics would be counted as the model's own.

    Args:
        kwargs: dict of the `TransferClassifier.compile` arguments, `"auto"`
            settings unresolved.
        model: the model just compiled with them.

    Example:
    ```python
    state = kerastl.models.compile_defaults.CompileState(
        {"optimizer": "auto", "loss": "auto", "metrics": "auto"}, model
    )
    state.is_stale(model)  # False
    ```
    """

    def __init__(self, kwargs, model):
        self.kwargs = kwargs
        self.signature = _trainable_signature(model)

    def is_stale(self, model):
        """Whether `trainable` changed since: Keras ignores such changes
        until the model is compiled again."""
        return self.signature != _trainable_signature(model)

    def recompile_kwargs(self):
        """The same `compile` arguments, with a fresh copy of an optimizer
        instance: a built optimizer holds slots for the old trainable
        variables."""
        kwargs = dict(self.kwargs)
        optimizer = kwargs["optimizer"]
        if isinstance(optimizer, keras.optimizers.Optimizer):
            kwargs["optimizer"] = type(optimizer).from_config(
                optimizer.get_config()
            )
        return kwargs
