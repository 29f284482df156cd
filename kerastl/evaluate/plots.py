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
import pathlib

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics

from kerastl.utils import atomic

DPI = 100
# Preferred headline metric of the training curves, in order: what the
# classifier's "auto" metrics log for softmax and for multi-label heads.
MAIN_METRICS = ("accuracy", "auc", "binary_accuracy")
# History columns that are not a metric.
_NOT_METRICS = ("stage", "epoch", "learning_rate", "loss")
# Above this many classes a matrix's cells are too small for their numbers.
MAX_ANNOTATED_CLASSES = 20
# Above this many classes, tick labels would overlap even at the smallest
# font: the axes show class indices instead.
MAX_LABELLED_CLASSES = 100
# PNG sides are kept below this many inches (100 dpi) so a figure for
# thousands of classes stays a file a browser opens.
MAX_INCHES = 60.0
# Text properties for user-given strings (class, stage and run names):
# matplotlib would read `$...$` as mathtext, which renders `$x_1$` as a
# formula and raises on a name such as `$x_$`, and a matplotlibrc with
# `text.usetex` would send `_` to LaTeX.
_LITERAL = {"parse_math": False, "usetex": False}


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
    return _save(figure, path)


def normalized_confusion_matrix(matrix):
    """Divides each row of a confusion matrix by its sum.

    Row `i` then holds, for the examples of true class `i`, the fraction
    predicted as each class (its diagonal entry is the class's recall).
    A class with no examples keeps a row of zeros rather than NaN, as
    scikit-learn's `confusion_matrix(..., normalize="true")` does.

    Args:
        matrix: square array of counts, rows the true class and columns
            the predicted class.

    Returns:
        A float64 array of the same shape.

    Example:
    ```python
    kerastl.evaluate.plots.normalized_confusion_matrix([[3, 1], [0, 0]])
    # array([[0.75, 0.25], [0.  , 0.  ]])
    ```
    """
    matrix = _square(matrix)
    support = matrix.sum(axis=1, keepdims=True)
    return np.divide(
        matrix, support, out=np.zeros_like(matrix), where=support > 0
    )


