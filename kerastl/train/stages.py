"""Stages: the fit loop over a recipe's stages.

Each stage sets which layer groups train, compiles a fresh optimizer, and
fits; epochs are numbered on across stages so `history.csv` reads as one run.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from kerastl.errors import TrainingDiverged
from kerastl.models import freezing
from kerastl.train import callbacks as run_callbacks
from kerastl.train import head_training
from kerastl.train import optimizers
from kerastl.train.resume import ResumeState
from kerastl.train.stage import Stage
from kerastl.utils import keras_internals


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
    stages = DEFAULT_STAGES if stages is None else tuple(stages)
    if max_steps:
        train = train.take(max_steps)
        validation = validation.take(max_steps) if validation else None
    resume = ResumeState(checkpoint_dir, on_resumed)
    settings = _Settings(
        callbacks=list(callbacks or []),
        label_smoothing=label_smoothing,
        early_stopping=early_stopping,
        monitor=monitor,
        feature_cache=feature_cache,
        seed=seed,
        print_fn=print_fn,
        verbose=verbose,
    )
    plan = list(_plan(stages, max_steps))
    runner = _Runner(model, train, validation, settings, resume, plan)
    for part in plan:
        if part.part == 0:
            runner.begin_stage(part, len(stages))
        if not resume.skips(part.position):
            runner.fit(part)
    if resume.pending:
        # Every fit had finished before the interruption: only the final
        # weights and freeze state are left to put back.
        last = plan[-1]
        apply_stage_trainable(model, last.stage, extra_groups=last.part)
        resume.restore_final(runner.trained)
    return runner.progress.rows


# fastai's `fine_tune`: one epoch of the head, then everything for one epoch
# at a tenth of the rate.
DEFAULT_STAGES = (
    Stage(epochs=1, train="head", learning_rate=1e-3, name="head"),
    Stage(epochs=1, train="all", learning_rate=1e-4, name="all"),
)


@dataclasses.dataclass(frozen=True)
class _Part:
    """One fit of the plan: a stage, or one unfreezing step of it."""

    index: int  # the stage's position, from 0
    stage: Stage
    part: int  # the unfreezing step within the stage, from 0
    epochs: int  # the stage's epochs in this run (1 in a smoke run)
    chunk: int  # the stage's epochs done once this part ends

    @property
    def position(self):
        return [self.index, self.part]


def _plan(stages, max_steps):
    """Every fit of the run, in order: the stage plan."""
    for index, stage in enumerate(stages):
        epochs = 1 if max_steps else stage.epochs
        for part, chunk in enumerate(_chunks(stage, epochs)):
            yield _Part(index, stage, part, epochs, chunk)


@dataclasses.dataclass(frozen=True)
class _Settings:
    """`fine_tune`'s arguments that every fit of the run uses."""

    callbacks: list
    label_smoothing: float
    early_stopping: int
    monitor: str
    feature_cache: bool
    seed: object
    print_fn: object
    verbose: object


class _Runner:
    """Fits the parts of the plan one after another, sharing the callbacks
    that number the epochs, keep the history and write the checkpoints."""

    def __init__(self, model, train, validation, settings, resume, plan):
        self.model = model
        # A Distiller checkpoints its student alone: the frozen teacher never
        # changes, and the student shares the Distiller's optimizer.
        self.trained = getattr(model, "student", model)
        self.train, self.validation = train, validation
        self.settings = settings
        self.resume = resume
        self.soft_labels = has_soft_labels(model, train)
        self.guard = run_callbacks.StopOnNonFinite()
        self.progress = run_callbacks.Progress(
            self.trained, resume.checkpoint, self.guard
        )
        resume.seed_progress(self.progress)
        # Every stage's epochs, counted once per stage, not per part.
        epochs = sum(part.epochs for part in plan if part.part == 0)
        self.progbar = run_callbacks.RunProgbar(epochs, settings.print_fn)

    def begin_stage(self, part, count):
        header = describe_stage(part.index + 1, count, part.stage, part.epochs)
        self.settings.print_fn(header)
        self.progbar.stage = (
            f"Stage {part.index + 1}/{count} '{part.stage.name}'"
        )

    def fit(self, part):
        """Compiles the part's trainable groups and optimizer, restores a
        checkpoint taken inside it, and fits its epochs."""
        model, stage, settings = self.model, part.stage, self.settings
        apply_stage_trainable(model, stage, extra_groups=part.part)
        steps = _steps_per_epoch(self.train, stage)
        schedule = optimizers.stage_schedule(stage, steps, part.chunk)
        model.compile(
            optimizer=stage_optimizer(stage, schedule, model),
            label_smoothing=settings.label_smoothing,
            soft_labels=self.soft_labels,
        )
        settings.print_fn(
            freezing.format_audit(freezing.trainable_audit(model))
        )
        stopper = None
        if settings.early_stopping:
            stopper = run_callbacks.EarlyStopping(
                settings.early_stopping, settings.monitor
            )
        done = self.resume.restore(
            self.trained, part.position, stopper, self.train, settings.print_fn
        )
        cached = settings.feature_cache and _head_only(stage)
        start = len(self.progress.rows) - done
        self.progress.begin(part.position, stage.name, cached, stopper, done)
        fit_args = dict(
            initial_epoch=start + done,
            epochs=start + part.chunk,
            callbacks=self._callbacks(stage, stopper),
            verbose=settings.verbose,
        )
        if cached:
            self.progress.passes += 1
            head_training.fit_head_cached(
                model,
                self.train,
                self.validation,
                shuffle_seed=settings.seed,
                print_fn=settings.print_fn,
                **fit_args,
            )
        else:
            epochs = part.chunk - done
            _fit_epochs(model, self.train, self.validation, epochs, fit_args)
        if self.guard.failure is not None:
            raise _diverged(self.guard.failure, stage, self.resume.checkpoint)
        self.progress.save(finished=True)

    def _callbacks(self, stage, stopper):
        return [
            optimizers.LearningRateLogger(),
            *self.settings.callbacks,
            *([stopper] if stopper else []),
            *([keras.callbacks.SwapEMAWeights()] if stage.ema else []),
            self.guard,
            self.progress,
            self.progbar,
        ]


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
    keras_internals.build_from_batch(
        model,
        tf.nest.map_structure(
            lambda spec: np.zeros(
                (1, *spec.shape[1:]), spec.dtype.as_numpy_dtype
            ),
            train.element_spec,
        ),
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
