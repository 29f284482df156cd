"""How much of what is wrong with a dataset does `kerastl doctor` find?

    python experiments/doctor_fashion.py --backend tensorflow

Fashion-MNIST classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) with
faults planted at random (seed 0): 5% of the training labels flipped to
another class, and 2% of the test images copied into the training split
(leaks). The backbone is the small ResNet pretrained on classes 0-4
(`recipes/fashion_pretrain.py`, reused from `--pretrain`, else trained
first). The script runs `kerastl.doctor` on the data and measures:

- label errors: precision and recall of all flagged images, and recall
  within the top 2x (number flipped) of the ranking;
- exact duplicates: how many planted leaks were found, and what else;
- the near-duplicate threshold: cosine similarity between an image and an
  altered copy of itself (noised as by a re-encoding, brightened, shifted
  by a pixel, flipped), and between an image and its most similar other
  image, for 2,000 test images, so a threshold's recall and false alarms
  can be read off.

Writes `results.md` and `results.json` to `--output-dir`.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fashion_mnist import fit  # noqa: E402

FLIPPED = 0.05
LEAKED = 0.02
VALIDATION = 0.05
THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.99)


def _row(name):
    """The row of `split[row]`, the name doctor gives an array example."""
    return int(name[name.index("[") + 1 : -1])


def _fashion_5_to_9():
    from kerastl.data.idx_source import FASHION_MNIST_DIR
    from kerastl.data.idx_source import read_idx
    from kerastl.data.idx_source import split_files

    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path, labels_path = split_files(FASHION_MNIST_DIR, prefix)
        images, labels = read_idx(images_path), read_idx(labels_path)
        keep = labels >= 5
        arrays[split] = (images[keep], (labels[keep] - 5).astype(np.int64))
    return arrays


def _plant(arrays, rng):
    """Flips 5% of training labels; copies 2% of test images into train."""
    train_x, train_y = arrays["train"]
    test_x, test_y = arrays["test"]
    flipped = rng.choice(len(train_y), int(FLIPPED * len(train_y)), False)
    noisy = train_y.copy()
    noisy[flipped] = (noisy[flipped] + rng.integers(1, 5, len(flipped))) % 5
    leaked = rng.choice(len(test_y), int(LEAKED * len(test_y)), False)
    train_x = np.concatenate([train_x, test_x[leaked]])
    noisy = np.concatenate([noisy, test_y[leaked]])
    copies = {len(train_y) + i: int(t) for i, t in enumerate(leaked)}
    return (train_x, noisy), (test_x, test_y), set(flipped.tolist()), copies


def _near_threshold_table(model, images, rng):
    """Cosine similarity (of features centred on their mean, as `doctor`
    compares them) to altered copies and to the nearest other image."""
    import keras

    extractor = model.feature_extractor()

    def features(batch):
        rgb = np.repeat(batch[..., None], 3, axis=-1).astype("float32")
        resized = keras.ops.image.resize(rgb, model.image_size)
        out = extractor.predict(resized, batch_size=256, verbose=0)
        return keras.ops.convert_to_numpy(out)

    raw = features(images)
    mean = raw.mean(axis=0)

    def unit(values):
        values = values - mean
        return values / np.linalg.norm(values, axis=1, keepdims=True)

    base = unit(raw)
    noise = rng.integers(-8, 9, size=images.shape)
    copies = {
        "copy with noise of +-8 (a re-encoding)": np.clip(
            images.astype(int) + noise, 0, 255
        ).astype(np.uint8),
        "copy brightened by 20": np.clip(images.astype(int) + 20, 0, 255),
        "copy shifted by 1 px": np.roll(images, 1, axis=2),
        "copy flipped left-right": images[:, :, ::-1],
    }
    similarity = base @ base.T
    np.fill_diagonal(similarity, -1.0)
    rows = {
        name: np.sum(unit(features(copy.astype(np.uint8))) * base, axis=1)
        for name, copy in copies.items()
    }
    rows["most similar other image"] = similarity.max(axis=1)
    return {
        name: {str(t): float(np.mean(values >= t)) for t in THRESHOLDS}
        for name, values in rows.items()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        choices=("jax", "tensorflow", "torch"),
    )
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        default=pathlib.Path("runs/doctor_fashion"),
    )
    parser.add_argument(
        "--pretrain",
        type=pathlib.Path,
        default=pathlib.Path("runs/select_fashion/pretrain"),
        help="the fashion_pretrain run to take the backbone from",
    )
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    args.smoke = False
    start = time.perf_counter()
    fit("fashion_pretrain", args.pretrain, ["seed=0"], args, [])

    import kerastl
    from kerastl.data import DataSpec
    from kerastl.data.idx_source import FASHION_MNIST_CLASSES
    from kerastl.data.validation_split import carve
    from kerastl.runs.recipe import Recipe

    rng = np.random.default_rng(0)
    train, test, flipped, copies = _plant(_fashion_5_to_9(), rng)
    preset = str(args.pretrain / "preset")
    recipe = Recipe(
        name="doctor_fashion",
        preset=preset,
        data=DataSpec(
            "arrays",
            arrays={"train": train, "test": test},
            class_names=FASHION_MNIST_CLASSES[5:],
            validation_fraction=VALIDATION,
        ),
        batch_size=256,
    )
    # Where each example of the carved splits came from in `train`.
    origin = dict(
        zip(
            ("train", "validation"), carve(train[1], VALIDATION, 0), strict=True
        )
    )
    diagnosis = kerastl.doctor(
        recipe, output_dir=args.output_dir / f"doctor-{time.time_ns()}"
    )
    flagged = [
        int(origin[issue["split"]][_row(issue["example"])])
        for issue in diagnosis.label_issues
        if issue["split"] in origin
    ]
    found = set(flagged)
    top = set(flagged[: 2 * len(flipped)])
    labels = {
        "planted flips": len(flipped),
        "flagged (all splits)": len(diagnosis.label_issues),
        "flagged in train and validation": len(flagged),
        "precision of those flagged": len(found & flipped) / len(found),
        "recall of all flagged": len(found & flipped) / len(flipped),
        "recall within top 2x planted": len(top & flipped) / len(flipped),
    }
    planted_pairs = {(i, t) for i, t in copies.items()}
    leak_groups = []
    other_groups = 0
    for group in diagnosis.exact_duplicates:
        members = {
            int(origin[m["split"]][_row(m["example"])])
            if m["split"] in origin
            else ("test", _row(m["example"]))
            for m in group["members"]
        }
        hit = [
            (i, t)
            for i, t in planted_pairs
            if i in members and ("test", t) in members
        ]
        leak_groups += hit
        other_groups += not hit
    duplicates = {
        "planted leaks": len(copies),
        "planted leaks found": len(set(leak_groups)),
        "other exact-duplicate groups (already in Fashion-MNIST)": other_groups,
        "near-duplicate pairs across splits": diagnosis.summary[
            "near_duplicate_pairs_across_splits"
        ],
    }
    model = kerastl.TransferClassifier.from_preset(preset, num_classes=5)
    sample = rng.choice(len(test[0]), 2000, replace=False)
    near = _near_threshold_table(model, test[0][sample], rng)
    minutes = (time.perf_counter() - start) / 60
    results = {
        "label_errors": labels,
        "duplicates": duplicates,
        "near_threshold": near,
        "minutes": minutes,
        "report": str(diagnosis.output_dir / "report.md"),
    }
    lines = ["| label errors | |", "| --- | ---: |"]
    lines += [
        f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in labels.items()
    ]
    lines += ["", "| duplicates | |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in duplicates.items()]
    lines += [
        "",
        "| share at or above cosine | "
        + " | ".join(str(t) for t in THRESHOLDS)
        + " |",
        "| --- |" + " ---: |" * len(THRESHOLDS),
    ]
    for name, shares in near.items():
        cells = " | ".join(f"{shares[str(t)]:.3f}" for t in THRESHOLDS)
        lines.append(f"| {name} | {cells} |")
    lines.append(f"\nBackend {args.backend}; {minutes:.1f} minutes in all.")
    report = "\n".join(lines) + "\n"
    print(report)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.md").write_text(report)
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
