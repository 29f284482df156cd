import csv
import io
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics

from kerastl.evaluate import drawing
from kerastl.evaluate import plots
from kerastl.evaluate import split_plots


def png_size(path):
    """The (width, height) of a PNG, after checking it is a whole one."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        image.load()
        return image.size


def history_rows(num_epochs, val_every=1):
    rows = []
    for epoch in range(1, num_epochs + 1):
        row = {
            "stage": "head" if epoch <= 2 else "all",
            "epoch": epoch,
            "learning_rate": 1e-3 if epoch <= 2 else 1e-4,
            "loss": 1.0 / epoch,
            "accuracy": 1.0 - 0.5 / epoch,
        }
        if epoch % val_every == 0:
            row["val_loss"] = 1.2 / epoch
            row["val_accuracy"] = 1.0 - 0.6 / epoch
        rows.append(row)
    return rows


def csv_round_trip(rows):
    # As `history.csv` is written (missing keys become "") and read back.
    fields = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


def test_importing_plots_imports_no_framework():
    code = (
        "import sys, kerastl.evaluate.plots; "
        "print(sorted({'keras', 'tensorflow', 'jax', 'torch'} "
        "& set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_normalized_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, size=200)
    y_pred = rng.integers(0, 6, size=200)
    # Class 6 never occurs, so its row has zero support.
    labels = np.arange(7)
    counts = metrics.confusion_matrix(y_true, y_pred, labels=labels)
    expected = metrics.confusion_matrix(
        y_true, y_pred, labels=labels, normalize="true"
    )
    normalized = split_plots.normalized_confusion_matrix(counts)
    np.testing.assert_allclose(normalized, expected)
    np.testing.assert_array_equal(normalized[6], np.zeros(7))
    np.testing.assert_allclose(normalized[:6].sum(axis=1), np.ones(6))


def test_normalized_confusion_matrix_by_hand():
    np.testing.assert_allclose(
        split_plots.normalized_confusion_matrix([[3, 1], [0, 0]]),
        [[0.75, 0.25], [0.0, 0.0]],
    )


def test_confusion_matrix_rejects_a_non_square_matrix():
    with pytest.raises(ValueError, match="square"):
        split_plots.normalized_confusion_matrix(np.ones((2, 3)))


def test_most_confident_mistakes_by_hand():
    y_true = [0, 1, 2, 1, 0, 2]
    y_pred = [0, 2, 1, 0, 0, 0]
    confidence = [0.99, 0.6, 0.8, 0.8, 0.95, 0.7]
    # Wrong: indices 1 (0.6), 2 (0.8), 3 (0.8), 5 (0.7). Most confident
    # first, the 0.8 tie in index order; the right 0.99 and 0.95 are out.
    np.testing.assert_array_equal(
        split_plots.most_confident_mistakes(y_true, y_pred, confidence),
        [2, 3, 5, 1],
    )
    np.testing.assert_array_equal(
        split_plots.most_confident_mistakes(
            y_true, y_pred, confidence, max_images=2
        ),
        [2, 3],
    )
    assert (
        len(split_plots.most_confident_mistakes([1, 2], [1, 2], [0.5, 0.9]))
        == 0
    )


def test_training_curves_from_csv_with_missing_validation(tmp_path):
    # Validation only every other epoch: the CSV has "" in between.
    rows = csv_round_trip(history_rows(5, val_every=2))
    assert rows[0]["val_loss"] == "" and rows[0]["epoch"] == "1"
    path = plots.training_curves(rows, tmp_path / "training.png")
    assert path == tmp_path / "training.png"
    # Three panels (loss, accuracy, learning rate), 8 x 8.8 in at 100 dpi.
    assert png_size(path) == (800, 880)


def test_training_curves_single_epoch(tmp_path):
    rows = history_rows(1)
    del rows[0]["val_loss"], rows[0]["val_accuracy"]
    path = plots.training_curves(rows, tmp_path / "training.png")
    assert png_size(path) == (800, 880)


def test_training_curves_drops_panels_it_has_no_data_for(tmp_path):
    rows = [
        {"stage": "head", "epoch": 1, "loss": 0.9, "learning_rate": None},
        {"stage": "head", "epoch": 2, "loss": 0.7, "learning_rate": ""},
    ]
    path = plots.training_curves(rows, tmp_path / "training.png")
    # The loss panel alone.
    assert png_size(path) == (800, 360)


def test_training_curves_needs_a_row(tmp_path):
    with pytest.raises(ValueError, match="at least one epoch"):
        plots.training_curves([], tmp_path / "training.png")


def test_stage_spans_and_main_metric_by_hand():
    rows = csv_round_trip(history_rows(4))
    epochs = plots._numbers(rows, "epoch")
    assert plots._stage_spans(rows, epochs) == [
        ("head", 1.0, 2.0),
        ("all", 3.0, 4.0),
    ]
    # A multi-label history logs binary accuracy first, but AUC is the
    # headline metric.
    multi_label = [{"loss": 0.5, "binary_accuracy": 0.8, "val_auc": 0.7}]
    assert plots._main_metric(multi_label) == "auc"
    assert plots._main_metric([{"loss": 0.5, "top5": ""}]) is None


def test_confusion_matrix_grows_with_the_classes(tmp_path):
    rng = np.random.default_rng(1)
    sizes = {}
    for num_classes in (5, 40):
        counts = rng.integers(0, 20, size=(num_classes, num_classes))
        names = [f"class_{i}" for i in range(num_classes)]
        path = split_plots.confusion_matrix(
            counts, names, tmp_path / f"cm{num_classes}.png"
        )
        sizes[num_classes] = png_size(path)
    assert sizes[40][0] > sizes[5][0] and sizes[40][1] > sizes[5][1]
    path = split_plots.confusion_matrix(
        [[3, 0], [1, 0]], ["a", "b"], tmp_path / "counts.png", normalize=False
    )
    png_size(path)


def test_confusion_matrix_wants_one_name_per_class(tmp_path):
    with pytest.raises(ValueError, match="class names"):
        split_plots.confusion_matrix(np.eye(3), ["a", "b"], tmp_path / "cm.png")


def test_per_class_f1_grows_with_the_classes(tmp_path):
    small = split_plots.per_class_f1(
        [0.5, np.nan, 0.9, 0.1, 1.0], list("abcde"), tmp_path / "small.png"
    )
    scores = np.linspace(0.0, 1.0, 40)
    large = split_plots.per_class_f1(scores, None, tmp_path / "large.png")
    assert png_size(large)[1] > png_size(small)[1]


def test_reliability_diagram_with_empty_bins(tmp_path):
    confidence = [0.05, np.nan, 0.3, np.nan, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97]
    accuracy = [0.0, np.nan, 0.2, np.nan, 0.6, 0.5, 0.6, 0.8, 0.85, 0.99]
    counts = [2, 0, 5, 0, 10, 20, 30, 40, 50, 200]
    path = split_plots.reliability_diagram(
        confidence, accuracy, counts, tmp_path / "reliability.png", ece=0.03
    )
    assert png_size(path) == (600, 700)
    with pytest.raises(ValueError, match="one value per bin"):
        split_plots.reliability_diagram(
            [0.5], [0.5, 0.6], [1], tmp_path / "r.png"
        )


def test_precision_recall_selection_by_hand():
    labels = np.zeros((6, 5), dtype=int)
    # Positives per class: 3, 0, 5, 1, 5.
    for column, count in enumerate([3, 0, 5, 1, 5]):
        labels[:count, column] = 1
    shown, skipped, micro = split_plots._precision_recall_selection(labels, 2)
    assert (shown, skipped, micro) == ([2, 4], [1], True)
    shown, skipped, micro = split_plots._precision_recall_selection(labels, 4)
    assert (shown, skipped, micro) == ([0, 2, 3, 4], [1], False)


def test_precision_recall_curves_skip_classes_without_positives(tmp_path):
    rng = np.random.default_rng(2)
    y_true = (rng.random((60, 4)) < 0.4).astype(int)
    y_true[:, 1] = 0
    probs = np.clip(0.5 * y_true + 0.6 * rng.random((60, 4)), 0.0, 1.0)
    # scikit-learn would warn on the positive-free class; warnings are
    # errors in this suite, so passing shows it was skipped.
    path = split_plots.precision_recall_curves(
        y_true, probs, ["a", "b", "c", "d"], tmp_path / "pr.png"
    )
    assert png_size(path) == (900, 600)
    path = split_plots.precision_recall_curves(
        np.zeros((5, 2)), np.full((5, 2), 0.5), None, tmp_path / "none.png"
    )
    png_size(path)


def test_precision_recall_curves_with_many_classes(tmp_path):
    rng = np.random.default_rng(3)
    y_true = (rng.random((80, 30)) < np.linspace(0.05, 0.5, 30)).astype(int)
    probs = rng.random((80, 30))
    path = split_plots.precision_recall_curves(
        y_true, probs, None, tmp_path / "pr.png", max_classes=5
    )
    png_size(path)


def test_confident_mistakes_grid(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    y_true = np.arange(20) % 3
    y_pred = (y_true + 1) % 3
    names = ["cat", "dog", "a rather long class name"]
    path = split_plots.confident_mistakes(
        images, y_true, y_pred, rng.random(20), names, tmp_path / "16.png"
    )
    # 16 images: 4 x 4 cells of 2.6 x 2.8 in, and the title's 0.4 in.
    assert png_size(path) == (1040, 1160)
    grey = rng.uniform(0, 255, size=(3, 8, 8, 1))
    path = split_plots.confident_mistakes(
        grey, [0, 1, 2], [1, 2, 0], [0.9, 0.8, 0.7], None, tmp_path / "3.png"
    )
    # 3 images: 2 x 2 cells.
    assert png_size(path) == (520, 600)


def test_confident_mistakes_without_mistakes_still_writes(tmp_path):
    images = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    path = split_plots.confident_mistakes(
        images, [0, 1, 2], [0, 1, 2], [0.9, 0.8, 0.7], None, tmp_path / "m.png"
    )
    assert png_size(path) == (400, 200)


def test_writes_leave_no_temporary_files(tmp_path):
    plots.training_curves(history_rows(3), tmp_path / "training.png")
    split_plots.confusion_matrix(np.eye(3), None, tmp_path / "cm.png")
    split_plots.per_class_f1([0.2, 0.8], None, tmp_path / "f1.png")
    # Writing over an existing plot replaces it, still without leftovers.
    split_plots.per_class_f1([0.3, 0.7], None, tmp_path / "f1.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cm.png",
        "f1.png",
        "training.png",
    ]


# === Class names are drawn as typed; a failed plot fails nothing ===

# Mathtext markup, a name mathtext cannot parse, and non-ASCII.
ODD_NAMES = ["$x_1$", "a_b", "c$d", "猫", "naïve", "$x_$"]


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, by file name."""
    saved = {}
    save = drawing.save

    def keep(figure, path):
        saved[pathlib.Path(path).name] = figure
        return save(figure, path)

    monkeypatch.setattr(drawing, "save", keep)
    return saved


