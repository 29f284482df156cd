"""What a run directory says about its model: metrics, plots, report.md.

`evaluate_split` turns one split's `Predictions` into its metrics and
figures; `write_report` writes the Markdown report that shows them all.
`kerastl fit` calls both after training, `kerastl evaluate` on any split or
new data.

Figures, in `plots/` (file names start with the split):

- `training_curves.png`: loss, main metric and learning rate per epoch,
  stage boundaries marked;
- `<split>_confusion_matrix.png` (multi-class): row-normalized;
- `<split>_per_class_f1.png`: F1 per class, worst on top;
- `<split>_reliability.png`: the reliability diagram, with the ECE;
- `<split>_precision_recall.png` (multi-label): one curve per class;
- `<split>_mistakes.png`: the most confidently wrong images, each with
  what it looked at below it: the Grad-CAM map of what it was predicted
  as (multi-label: of each predicted class), or for ViT, DeiT and DINOv2
  its attention rollout (`explain.default_method`).

A figure is never worth a run's results: one that fails to draw is
skipped with a warning, left out of the report, and any older file of
that name is removed so it cannot pass for the new one.
"""

import dataclasses
import pathlib
import warnings

import numpy as np

from kerastl.evaluate import calibration
from kerastl.evaluate import explain
from kerastl.evaluate import metrics
from kerastl.evaluate import plots
from kerastl.evaluate import split_plots
from kerastl.utils import atomic


@dataclasses.dataclass
class SplitEvaluation:
    """One split's metrics, figures and text report.

    Attributes:
        name: str. The split's name.
        metrics: dict. `metrics.classification_metrics` output, plus
            `ece_uncalibrated` when the model has a temperature.
        plots: dict of caption to the figure's path relative to the folder
            holding `plots/`.
        report: str. scikit-learn's classification report.
        report_path: the Markdown report it was written to, if any.
    """

    name: str
    metrics: dict
    plots: dict
    report: str
    report_path: pathlib.Path | None = None


def evaluate_split(model, predictions, name, output_dir, plots_dir):
    """Metrics and figures of one split; figures go to `output_dir/plots_dir`.

    A figure that fails to draw is skipped with a warning and left out of
    `SplitEvaluation.plots`; the metrics never depend on the figures.

    Args:
        model: a `kerastl.TransferClassifier` (its temperature and
            thresholds apply).
        predictions: `metrics.Predictions` of the split.
        name: str. The split's name; prefixes the figure files.
        output_dir: path. The run (or evaluation) directory.
        plots_dir: str. The figures' folder, relative to `output_dir`
            (`kerastl.runs.rundir.PLOTS_DIR`).

    Returns:
        A `SplitEvaluation`.

    Example:
    ```python
    predictions = kerastl.evaluate.metrics.predict_split(model, test_ds)
    result = kerastl.evaluate.report.evaluate_split(
        model, predictions, "test", ".", "plots"
    )
    result.metrics["accuracy"]
    ```
    """
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    labels = predictions.labels
    probs = predictions.probabilities(model)
    scores = metrics.classification_metrics(
        labels,
        probs,
        model.multi_label,
        model.num_classes,
        class_names=names,
        thresholds=model.thresholds,
    )
    if len(labels) and model.temperature != 1.0:
        scores["ece_uncalibrated"] = calibration.expected_calibration_error(
            labels,
            metrics.probabilities(predictions.logits, model.multi_label),
            model.multi_label,
        )
    figures = {}
    if len(labels):
        figures = _figures(model, predictions, probs, scores, name, names)
        figures = {
            caption: path.relative_to(pathlib.Path(output_dir)).as_posix()
            for caption, path in _draw(
                figures, pathlib.Path(output_dir) / plots_dir, name
            ).items()
        }
    report = (
        metrics.classification_report(
            labels, probs, model.multi_label, names, model.thresholds
        )
        if len(labels)
        else "No examples."
    )
    return SplitEvaluation(name, scores, figures, report)