def confusion_matrix(matrix, class_names, path, normalize=True):
    """Plots a confusion matrix as a heat map.

    Stays readable with many classes: the figure grows with the number of
    classes, cell values are written only up to 20 classes, the predicted
    class names are rotated and the tick font shrinks; above 100 classes
    the axes show class indices.

    Args:
        matrix: square array of counts, rows the true class and columns the
            predicted class, as `metrics.json`'s `confusion_matrix`.
        class_names: list of str, one per row, or `None` for indices.
        path: str or path-like. Where to write the PNG.
        normalize: bool. Whether to show each row divided by its sum (the
            fraction of each true class predicted as each class) rather
            than counts. Defaults to `True`.

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    kerastl.evaluate.plots.confusion_matrix(
        metrics["test"]["confusion_matrix"],
        model.class_names,
        "runs/pets/plots/confusion_matrix.png",
    )
    ```
    """
    counts = _square(matrix)
    num_classes = len(counts)
    names = _class_names(class_names, num_classes)
    values = normalized_confusion_matrix(counts) if normalize else counts
    top = 1.0 if normalize else max(values.max(), 1.0)

    side = min(max(5.0, 0.3 * num_classes + 2.5), MAX_INCHES)
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=top)
    figure.colorbar(image, ax=ax, shrink=0.8)
    if num_classes <= MAX_ANNOTATED_CLASSES:
        for (row, column), value in np.ndenumerate(values):
            text = f"{value:.2f}" if normalize else f"{value:.0f}"
            # White on the dark cells, black on the light ones.
            color = "white" if value > top / 2 else "black"
            ax.text(
                column,
                row,
                text,
                ha="center",
                va="center",
                color=color,
                fontsize=8,
            )
    if num_classes <= MAX_LABELLED_CLASSES:
        fontsize = 10 if num_classes <= 20 else max(5, 10 - num_classes // 15)
        ticks = np.arange(num_classes)
        ax.set_xticks(
            ticks,
            labels=names,
            rotation=45 if num_classes <= 20 else 90,
            ha="right" if num_classes <= 20 else "center",
            rotation_mode="anchor" if num_classes <= 20 else "default",
            fontsize=fontsize,
            **_LITERAL,
        )
        ax.set_yticks(ticks, labels=names, fontsize=fontsize, **_LITERAL)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    kind = "fraction of each true class" if normalize else "counts"
    ax.set_title(f"Confusion matrix ({kind})")
    return _save(figure, path)


def per_class_f1(f1, class_names, path):
    """Plots each class's F1 score as a horizontal bar, worst on top.

    The classes that need attention come first; each bar carries its value
    and a dashed line marks the macro average. The figure grows taller with
    the number of classes.

    Args:
        f1: array of per-class F1 scores in [0, 1], e.g. from
            `sklearn.metrics.f1_score(..., average=None)`. NaN (undefined)
            sorts first and is labelled "n/a".
        class_names: list of str, one per class, or `None` for indices.
        path: str or path-like. Where to write the PNG.

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    f1 = sklearn.metrics.f1_score(y_true, y_pred, average=None)
    kerastl.evaluate.plots.per_class_f1(f1, model.class_names, "plots/f1.png")
    ```
    """
    scores = np.asarray(f1, dtype=np.float64).reshape(-1)
    names = _class_names(class_names, len(scores))
    order = np.argsort(np.nan_to_num(scores, nan=-np.inf), kind="stable")
    shown = scores[order]

    height = min(max(3.0, 0.25 * len(scores) + 1.2), MAX_INCHES)
    figure = Figure(figsize=(7, height), layout="constrained")
    ax = figure.subplots()
    positions = np.arange(len(scores))
    bars = ax.barh(positions, np.nan_to_num(shown), color="tab:blue")
    ax.bar_label(
        bars,
        labels=["n/a" if np.isnan(s) else f"{s:.2f}" for s in shown],
        padding=2,
        fontsize=8,
    )
    ax.set_yticks(
        positions, labels=[names[i] for i in order], fontsize=8, **_LITERAL
    )
    # Bar 0, the worst class, at the top.
    ax.invert_yaxis()
    # Room to the right of a perfect score for its label.
    ax.set_xlim(0.0, 1.12)
    title = "Per-class F1"
    if np.isfinite(scores).any():
        macro = float(np.nanmean(scores))
        ax.axvline(macro, color="gray", ls="--", lw=1)
        title += f" (macro average {macro:.3f}, dashed)"
    ax.set_xlabel("F1 score")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    return _save(figure, path)


def reliability_diagram(mean_confidence, accuracy, counts, path, ece=None):
    """Plots accuracy against confidence over equal-width confidence bins.

    Bin `i` of `n` covers confidences in `[i / n, (i + 1) / n]`. Bars show
    each bin's accuracy, the red shading the gap to the bin's mean
    confidence, and the diagonal perfect calibration; a histogram of how
    many predictions fell in each bin sits below, since a large gap in a
    nearly empty bin matters little.

    Args:
        mean_confidence: array `(num_bins,)`, the mean confidence of the
            predictions in each bin; NaN for an empty bin.
        accuracy: array `(num_bins,)`, the fraction of those predictions
            that were right; NaN for an empty bin.
        counts: array `(num_bins,)`, the number of predictions in each bin.
        path: str or path-like. Where to write the PNG.
        ece: float or `None`. The expected calibration error, shown in the
            title when given. Defaults to `None`.

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    kerastl.evaluate.plots.reliability_diagram(
        [0.15, np.nan, 0.8], [0.1, np.nan, 0.6], [20, 0, 80],
        "plots/reliability.png", ece=0.17,
    )
    ```
    """
    confidence = np.asarray(mean_confidence, dtype=np.float64).reshape(-1)
    correct = np.asarray(accuracy, dtype=np.float64).reshape(-1)
    sizes = np.asarray(counts, dtype=np.float64).reshape(-1)
    if not len(confidence) == len(correct) == len(sizes) > 0:
        raise ValueError(
            "`mean_confidence`, `accuracy` and `counts` need one value per "
            "bin each, and at least one bin. Received: lengths "
            f"{len(confidence)}, {len(correct)}, {len(sizes)}"
        )
    num_bins = len(sizes)
    width = 1.0 / num_bins
    lefts = np.arange(num_bins) * width
    filled = (sizes > 0) & np.isfinite(confidence) & np.isfinite(correct)

    figure = Figure(figsize=(6, 7), layout="constrained")
    top, bottom = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(
        lefts[filled],
        correct[filled],
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        lw=0.5,
        label="accuracy",
    )
    # From each bar's top to the bin's mean confidence: negative heights
    # draw downwards, for bins that are under-confident.
    top.bar(
        lefts[filled],
        confidence[filled] - correct[filled],
        bottom=correct[filled],
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set_xlim(0.0, 1.0)
    top.set_ylim(0.0, 1.0)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize="small")
    top.grid(True, alpha=0.3)
    title = "Reliability diagram"
    if ece is not None:
        title += f" (ECE {float(ece):.3f})"
    top.set_title(title)

    bottom.bar(
        lefts, sizes, width=width, align="edge", color="gray", edgecolor="k"
    )
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("predictions")
    bottom.grid(True, alpha=0.3)
    return _save(figure, path)


def precision_recall_curves(y_true, probs, class_names, path, max_classes=20):
    """Plots one precision-recall curve per class of a multi-label model.

    Each curve's legend entry carries the class's average precision (AP).
    Classes without a positive example have no curve (recall is undefined)
    and are named in the title. With more than `max_classes` classes that
    have positives, only the `max_classes` with the most positives are
    drawn, with the micro-average curve over all classes, and the title
    says so.

    Args:
        y_true: multi-hot labels `(n, num_classes)`.
        probs: predicted probabilities `(n, num_classes)`.
        class_names: list of str, one per class, or `None` for indices.
        path: str or path-like. Where to write the PNG.
        max_classes: int. The most per-class curves to draw. Defaults
            to 20.

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    y_true, probs = kerastl.evaluate.metrics.predict_split(model, test_ds)
    kerastl.evaluate.plots.precision_recall_curves(
        y_true, probs, model.class_names, "plots/precision_recall.png"
    )
    ```
    """
    labels = np.asarray(y_true)
    scores = np.asarray(probs, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(
            "`y_true` and `probs` must both be `(num_examples, num_classes)`"
            " arrays (multi-hot labels and probabilities). Received: "
            f"y_true.shape={labels.shape}, probs.shape={scores.shape}"
        )
    names = _class_names(class_names, labels.shape[1])
    shown, skipped, micro = _precision_recall_selection(labels, max_classes)

    figure = Figure(figsize=(9, 6), layout="constrained")
    ax = figure.subplots()
    colors = _colors(len(shown))
    for color, index in zip(colors, shown, strict=True):
        precision, recall, _ = metrics.precision_recall_curve(
            labels[:, index], scores[:, index]
        )
        ap = metrics.average_precision_score(labels[:, index], scores[:, index])
        ax.plot(
            recall,
            precision,
            color=color,
            lw=1.5,
            drawstyle="steps-post",
            label=f"{names[index]} (AP {ap:.2f})",
        )
    if micro:
        precision, recall, _ = metrics.precision_recall_curve(
            labels.ravel(), scores.ravel()
        )
        ap = metrics.average_precision_score(labels, scores, average="micro")
        ax.plot(
            recall,
            precision,
            color="black",
            lw=2.5,
            ls="--",
            drawstyle="steps-post",
            label=f"micro-average (AP {ap:.2f})",
        )
    lines = ["Precision-recall curves"]
    if micro:
        with_positives = labels.shape[1] - len(skipped)
        lines.append(
            f"the {len(shown)} of {with_positives} classes with the most "
            "positives, and the micro-average over all classes"
        )
    if skipped:
        lines.append("no positives, not drawn: " + _name_list(names, skipped))
    if shown:
        legend = ax.legend(
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            fontsize="small",
        )
        for text in legend.get_texts():
            text.update(_LITERAL)
    else:
        ax.text(
            0.5,
            0.5,
            "No class has a positive example",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("\n".join(lines), fontsize="medium", **_LITERAL)
    ax.grid(True, alpha=0.3)
    return _save(figure, path)


def most_confident_mistakes(y_true, y_pred, confidence, max_images=16):
    """Indices of the wrong predictions, most confident first.

    Lets a caller fetch only the images it will show. Ties keep the
    examples' order.

    Args:
        y_true: int labels `(n,)`.
        y_pred: predicted int labels `(n,)`.
        confidence: the predicted class's probability `(n,)`.
        max_images: int. The most indices to return. Defaults to 16.

    Returns:
        An int array of at most `max_images` indices into the inputs.

    Example:
    ```python
    kerastl.evaluate.plots.most_confident_mistakes(
        [0, 1, 2, 1], [0, 2, 1, 0], [0.9, 0.6, 0.8, 0.7], max_images=2
    )
    # array([2, 3])
    ```
    """
    truth, predicted, scores = _aligned(y_true, y_pred, confidence)
    wrong = np.flatnonzero(truth != predicted)
    order = np.argsort(-scores[wrong], kind="stable")
    return wrong[order][: max(int(max_images), 0)]


def confident_mistakes(
    images,
    y_true,
    y_pred,
    confidence,
    class_names,
    path,
    max_images=16,
    counts=None,
):
    """Shows the images a model got wrong with the highest confidence.

    Confident mistakes are where mislabelled data, look-alike classes and
    wrong preprocessing show first. Each image is titled
    "true: X / pred: Y (0.97)". With no mistakes the file still appears,
    saying so, so a report can always link it.

    Args:
        images: array `(n, height, width, 3)` or `(n, height, width, 1)`,
            uint8 or float in [0, 255].
        y_true: int labels `(n,)`.
        y_pred: predicted int labels `(n,)`.
        confidence: the predicted class's probability `(n,)`.
        class_names: list of str, or `None` for the label numbers.
        path: str or path-like. Where to write the PNG.
        max_images: int. The most images to show. Defaults to 16.
        counts: `(wrong, total)` or `None`. The split's numbers of wrong
            and of all predictions, for the title, when the arrays hold
            only a subset (as below). Defaults to counting the arrays.

    Returns:
        The `pathlib.Path` written.

    Example:
    ```python
    # Fetch only the images shown, then plot that subset.
    idx = kerastl.evaluate.plots.most_confident_mistakes(y_true, y_pred, conf)
    kerastl.evaluate.plots.confident_mistakes(
        images_at(idx), y_true[idx], y_pred[idx], conf[idx],
        model.class_names, "plots/confident_mistakes.png",
    )
    ```
    """
    truth, predicted, scores = _aligned(y_true, y_pred, confidence)
    chosen = most_confident_mistakes(truth, predicted, scores, max_images)
    if len(chosen) == 0:
        figure = Figure(figsize=(4, 2), layout="constrained")
        ax = figure.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, "No mistakes", ha="center", va="center")
        return _save(figure, path)

    columns = math.ceil(math.sqrt(len(chosen)))
    rows = math.ceil(len(chosen) / columns)
    figure = Figure(
        figsize=(2.6 * columns, 2.8 * rows + 0.4), layout="constrained"
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    # The grid may have more cells than images; the spare ones stay blank.
    for ax, index in zip(axes, chosen, strict=False):
        image = np.clip(np.asarray(images[index], dtype=np.float32), 0, 255)
        image = image / 255.0
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim == 2:
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(image)
        true_name = _label_name(class_names, truth[index])
        pred_name = _label_name(class_names, predicted[index])
        title = f"true: {true_name} / pred: {pred_name} ({scores[index]:.2f})"
        # Long class names would run into the next image.
        if len(title) > 32:
            title = title.replace(" / ", " /\n")
        ax.set_title(title, fontsize=8, **_LITERAL)
    wrong, total = counts or (int((truth != predicted).sum()), len(truth))
    figure.suptitle(
        f"Most confident mistakes: {len(chosen)} of {wrong} wrong "
        f"predictions out of {total}"
    )
    return _save(figure, path)


def _save(figure, path):
    path = pathlib.Path(path)
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


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
        **_LITERAL,
    )
    stages.tick_params(length=0)


def _square(matrix):
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(
            "A confusion matrix must be square, rows the true class and "
            f"columns the predicted class. Received: shape={matrix.shape}"
        )
    return matrix


def _class_names(class_names, num_classes):
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(
            f"Expected {num_classes} class names, one per class. "
            f"Received: {len(names)} class_names"
        )
    return names


def _label_name(class_names, label):
    if class_names is None:
        return str(label)
    return str(class_names[int(label)])


def _aligned(y_true, y_pred, confidence):
    arrays = [
        np.asarray(y_true).reshape(-1),
        np.asarray(y_pred).reshape(-1),
        np.asarray(confidence, dtype=np.float64).reshape(-1),
    ]
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(
            "`y_true`, `y_pred` and `confidence` need one value per example. "
            f"Received: lengths {', '.join(str(len(a)) for a in arrays)}"
        )
    return arrays


def _precision_recall_selection(labels, max_classes):
    """Which classes get a curve, which have no positives, and whether the
    micro-average is drawn because some were left out."""
    positives = np.asarray(labels).sum(axis=0)
    skipped = [int(i) for i in np.flatnonzero(positives == 0)]
    present = np.flatnonzero(positives > 0)
    if len(present) <= max_classes:
        return [int(i) for i in present], skipped, False
    # Most positives first; ties keep the class order.
    order = present[np.argsort(-positives[present], kind="stable")]
    return [int(i) for i in order[:max_classes]], skipped, True


def _colors(count):
    # tab10 and tab20 are distinct to the eye; past 20, a smooth map.
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["viridis"](i / (count - 1)) for i in range(count)]


def _name_list(names, indices, limit=8):
    shown = ", ".join(names[i] for i in indices[:limit])
    if len(indices) > limit:
        shown += f" and {len(indices) - limit} more"
    return shown


def comparison(runs, columns, path):
    """Bar charts comparing runs, one panel per measure.

    Args:
        runs: list of str. The runs' names, one bar each.
        columns: dict of measure name to a list of values (one per run;
            `None` where a run lacks it).
        path: str or path-like. Where to write the PNG.

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
    colors = _colors(len(runs))
    positions = np.arange(len(runs))
    for ax, name in zip(axes, names, strict=False):
        values = [np.nan if v is None else float(v) for v in columns[name]]
        ax.barh(positions, np.nan_to_num(values), color=colors)
        for y, value in zip(positions, values, strict=True):
            text = "n/a" if np.isnan(value) else f"{value:.4g}"
            ax.text(0, y, f" {text}", va="center", fontsize=8)
        ax.set_yticks(positions, runs, fontsize=8, **_LITERAL)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10, **_LITERAL)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[len(names) :]:
        ax.axis("off")
    figure.suptitle("Run comparison")
    return _save(figure, path)
