"""Stages: the fit loop over a recipe's stages.

Each stage sets which layer groups train, compiles a fresh optimizer, and
fits; epochs are numbered on across stages so `history.csv` reads as one run.
"""

import keras

from kerastl import freezing


def stage_optimizer(stage):
    """The Keras optimizer a `kerastl.Stage` asks for.

    Args:
        stage: a `kerastl.Stage`.

    Example:
    ```python
    kerastl.training.stage_optimizer(kerastl.Stage(optimizer="sgd"))
    ```
    """
    weight_decay = stage.weight_decay or None
    if stage.optimizer == "sgd":
        return keras.optimizers.SGD(
            stage.learning_rate,
            momentum=stage.momentum,
            weight_decay=weight_decay,
        )
    if stage.optimizer == "adam":
        return keras.optimizers.Adam(
            stage.learning_rate, weight_decay=weight_decay
        )
    return keras.optimizers.AdamW(
        stage.learning_rate, weight_decay=stage.weight_decay
    )


def apply_stage_trainable(model, stage):
    """Freezes and unfreezes `model` as `stage.train` says.

    `"head"` freezes the backbone, `"all"` unfreezes every group, an int
    unfreezes that many groups from the output.

    Example:
    ```python
    kerastl.training.apply_stage_trainable(model, kerastl.Stage(train=2))
    ```
    """
    if stage.train == "head":
        model.freeze_backbone()
    elif stage.train == "all":
        model.unfreeze_backbone(train_bn=stage.train_bn)
    else:
        model.unfreeze_backbone(last_n=stage.train, train_bn=stage.train_bn)


def describe_stage(index, count, stage, epochs):
    """One console line announcing a stage."""
    what = {"head": "head only", "all": "all layer groups"}.get(
        stage.train, f"last {stage.train} layer group(s) + head"
    )
    return (
        f"Stage {index}/{count} '{stage.name}': {what}, {stage.optimizer} "
        f"lr={stage.learning_rate:g}, {epochs} epoch(s)"
    )


def run_stages(
    model,
    train,
    validation,
    stages,
    *,
    max_steps=None,
    print_fn=print,
    verbose="auto",
):
    """Fits `model` through `stages` in order; returns one row per epoch.

    Args:
        model: a `kerastl.TransferClassifier`.
        train: a `tf.data.Dataset` of `(images, labels)` batches.
        validation: a dataset like `train`, or `None`.
        stages: sequence of `kerastl.Stage`.
        max_steps: int or `None`. With a number, every stage runs one epoch
            of at most that many steps (smoke runs).
        print_fn: callable for the stage headers and trainable tables.
        verbose: Keras `fit` verbosity. Defaults to `"auto"` (progress bars).

    Returns:
        A list of dicts: `stage`, `epoch` (1-based, counted across stages),
        `learning_rate`, and every metric Keras logged (`loss`,
        `val_loss`, ...).

    Example:
    ```python
    rows = kerastl.training.run_stages(model, train, val, recipe.stages)
    ```
    """
    if max_steps:
        train = train.take(max_steps)
        validation = validation.take(max_steps) if validation else None
    rows = []
    epoch = 0
    for index, stage in enumerate(stages, start=1):
        epochs = 1 if max_steps else stage.epochs
        print_fn(describe_stage(index, len(stages), stage, epochs))
        apply_stage_trainable(model, stage)
        model.compile(optimizer=stage_optimizer(stage))
        print_fn(freezing.format_audit(freezing.trainable_audit(model)))
        history = model.fit(
            train,
            validation_data=validation,
            initial_epoch=epoch,
            epochs=epoch + epochs,
            verbose=verbose,
        )
        learning_rate = float(
            keras.ops.convert_to_numpy(model.optimizer.learning_rate)
        )
        for offset in range(epochs):
            row = {
                "stage": stage.name,
                "epoch": epoch + offset + 1,
                "learning_rate": learning_rate,
            }
            row.update(
                {k: float(v[offset]) for k, v in history.history.items()}
            )
            rows.append(row)
        epoch += epochs
    return rows
