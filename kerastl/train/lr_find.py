"""The learning-rate finder: an exponential learning-rate range test.

Leslie Smith's range test as fastai's `lr_find` runs it: train for a few
hundred steps while the learning rate grows exponentially from `start_lr`
to `end_lr`, record each step's loss, smooth it, and stop once the smoothed
loss passes `diverge` times its minimum. A good learning rate lies where
the loss still falls steeply, well before it blows up. `suggest` reads
fastai's three suggestions off the curve:

- `"valley"` (the one kerastl picks, as fastai does): halfway along the
  longest stretch over which the loss keeps falling.
- `"steep"`: where the loss falls fastest against log learning rate.
- `"minimum/10"`: a tenth of the rate with the lowest loss.

The test never changes the model: its weights, which layers train, and its
compiled optimizer and loss are restored afterwards.
"""

import contextlib
import dataclasses

import keras
import numpy as np

from kerastl.train import stages
from kerastl.train.stage import Stage
from kerastl.utils import atomic
from kerastl.utils import keras_internals

METHOD = "valley"
# fastai's defaults: the suggestions leave out the first tenth of the
# planned steps (the loss has barely moved) and the last few (the blow-up
# that stopped the test), which the plot's loss axis also leaves out.
SKIP_END = 5
# A smoke run sweeps this many steps: enough for a curve to suggest from.
SMOKE_STEPS = 10


@dataclasses.dataclass(frozen=True)
class LRFindResult:
    """What a learning-rate range test measured and suggests.

    Args:
        learning_rates: tuple of float. The learning rate of each step.
        losses: tuple of float. Each step's training loss, on that step's
            batch, before the update.
        smoothed: tuple of float. `losses` smoothed by `smooth`.
        suggestion: float. The suggested learning rate (`METHOD`).
        alternatives: dict. The other suggestions by name (`"steep"`,
            `"minimum/10"`).
        stopped_early: bool. Whether the loss diverged before the last step.

    Example:
    ```python
    result = kerastl.train.lr_find.lr_find(model, train_ds)
    model.compile(optimizer=keras.optimizers.AdamW(result.suggestion))
    ```
    """

    learning_rates: tuple
    losses: tuple
    smoothed: tuple
    suggestion: float
    alternatives: dict
    stopped_early: bool

    def to_dict(self):
        """The result as JSON-ready values; a non-finite loss becomes `None`.

        Example:
        ```python
        json.dumps(result.to_dict())
        ```
        """

        def finite(values):
            return [v if np.isfinite(v) else None for v in values]

        return {
            "method": METHOD,
            "suggestion": self.suggestion,
            "alternatives": dict(self.alternatives),
            "stopped_early": self.stopped_early,
            "learning_rates": list(self.learning_rates),
            "losses": finite(self.losses),
            "smoothed": finite(self.smoothed),
        }


def smooth(losses, beta=0.98):
    """fastai's smoothed loss: a debiased exponential moving average.

    `avg_i = beta * avg_(i-1) + (1 - beta) * loss_i` from `avg_(-1) = 0`,
    divided by `1 - beta ** (i + 1)` so early values are not pulled to 0.

    Args:
        losses: sequence of float.
        beta: float in [0, 1). Weight of the past. Defaults to `0.98`.

    Returns:
        A float numpy array, one value per loss.

    Example:
    ```python
    kerastl.train.lr_find.smooth([1.0, 0.5], beta=0.5)  # [1.0, 0.6667]
    ```
    """
    smoothed = []
    average = 0.0
    for step, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta**step))
    return np.asarray(smoothed, dtype=float)


