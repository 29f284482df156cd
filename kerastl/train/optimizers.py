"""Learning-rate schedules for a stage, and the callback that logs them.

A stage's `schedule` turns its `learning_rate` into a Keras
`LearningRateSchedule` over the stage's optimizer steps:

- `"constant"`: the rate throughout.
- `"step"`: multiplied by `decay_rate` every `decay_epochs` epochs.
- `"cosine"`: linear warmup from 0 over the first `warmup_fraction` of the
  steps, then cosine decay to 0.
- `"one_cycle"`: fastai's one-cycle policy: cosine rise from
  `learning_rate / 25` to `learning_rate` over the first 25% of the steps
  (or `warmup_fraction` when set), then cosine annealing to
  `learning_rate / 25e4`.
"""

import math

import keras

SCHEDULES = ("constant", "step", "cosine", "one_cycle")


@keras.saving.register_keras_serializable(package="kerastl")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """fastai's one-cycle learning rate: cosine up, then cosine down.

    Args:
        max_learning_rate: float. The peak rate.
        total_steps: int. Steps of the whole cycle.
        pct_start: float. Share of the steps spent rising. Defaults to
            `0.25`.
        div_factor: float. The start rate is `max_learning_rate /
            div_factor`. Defaults to `25.0`.
        final_div_factor: float. The end rate is the start rate divided by
            this. Defaults to `1e4`.

    Example:
    ```python
    schedule = kerastl.train.optimizers.OneCycle(1e-3, total_steps=1000)
    optimizer = keras.optimizers.AdamW(schedule)
    ```
    """

    def __init__(
        self,
        max_learning_rate,
        total_steps,
        pct_start=0.25,
        div_factor=25.0,
        final_div_factor=1e4,
    ):
        self.max_learning_rate = max_learning_rate
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        peak = self.max_learning_rate
        start = peak / self.div_factor
        end = start / self.final_div_factor
        rise = max(1.0, self.pct_start * self.total_steps)
        fall = max(1.0, self.total_steps - rise)

        def anneal(first, last, fraction):
            # Half a cosine from `first` (fraction 0) to `last` (fraction 1).
            fraction = ops.clip(fraction, 0.0, 1.0)
            return last + (first - last) * (1 + ops.cos(math.pi * fraction)) / 2

        rising = anneal(start, peak, step / rise)
        falling = anneal(peak, end, (step - rise) / fall)
        return ops.where(step < rise, rising, falling)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


def stage_schedule(stage, steps_per_epoch, epochs):
    """The learning rate, or schedule, a stage trains with.

    Args:
        stage: a `kerastl.Stage`.
        steps_per_epoch: int. Optimizer steps per epoch.
        epochs: int. Epochs the schedule spans.

    Returns:
        A float for `"constant"`, else a
        `keras.optimizers.schedules.LearningRateSchedule`.

    Example:
    ```python
    kerastl.train.optimizers.stage_schedule(
        kerastl.Stage(schedule="cosine", learning_rate=1e-3), 100, 5
    )
    ```
    """
    rate = stage.learning_rate
    total = max(1, steps_per_epoch * epochs)
    if stage.schedule == "constant":
        return rate
    if stage.schedule == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            rate,
            decay_steps=max(1, stage.decay_epochs * steps_per_epoch),
            decay_rate=stage.decay_rate,
            staircase=True,
        )
    if stage.schedule == "cosine":
        warmup = int(stage.warmup_fraction * total)
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else rate,
            decay_steps=max(1, total - warmup),
            warmup_target=rate if warmup else None,
            warmup_steps=warmup,
        )
    return OneCycle(rate, total, pct_start=stage.warmup_fraction or 0.25)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to each epoch's logs.

    With a schedule the rate changes every step; the logged value is the one
    at the end of the epoch, so `history.csv` shows the schedule's course.

    Example:
    ```python
    model.fit(train, callbacks=[kerastl.train.optimizers.LearningRateLogger()])
    ```
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


