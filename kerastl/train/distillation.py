"""Knowledge distillation: a student classifier learns from a teacher.

`Distiller` trains a student `TransferClassifier` on a blend of the true
labels and a trained teacher's softened predictions (Hinton et al., 2015,
"Distilling the Knowledge in a Neural Network"):

    loss = alpha * hard_loss(labels, student)
           + (1 - alpha) * T**2 * KL(teacher_T || student_T)

where `teacher_T` and `student_T` are the two models' predictions at
temperature `T`: softmax of logits / T for a multi-class head, and for a
multi-label (sigmoid) head one Bernoulli per class, sigmoid of logits / T,
whose KL divergences are averaged over the classes as binary cross-entropy
averages its per-class terms. The `T**2` factor keeps the soft term's
gradients the same size whatever the temperature.

The teacher is any trained classifier over the same classes (a recipe's
`teacher`, a run directory, `.keras` file or preset, is loaded by
`kerastl.runs.rundir.load_classifier`). It may take another input size than
the student; it sees the student's (augmented) batch resized to its own
size.
"""

import keras
import numpy as np

from kerastl.models.classifier import TransferClassifier

# Floors that turn float32 probabilities into finite logits. Below 1e-30 a
# class is over 69 nats under the top one: at any usual temperature its
# share of the softened distribution is negligible, and the gradient of
# log(p), 1 / p, stays far from float32's overflow. Near 1, float32 has no
# probability between 1 - 2**-24 and 1.
_PROBABILITY_FLOOR = 1e-30
_PROBABILITY_CEILING = 1.0 - float(np.finfo(np.float32).epsneg)


def as_logits(outputs, is_logits=False, multi_label=False):
    """Logits of a classifier's outputs, for softening at a temperature.

    A softmax's logits are the log-probabilities up to a constant per
    example, which no softmax sees; a sigmoid's logit is `log(p / (1 - p))`.
    float32 probabilities carry logits down to about -69 and, for a sigmoid,
    up to about +17; models built with `activation=None` output exact logits.

    Args:
        outputs: `(batch, num_classes)` probabilities or logits.
        is_logits: bool. Whether `outputs` already are logits.
        multi_label: bool. Sigmoid (per-class) outputs rather than softmax.

    Example:
    ```python
    logits = kerastl.train.distillation.as_logits(model.predict(images))
    ```
    """
    outputs = keras.ops.cast(outputs, "float32")
    if is_logits:
        return outputs
    if multi_label:
        probs = keras.ops.clip(
            outputs, _PROBABILITY_FLOOR, _PROBABILITY_CEILING
        )
        return keras.ops.log(probs) - keras.ops.log1p(-probs)
    return keras.ops.log(keras.ops.maximum(outputs, _PROBABILITY_FLOOR))


@keras.saving.register_keras_serializable(package="kerastl")
class DistillationLoss(keras.losses.Loss):
    """`T**2` times the KL divergence between temperature-softened logits.

    `y_true` holds the teacher's logits and `y_pred` the student's. A
    multi-class head compares `softmax(logits / T)`; a multi-label head
    compares each class's `sigmoid(logits / T)` as a Bernoulli and averages
    the per-class divergences. Reduction and `sample_weight` work as for any
    Keras loss.

    Args:
        temperature: float > 0. Softens both distributions. Defaults to
            `4.0`.
        multi_label: bool. Per-class sigmoid outputs rather than one
            softmax. Defaults to `False`.
        reduction: Keras loss reduction. Defaults to
            `"sum_over_batch_size"`.
        name: str. Defaults to `"distillation_loss"`.
        dtype: the loss computation dtype. Defaults to `None` (floatx).

    Example:
    ```python
    loss = kerastl.train.distillation.DistillationLoss(temperature=4.0)
    loss(teacher_logits, student_logits)
    ```
    """

    def __init__(
        self,
        temperature=4.0,
        multi_label=False,
        reduction="sum_over_batch_size",
        name="distillation_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = temperature
        self.multi_label = multi_label

    def call(self, y_true, y_pred):
        ops = keras.ops
        teacher = ops.convert_to_tensor(y_true) / self.temperature
        student = ops.convert_to_tensor(y_pred) / self.temperature
        if self.multi_label:
            # KL(Bernoulli(p) || Bernoulli(q)) per class, from log-sigmoids
            # (log q = log_sigmoid(z), log(1 - q) = log_sigmoid(-z)).
            p = ops.sigmoid(teacher)
            kl = p * (ops.log_sigmoid(teacher) - ops.log_sigmoid(student))
            kl += (1 - p) * (
                ops.log_sigmoid(-teacher) - ops.log_sigmoid(-student)
            )
            kl = ops.mean(kl, axis=-1)
        else:
            log_p = ops.log_softmax(teacher, axis=-1)
            log_q = ops.log_softmax(student, axis=-1)
            kl = ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
        return self.temperature**2 * kl

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self.temperature, multi_label=self.multi_label
        )
        return config


