"""Figures of one split's predictions: confusion matrix, per-class F1,
reliability diagram, precision-recall curves and the confident mistakes.

Every function takes plain numpy arrays, writes one PNG atomically and
returns its path, so this module needs neither Keras nor a backend. Class
names are drawn exactly as typed: `$x_1$` or `a_b$c` is text, never
mathtext or LaTeX.
"""

import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics

from kerastl.evaluate import drawing

# Above this many classes a matrix's cells are too small for their numbers.
MAX_ANNOTATED_CLASSES = 20


# Above this many classes, tick labels would overlap even at the smallest
# font: the axes show class indices instead.
MAX_LABELLED_CLASSES = 100


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

    side = min(max(5.0, 0.3 * num_classes + 2.5), drawing.MAX_INCHES)
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
            **drawing.LITERAL,
        )
        ax.set_yticks(ticks, labels=names, fontsize=fontsize, **drawing.LITERAL)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    kind = "fraction of each true class" if normalize else "counts"
    ax.set_title(f"Confusion matrix ({kind})")
    return drawing.save(figure, path)


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

    height = min(max(3.0, 0.25 * len(scores) + 1.2), drawing.MAX_INCHES)
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
        positions,
        labels=[names[i] for i in order],
        fontsize=8,
        **drawing.LITERAL,
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
    return drawing.save(figure, path)


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
    return drawing.save(figure, path)


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
    colors = drawing.colors(len(shown))
    for color, index in zip(colors, shown, strict=True):
        ap = metrics.average_precision_score(labels[:, index], scores[:, index])
        label = f"{names[index]} (AP {ap:.2f})"
        _pr_curve(ax, labels[:, index], scores[:, index], label, color=color)
    if micro:
        ap = metrics.average_precision_score(labels, scores, average="micro")
        label = f"micro-average (AP {ap:.2f})"
        _pr_curve(
            ax,
            labels.ravel(),
            scores.ravel(),
            label,
            color="black",
            lw=2.5,
            ls="--",
        )
    _pr_legend(ax, bool(shown))
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    title = _pr_title(labels.shape[1], names, shown, skipped, micro)
    ax.set_title(title, fontsize="medium", **drawing.LITERAL)
    ax.grid(True, alpha=0.3)
    return drawing.save(figure, path)


def _pr_curve(ax, labels, scores, label, **style):
    precision, recall, _ = metrics.precision_recall_curve(labels, scores)
    style = {"lw": 1.5, **style}
    ax.plot(recall, precision, drawstyle="steps-post", label=label, **style)


def _pr_legend(ax, any_shown):
    if any_shown:
        legend = ax.legend(
            loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small"
        )
        for text in legend.get_texts():
            text.update(drawing.LITERAL)
        return
    ax.text(
        0.5,
        0.5,
        "No class has a positive example",
        ha="center",
        va="center",
        transform=ax.transAxes,
    )


def _pr_title(num_classes, names, shown, skipped, micro):
    lines = ["Precision-recall curves"]
    if micro:
        with_positives = num_classes - len(skipped)
        lines.append(
            f"the {len(shown)} of {with_positives} classes with the most "
            "positives, and the micro-average over all classes"
        )
    if skipped:
        lines.append("no positives, not drawn: " + _name_list(names, skipped))
    return "\n".join(lines)


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
    heatmaps=None,
):
    """Shows the images a model got wrong with the highest confidence.

    Confident mistakes are where mislabelled data, look-alike classes and
    wrong preprocessing show first. Each image is titled
    "true: X / pred: Y (0.97)"; with `heatmaps`, what the model looked at
    sits right below it (a row of maps under each row of images). With no
    mistakes the file still appears, saying so, so a report can always
    link it.

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
        heatmaps: `None`, or one list per image of `(heatmap, caption)`:
            maps in [0, 1] at the image's size (`kerastl.explain`),
            drawn over the image. Defaults to `None` (images only).

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
        return drawing.save(figure, path)

    captions = []
    for index in chosen:
        true_name = _label_name(class_names, truth[index])
        pred_name = _label_name(class_names, predicted[index])
        title = f"true: {true_name} / pred: {pred_name} ({scores[index]:.2f})"
        # Long class names would run into the next image.
        if len(title) > 32:
            title = title.replace(" / ", " /\n")
        captions.append(title)
    wrong, total = counts or (int((truth != predicted).sum()), len(truth))
    title = (
        f"Most confident mistakes: {len(chosen)} of {wrong} wrong "
        f"predictions out of {total}"
    )
    if heatmaps is None:
        return drawing.image_grid(
            [images[index] for index in chosen], captions, path, title
        )
    stacks = [
        [(images[index], caption)]
        + [
            (drawing.overlay(images[index], heatmap), label)
            for heatmap, label in heatmaps[index]
        ]
        for index, caption in zip(chosen, captions, strict=True)
    ]
    return drawing.stacked_grid(stacks, path, title)


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


def _name_list(names, indices, limit=8):
    shown = ", ".join(names[i] for i in indices[:limit])
    if len(indices) > limit:
        shown += f" and {len(indices) - limit} more"
    return shown