def _figures(model, predictions, probs, scores, split, names):
    """Caption -> (file stem, function drawing it to a path)."""
    per_class = scores["per_class"]
    f1 = [per_class[name]["f1"] for name in names]
    confidence, correct = calibration.confidence_and_correctness(
        predictions.labels, probs, model.multi_label
    )
    bins = calibration.reliability_bins(confidence, correct)
    what = "per label" if model.multi_label else "top-1"
    figures = {
        f"{split}: F1 per class": (
            "per_class_f1",
            lambda path: split_plots.per_class_f1(f1, names, path),
        ),
        f"{split}: reliability ({what}), ECE {scores['ece']:.3f}": (
            "reliability",
            lambda path: split_plots.reliability_diagram(
                *bins, path, ece=scores["ece"]
            ),
        ),
    }
    if model.multi_label:
        figures[f"{split}: precision-recall curves"] = (
            "precision_recall",
            lambda path: split_plots.precision_recall_curves(
                predictions.labels, probs, names, path
            ),
        )
    else:
        figures[f"{split}: confusion matrix (row-normalized)"] = (
            "confusion_matrix",
            lambda path: split_plots.confusion_matrix(
                scores["confusion_matrix"], names, path
            ),
        )
    figures[f"{split}: most confidently wrong"] = (
        "mistakes",
        lambda path: _mistakes(model, predictions, probs, names, path),
    )
    return figures


def _draw(figures, folder, split):
    folder.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for caption, (stem, draw) in figures.items():
        path = _try_drawing(draw, folder / f"{split}_{stem}.png")
        if path is not None:
            drawn[caption] = path
    return drawn


def _try_drawing(draw, path):
    """`draw(path)`, or `None` and a warning if drawing failed."""
    try:
        return draw(path)
    except Exception as error:
        # Whatever broke (a font, a label, the figure's size), the metrics
        # and the model are already computed and must still be written.
        path.unlink(missing_ok=True)
        reason = " ".join(str(error).split())
        warnings.warn(
            f"could not draw {path}: {type(error).__name__}: {reason}; the "
            "run's results are unaffected.",
            UserWarning,
            stacklevel=3,
        )
        return None


def _mistakes(model, predictions, probs, names, path):
    """The mistakes grid; multi-label shows each image's worst label."""
    index = predictions.mistakes
    counts = (
        _count_wrong(model, predictions, probs),
        len(predictions.labels),
    )
    if not len(index):
        return split_plots.confident_mistakes(
            np.zeros((0, 1, 1, 3), np.uint8), [], [], [], names, path
        )
    chosen = probs[index]
    heatmaps = _mistake_heatmaps(model, predictions.mistake_images, chosen)
    if not model.multi_label:
        return split_plots.confident_mistakes(
            predictions.mistake_images,
            predictions.labels[index],
            chosen.argmax(axis=1),
            chosen.max(axis=1),
            names,
            path,
            counts=counts,
            heatmaps=heatmaps,
        )
    # A multi-label mistake is one (image, class) decision: name it "X"
    # or "no X" on each side.
    truth = predictions.labels[index] >= 0.5
    decided = chosen >= 0.5
    confidence = np.where(truth != decided, np.maximum(chosen, 1 - chosen), 0)
    worst = confidence.argmax(axis=1)
    rows = np.arange(len(index))
    offset = len(names)
    both = list(names) + [f"no {name}" for name in names]
    return split_plots.confident_mistakes(
        predictions.mistake_images,
        np.where(truth[rows, worst], worst, worst + offset),
        np.where(decided[rows, worst], worst, worst + offset),
        confidence[rows, worst],
        both,
        path,
        counts=counts,
        heatmaps=heatmaps,
    )