def suggest(learning_rates, smoothed, *, skip_start=0, skip_end=0):
    """fastai's learning-rate suggestions from a range test's loss curve.

    A pure function of its inputs. Only finite losses count, and the first
    `skip_start` and last `skip_end` steps are left out unless that would
    leave fewer than three.

    - `"valley"`: the longest valley is the longest decreasing subsequence
      of the loss (so a single noisy step does not cut it short); the
      suggestion is the learning rate halfway along it, by step.
    - `"steep"`: the learning rate at the start of the step where the loss
      falls fastest against log learning rate.
    - `"minimum/10"`: a tenth of the learning rate with the lowest loss.

    Args:
        learning_rates: sequence of float, increasing.
        smoothed: sequence of float, the smoothed loss at each rate.
        skip_start: int. Leading steps to leave out. Defaults to `0`.
        skip_end: int. Trailing steps to leave out. Defaults to `0`.

    Returns:
        A dict of float: `"valley"`, `"steep"`, `"minimum/10"`.

    Example:
    ```python
    kerastl.train.lr_find.suggest(
        [1e-4, 1e-3, 1e-2, 1e-1], [2.0, 1.5, 0.5, 3.0]
    )
    ```
    """
    rates = np.asarray(learning_rates, dtype=float)
    losses = np.asarray(smoothed, dtype=float)
    finite = np.isfinite(losses)
    rates, losses = rates[finite], losses[finite]
    if len(losses) < 2:
        raise ValueError(
            "The learning-rate range test recorded fewer than two finite "
            "losses, too few to suggest a learning rate: the loss diverged "
            "at once. Lower start_lr (--start-lr) or run more steps."
        )
    kept = slice(skip_start, len(losses) - skip_end)
    if len(losses[kept]) >= 3:
        rates, losses = rates[kept], losses[kept]

    start, end = _longest_valley(losses)
    slopes = np.diff(losses) / np.diff(np.log(rates))
    return {
        "valley": float(rates[(start + end) // 2]),
        "steep": float(rates[np.argmin(slopes)]),
        "minimum/10": float(rates[np.argmin(losses)] / 10),
    }


def _longest_valley(losses):
    """First and last index of the first longest strictly decreasing
    subsequence (O(n^2): a range test has a few hundred steps)."""
    length = np.ones(len(losses), dtype=int)
    previous = np.full(len(losses), -1)
    for i in range(1, len(losses)):
        higher = np.flatnonzero(losses[:i] > losses[i])
        if len(higher):
            best = higher[np.argmax(length[higher])]
            length[i] = length[best] + 1
            previous[i] = best
    end = int(np.argmax(length))
    start = end
    while previous[start] >= 0:
        start = previous[start]
    return int(start), end


def lr_find(
    model,
    train,
    stage=None,
    *,
    start_lr=1e-7,
    end_lr=10.0,
    num_steps=100,
    diverge=4.0,
    beta=0.98,
    label_smoothing=0.0,
    verbose=1,
):
    """Runs a learning-rate range test on `model` and suggests a rate.

    The layer groups `stage` trains are unfrozen and its optimizer (with
    its weight decay, momentum and layer-wise rates) is compiled with a
    learning rate that grows from `start_lr` to `end_lr` geometrically,
    one step per batch; `train` is repeated if it has fewer batches. The
    loss is the one `kerastl.fine_tune` trains with. The stage's `schedule`
    and `ema` do not apply: the suggestion is for the stage's
    `learning_rate`, the schedule's peak. The test stops when the smoothed
    loss passes `diverge` times its lowest value or a loss is not finite.
    Afterwards the model's weights, trainable layers and compiled
    optimizer are restored as they were.

    Args:
        model: a `kerastl.TransferClassifier`.
        train: a `tf.data.Dataset` of `(images, labels)` batches.
        stage: a `kerastl.Stage`, or `None` for the default stage (the
            head, AdamW).
        start_lr: float. The first step's learning rate. Defaults to
            `1e-7`.
        end_lr: float. The last step's learning rate. Defaults to `10.0`.
        num_steps: int. Steps from `start_lr` to `end_lr`. Defaults to
            `100`.
        diverge: float. Stop once the smoothed loss exceeds this many times
            its minimum. Defaults to `4.0`.
        beta: float. Smoothing of the loss (see `smooth`). Defaults to
            `0.98`.
        label_smoothing: float. Label smoothing of the loss, as in
            `kerastl.fine_tune`. Defaults to `0.0`.
        verbose: int. `1` shows a progress bar, `0` nothing. Defaults to
            `1`.

    Returns:
        An `LRFindResult`.

    Example:
    ```python
    result = kerastl.train.lr_find.lr_find(model, train_ds, kerastl.Stage())
    print(result.suggestion, result.alternatives)
    kerastl.train.lr_find.plot(result, "lr_find.png")
    ```
    """
    if not 0 < start_lr < end_lr or num_steps < 2:
        raise ValueError(
            "A learning-rate range test sweeps from a positive start_lr up "
            "to a larger end_lr over at least two steps. Received: "
            f"start_lr={start_lr}, end_lr={end_lr}, num_steps={num_steps}"
        )
    # The weight average plays no part in the losses the test records.
    stage = dataclasses.replace(stage or Stage(), ema=0.0)
    with _restored(model):
        optimizer = _compile_sweep(
            model, train, stage, start_lr, end_lr, num_steps, label_smoothing
        )
        rates, losses, stopped_early = _sweep(
            model, optimizer, train, num_steps, beta, diverge, verbose
        )
    if not losses:
        raise ValueError(
            "The training dataset yielded no batches, so the learning-rate "
            "range test had nothing to train on. Check the recipe's data."
        )
    smoothed = smooth(losses, beta)
    suggestions = suggest(
        rates, smoothed, skip_start=num_steps // 10, skip_end=SKIP_END
    )
    return LRFindResult(
        learning_rates=tuple(rates),
        losses=tuple(losses),
        smoothed=tuple(float(s) for s in smoothed),
        suggestion=suggestions.pop(METHOD),
        alternatives=suggestions,
        stopped_early=stopped_early,
    )


def _compile_sweep(
    model, train, stage, start_lr, end_lr, num_steps, label_smoothing
):
    """Sets the stage's trainable groups and compiles an exponential sweep;
    returns the optimizer."""
    stages.apply_stage_trainable(model, stage)
    # The rate of step k (the optimizer's iteration count) is
    # start_lr * (end_lr / start_lr) ** (k / (num_steps - 1)).
    schedule = keras.optimizers.schedules.ExponentialDecay(
        start_lr, decay_steps=num_steps - 1, decay_rate=end_lr / start_lr
    )
    optimizer = stages.stage_optimizer(stage, schedule, model)
    # Metrics are dropped: the test needs the loss only. Labels shaped like
    # the predictions are class distributions (MixUp, CutMix), which need
    # the soft-label loss, as in `fine_tune`.
    model.compile(
        optimizer=optimizer,
        metrics=None,
        label_smoothing=label_smoothing,
        soft_labels=stages.has_soft_labels(model, train),
    )
    return optimizer


def _sweep(model, optimizer, train, num_steps, beta, diverge, verbose):
    """Trains one batch per rate until the loss diverges; returns
    `(rates, losses, stopped_early)`."""
    rates, losses = [], []
    progress = keras.utils.Progbar(
        num_steps, verbose=verbose, stateful_metrics=["lr", "loss"]
    )
    batches = train.repeat().take(num_steps).as_numpy_iterator()
    for step, batch in enumerate(batches):
        rates.append(_to_float(optimizer.learning_rate))
        # `train_on_batch` resets the metrics first, so its loss is this
        # batch's alone (`fit` logs a running mean over the epoch).
        logs = model.train_on_batch(*batch, return_dict=True)
        losses.append(float(logs["loss"]))
        smoothed = smooth(losses, beta)
        progress.update(step + 1, [("lr", rates[-1]), ("loss", losses[-1])])
        if not np.isfinite(losses[-1]) or (
            smoothed[-1] > diverge * smoothed.min()
        ):
            return rates, losses, step + 1 < num_steps
    return rates, losses, False


def _to_float(value):
    return float(keras.ops.convert_to_numpy(value))


@contextlib.contextmanager
def _restored(model):
    """Puts back the model's weights, trainable flags and compiled state."""
    # Kept as (variable, value) pairs, so restoring does not rely on
    # `model.variables` listing them in the same order after recompiling.
    values = [(v, keras.ops.convert_to_numpy(v)) for v in model.variables]
    # Parents come before their sublayers, whose flags setting a parent's
    # `trainable` overwrites; restoring in this order puts both back.
    layer_flags = [
        (layer, layer.trainable) for layer in keras_internals.all_layers(model)
    ]
    variable_flags = [(v, v.trainable) for v in model.variables]
    groups = (model.trainable_groups, model.train_bn)
    optimizer, state = model.optimizer, model._compile_state
    try:
        yield
    finally:
        for layer, flag in layer_flags:
            layer.trainable = flag
        for variable, flag in variable_flags:
            variable.trainable = flag
        for variable, value in values:
            variable.assign(value)
        model.trainable_groups, model.train_bn = groups
        # The original, already built optimizer keeps its slots and step
        # count; the saved compile state keeps `"auto"` settings, so later
        # freezing picks its learning rate as before.
        model.compile(**{**state.kwargs, "optimizer": optimizer})
        model._compile_state = state


def plot(result, path):
    """Saves the loss against learning rate as a PNG, atomically.

    The smoothed loss is drawn on a log learning-rate axis over the faint
    raw losses, with the suggestion and the alternatives marked.

    Args:
        result: an `LRFindResult`.
        path: str or path-like. Where to write the PNG.

    Example:
    ```python
    kerastl.train.lr_find.plot(result, "runs/pets/lr_find.png")
    ```
    """
    # `Figure` without pyplot: no display, no global figure state.
    from matplotlib.figure import Figure

    rates = np.asarray(result.learning_rates)
    smoothed = np.asarray(result.smoothed)
    finite = np.isfinite(smoothed)
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.plot(
        rates, result.losses, color="tab:blue", alpha=0.25, lw=1, label="loss"
    )
    axes.plot(rates, smoothed, color="tab:blue", lw=2, label="smoothed loss")
    marks = {METHOD: result.suggestion, **result.alternatives}
    styles = {
        "valley": "tab:red",
        "steep": "tab:orange",
        "minimum/10": "tab:green",
    }
    log_rates = np.log(rates[finite])
    for name, rate in marks.items():
        loss = np.interp(np.log(rate), log_rates, smoothed[finite])
        chosen = " (suggested)" if name == METHOD else ""
        axes.plot(
            [rate],
            [loss],
            "o",
            color=styles[name],
            markersize=9 if chosen else 6,
            label=f"{name}: {rate:.2g}{chosen}",
        )
    # The blow-up that ends the test would squash the interesting part.
    top = smoothed[finite][: max(3, finite.sum() - SKIP_END)].max()
    bottom = min(smoothed[finite].min(), np.nanmin(result.losses))
    margin = 0.1 * (top - bottom) or 0.1
    axes.set_ylim(bottom - margin, top + margin)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss")
    axes.set_title("Learning-rate range test")
    axes.grid(True, alpha=0.3)
    axes.legend()
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)


def format_suggestions(result):
    """A plain-text table of the suggestions, the chosen one first.

    Example:
    ```python
    print(kerastl.train.lr_find.format_suggestions(result))
    ```
    """
    rows = [(METHOD, result.suggestion, "  <- suggested")]
    rows += [(name, rate, "") for name, rate in result.alternatives.items()]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'method'.ljust(width)}  learning rate"]
    lines += [f"{n.ljust(width)}  {r:<13.3g}{note}" for n, r, note in rows]
    return "\n".join(line.rstrip() for line in lines)
