"""`Stage`: one phase of training, which layers train and how.

`kerastl.train.stages.fine_tune` runs a tuple of them; a `Recipe` holds one.
Each field is checked where it is written, so a wrong value fails before any
data is read or directory created.
"""

import dataclasses

from kerastl.errors import RecipeError
from kerastl.train.optimizers import SCHEDULES

TRAINABLE_HELP = '"head", "all", or the number of last layer groups'


@dataclasses.dataclass(frozen=True)
class Stage:
    """One phase of training: which layers train, and how.

    Args:
        epochs: int. Epochs of this stage. Defaults to `1`.
        train: `"head"`, `"all"`, or an int: how many layer groups,
            counted from the output, train besides the head. Defaults to
            `"head"`.
        optimizer: str. `"sgd"` (with `momentum`), `"adam"` or `"adamw"`.
            Defaults to `"adamw"`.
        learning_rate: float. Defaults to `1e-3`.
        weight_decay: float. Defaults to `0.0`.
        momentum: float. SGD momentum. Defaults to `0.9`.
        train_bn: bool. Whether BatchNorm layers of trained groups train.
            Defaults to `False`.
        schedule: str. `"constant"`, `"step"`, `"cosine"` (warmup + cosine)
            or `"one_cycle"`; see `kerastl.train.optimizers`. Defaults to
            `"constant"`.
        warmup_fraction: float. Share of the stage's steps spent warming up
            (`"cosine"`) or rising (`"one_cycle"`, default 0.25 there).
            Defaults to `0.0`.
        decay_epochs: int. `"step"`: epochs between decays. Defaults to `1`.
        decay_rate: float. `"step"`: factor per decay. Defaults to `0.1`.
        layer_decay: float. Layer-wise learning-rate decay: the head trains
            at `learning_rate`, the last backbone group at `learning_rate *
            layer_decay`, the one before at `layer_decay ** 2` times it, and
            so on. `1.0` gives every group the same rate. Defaults to `1.0`.
        lr_multipliers: tuple of float or `None`. Explicit discriminative
            learning rates: one multiplier per layer group, input to output
            (the head keeps `learning_rate`). Replaces `layer_decay`.
            Defaults to `None`.
        unfreeze_every: int. Gradual unfreezing: every this many epochs one
            more layer group (from the output) joins those that train, each
            step a fit of its own with a fresh optimizer and schedule (as in
            ULMFiT). `0` disables it. Defaults to `0`.
        ema: float. Momentum of an exponential moving average of the
            weights (Keras' `use_ema`), e.g. `0.999`; validation during the
            stage and the weights it ends with are the averaged ones. `0`
            disables it. Defaults to `0.0`.
        name: str. Shown in the console and `history.csv`. Defaults to
            `""`: `stage1`, `stage2`, ... in order.

    Example:
    ```python
    kerastl.Stage(epochs=3, train="head", learning_rate=1e-3)
    ```
    """

    epochs: int = 1
    train: int | str = "head"
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    train_bn: bool = False
    schedule: str = "constant"
    warmup_fraction: float = 0.0
    decay_epochs: int = 1
    decay_rate: float = 0.1
    layer_decay: float = 1.0
    lr_multipliers: tuple | None = None
    unfreeze_every: int = 0
    ema: float = 0.0
    name: str = ""

    def __post_init__(self):
        _check_what_trains(self)
        _check_optimizer(self)
        _check_layer_rates(self)


def _check_what_trains(stage):
    valid = stage.train in ("head", "all") or (
        isinstance(stage.train, int) and stage.train >= 0
    )
    if not valid:
        raise RecipeError(
            f"A stage's `train` must be {TRAINABLE_HELP}. "
            f"Received: train={stage.train!r}"
        )
    if not stage.learning_rate > 0:
        raise RecipeError(
            "A stage's learning_rate must be a positive number, e.g. "
            f"1e-3. Received: learning_rate={stage.learning_rate}"
        )
    if stage.epochs < 1:
        raise RecipeError(
            f"A stage needs at least one epoch. Received: epochs={stage.epochs}"
        )
    if stage.unfreeze_every < 0 or (
        stage.unfreeze_every and stage.train == "all"
    ):
        raise RecipeError(
            "unfreeze_every is a number of epochs >= 0, and needs a "
            "stage that starts from the head or the last N groups, not "
            f"'all'. Received: unfreeze_every={stage.unfreeze_every}, "
            f"train={stage.train!r}"
        )


def _check_optimizer(stage):
    if stage.optimizer not in ("sgd", "adam", "adamw"):
        raise RecipeError(
            "A stage's optimizer must be 'sgd', 'adam' or 'adamw'. "
            f"Received: optimizer={stage.optimizer!r}"
        )
    if stage.schedule not in SCHEDULES:
        raise RecipeError(
            f"A stage's schedule must be one of {', '.join(SCHEDULES)}. "
            f"Received: schedule={stage.schedule!r}"
        )
    if not 0.0 <= stage.warmup_fraction < 1.0:
        raise RecipeError(
            "A stage's warmup_fraction is a share of its steps, in "
            f"[0, 1). Received: warmup_fraction={stage.warmup_fraction}"
        )
    if not 0.0 <= stage.ema < 1.0:
        raise RecipeError(
            "A stage's ema is the momentum of the weights' moving "
            "average, in [0, 1) (e.g. 0.999), or 0 for none. Received: "
            f"ema={stage.ema}"
        )


def _check_layer_rates(stage):
    if not 0.0 < stage.layer_decay <= 1.0:
        raise RecipeError(
            "A stage's layer_decay multiplies the learning rate once per "
            "layer group below the head, so it lies in (0, 1]. "
            f"Received: layer_decay={stage.layer_decay}"
        )
    if stage.lr_multipliers is not None and stage.layer_decay != 1.0:
        raise RecipeError(
            "Set either layer_decay or lr_multipliers on a stage, not "
            f"both. Received: layer_decay={stage.layer_decay}, "
            f"lr_multipliers={stage.lr_multipliers}"
        )