def assert_literal(texts, expected):
    assert [text.get_text() for text in texts] == expected
    for text in texts:
        assert not text.get_parse_math() and not text.get_usetex()


# No font here has CJK glyphs: matplotlib draws a box for 猫, and says so.
def test_every_plot_draws_odd_class_names_as_typed(tmp_path, figures):
    names = ODD_NAMES
    count = len(names)
    rng = np.random.default_rng(5)

    split_plots.confusion_matrix(
        rng.integers(0, 9, (count, count)), names, tmp_path / "cm.png"
    )
    (ax, _) = figures["cm.png"].axes
    assert_literal(ax.get_xticklabels(), names)
    assert_literal(ax.get_yticklabels(), names)

    # Increasing scores keep the classes' order, worst on top.
    split_plots.per_class_f1(
        np.linspace(0, 1, count), names, tmp_path / "f1.png"
    )
    assert_literal(figures["f1.png"].axes[0].get_yticklabels(), names)

    y_true = (rng.random((40, count)) < 0.5).astype(int)
    y_true[:, 0] = 0
    probs = rng.random((40, count))
    split_plots.precision_recall_curves(
        y_true, probs, names, tmp_path / "pr.png"
    )
    ax = figures["pr.png"].axes[0]
    legend = ax.get_legend().get_texts()
    assert_literal(
        legend,
        [
            f"{name} (AP "
            f"{metrics.average_precision_score(y_true[:, i], probs[:, i]):.2f})"
            for i, name in enumerate(names)
            if i > 0
        ],
    )
    assert ax.title.get_text().endswith("no positives, not drawn: $x_1$")
    assert_literal([ax.title], [ax.title.get_text()])

    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    split_plots.confident_mistakes(
        images, [5, 2], [0, 4], [0.9, 0.8], names, tmp_path / "m.png"
    )
    titles = [ax.title for ax in figures["m.png"].axes[:2]]
    assert_literal(
        titles,
        ["true: $x_$ / pred: $x_1$ (0.90)", "true: c$d / pred: naïve (0.80)"],
    )

    rows = [{**row, "stage": names[i]} for i, row in enumerate(history_rows(2))]
    plots.training_curves(rows, tmp_path / "curves.png")
    stages = figures["curves.png"].axes[0].child_axes[0]
    assert_literal(stages.get_xticklabels(), names[:2])

    plots.comparison(names, {"accuracy": [0.5] * count}, tmp_path / "cmp.png")
    assert_literal(figures["cmp.png"].axes[0].get_yticklabels(), names)

    for name in figures:
        png_size(tmp_path / name)


