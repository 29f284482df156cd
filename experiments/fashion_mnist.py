"""Transfer on Fashion-MNIST: does pretraining on some classes help learn
others from 20 labelled images each?

    python experiments/fashion_mnist.py --backend jax

1. `recipes/fashion_pretrain.py` trains a small ResNet from scratch on all
   training images of classes 0-4 (T-shirt/top, Trouser, Pullover, Dress,
   Coat), once, with seed 0; all seeds share it.
2. For each seed, three recipes learn classes 5-9 (Sandal, Shirt, Sneaker,
   Bag, Ankle boot) from the same 20 images per class (`--per-class`;
   the seed draws them and initializes the new weights):
   `fashion_transfer.py` (the
   pretrained ResNet, head then all layers), `fashion_linear_probe.py`
   (head only, on frozen pretrained features) and `fashion_scratch.py`
   (the same architecture from random weights).
3. Each is measured on the full Fashion-MNIST test set of classes 5-9
   (5,000 images); the table gives every seed and the mean and sample
   standard deviation.

Every run goes through `kerastl fit` and leaves a run directory under
`--output-dir`; the numbers are read from their `metrics.json`, and the
table is printed and written to `results.md` there. Run again with the
same `--output-dir`, it reads the finished runs and resumes an interrupted
one. Needs the IDX files (`apt-get install dataset-fashion-mnist`).
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

# (label, recipe, what trains), in the table's order.
VARIANTS = (
    ("transfer", "fashion_transfer", "pretrained; head, then all layers"),
    ("linear probe", "fashion_linear_probe", "pretrained; head only"),
    ("from scratch", "fashion_scratch", "random init; all layers"),
)


def _kerastl():
    # The CLI installed next to this interpreter (a virtual environment's).
    here = shutil.which("kerastl", path=os.path.dirname(sys.executable))
    found = here or shutil.which("kerastl")
    if found is None:
        sys.exit("The `kerastl` command is not installed: pip install -e .")
    return found


def fit(recipe, run_dir, overrides, args, reused):
    """Runs `kerastl fit` on a recipe (a name under recipes/, or a path);
    returns its metrics.json.

    A finished run in `run_dir` is read instead, and an interrupted one is
    resumed (`kerastl fit --resume`); `reused` collects both.
    """
    metrics = run_dir / "metrics.json"
    command = [_kerastl(), "fit"]
    if metrics.exists():
        print(f"Reading the finished run {run_dir}", flush=True)
        reused.append(run_dir)
        return json.loads(metrics.read_text())
    if (run_dir / "run.json").exists():
        command += ["--resume", str(run_dir)]
        reused.append(run_dir)
    else:
        path = (
            recipe if str(recipe).endswith(".py") else RECIPES / f"{recipe}.py"
        )
        command += [str(path), "--output-dir", str(run_dir)]
        command += [arg for item in overrides for arg in ("--set", item)]
        command += ["--smoke"] if args.smoke else []
    command += ["--backend", args.backend]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return json.loads(metrics.read_text())


def _accuracy(metrics):
    return metrics["splits"]["test"]["accuracy"]


def results_table(accuracies, seeds):
    """The Markdown table: a row per variant, a column per seed.

    Args:
        accuracies: dict of variant label to a list of test accuracies, one
            per seed.
        seeds: list of int.

    Example:
    ```python
    print(results_table({"transfer": [0.9, 0.8, 0.85]}, [0, 1, 2]))
    ```
    """
    what = {label: trains for label, _, trains in VARIANTS}
    header = ["variant", "what trains"] + [f"seed {s}" for s in seeds]
    header += ["mean ± std"]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- | --- |" + " ---: |" * (len(seeds) + 1),
    ]
    for label, values in accuracies.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells = [label, what[label]] + [f"{v:.4f}" for v in values]
        cells += [f"{statistics.mean(values):.4f} ± {spread:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(confusions, class_names):
    """Markdown: each variant's test recall per class, mean over seeds.

    Args:
        confusions: dict of variant label to a list of confusion matrices
            (rows: true class), one per seed.
        class_names: list of str.

    Example:
    ```python
    print(per_class_table({"transfer": [[[9, 1], [2, 8]]]}, ["a", "b"]))
    ```
    """
    lines = [
        "| variant | " + " | ".join(class_names) + " |",
        "| --- |" + " ---: |" * len(class_names),
    ]
    for label, matrices in confusions.items():
        recalls = [
            statistics.mean(row[i] / sum(row) for row in rows)
            for i, rows in enumerate(zip(*matrices, strict=True))
        ]
        cells = [label] + [f"{r:.3f}" for r in recalls]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        default=os.environ.get("KERAS_BACKEND", "jax"),
        choices=("jax", "tensorflow", "torch"),
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--per-class",
        type=int,
        default=20,
        help="labelled training images per class for classes 5-9",
    )
    parser.add_argument(
        "--output-dir", type=pathlib.Path, default=pathlib.Path("runs/fashion")
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few steps per run: checks the experiment end to end",
    )
    args = parser.parse_args()
    start = time.perf_counter()

    pretrain_dir = args.output_dir / "pretrain"
    reused = []
    pretrain = fit("fashion_pretrain", pretrain_dir, ["seed=0"], args, reused)
    accuracies = {label: [] for label, _, _ in VARIANTS}
    confusions = {label: [] for label, _, _ in VARIANTS}
    run_seconds = pretrain["wall_clock_seconds"]
    for seed in args.seeds:
        for label, recipe, _ in VARIANTS:
            overrides = [
                f"seed={seed}",
                f"data.train_per_class={args.per_class}",
            ]
            if recipe != "fashion_scratch":
                overrides.append(f"preset={pretrain_dir / 'preset'}")
            run_dir = args.output_dir / recipe / f"seed{seed}"
            metrics = fit(recipe, run_dir, overrides, args, reused)
            run_seconds += metrics["wall_clock_seconds"]
            tested = metrics["splits"]["test"]["num_examples"]
            accuracies[label].append(_accuracy(metrics))
            confusions[label].append(
                metrics["splits"]["test"]["confusion_matrix"]
            )
    # Classes 5-9 by name, as the runs saved them with their heads.
    first_run = args.output_dir / VARIANTS[0][1] / f"seed{args.seeds[0]}"
    head_file = first_run / "preset" / "kerastl.json"
    class_names = json.loads(head_file.read_text())["config"]["class_names"]

    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    report = "\n".join(
        [
            f"Test accuracy on Fashion-MNIST classes 5-9 (the {tested:,} "
            f"t10k images of {', '.join(class_names)}), training on "
            f"{args.per_class} images per class.",
            "",
            results_table(accuracies, args.seeds),
            "",
            "Test recall per class, mean over the seeds:",
            "",
            per_class_table(confusions, class_names),
            "",
            "Pretraining on classes 0-4 (once, seed 0, shared by every "
            f"seed): test accuracy {_accuracy(pretrain):.4f} on their "
            f"{pretrain['splits']['test']['num_examples']:,} t10k images.",
            f"Backend {args.backend}; the runs took {run_seconds / 60:.1f} "
            f"min in all (their metrics.json wall_clock_seconds); this "
            f"invocation {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU"
            + (f" ({len(reused)} runs read or resumed)" if reused else "")
            + (" (smoke run: not real numbers)" if args.smoke else "")
            + ".",
        ]
    )
    print(report)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