class _LayerwiseLearningRate:
    """Scales the learning rate of each variable by its own multiplier.

    Keras optimizers take one learning rate; `update_step` receives it per
    variable, so scaling it there gives every layer group its own rate
    under any optimizer and schedule. (Scaling gradients instead would do
    nothing for Adam, which normalizes them.) On the torch backend these
    subclasses take Keras' per-variable update path rather than the fused
    `torch._foreach` one.
    """

    def __init__(self, *args, lr_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})

    def build(self, variables):
        super().build(variables)
        # By index: TensorFlow hands `update_step` its own variables, which
        # have no Keras path; the optimizer's index lookup maps both.
        self._multipliers = [
            self.lr_multipliers.get(v.path, 1.0) for v in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = self.lr_multipliers
        return config


@keras.saving.register_keras_serializable(package="kerastl")
class LayerwiseSGD(_LayerwiseLearningRate, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with per-variable learning-rate multipliers.

    Args:
        lr_multipliers: dict mapping `variable.path` to a float multiplier.
        *args, **kwargs: `keras.optimizers.SGD` arguments.

    Example:
    ```python
    optimizer = kerastl.train.optimizers.LayerwiseSGD(
        0.1, lr_multipliers=kerastl.train.optimizers.layer_decay_multipliers(
            model, 0.75
        )
    )
    ```
    """


@keras.saving.register_keras_serializable(package="kerastl")
class LayerwiseAdam(_LayerwiseLearningRate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with per-variable learning-rate multipliers.

    Args:
        lr_multipliers: dict mapping `variable.path` to a float multiplier.
        *args, **kwargs: `keras.optimizers.Adam` arguments.

    Example:
    ```python
    optimizer = kerastl.train.optimizers.LayerwiseAdam(1e-4, lr_multipliers=m)
    ```
    """


@keras.saving.register_keras_serializable(package="kerastl")
class LayerwiseAdamW(_LayerwiseLearningRate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with per-variable learning-rate multipliers.

    Args:
        lr_multipliers: dict mapping `variable.path` to a float multiplier.
        *args, **kwargs: `keras.optimizers.AdamW` arguments.

    Example:
    ```python
    optimizer = kerastl.train.optimizers.LayerwiseAdamW(1e-4, lr_multipliers=m)
    ```
    """


LAYERWISE = {
    "sgd": LayerwiseSGD,
    "adam": LayerwiseAdam,
    "adamw": LayerwiseAdamW,
}


def group_multipliers(model, multipliers):
    """Learning-rate multipliers for the variables of each layer group.

    Args:
        model: a `kerastl.TransferClassifier`.
        multipliers: sequence of floats, one per layer group, input to
            output (`model.layer_groups()` order). The head keeps 1.

    Returns:
        A dict mapping `variable.path` to its multiplier.

    Example:
    ```python
    kerastl.train.optimizers.group_multipliers(model, [0.01, 0.1, 0.3, 1.0])
    ```
    """
    groups = model.layer_groups()
    if len(multipliers) != len(groups):
        names = ", ".join(group.name for group in groups)
        raise ValueError(
            f"Give one learning-rate multiplier per layer group: this "
            f"backbone has {len(groups)} ({names}). "
            f"Received: lr_multipliers={tuple(multipliers)}"
        )
    return {
        weight.path: float(multiplier)
        for group, multiplier in zip(groups, multipliers, strict=True)
        for weight in group.weights
    }


def layer_decay_multipliers(model, layer_decay):
    """Learning-rate multipliers decaying geometrically from the head down.

    The head keeps the full rate; the backbone's last layer group gets
    `layer_decay`, the one before it `layer_decay ** 2`, and so on to the
    input (timm's `--layer-decay`).

    Args:
        model: a `kerastl.TransferClassifier`.
        layer_decay: float in (0, 1].

    Returns:
        A dict mapping `variable.path` to its multiplier (head variables are
        left out: their multiplier is 1).

    Example:
    ```python
    kerastl.train.optimizers.layer_decay_multipliers(model, 0.75)
    ```
    """
    count = len(model.layer_groups())
    depths = range(count, 0, -1)
    return group_multipliers(model, [layer_decay**d for d in depths])


def exclude_from_decay(optimizer, model):
    """Exempts biases and normalization parameters from weight decay.

    Decaying them toward zero only hurts (timm and fastai exclude every
    one-dimensional parameter); kernels and embeddings keep the decay.

    Example:
    ```python
    kerastl.train.optimizers.exclude_from_decay(optimizer, model)
    ```
    """
    optimizer.exclude_from_weight_decay(
        var_list=[w for w in model.weights if len(w.shape) <= 1]
    )
