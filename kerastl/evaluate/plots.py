"""Figures of a run: training curves and the evaluation's diagnostic plots.

Every function takes plain numpy arrays (or history rows), writes one PNG
atomically and returns its path, so this module needs neither Keras nor a
backend. Figures are built on `matplotlib.figure.Figure`, never pyplot:
no display and no global figure state, so plotting is safe from any thread
and leaks nothing between calls. Class names, stage names and run names are
drawn exactly as typed: `$x_1$` or `a_b$c` is text, never mathtext or LaTeX.
"""

import itertools
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kerastl.evaluate import drawing

# Preferred headline metric of the training curves, in order: what the
# classifier's "auto" metrics log for softmax and for multi-label heads.
MAIN_METRICS = ("accuracy", "auc", "binary_accuracy")
# History columns that are not a metric.
_NOT_METRICS = ("stage", "epoch", "learning_rate", "loss")


def training_curves(rows, path):
    """Plots loss, the main metric and the learning rate against the epoch.

    One panel each for the loss (training and validation), the main metric
    when the history has one (the first of `accuracy`, `auc`,
    `binary_accuracy`, else the first other metric; training and
    validation) and the learning rate (log scale). Stage boundaries are
    dashed vertical lines, with each stage's name above the first panel.
    Points carry markers, so a single epoch, or a validation value logged
    only every few epochs, still shows.

    Args:
        rows: list of dicts, one per epoch, as returned by
            `kerastl.fine_tune` or read back from `history.csv` with
            `csv.DictReader`: `stage`, `epoch` (1-based across stages),
            `learning_rate`, `loss`, and optionally `val_loss` and other
            metrics. Values may be numbers or strings; a missing key,
            `None` or `""` is a missing value.
        path: str or path-like. Where to write the PNG.

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    with open("runs/pets/history.csv") as f:
        rows = list(csv.DictReader(f))
    kerastl.evaluate.plots.training_curves(rows, "runs/pets/plots/training.png")
    ```
    """
    rows = list(rows)
    if not rows:
        raise ValueError(
            "`training_curves` needs at least one epoch of history. "
            "Received: rows=[]"
        )
    epochs = _numbers(rows, "epoch")
    if not np.isfinite(epochs).all():
        epochs = np.arange(1.0, len(rows) + 1)
    metric = _main_metric(rows)
    rates = _numbers(rows, "learning_rate")
    panels = [("loss", "loss")]
    if metric is not None:
        panels.append((metric, metric))
    if np.isfinite(rates).any():
        panels.append(("learning_rate", "learning rate"))

    figure = Figure(figsize=(8, 1.0 + 2.6 * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, label) in zip(axes, panels, strict=True):
        if key == "learning_rate":
            _plot_series(ax, epochs, rates, "learning rate", "tab:green")
            positive = rates[np.isfinite(rates)]
            # A zero learning rate (a schedule's last step) has no log.
            if (positive > 0).all():
                ax.set_yscale("log")
                label += " (log scale)"
        else:
            _plot_series(ax, epochs, _numbers(rows, key), "train", "tab:blue")
            _plot_series(
                ax,
                epochs,
                _numbers(rows, f"val_{key}"),
                "validation",
                "tab:orange",
            )
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best", fontsize="small")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    # Half an epoch of margin: a single epoch would otherwise get an axis
    # of fractions around its one point.
    axes[-1].set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)
    _mark_stages(axes, rows, epochs)
    figure.suptitle("Training curves")
    return drawing.save(figure, path)


def _numbers(rows, key):
    """A history column as floats, NaN where a row lacks a value."""
    values = []
    for row in rows:
        value = row.get(key)
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            # None, or "" where `csv.DictWriter` filled a missing key.
            values.append(math.nan)
    return np.asarray(values, dtype=np.float64)


def _main_metric(rows):
    keys = []
    for row in rows:
        keys += [key for key in row if key not in keys]
    candidates = [
        key
        for key in keys
        if key not in _NOT_METRICS and not key.startswith("val_")
    ]
    # A metric logged only for validation still counts.
    candidates += [
        key[len("val_") :]
        for key in keys
        if key.startswith("val_")
        and key != "val_loss"
        and key[len("val_") :] not in candidates
    ]
    preferred = [key for key in MAIN_METRICS if key in candidates]
    others = [key for key in candidates if key not in MAIN_METRICS]
    for key in preferred + others:
        if (
            np.isfinite(_numbers(rows, key)).any()
            or np.isfinite(_numbers(rows, f"val_{key}")).any()
        ):
            return key
    return None


