"""Does `kerastl select` rank backbones the way fine-tuning them does?

    python experiments/select_fashion.py --backend tensorflow

On the Fashion-MNIST transfer task (classes 5-9 from 20 labelled images
each, `recipes/fashion_transfer.py`), four candidate backbones:

- the small ResNet pretrained on classes 0-4 (`recipes/fashion_pretrain.py`)
  and the same architecture at random initialization;
- a small ViT pretrained the same way
  (`experiments/recipes/fashion_pretrain_vit.py`) and the same ViT at
  random initialization.

For each seed, `kerastl.select` scores the four on that seed's 100
training images (and 300 validation images). Each candidate is then
trained for real: the pretrained ones with `fashion_transfer.py` (head,
then all layers), the random ones with `fashion_scratch.py` (all layers,
tuned for training from scratch), and measured on the 5,000 test images.
The script writes `results.md` in `--output-dir`: the scores, the test
accuracies, and the rank correlations (Spearman and Kendall) between each
score and the accuracy. Run again, it reuses finished runs.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fashion_mnist import RECIPES  # noqa: E402
from fashion_mnist import fit  # noqa: E402

SCORES = ("logme", "knn", "probe")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        choices=("jax", "tensorflow", "torch"),
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        default=pathlib.Path("runs/select_fashion"),
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    start = time.perf_counter()
    out = args.output_dir
    reused = []
    fit("fashion_pretrain", out / "pretrain", ["seed=0"], args, reused)
    fit(
        HERE / "recipes" / "fashion_pretrain_vit.py",
        out / "pretrain_vit",
        ["seed=0"],
        args,
        reused,
    )

    import scipy.stats

    import kerastl
    from kerastl.runs.recipe import load_recipe
    from kerastl.runs.select import Candidate

    resnet = RECIPES / "presets" / "fashion_resnet"
    vit = HERE / "presets" / "fashion_vit"
    # (label, candidate, recipe that trains it, its preset override)
    variants = (
        (
            "ResNet, pretrained 0-4",
            Candidate(str(out / "pretrain" / "preset")),
            "fashion_transfer",
            out / "pretrain" / "preset",
        ),
        (
            "ResNet, random init",
            Candidate(str(resnet), pretrained=False),
            "fashion_scratch",
            resnet,
        ),
        (
            "ViT, pretrained 0-4",
            Candidate(str(out / "pretrain_vit" / "preset")),
            "fashion_transfer",
            out / "pretrain_vit" / "preset",
        ),
        (
            "ViT, random init",
            Candidate(str(vit), pretrained=False),
            "fashion_scratch",
            vit,
        ),
    )
    scores = {label: {k: [] for k in SCORES} for label, *_ in variants}
    accuracy = {label: [] for label, *_ in variants}
    for seed in args.seeds:
        recipe = load_recipe(RECIPES / "fashion_transfer.py")
        recipe = dataclasses.replace(recipe, seed=seed)
        selected = kerastl.select(
            recipe,
            [candidate for _, candidate, _, _ in variants],
            output_dir=out / "select" / f"seed{seed}-{time.time_ns()}",
            smoke=args.smoke,
            verbose=0,
        )
        by_label = {s.candidate: s for s in selected.scores}
        for label, candidate, name, preset in variants:
            score = by_label[candidate.label]
            for key in SCORES:
                scores[label][key].append(getattr(score, key))
            overrides = [f"seed={seed}", f"preset={preset}"]
            run_dir = (
                out
                / "fine_tune"
                / label.replace(", ", "_").replace(" ", "_")
                / f"seed{seed}"
            )
            metrics = fit(name, run_dir, overrides, args, reused)
            accuracy[label].append(metrics["splits"]["test"]["accuracy"])

    table = _results(variants, scores, accuracy, scipy.stats)
    minutes = (time.perf_counter() - start) / 60
    report = (
        f"{table}\n\nBackend {args.backend}, seeds {args.seeds}; "
        f"{minutes:.1f} minutes in all.\n"
    )
    print(report)
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(
        json.dumps({"scores": scores, "accuracy": accuracy}, indent=2)
    )


def _results(variants, scores, accuracy, stats):
    labels = [label for label, *_ in variants]
    mean = {
        label: {k: statistics.mean(v) for k, v in scores[label].items()}
        for label in labels
    }
    tested = [statistics.mean(accuracy[label]) for label in labels]
    lines = [
        "| candidate | LogME | kNN acc. | probe acc. | fine-tuned test acc. |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, test in zip(labels, tested, strict=True):
        spread = (
            statistics.stdev(accuracy[label])
            if len(accuracy[label]) > 1
            else 0.0
        )
        lines.append(
            f"| {label} | {mean[label]['logme']:.4f} | "
            f"{mean[label]['knn']:.4f} | {mean[label]['probe']:.4f} | "
            f"{test:.4f} ± {spread:.4f} |"
        )
    lines += [
        "",
        "| score | Spearman ρ | Kendall τ |",
        "| --- | ---: | ---: |",
    ]
    for key, name in zip(SCORES, ("LogME", "kNN", "probe"), strict=True):
        values = [mean[label][key] for label in labels]
        rho = stats.spearmanr(values, tested).statistic
        tau = stats.kendalltau(values, tested).statistic
        lines.append(f"| {name} | {rho:.2f} | {tau:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
