"""Per-epoch checkpoints of a fine-tuning run, and resuming from them.

A checkpoint directory holds `state.json` (where the run stands: stage,
fit and epoch, the history so far) and the arrays it points to: every model
variable (weights, BatchNorm statistics, dropout seed states) and every
optimizer variable (step count, moments, EMA averages). Arrays are written
to a new file first and `state.json` last, both atomically, so a run killed
at any instant leaves the previous complete checkpoint.

Variables are stored by position, not name: a model rebuilt from the same
recipe creates them in the same order, and each position's shape is checked
on restore.
"""

import json
import pathlib

import keras
import numpy as np

from kerastl.errors import CheckpointError
from kerastl.utils import atomic

STATE_FILE = "state.json"


class Checkpoint:
    """A run's checkpoint directory.

    Args:
        directory: str or path. Created on first save.

    Example:
    ```python
    checkpoint = kerastl.train.checkpoints.Checkpoint("runs/pets/1/checkpoint")
    if checkpoint.state() is not None:
        state, _ = checkpoint.restore(model, optimizer=True)
    ```
    """

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)

    def state(self):
        """The last saved state dict, or `None` before the first save."""
        path = self.directory / STATE_FILE
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def save(self, model, state, extras=None):
        """Writes `model`'s (and its optimizer's) variables and `state`.

        Args:
            model: a Keras model, compiled or not.
            state: a JSON-ready dict; `arrays` is added to it.
            extras: dict of name -> list of arrays saved alongside (e.g.
                early stopping's best weights), or `None`.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        previous = self.state()
        serial = (previous or {}).get("serial", 0) + 1
        arrays = f"variables-{serial}.npz"
        values = {
            f"model_{i}": keras.ops.convert_to_numpy(v)
            for i, v in enumerate(model.variables)
        }
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and optimizer.built:
            values.update(
                {
                    f"optimizer_{i}": keras.ops.convert_to_numpy(v)
                    for i, v in enumerate(optimizer.variables)
                }
            )
        for name, items in (extras or {}).items():
            values.update({f"{name}_{i}": v for i, v in enumerate(items)})
        with atomic.atomic_path(self.directory / arrays, ".npz") as tmp:
            np.savez(tmp, **values)
        state = {**state, "serial": serial, "arrays": arrays}
        with atomic.atomic_path(self.directory / STATE_FILE) as tmp:
            tmp.write_text(json.dumps(state, indent=2))
        if previous is not None and previous.get("arrays") != arrays:
            (self.directory / previous["arrays"]).unlink(missing_ok=True)

    def restore(self, model, optimizer=False, extras=()):
        """Loads the saved variables into `model`.

        Args:
            model: the model the checkpoint was saved from, rebuilt the same
                way.
            optimizer: bool. Also restore the optimizer's variables (it is
                built for the model's trainable variables first). Only valid
                when the optimizer is configured as it was at save time.
            extras: names of `extras` passed to `save` to read back.

        Returns:
            `(state, {name: list of arrays})`: the saved state dict and the
            requested extras.
        """
        state = self.state()
        if state is None:
            raise CheckpointError(
                f"No checkpoint in {self.directory}: the run stopped before "
                "its first epoch ended. Start it again without --resume."
            )
        with np.load(self.directory / state["arrays"]) as arrays:
            _assign(model.variables, arrays, "model", self.directory)
            if optimizer:
                model.optimizer.build(model.trainable_variables)
                _assign(
                    model.optimizer.variables,
                    arrays,
                    "optimizer",
                    self.directory,
                )
            found = {name: _items(arrays, name) for name in extras}
        return state, found


def _items(arrays, name):
    keys = sorted(
        (k for k in arrays.files if k.rsplit("_", 1)[0] == name),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    return [arrays[k] for k in keys]


def _assign(variables, arrays, prefix, directory):
    saved = _items(arrays, prefix)
    if len(saved) != len(variables):
        raise CheckpointError(
            f"The checkpoint in {directory} holds {len(saved)} {prefix} "
            f"variables but the {prefix} has {len(variables)}: it was saved "
            "from a different model or stage setup. Resume with the recipe "
            "the run started with (its recipe.json), or start a new run."
        )
    for variable, value in zip(variables, saved, strict=True):
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"A saved {prefix} variable has shape {value.shape} but "
                f"{variable.path} has {variable.shape}: the checkpoint in "
                f"{directory} belongs to a different model. Resume with the "
                "recipe the run started with, or start a new run."
            )
        variable.assign(value)
