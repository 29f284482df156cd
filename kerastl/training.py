"""Stages: the fit loop over a recipe's stages.

Each stage sets which layer groups train, compiles a fresh optimizer, and
fits; epochs are numbered on across stages so `history.csv` reads as one run.
"""

import keras

from kerastl import freezing
from kerastl import optimizers
from kerastl.recipe import Stage


def stage_optimizer(stage, learning_rate=None, model=None):
    """The Keras optimizer a `kerastl.Stage` asks for.

    With a `model`, biases and normalization parameters are exempt from
    weight decay, and `stage.layer_decay < 1` or `stage.lr_multipliers` give
    each layer group its own learning rate (`kerastl.optimizers`).

    Args:
        stage: a `kerastl.Stage`.
        learning_rate: float or `LearningRateSchedule`, or `None` for the
            stage's constant `learning_rate`.
        model: the `kerastl.TransferClassifier` it will train, or `None`.

    Example:
    ```python
    kerastl.training.stage_optimizer(kerastl.Stage(optimizer="sgd"))
    ```
    """
    kwargs = {
        "learning_rate": stage.learning_rate
        if learning_rate is None
        else learning_rate,
        # AdamW needs a number; SGD and Adam read None as no decay.
        "weight_decay": stage.weight_decay
        if stage.optimizer == "adamw"
        else stage.weight_decay or None,
    }
    if stage.optimizer == "sgd":
        kwargs["momentum"] = stage.momentum
    classes = {
        "sgd": keras.optimizers.SGD,
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
    }
    if model is not None and stage.lr_multipliers is not None:
        kwargs["lr_multipliers"] = optimizers.group_multipliers(
            model, stage.lr_multipliers
        )
    elif model is not None and stage.layer_decay != 1.0:
        kwargs["lr_multipliers"] = optimizers.layer_decay_multipliers(
            model, stage.layer_decay
        )
    if "lr_multipliers" in kwargs:
        classes = optimizers.LAYERWISE
    optimizer = classes[stage.optimizer](**kwargs)
    if model is not None and stage.weight_decay:
        optimizers.exclude_from_decay(optimizer, model)
    return optimizer


def apply_stage_trainable(model, stage, extra_groups=0):
    """Freezes and unfreezes `model` as `stage.train` says.

    `"head"` freezes the backbone, `"all"` unfreezes every group, an int
    unfreezes that many groups from the output. `extra_groups` more groups
    train on top (gradual unfreezing), up to the whole backbone.

    Example:
    ```python
    kerastl.training.apply_stage_trainable(model, kerastl.Stage(train=2))
    ```
    """
    count = len(model.layer_groups())
    if stage.train == "all":
        last_n = count
    else:
        base = 0 if stage.train == "head" else stage.train
        last_n = min(count, base + extra_groups)
    if last_n == 0:
        model.freeze_backbone()
    else:
        model.unfreeze_backbone(last_n=last_n, train_bn=stage.train_bn)


def _steps_per_epoch(dataset, stage):
    steps = int(dataset.cardinality())
    if steps > 0:
        return steps
    if stage.schedule != "constant":
        raise ValueError(
            f"Stage '{stage.name}' uses the {stage.schedule!r} schedule, "
            "which needs the number of batches per epoch, but the training "
            "dataset does not know its length. Use a finite dataset "
            "(kerastl.data gives one) or schedule='constant'."
        )
    return 1


def _chunks(stage, epochs):
    """Epoch counts of the fits a stage runs: one, or one per unfreezing."""
    if not stage.unfreeze_every:
        return [epochs]
    every = stage.unfreeze_every
    return [min(every, epochs - start) for start in range(0, epochs, every)]


def describe_stage(index, count, stage, epochs):
    """One console line announcing a stage."""
    what = {"head": "head only", "all": "all layer groups"}.get(
        stage.train, f"last {stage.train} layer group(s) + head"
    )
    return (
        f"Stage {index}/{count} '{stage.name}': {what}, {stage.optimizer} "
        f"lr={stage.learning_rate:g}, {epochs} epoch(s)"
    )


def fine_tune(
    model,
    train,
    validation=None,
    stages=None,
    *,
    max_steps=None,
    callbacks=None,
    print_fn=print,
    verbose="auto",
):
    """Fits `model` through `stages` in order; returns one row per epoch.

    Each stage sets which layer groups train, compiles its optimizer and
    learning-rate schedule, and fits; with `unfreeze_every` it fits once per
    unfreezing step. Epochs are numbered on across stages.

    Args:
        model: a `kerastl.TransferClassifier`.
        train: a `tf.data.Dataset` of `(images, labels)` batches.
        validation: a dataset like `train`, or `None`.
        stages: sequence of `kerastl.Stage`. Defaults to fastai's
            `fine_tune`: one epoch of the head, then everything for one
            epoch at a tenth of the rate.
        max_steps: int or `None`. With a number, every stage runs one epoch
            of at most that many steps (smoke runs).
        callbacks: list of Keras callbacks for every fit.
        print_fn: callable for the stage headers and trainable tables.
        verbose: Keras `fit` verbosity. Defaults to `"auto"` (progress bars).

    Returns:
        A list of dicts: `stage`, `epoch` (1-based, counted across stages),
        `learning_rate` (at the epoch's end), and every metric Keras logged
        (`loss`, `val_loss`, ...).

    Example:
    ```python
    rows = kerastl.fine_tune(
        model,
        train_ds,
        val_ds,
        [kerastl.Stage(epochs=2), kerastl.Stage(epochs=3, train="all",
         learning_rate=1e-4, schedule="one_cycle")],
    )
    ```
    """
    if stages is None:
        stages = (
            Stage(epochs=1, train="head", learning_rate=1e-3, name="head"),
            Stage(epochs=1, train="all", learning_rate=1e-4, name="all"),
        )
    if max_steps:
        train = train.take(max_steps)
        validation = validation.take(max_steps) if validation else None
    callbacks = [optimizers.LearningRateLogger(), *(callbacks or [])]
    rows = []
    epoch = 0
    for index, stage in enumerate(stages, start=1):
        epochs = 1 if max_steps else stage.epochs
        print_fn(describe_stage(index, len(stages), stage, epochs))
        steps = _steps_per_epoch(train, stage)
        for extra, chunk in enumerate(_chunks(stage, epochs)):
            apply_stage_trainable(model, stage, extra_groups=extra)
            schedule = optimizers.stage_schedule(stage, steps, chunk)
            model.compile(optimizer=stage_optimizer(stage, schedule, model))
            print_fn(freezing.format_audit(freezing.trainable_audit(model)))
            history = model.fit(
                train,
                validation_data=validation,
                initial_epoch=epoch,
                epochs=epoch + chunk,
                callbacks=callbacks,
                verbose=verbose,
            )
            for offset in range(chunk):
                row = {"stage": stage.name, "epoch": epoch + offset + 1}
                row.update(
                    {k: float(v[offset]) for k, v in history.history.items()}
                )
                rows.append(row)
            epoch += chunk
    return rows
