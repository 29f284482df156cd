"""Stages: the fit loop over a recipe's stages.

Each stage sets which layer groups train, compiles a fresh optimizer, and
fits; epochs are numbered on across stages so `history.csv` reads as one run.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from kerastl.errors import TrainingDiverged
from kerastl.models import freezing
from kerastl.train import checkpoints
from kerastl.train import features
from kerastl.train import optimizers
from kerastl.train.stage import Stage


def stage_optimizer(stage, learning_rate=None, model=None):
    """The Keras optimizer a `kerastl.Stage` asks for.

    `stage.ema` turns on Keras' moving average of the weights. With a
    `model`, biases and normalization parameters are exempt from weight
    decay, and `stage.layer_decay < 1` or `stage.lr_multipliers` give
    each layer group its own learning rate (`kerastl.train.optimizers`).

    Args:
        stage: a `kerastl.Stage`.
        learning_rate: float or `LearningRateSchedule`, or `None` for the
            stage's constant `learning_rate`.
        model: the `kerastl.TransferClassifier` it will train, or `None`.

    Example:
    ```python
    kerastl.train.stages.stage_optimizer(kerastl.Stage(optimizer="sgd"))
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
    if stage.ema:
        kwargs.update(use_ema=True, ema_momentum=stage.ema)
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
    kerastl.train.stages.apply_stage_trainable(model, kerastl.Stage(train=2))
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


class _StopOnNonFinite(keras.callbacks.Callback):
    """Stops a fit at the first batch whose loss is not a finite number."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failure = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = (self.epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True


class _EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping (best weights restored) that survives a resume.

    Keras resets its counters when a fit begins; a resumed fit puts back the
    ones saved in the checkpoint instead.
    """

    def __init__(self, patience, monitor):
        super().__init__(
            monitor=monitor,
            patience=patience,
            mode="min" if monitor.endswith("loss") else "max",
            restore_best_weights=True,
        )
        self._saved = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._saved is not None:
            state, self.best_weights = self._saved
            self.wait = state["wait"]
            self.best = state["best"]
            self.best_epoch = state["best_epoch"]
            self.best_weights = self.best_weights or None

    def state(self):
        return {
            "wait": self.wait,
            "best": float(self.best),
            "best_epoch": self.best_epoch,
        }


class _RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, with each epoch placed in the whole run.

    Keras numbers a fit's epochs against that fit's end ("Epoch 4/5"),
    which says nothing about the stages still to come: this prints
    "Stage 2/3 'last_stage' · epoch 4 of 7" instead.
    """

    def __init__(self, total_epochs, print_fn):
        super().__init__()
        self.total_epochs = total_epochs
        self.print_fn = print_fn
        self.stage = ""

    def on_epoch_begin(self, epoch, logs=None):
        # Keras' own line is printed only for fits of several epochs.
        epochs, self.epochs = self.epochs, 1
        super().on_epoch_begin(epoch, logs)
        self.epochs = epochs
        if self.verbose:
            self.print_fn(
                f"{self.stage} · epoch {epoch + 1} of {self.total_epochs}"
            )


class _Progress(keras.callbacks.Callback):
    """Keeps the history rows, the data position and the checkpoints.

    `passes` counts iterations over the training dataset so far: a resumed
    run creates that many iterators first, which advances tf.data's seeded
    shuffles and augmentation draws to where the interrupted run was.
    """

    def __init__(self, model, checkpoint, guard):
        super().__init__()
        self.full_model = model
        self.checkpoint = checkpoint
        self.guard = guard
        self.rows = []
        self.passes = 0
        self.part = None

    def begin(self, position, stage_name, cached, stopper, done):
        self.part = {
            "stage": position[0],
            "part": position[1],
            "name": stage_name,
            "cached": cached,
            "done": done,
        }
        self.stopper = stopper

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.failure is not None:
            return
        row = {"stage": self.part["name"], "epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        self.rows.append(row)
        self.part["done"] += 1
        if not self.part["cached"]:
            self.passes += 1
        self.save(finished=False)

    def save(self, finished):
        if self.checkpoint is None:
            return
        state = {
            "stage": self.part["stage"],
            "part": self.part["part"],
            "cached": self.part["cached"],
            "epochs_done": self.part["done"],
            "finished": finished,
            "passes": self.passes,
            "rows": self.rows,
        }
        extras = {}
        if self.stopper is not None:
            state["early_stopping"] = self.stopper.state()
            extras["best"] = self.stopper.best_weights or []
        self.checkpoint.save(self.full_model, state, extras)


def _resume(model, checkpoint, saved, position, stopper, train, print_fn):
    """Restores a checkpoint into the fit at `position`; returns its epochs
    already done there."""
    same_fit = [saved["stage"], saved["part"]] == position
    resumed = same_fit and not saved["finished"]
    state, extras = checkpoint.restore(
        model, optimizer=resumed, extras=("best",)
    )
    passes = state["passes"]
    if resumed and state["cached"]:
        # The cached fit reads the training data once more on its own.
        passes -= 1
    for _ in range(passes):
        iter(train)
    done = state["epochs_done"] if resumed else 0
    if resumed and stopper is not None and "early_stopping" in state:
        stopper._saved = (state["early_stopping"], extras["best"])
    print_fn(
        f"Resumed from {checkpoint.directory} after epoch {len(state['rows'])}."
    )
    return done


def _diverged(failure, stage, checkpoint):
    epoch, step, loss = failure
    where = (
        f"The checkpoint of the last good epoch is in {checkpoint.directory}"
        "; resume it with `kerastl fit --resume RUN_DIR` (with --set to "
        "change the stage) once fixed."
        if checkpoint is not None and checkpoint.state() is not None
        else "No epoch had finished, so there is no checkpoint to resume."
    )
    return TrainingDiverged(
        f"The training loss became {loss} at epoch {epoch}, step {step} of "
        f"stage '{stage.name}' (learning rate {stage.learning_rate:g}), so "
        "training stopped. Usual causes: a learning rate too high for this "
        "stage (try 10x lower), labels outside the classes, or corrupt "
        f"inputs. {where}"
    )


def fine_tune(
    model,
    train,
    validation=None,
    stages=None,
    *,
    max_steps=None,
    callbacks=None,
    label_smoothing=0.0,
    early_stopping=0,
    monitor="val_loss",
    feature_cache=False,
    seed=None,
    checkpoint_dir=None,
    on_resumed=None,
    print_fn=print,
    verbose="auto",
):
    """Fits `model` through `stages` in order; returns one row per epoch.

    Each stage sets which layer groups train, compiles its optimizer and
    learning-rate schedule, and fits; with `unfreeze_every` it fits once per
    unfreezing step. Epochs are numbered on across stages.

    With `checkpoint_dir`, the model, optimizer, early-stopping and data
    position are saved atomically after every epoch, and a directory that
    already holds a checkpoint is resumed from its last completed epoch: a
    run killed at any point and resumed ends where the uninterrupted run
    would, given the same seed. A loss that turns NaN or infinite stops
    training with `TrainingDiverged`, leaving the last good checkpoint.

    Args:
        model: a `kerastl.TransferClassifier` (or a `kerastl.train.distillation.
            Distiller`).
        train: a `tf.data.Dataset` of `(images, labels)` batches. Labels
            shaped like the predictions (MixUp, CutMix) are soft labels.
        validation: a dataset like `train`, or `None`.
        stages: sequence of `kerastl.Stage`. Defaults to fastai's
            `fine_tune`: one epoch of the head, then everything for one
            epoch at a tenth of the rate.
        max_steps: int or `None`. With a number, every stage runs one epoch
            of at most that many steps (smoke runs).
        callbacks: list of Keras callbacks for every fit.
        label_smoothing: float. Label smoothing of the loss. Defaults to
            `0.0`.
        early_stopping: int. Patience in epochs; each fit stops when
            `monitor` has not improved for that long and keeps its best
            weights. `0` disables it. Defaults to `0`.
        monitor: str. The logged metric early stopping watches; names
            ending in `loss` are minimized, others maximized. Defaults to
            `"val_loss"`.
        feature_cache: bool. Train head-only stages on cached backbone
            features (`kerastl.train.features`). Only correct when `train` has
            no random augmentation. Defaults to `False`.
        seed: int or `None`. Shuffles the cached features each epoch.
            Defaults to `None` (their first order, every epoch).
        checkpoint_dir: path or `None`. Where to checkpoint, and resume
            from. Defaults to `None` (no checkpoints).
        on_resumed: callable or `None`. Called with no arguments once a
            checkpoint has been restored into `model`, before anything new
            is written: `kerastl fit --resume` records changed settings
            only then, so a checkpoint that does not fit leaves the run
            as it was.
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
    soft_labels = has_soft_labels(model, train)
    checkpoint = None
    saved = None
    if checkpoint_dir is not None:
        checkpoint = checkpoints.Checkpoint(checkpoint_dir)
        saved = checkpoint.state()
    guard = _StopOnNonFinite()
    # A Distiller checkpoints its student alone: the frozen teacher never
    # changes, and the student shares the Distiller's optimizer.
    trained = getattr(model, "student", model)
    progress = _Progress(trained, checkpoint, guard)
    if saved is not None:
        progress.rows = list(saved["rows"])
        progress.passes = saved["passes"]
    last = None
    progbar = _RunProgbar(
        sum(1 if max_steps else stage.epochs for stage in stages), print_fn
    )
    for index, stage in enumerate(stages):
        epochs = 1 if max_steps else stage.epochs
        print_fn(describe_stage(index + 1, len(stages), stage, epochs))
        progbar.stage = f"Stage {index + 1}/{len(stages)} '{stage.name}'"
        steps = _steps_per_epoch(train, stage)
        for part, chunk in enumerate(_chunks(stage, epochs)):
            position = [index, part]
            last = (stage, part)
            if saved is not None and (
                position < [saved["stage"], saved["part"]]
                or (position == [saved["stage"], saved["part"]])
                and saved["finished"]
            ):
                continue
            apply_stage_trainable(model, stage, extra_groups=part)
            schedule = optimizers.stage_schedule(stage, steps, chunk)
            model.compile(
                optimizer=stage_optimizer(stage, schedule, model),
                label_smoothing=label_smoothing,
                soft_labels=soft_labels,
            )
            print_fn(freezing.format_audit(freezing.trainable_audit(model)))
            stopper = (
                _EarlyStopping(early_stopping, monitor)
                if early_stopping
                else None
            )
            done = 0
            if saved is not None:
                done = _resume(
                    trained,
                    checkpoint,
                    saved,
                    position,
                    stopper,
                    train,
                    print_fn,
                )
                saved = None
                if on_resumed is not None:
                    on_resumed()
            cached = feature_cache and _head_only(stage)
            start = len(progress.rows) - done
            progress.begin(position, stage.name, cached, stopper, done)
            fit_callbacks = [
                optimizers.LearningRateLogger(),
                *(callbacks or []),
                *([stopper] if stopper else []),
                *([keras.callbacks.SwapEMAWeights()] if stage.ema else []),
                guard,
                progress,
                progbar,
            ]
            fit_args = dict(
                initial_epoch=start + done,
                epochs=start + chunk,
                callbacks=fit_callbacks,
                verbose=verbose,
            )
            if cached:
                progress.passes += 1
                features.fit_head_cached(
                    model,
                    train,
                    validation,
                    shuffle_seed=seed,
                    print_fn=print_fn,
                    **fit_args,
                )
            else:
                _fit_epochs(model, train, validation, chunk - done, fit_args)
            if guard.failure is not None:
                raise _diverged(guard.failure, stage, checkpoint)
            progress.save(finished=True)
    if saved is not None:
        # Every fit had finished before the interruption: only the final
        # weights and freeze state are left to put back.
        apply_stage_trainable(model, last[0], extra_groups=last[1])
        checkpoint.restore(trained)
        if on_resumed is not None:
            on_resumed()
    return progress.rows


def _fit_epochs(model, train, validation, epochs, fit_args):
    """`model.fit` whose epoch k reads the training data's k-th pass.

    tf.data reshuffles (and redraws augmentation) on each new iterator of
    `train`; Keras creates those on its own schedule, which differs between
    backends. Chaining the passes into one stream read `steps` batches per
    epoch ties each epoch to exactly one pass, so a resumed run, after
    creating as many iterators as passes were done, sees the same data.
    """
    steps = int(train.cardinality())
    if steps <= 0:
        # Unknown length: epochs cannot be cut from one stream.
        return model.fit(train, validation_data=validation, **fit_args)
    passes = tf.data.Dataset.range(epochs).flat_map(lambda _: train)
    # Keras builds the compiled loss and metrics from a batch it pulls off
    # the data on JAX and PyTorch, which would shift the stream by one
    # batch; building them from the data's shapes instead pulls nothing.
    model._symbolic_build(
        data_batch=tf.nest.map_structure(
            lambda spec: np.zeros(
                (1, *spec.shape[1:]), spec.dtype.as_numpy_dtype
            ),
            train.element_spec,
        )
    )
    return model.fit(
        passes, validation_data=validation, steps_per_epoch=steps, **fit_args
    )


def has_soft_labels(model, dataset):
    """Whether `dataset` gives a softmax `model` class distributions (MixUp,
    CutMix) instead of integer labels.

    Example:
    ```python
    model.compile(soft_labels=kerastl.train.stages.has_soft_labels(model, ds))
    ```
    """
    return not model.multi_label and dataset.element_spec[1].shape.rank > 1


def _head_only(stage):
    return stage.train == "head" and not stage.unfreeze_every