def _plot_series(ax, x, y, label, color):
    finite = np.isfinite(y)
    if not finite.any():
        return
    # Markers shrink as epochs grow, so a long run stays a line.
    markersize = 5 if len(x) <= 30 else 2
    ax.plot(
        x[finite],
        y[finite],
        marker="o",
        markersize=markersize,
        color=color,
        label=label,
    )


def _stage_spans(rows, epochs):
    """`(name, first epoch, last epoch)` for each run of same-stage rows."""
    spans = []
    for row, epoch in zip(rows, epochs, strict=True):
        name = row.get("stage")
        name = "" if name is None else str(name)
        if spans and spans[-1][0] == name:
            spans[-1][2] = epoch
        else:
            spans.append([name, epoch, epoch])
    return [tuple(span) for span in spans]


def _mark_stages(axes, rows, epochs):
    spans = _stage_spans(rows, epochs)
    for (_, _, last), (_, first, _) in itertools.pairwise(spans):
        for ax in axes:
            ax.axvline((last + first) / 2, color="gray", ls="--", lw=1)
    named = [(name, (a + b) / 2) for name, a, b in spans if name]
    if not named:
        return
    stages = axes[0].secondary_xaxis("top")
    stages.set_ticks(
        [middle for _, middle in named],
        labels=[name for name, _ in named],
        fontsize="small",
        **drawing.LITERAL,
    )
    stages.tick_params(length=0)


def comparison(runs, columns, path, title="Run comparison"):
    """Bar charts comparing runs, one panel per measure.

    Args:
        runs: list of str. The runs' names, one bar each.
        columns: dict of measure name to a list of values (one per run;
            `None` where a run lacks it).
        path: str or path-like. Where to write the PNG.
        title: str. The figure's title. Defaults to `"Run comparison"`.

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    kerastl.evaluate.plots.comparison(
        ["resnet50", "vit_b16"],
        {"accuracy": [0.91, 0.94], "img/s": [410.0, 160.0]},
        "comparison.png",
    )
    ```
    """
    names = list(columns)
    panels = min(3, len(names))
    rows = math.ceil(len(names) / panels)
    height = max(2.2, 0.45 * len(runs) + 1.2)
    figure = Figure(figsize=(4.2 * panels, height * rows), layout="constrained")
    axes = figure.subplots(rows, panels, squeeze=False).ravel()
    colors = drawing.colors(len(runs))
    positions = np.arange(len(runs))
    for ax, name in zip(axes, names, strict=False):
        values = [np.nan if v is None else float(v) for v in columns[name]]
        ax.barh(positions, np.nan_to_num(values), color=colors)
        for y, value in zip(positions, values, strict=True):
            text = "n/a" if np.isnan(value) else f"{value:.4g}"
            ax.text(0, y, f" {text}", va="center", fontsize=8)
        ax.set_yticks(positions, runs, fontsize=8, **drawing.LITERAL)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10, **drawing.LITERAL)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[len(names) :]:
        ax.axis("off")
    figure.suptitle(title, **drawing.LITERAL)
    return drawing.save(figure, path)


def score_vs_speed(names, speeds, scores, score_name, path):
    """Each candidate as a point: inference speed against its score.

    The best trade-offs sit top right. Speed is on a log axis, as
    backbones differ in speed by orders of magnitude.

    Args:
        names: list of str, one per candidate.
        speeds: list of float. Images per second.
        scores: list of float.
        score_name: str. The y-axis label.
        path: str or path-like. Where to write the PNG.

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    kerastl.evaluate.plots.score_vs_speed(
        ["resnet_50_imagenet", "dinov2_small"], [41.0, 22.5], [0.91, 0.95],
        "probe accuracy", "score_vs_speed.png",
    )
    ```
    """
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = figure.subplots()
    for name, speed, score, color in zip(
        names, speeds, scores, drawing.colors(len(names)), strict=True
    ):
        ax.scatter([speed], [score], color=color, s=40, zorder=3)
        label = ax.annotate(
            name if len(name) <= 40 else "..." + name[-37:],
            (speed, score),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
            **drawing.LITERAL,
        )
        # A long name past the axes must not squeeze them to nothing.
        label.set_in_layout(False)
    ax.set_xscale("log")
    ax.set_xlabel("inference images/s (this machine)")
    ax.set_ylabel(score_name, **drawing.LITERAL)
    ax.grid(True, alpha=0.3)
    ax.set_title("Score against speed: best top right")
    return drawing.save(figure, path)