def _mistake_heatmaps(model, images, probs):
    """Maps of what each mistake looked at, with captions: Grad-CAM of
    each predicted class, or one attention-rollout map for a transformer
    (`explain.default_method`); `None` (and a warning) if the model cannot
    be explained."""
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    try:
        if explain.default_method(model) == "rollout":
            maps = explain.rollout(model, images)
            return [[(heatmap, "attention rollout")] for heatmap in maps]
        classes = explain.classes_to_explain(model, probs)
        pairs = [(row, c) for row, chosen in enumerate(classes) for c in chosen]
        maps = explain.gradcam(
            model,
            images[[row for row, _ in pairs]],
            class_index=np.array([c for _, c in pairs], dtype=int),
        )
    except Exception as error:
        # The grid without maps still shows the mistakes.
        reason = " ".join(str(error).split())
        warnings.warn(
            f"no saliency maps for the mistakes: {type(error).__name__}: "
            f"{reason}",
            UserWarning,
            stacklevel=3,
        )
        return None
    heatmaps = [[] for _ in images]
    for (row, c), heatmap in zip(pairs, maps, strict=True):
        caption = f"Grad-CAM: {names[c]} ({probs[row, c]:.2f})"
        # Long class names would run into the next map.
        if len(caption) > 32:
            caption = caption.replace(": ", ":\n", 1)
        heatmaps[row].append((heatmap, caption))
    return heatmaps


def _count_wrong(model, predictions, probs):
    """Wrong predictions: top-1 class, or images with a wrong label at
    0.5 (what `metrics.predict_split` ranks)."""
    labels = np.asarray(predictions.labels)
    if model.multi_label:
        return int(np.any((probs >= 0.5) != (labels >= 0.5), axis=1).sum())
    return int((probs.argmax(axis=1) != labels).sum())


def training_curves(rows, output_dir, plots_dir):
    """`plots_dir/training_curves.png` of a run's history rows; its caption.

    Args:
        rows: list of dicts, one per epoch (see `plots.training_curves`).
        output_dir: path. The run directory.
        plots_dir: str. The figures' folder, relative to `output_dir`.

    Returns:
        `{caption: path relative to output_dir}`, or `{}` (with a warning)
        if the figure could not be drawn.

    Example:
    ```python
    kerastl.evaluate.report.training_curves(rows, run_dir, "plots")
    ```
    """
    path = pathlib.Path(output_dir) / plots_dir / "training_curves.png"
    drawn = _try_drawing(lambda to: plots.training_curves(rows, to), path)
    if drawn is None:
        return {}
    return {"Training curves": f"{plots_dir}/{path.name}"}


def write_report(path, title, facts, evaluations, sections=()):
    """Writes the Markdown report, atomically.

    Args:
        path: path of the `.md` file.
        title: str. The heading.
        facts: dict of label to value, listed under the heading.
        evaluations: list of `SplitEvaluation`.
        sections: sequence of `(heading, markdown)` placed after the
            metrics (e.g. the training table and curves).

    Example:
    ```python
    kerastl.evaluate.report.write_report(
        "pets_report.md", "pets", {"backend": "jax"}, [evaluated]
    )
    ```
    """
    lines = [f"# {title}", ""]
    lines += [f"- {label}: {value}" for label, value in facts.items()]
    lines += ["", "## Metrics", ""]
    if evaluations:
        lines.append(
            metrics.metrics_table(
                {item.name: item.metrics for item in evaluations}
            )
        )
    else:
        lines.append("No validation or test split was evaluated.")
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    for item in evaluations:
        lines += ["", f"## {item.name}", "", "```", item.report.rstrip(), "```"]
        for caption, figure in item.plots.items():
            lines += ["", f"![{caption}]({figure})"]
    atomic.write_text(path, "\n".join(lines) + "\n")


def figure_links(figures):
    """Markdown image links for a caption -> path dict.

    Example:
    ```python
    kerastl.evaluate.report.figure_links({"Training curves": "plots/x.png"})
    ```
    """
    return "\n\n".join(
        f"![{caption}]({path})" for caption, path in figures.items()
    )


def markdown_table(header, rows):
    """A Markdown table; `|` in cells is escaped.

    Args:
        header: sequence of str.
        rows: sequence of sequences of str, as long as `header`.

    Example:
    ```python
    kerastl.evaluate.report.markdown_table(["a", "b"], [["1", "2"]])
    ```
    """

    def line(cells):
        return (
            "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
        )

    lines = [line(header), line(["---"] * len(header))]
    lines += [line(row) for row in rows]
    return "\n".join(lines)
