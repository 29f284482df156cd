"""Side-by-side comparison of finished runs (`kerastl compare`).

Each run directory contributes one row read from its `metrics.json` and
`recipe.json`: the headline metric (accuracy, or mAP for multi-label), the
macro F1, the calibration error, the parameter count, the training time
and the evaluation throughput. The split is the test split when every run
has one, else validation, so the rows compare like with like.
"""

import datetime
import pathlib

from kerastl.evaluate import plots
from kerastl.runs import rundir
from kerastl.utils import atomic

# (column, metric key or None for a run-level value, higher is better)
_COLUMNS = (
    ("accuracy / mAP", "headline", True),
    ("F1 macro", "f1_macro", True),
    ("ECE", "ece", False),
    ("parameters", "num_parameters", False),
    ("train time (s)", "train_seconds", False),
    ("img/s", "eval_images_per_second", True),
)


def load_rows(run_dirs):
    """One dict per run: its name, split and the compared values.

    Args:
        run_dirs: run directories of `kerastl fit`.

    Example:
    ```python
    rows, split = kerastl.runs.compare.load_rows(["runs/a/1", "runs/b/1"])
    ```
    """
    runs = []
    for run_dir in map(pathlib.Path, run_dirs):
        if not (run_dir / rundir.METRICS_FILE).is_file():
            raise ValueError(
                f"{run_dir} is not a finished run directory (no "
                "metrics.json). Pass directories written by `kerastl fit`; "
                "an interrupted one can be finished with `kerastl fit "
                f"--resume {run_dir}`."
            )
        runs.append(
            (run_dir, rundir.read_recipe(run_dir), rundir.read_metrics(run_dir))
        )
    have_test = all("test" in summary["splits"] for _, _, summary in runs)
    split = "test" if have_test else "validation"
    missing = [
        str(d) for d, _, summary in runs if split not in summary["splits"]
    ]
    if missing:
        raise ValueError(
            f"These runs have neither a test nor a validation split to "
            f"compare on: {', '.join(missing)}. Evaluate them first with "
            "`kerastl evaluate RUN_DIR --split SPLIT`."
        )
    rows = []
    for run_dir, recipe, summary in runs:
        metrics = summary["splits"][split]
        row = {
            "run": f"{recipe['name']} ({run_dir.name})",
            "preset": recipe["preset"],
            "backend": summary.get("backend"),
            "headline": metrics.get("accuracy", metrics.get("map_macro")),
        }
        for _, key, _ in _COLUMNS[1:3]:
            row[key] = metrics.get(key)
        for _, key, _ in _COLUMNS[3:]:
            row[key] = summary.get(key)
        rows.append(row)
    return rows, split


def markdown_table(rows, split):
    """The comparison as a Markdown table; the best value of each column
    in bold.

    Example:
    ```python
    print(kerastl.runs.compare.markdown_table(rows, "test"))
    ```
    """
    header = ["run", "preset", "backend"] + [name for name, _, _ in _COLUMNS]
    lines = [
        f"Metrics on the {split} split.",
        "",
        "| " + " | ".join(header) + " |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in _COLUMNS) + " |",
    ]
    best = {}
    for _, key, higher in _COLUMNS:
        values = [row[key] for row in rows if row[key] is not None]
        if len(values) > 1:
            best[key] = max(values) if higher else min(values)
    for row in rows:
        cells = [row["run"], f"`{row['preset']}`", str(row["backend"])]
        for _, key, _ in _COLUMNS:
            text = _format(key, row[key])
            if key in best and row[key] == best[key]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(key, value):
    if value is None:
        return "n/a"
    if key == "num_parameters":
        return f"{value / 1e6:.2f}M"
    if key in ("train_seconds", "eval_images_per_second"):
        return f"{value:.1f}"
    return f"{value:.4f}"


def compare_runs(run_dirs, output_dir=None):
    """Writes `comparison.md` and `comparison.png` for finished runs.

    Args:
        run_dirs: two or more run directories.
        output_dir: path or `None`. Defaults to
            `runs/compare/<timestamp>`.

    Returns:
        `(output_dir, table)`: the folder written and the Markdown table.

    Example:
    ```python
    folder, table = kerastl.runs.compare.compare_runs(
        ["runs/pets/resnet", "runs/pets_vit/vit"]
    )
    ```
    """
    rows, split = load_rows(run_dirs)
    if output_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        output_dir = pathlib.Path("runs") / "compare" / stamp
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, split)
    plots.comparison(
        [row["run"] for row in rows],
        {name: [row[key] for row in rows] for name, key, _ in _COLUMNS},
        output_dir / "comparison.png",
    )
    text = f"# Comparison\n\n{table}\n\n![comparison](comparison.png)\n"
    with atomic.atomic_path(output_dir / "comparison.md") as tmp:
        tmp.write_text(text)
    return output_dir, table