def tiny_model(multi_label, class_names):
    import kit

    from kerastl import TransferClassifier

    backbone, converter = kit.tiny_resnet(16)
    return TransferClassifier(
        backbone,
        num_classes=len(class_names),
        image_converter=converter,
        class_names=class_names,
        multi_label=multi_label,
    )


def split_predictions(multi_label, count=24, seed=6):
    from kerastl.evaluate import metrics

    rng = np.random.default_rng(seed)
    classes = len(ODD_NAMES)
    if multi_label:
        labels = (rng.random((count, classes)) < 0.4).astype("float32")
    else:
        labels = np.arange(count) % classes
    logits = rng.normal(size=(count, classes)).astype("float32")
    mistakes = np.arange(4)
    images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    return metrics.Predictions(labels, logits, mistakes, images)


@pytest.mark.parametrize(
    "multi_label", [False, True], ids=["softmax", "sigmoid"]
)
def test_report_figures_with_odd_class_names(multi_label, tmp_path):
    from kerastl.evaluate import report

    model = tiny_model(multi_label, ODD_NAMES)
    result = report.evaluate_split(
        model, split_predictions(multi_label), "test", tmp_path, "plots"
    )
    stems = ["per_class_f1", "reliability", "mistakes"]
    stems.append("precision_recall" if multi_label else "confusion_matrix")
    assert sorted(result.plots.values()) == sorted(
        f"plots/test_{stem}.png" for stem in stems
    )
    for figure in result.plots.values():
        png_size(tmp_path / figure)


