"""The callbacks `fine_tune` trains with: a stop on a non-finite loss, early
stopping that keeps the best weights across resumes, the per-stage
progress bar and the checkpointing progress record.
"""

import math

import keras


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops a fit at the first batch whose loss is not a finite number.

    Example:
    ```python
    guard = kerastl.train.callbacks.StopOnNonFinite()
    model.fit(train_ds, callbacks=[guard])
    ```
    """

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


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping (best weights restored) that survives a resume.

    Keras resets its counters when a fit begins; a resumed fit puts back the
    ones saved in the checkpoint instead.

    Args:
        patience: int. Epochs without improvement before stopping.
        monitor: str. The logged metric watched, e.g. `"val_loss"`.

    Example:
    ```python
    stopper = kerastl.train.callbacks.EarlyStopping(3, "val_loss")
    ```
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


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, with each epoch placed in the whole run.

    Keras numbers a fit's epochs against that fit's end ("Epoch 4/5"),
    which says nothing about the stages still to come: this prints
    "Stage 2/3 'last_stage' · epoch 4 of 7" instead.

    Args:
        total_epochs: int. Epochs of the whole run, all stages.
        print_fn: callable for the stage headers.

    Example:
    ```python
    progbar = kerastl.train.callbacks.RunProgbar(7, print)
    ```
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


class Progress(keras.callbacks.Callback):
    """Keeps the history rows, the data position and the checkpoints.

    `passes` counts iterations over the training dataset so far: a resumed
    run creates that many iterators first, which advances tf.data's seeded
    shuffles and augmentation draws to where the interrupted run was.

    Args:
        model: the model whose weights are checkpointed.
        checkpoint: a `kerastl.train.checkpoints.Checkpoint` or `None`.
        guard: the run's `StopOnNonFinite`.

    Example:
    ```python
    progress = kerastl.train.callbacks.Progress(model, checkpoint, guard)
    ```
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