class Distiller(keras.Model):
    """Trains a student `TransferClassifier` against a frozen teacher.

    The loss blends the student's own loss on the labels (whatever its
    `compile` chose: sparse cross-entropy for integer labels, binary
    cross-entropy for multi-hot ones, label smoothing and soft MixUp labels
    included) with the distillation loss (`DistillationLoss`):

        alpha * hard_loss + (1 - alpha) * T**2 * KL(teacher_T || student_T)

    `compute_loss` runs the teacher, in inference mode, on the same batch
    the student sees, augmentation included; a teacher with another input
    size gets the batch resized (bilinear, antialiased) to its own, and
    applies its own preprocessing. The teacher's weights never train and
    are never among `trainable_variables`. `loss` and `val_loss` both
    include the distillation term.

    A `Distiller` stands in for its student wherever kerastl trains one.
    `compile` compiles the student with the same arguments, then trains
    with the student's optimizer, loss and metrics, so the logs are a plain
    fit's (`loss`, `accuracy`, `val_loss`, ...). `multi_label`,
    `layer_groups`, `head_layers`, `freeze_backbone` and
    `unfreeze_backbone` are the student's, so `kerastl.fine_tune` and the
    per-group learning rates of `kerastl.train.optimizers` work unchanged.

    The student is the result: `save` writes the student, a plain
    `TransferClassifier` (the teacher is loaded again from its own files),
    and `student.save_to_preset` works as ever. `get_config` holds only
    `alpha` and `temperature`.

    Args:
        student: a `kerastl.TransferClassifier`. The model that trains.
        teacher: a trained `kerastl.TransferClassifier` over the same
            classes, or any Keras model from raw images (`[0, 255]`) to class
            probabilities (logits when it has `outputs_logits = True`).
        alpha: float in [0, 1]. Weight of the hard-label loss; the
            distillation loss gets `1 - alpha`. Defaults to `0.5`.
        temperature: float > 0. Softmax (or sigmoid) temperature of the
            distillation loss. Defaults to `4.0`.
        **kwargs: standard `keras.Model` arguments (`name`, ...).

    Example:
    ```python
    student = kerastl.TransferClassifier.from_preset(
        "resnet_50_imagenet", class_names=class_names
    )
    teacher = keras.models.load_model("runs/cifar10_vit/model.keras")
    distiller = kerastl.Distiller(student, teacher, alpha=0.5)
    kerastl.fine_tune(distiller, train_ds, val_ds, stages)
    student.save("student.keras")
    ```
    """

    def __init__(self, student, teacher, alpha=0.5, temperature=4.0, **kwargs):
        _check_args(student, alpha, temperature)
        _check_teacher(student, teacher)
        super().__init__(**kwargs)

        # === Layers ===
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False

        # === Config ===
        self.alpha = alpha
        self.temperature = temperature
        self.teacher_source = None
        self.distillation_loss = DistillationLoss(
            temperature, multi_label=student.multi_label
        )
        self._teacher_size = _input_size(teacher)
        self._teacher_logits = bool(getattr(teacher, "outputs_logits", False))
        self.built = True
        self._follow_student()

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    # === Loss ===

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        # The compiled loss is the student's, weighted by alpha (see
        # `_follow_student`), plus any regularization losses.
        hard = super().compute_loss(x, y, y_pred, sample_weight, training)
        images = x
        if self._teacher_size not in (None, tuple(x.shape[1:3])):
            images = keras.ops.image.resize(
                keras.ops.cast(x, "float32"),
                self._teacher_size,
                antialias=True,
            )
        teacher_out = keras.ops.stop_gradient(
            self.teacher(images, training=False)
        )
        multi_label = self.student.multi_label
        soft = self.distillation_loss(
            as_logits(teacher_out, self._teacher_logits, multi_label),
            as_logits(y_pred, self.student.outputs_logits, multi_label),
            sample_weight=sample_weight,
        )
        return hard + (1.0 - self.alpha) * soft

    # === Compilation ===

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """Compiles the student with these arguments, then trains with them.

        The student resolves `"auto"` (see `TransferClassifier.compile`);
        the distiller then uses the student's optimizer, its loss weighted
        by `alpha`, and fresh copies of its metrics.

        Args:
            optimizer: as `TransferClassifier.compile`. Defaults to
                `"auto"`.
            loss: the hard-label loss, as `TransferClassifier.compile`.
                Defaults to `"auto"`.
            metrics: as `TransferClassifier.compile`. Defaults to `"auto"`.
            **kwargs: other `keras.Model.compile` arguments.

        Example:
        ```python
        distiller.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
        ```
        """
        self.student.compile(
            optimizer=optimizer, loss=loss, metrics=metrics, **kwargs
        )
        self._follow_student()

    def _follow_student(self):
        config = keras.saving.deserialize_keras_object(
            self.student.get_compile_config()
        )
        # The student's own optimizer object: its state is the student's,
        # and is saved with it. `loss_weights=alpha` weighs the hard loss.
        config.update(
            optimizer=self.student.optimizer,
            loss=self.student.loss,
            loss_weights=float(self.alpha),
        )
        super().compile(**config)

    def fit(self, x=None, y=None, *args, **kwargs):
        import tensorflow as tf

        if isinstance(x, tf.data.Dataset) and not args:
            # As `TransferClassifier.fit`: a dataset brings its own order,
            # and Keras' default `shuffle=True` only warns about it.
            kwargs.setdefault("shuffle", False)
        return super().fit(x, y, *args, **kwargs)

    # === The student's freezing API ===

    @property
    def multi_label(self):
        """Whether the student has a sigmoid (multi-label) head."""
        return self.student.multi_label

    @property
    def head_layers(self):
        """The student's head layers (`TransferClassifier.head_layers`)."""
        return self.student.head_layers

    def layer_groups(self):
        """The student's layer groups (`TransferClassifier.layer_groups`).

        Example:
        ```python
        [group.name for group in distiller.layer_groups()]
        ```
        """
        return self.student.layer_groups()

    def freeze_backbone(self):
        """Freezes the student's backbone and recompiles.

        Example:
        ```python
        distiller.freeze_backbone()
        ```
        """
        self.student.freeze_backbone()
        self._follow_student()

    def unfreeze_backbone(self, last_n=None, train_bn=False):
        """Unfreezes the student's last `last_n` layer groups, recompiles.

        Args:
            last_n: int or `None`. Groups, counted from the output, to train.
                Defaults to `None`: every group.
            train_bn: bool. Whether BatchNorm layers of the unfrozen groups
                train. Defaults to `False`.

        Example:
        ```python
        distiller.unfreeze_backbone(last_n=1)
        ```
        """
        self.student.unfreeze_backbone(last_n=last_n, train_bn=train_bn)
        self._follow_student()

    # === Saving ===

    def save(self, filepath, overwrite=True, **kwargs):
        """Saves the student (`TransferClassifier.save`), not the teacher.

        Example:
        ```python
        distiller.save("student.keras")
        ```
        """
        self.student.save(filepath, overwrite=overwrite, **kwargs)

    def get_config(self):
        # A training wrapper: the student is what gets saved, so only the
        # scalar arguments are configuration.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "alpha": self.alpha,
            "temperature": self.temperature,
        }