def fail(*args, **kwargs):
    raise RuntimeError("no room on the canvas")


def test_a_failed_plot_is_skipped_with_a_warning(tmp_path, monkeypatch):
    from kerastl.evaluate import report

    model = tiny_model(False, ["cat", "dog", "emu", "fox", "gnu", "yak"])
    predictions = split_predictions(False)
    # A figure from an earlier evaluation must not pass for this one's.
    stale = tmp_path / "plots" / "test_confusion_matrix.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    monkeypatch.setattr(split_plots, "confusion_matrix", fail)
    monkeypatch.setattr(plots, "training_curves", fail)

    with pytest.warns(UserWarning) as caught:
        result = report.evaluate_split(
            model, predictions, "test", tmp_path, "plots"
        )
        curves = report.training_curves(history_rows(2), tmp_path, "plots")
    assert [str(w.message) for w in caught] == [
        f"could not draw {tmp_path / 'plots' / name}: RuntimeError: no room "
        "on the canvas; the run's results are unaffected."
        for name in ("test_confusion_matrix.png", "training_curves.png")
    ]
    assert curves == {}
    assert not stale.exists()
    expected = metrics.accuracy_score(
        predictions.labels, predictions.logits.argmax(axis=1)
    )
    assert result.metrics["accuracy"] == pytest.approx(expected)
    assert len(result.plots) == 3
    assert "confusion" not in " ".join(result.plots)

    report.write_report(tmp_path / "report.md", "run", {}, [result])
    text = (tmp_path / "report.md").read_text()
    assert "confusion_matrix.png" not in text
    for figure in result.plots.values():
        assert f"]({figure})" in text
        png_size(tmp_path / figure)


def test_score_vs_speed_keeps_its_axes_with_long_names(tmp_path):
    # Local preset paths are long; equal speeds give the log axis no
    # range. Either used to collapse the layout (a warning, an error here).
    names = [f"/tmp/{'x' * 80}/preset", f"/tmp/{'x' * 80}/preset (random)"]
    path = plots.score_vs_speed(
        names, [100.0, 100.0], [0.5, 0.7], "probe accuracy", tmp_path / "s.png"
    )
    image = np.asarray(Image.open(path))
    assert image.shape[0] > 100 and image.shape[1] > 100
