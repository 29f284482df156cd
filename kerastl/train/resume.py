"""Resuming `fine_tune` from a checkpoint: what it restores, and which of
the run's fits are already done.

A checkpoint records the position of the fit it was taken in (stage, part),
whether that fit had finished, the epochs done and how many times the
training data was read. A resumed run skips the fits before that position,
restores the model, optimizer and early-stopping state into the fit at it,
and reads the data as often as the interrupted run had, so tf.data's seeded
shuffles and augmentations continue where they were.
"""

from kerastl.train import checkpoints


class ResumeState:
    """The checkpoint of a run directory and what is left to restore.

    Args:
        checkpoint_dir: path or `None` (no checkpoints: nothing to resume).
        on_resumed: callable or `None`, called once a checkpoint has been
            restored into the model.

    Example:
    ```python
    resume = kerastl.train.resume.ResumeState("runs/pets/x/checkpoint")
    resume.skips([0, 0])  # True when the first fit had finished
    ```
    """

    def __init__(self, checkpoint_dir, on_resumed=None):
        self.checkpoint = None
        self.saved = None
        self.on_resumed = on_resumed
        if checkpoint_dir is not None:
            self.checkpoint = checkpoints.Checkpoint(checkpoint_dir)
            self.saved = self.checkpoint.state()

    @property
    def pending(self):
        """Whether a checkpoint is still to be restored."""
        return self.saved is not None

    def seed_progress(self, progress):
        """Gives the run's progress record the checkpoint's history rows
        and data passes."""
        if self.saved is not None:
            progress.rows = list(self.saved["rows"])
            progress.passes = self.saved["passes"]

    def skips(self, position):
        """Whether the fit at `position` (`[stage, part]`) was done before
        the interruption."""
        if self.saved is None:
            return False
        at = [self.saved["stage"], self.saved["part"]]
        return position < at or (position == at and self.saved["finished"])

    def restore(self, model, position, stopper, train, print_fn):
        """Restores the checkpoint into the fit at `position`, once; returns
        the epochs already done in that fit (0 when nothing is restored)."""
        if self.saved is None:
            return 0
        done = _restore(
            model,
            self.checkpoint,
            self.saved,
            position,
            stopper,
            train,
            print_fn,
        )
        self._resumed()
        return done

    def restore_final(self, model):
        """Restores the final weights of a run whose fits had all finished."""
        self.checkpoint.restore(model)
        self._resumed()

    def _resumed(self):
        self.saved = None
        if self.on_resumed is not None:
            self.on_resumed()


def _restore(model, checkpoint, saved, position, stopper, train, print_fn):
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