def _input_size(model):
    """`(height, width)` a model takes, or `None` if it takes any size."""
    try:
        shape = model.input.shape
    except (AttributeError, ValueError):
        return None
    size = tuple(shape[1:3])
    return None if None in size else size


def _check_args(student, alpha, temperature):
    if not isinstance(student, TransferClassifier):
        raise ValueError(
            "The student of a Distiller must be a kerastl.TransferClassifier "
            "(its layer groups and head are what train). Received: student "
            f"of type {type(student).__name__}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(
            "`alpha` weighs the hard-label loss against the distillation "
            f"loss, so it lies in [0, 1]. Received: alpha={alpha}"
        )
    if not temperature > 0:
        raise ValueError(
            "`temperature` divides the logits, so it must be positive (1 "
            f"leaves them as they are). Received: temperature={temperature}"
        )


def _num_outputs(model):
    if getattr(model, "num_classes", None) is not None:
        return model.num_classes
    try:
        return model.output.shape[-1]
    except (AttributeError, ValueError):
        return None


def _check_teacher(student, teacher):
    what = (
        "Retrain the teacher on the student's classes or pick a teacher "
        "trained on them"
    )
    count = _num_outputs(teacher)
    if count is not None and count != student.num_classes:
        raise ValueError(
            f"The teacher predicts {count} classes but the student has "
            f"{student.num_classes}: distillation needs the same classes in "
            f"the same order. {what}. Received: teacher with {count} "
            f"outputs, student with num_classes={student.num_classes}"
        )
    multi_label = getattr(teacher, "multi_label", student.multi_label)
    if multi_label != student.multi_label:
        raise ValueError(
            "The teacher and the student must both be multi-label (sigmoid) "
            f"or both multi-class (softmax). {what}. Received: teacher "
            f"multi_label={multi_label}, student "
            f"multi_label={student.multi_label}"
        )
    names = getattr(teacher, "class_names", None)
    if names and student.class_names and names != student.class_names:
        raise ValueError(
            "The teacher's classes differ from the student's (names or "
            f"order): distillation matches them by position. {what}. "
            f"Received: teacher class_names={names}, student "
            f"class_names={student.class_names}"
        )
