"""`kerastl doctor`: what is wrong with a dataset, before training on it.

Small transfer-learning datasets are where a few duplicated, leaked or
mislabelled images move results most. One pass of a pretrained backbone
over every split (through the feature cache) gives:

- unreadable files (the pipeline's own checks), class counts and
  imbalance, image sizes, aspect ratios and the share of grayscale images;
- exact duplicates: images identical as the model receives them;
- near-duplicates: cosine similarity of centred backbone features at or
  above a threshold (0.98 by default; docs/inspection.md shows how it was
  chosen);
- within a split and across splits: a training image that is also a
  validation or test image inflates every score measured on it;
- likely label errors: out-of-fold class probabilities of a 5-fold linear
  probe on the features, ranked by confident learning (Northcutt et al.,
  JAIR 2021). About half of such flags are real errors in published
  audits (Northcutt et al., NeurIPS 2021): candidates to review.

Nothing in the data is changed; `fix_into` writes a CSV of suggested
removals and relabels for a person to review.
"""

import dataclasses

import keras
import numpy as np

from kerastl.evaluate import duplicates
from kerastl.evaluate import label_issues
from kerastl.runs import doctor_report
from kerastl.runs import inspection
from kerastl.runs import rundir
from kerastl.runs.fit import data_folder
from kerastl.utils import atomic

# Measured on Fashion-MNIST (docs/inspection.md): 99.9% of lightly noised
# copies of an image reach it, and 0.2% of images have another image as
# close (with the centred features `_near` compares).
NEAR_DUPLICATE_THRESHOLD = 0.98
# The most near-duplicate pairs listed: a threshold too low for the
# features would pass most of the n^2 / 2 pairs.
_MAX_PAIRS = 10_000


@dataclasses.dataclass
class Diagnosis:
    """What `doctor` found.

    Attributes:
        summary: dict. Counts: examples per split, unreadable files,
            exact and near-duplicate groups and pairs (and how many cross
            splits), label issues.
        facts: dict. The recipe, preset and backend; `class_counts` per
            split; `image_sizes` per split (height, width and aspect ratio
            spreads, grayscale share); the `unreadable` files.
        exact_duplicates: list of dicts, one per group of identical images
            (`members`: `split`, `example`, `label`; `cross_split`).
        near_duplicates: list of dicts, one per pair (`first`, `second`,
            `similarity`, `cross_split`).
        label_issues: list of dicts, most likely errors first (`split`,
            `example`, `label`, `suggested`, `self_confidence`), or `None`
            for multi-label data (not checked).
        output_dir: `pathlib.Path` of the report.
        fixes_path: `pathlib.Path` of the CSV of suggestions, or `None`.

    Example:
    ```python
    diagnosis = kerastl.doctor("recipes/pets.py")
    diagnosis.summary["exact_duplicate_groups"]
    ```
    """

    summary: dict
    facts: dict
    exact_duplicates: list
    near_duplicates: list
    label_issues: list | None
    output_dir: object
    fixes_path: object = None


def doctor(
    source,
    preset=None,
    *,
    output_dir=None,
    smoke=False,
    fix_into=None,
    threshold=None,
    multi_label=False,
    verbose="auto",
    print_fn=print,
):
    """Checks a dataset for unreadable files, duplicates, leakage and
    likely label errors, and writes a report.

    Writes `report.md` (with thumbnail grids) and `doctor.json` into a new
    folder, and prints a summary.

    Args:
        source: a `kerastl.Recipe`, a recipe file, or a folder or CSV of
            labelled images.
        preset: str or `None`. The backbone whose features are compared;
            `None` takes the recipe's (required for a folder or CSV).
        output_dir: path or `None`. A new or empty folder; `None` makes
            `runs/<name>/doctor/<timestamp>`.
        smoke: bool. The recipe's smoke data, and a tiny random-weight
            stand-in for a preset that cannot load offline.
        fix_into: path or `None`. A new or empty folder to write
            `fixes.csv` into: one row per suggested removal or relabel.
            The data itself is never changed.
        threshold: float or `None`. Cosine similarity (of centred
            features) from which two images are near-duplicates; `None`
            for `NEAR_DUPLICATE_THRESHOLD` (0.98).
        multi_label: bool. For a folder or CSV with several labels per
            image (label errors are then not checked).
        verbose: `"auto"`, 0 or 1: progress bars of the feature passes.
        print_fn: callable for console lines.

    Returns:
        A `Diagnosis`.

    Example:
    ```python
    diagnosis = kerastl.doctor("data/flowers", "resnet_50_imagenet",
                               fix_into="flowers_fixes")
    print(diagnosis.summary)
    ```
    """
    threshold = NEAR_DUPLICATE_THRESHOLD if threshold is None else threshold
    recipe = inspection.recipe_for(source, preset, multi_label)
    if fix_into is not None:
        rundir.check_outside(fix_into, data_folder(recipe.data), "the data")
        rundir.check_output_dir(fix_into)
    with inspection.claim_output(recipe, output_dir, "doctor") as lock:
        seen = inspection.inspect(
            recipe, smoke=smoke, verbose=verbose, print_fn=print_fn
        )
        table = _Table.of(seen)
        groups = duplicates.exact_duplicate_groups(table.digests)
        near, near_found = _near(table, threshold, groups)
        diagnosis = Diagnosis(
            summary={},
            facts={
                "recipe": seen.recipe.name,
                "preset": seen.recipe.preset,
                "backend": keras.config.backend(),
                "class_counts": _class_counts(table),
                "image_sizes": _sizes(seen),
                "unreadable": [
                    dataclasses.asdict(s) for s in seen.bundle.skipped
                ],
            },
            exact_duplicates=_exact(table, groups),
            near_duplicates=near,
            label_issues=_label_issues(table, seen, print_fn),
            output_dir=lock.run_dir,
        )
        diagnosis.summary = _summary(
            seen, table, diagnosis, threshold, near_found
        )
        doctor_report.write_report(
            diagnosis, _Thumbnails(seen, table).images_of
        )
    if fix_into is not None:
        with rundir.claim(fix_into) as fixes:
            diagnosis.fixes_path = fixes.run_dir / doctor_report.FIXES_FILE
            atomic.write_text(
                diagnosis.fixes_path, doctor_report.fixes_csv(diagnosis)
            )
    print_fn(doctor_report.format_summary(diagnosis))
    print_fn(f"Report: {diagnosis.output_dir / doctor_report.REPORT_FILE}")
    if diagnosis.fixes_path is not None:
        print_fn(f"Suggested fixes, to review: {diagnosis.fixes_path}")
    return diagnosis


@dataclasses.dataclass
class _Table:
    """Every example of every split, in one order: split by split."""

    splits: np.ndarray
    names: list
    labels: np.ndarray
    features: np.ndarray
    digests: list
    positions: list  # (split, index within the split)
    class_names: list
    multi_label: bool

    @classmethod
    def of(cls, seen):
        splits, names, positions = [], [], []
        for split in seen.features:
            count = len(seen.labels(split))
            splits += [split] * count
            names += seen.example_names(split)
            positions += [(split, i) for i in range(count)]
        parts = seen.features.values()
        return cls(
            splits=np.array(splits),
            names=names,
            labels=np.concatenate([p.labels for p in parts]),
            features=np.concatenate([p.features for p in parts]),
            digests=[d for p in parts for d in p.digests],
            positions=positions,
            class_names=list(seen.bundle.class_names),
            multi_label=seen.recipe.multi_label,
        )

    def label_text(self, index):
        label = self.labels[index]
        if self.multi_label:
            return "+".join(
                self.class_names[j] for j in np.flatnonzero(label > 0.5)
            )
        return self.class_names[int(label)]

    def member(self, index):
        return {
            "split": str(self.splits[index]),
            "example": self.names[index],
            "label": self.label_text(index),
        }


def _exact(table, groups):
    crossing = duplicates.cross_split(groups, table.splits)
    return [
        {
            "members": [table.member(i) for i in group],
            "indices": [int(i) for i in group],
            "cross_split": bool(cross),
            "labels_differ": len({table.label_text(i) for i in group}) > 1,
        }
        for group, cross in zip(groups, crossing, strict=True)
    ]


def _near(table, threshold, exact_groups):
    """The near-duplicate pairs, and how many passed the threshold."""
    pairs = duplicates.near_duplicate_pairs(
        # Pooled ReLU features all point into one orthant: centred, the
        # direction they share stops making every pair look alike.
        table.features - table.features.mean(axis=0),
        threshold=threshold,
        # Identical images are listed as exact duplicates already.
        exclude=exact_groups,
        limit=_MAX_PAIRS,
    )
    found = []
    for first, second, similarity in zip(
        pairs.first, pairs.second, pairs.similarity, strict=True
    ):
        found.append(
            {
                "first": table.member(first),
                "second": table.member(second),
                "indices": [int(first), int(second)],
                "similarity": float(similarity),
                "cross_split": bool(
                    table.splits[first] != table.splits[second]
                ),
            }
        )
    return found, pairs.found


def _label_issues(table, seen, print_fn):
    if table.multi_label:
        return None
    labels = table.labels.astype(np.int64)
    try:
        probabilities = label_issues.out_of_fold_probabilities(
            table.features,
            labels,
            num_classes=len(table.class_names),
            seed=seen.recipe.seed,
        )
    except ValueError as error:
        # Too few examples to cross-validate: the rest of the check stands.
        print_fn(f"Label errors not checked: {error}")
        return None
    issues = label_issues.find_label_issues(labels, probabilities)
    return [
        {
            **table.member(index),
            "index": int(index),
            "suggested": table.class_names[int(suggested)],
            "self_confidence": float(confidence),
        }
        for index, suggested, confidence in zip(
            issues.indices,
            issues.suggested,
            issues.self_confidence,
            strict=True,
        )
    ]


def _summary(seen, table, diagnosis, threshold, near_found):
    exact, near = diagnosis.exact_duplicates, diagnosis.near_duplicates
    # Across splits among the listed pairs (all of them, unless over
    # _MAX_PAIRS passed the threshold).
    return {
        "examples": {s: len(seen.labels(s)) for s in seen.features},
        "unreadable_files": len(seen.bundle.skipped),
        "exact_duplicate_groups": len(exact),
        "exact_duplicate_groups_across_splits": sum(
            g["cross_split"] for g in exact
        ),
        "near_duplicate_pairs": near_found,
        "near_duplicate_pairs_listed": len(near),
        "near_duplicate_pairs_across_splits": sum(
            p["cross_split"] for p in near
        ),
        "near_duplicate_threshold": threshold,
        "multi_label": table.multi_label,
        "label_issues": None
        if diagnosis.label_issues is None
        else len(diagnosis.label_issues),
    }


def _class_counts(table):
    counts = {}
    for split in dict.fromkeys(table.splits.tolist()):
        labels = table.labels[table.splits == split]
        if table.multi_label:
            per_class = labels.sum(axis=0)
        else:
            per_class = np.bincount(
                labels.astype(np.int64), minlength=len(table.class_names)
            )
        counts[split] = {
            name: int(count)
            for name, count in zip(table.class_names, per_class, strict=True)
        }
    return counts


def _sizes(seen):
    sizes = {}
    for split in seen.features:
        facts = inspection.source_sizes(seen, split)
        if facts is None:
            continue
        heights, widths, gray = facts
        aspect = widths / np.maximum(heights, 1)
        sizes[split] = {
            "height": _spread(heights),
            "width": _spread(widths),
            "aspect_ratio": _spread(aspect),
            "grayscale_share": float(np.mean(gray)) if len(gray) else 0.0,
        }
    return sizes


def _spread(values):
    return {
        "min": float(np.min(values)),
        "median": float(np.median(values)),
        "max": float(np.max(values)),
    }


class _Thumbnails:
    """Model-ready images of chosen examples, read in one pass per split."""

    def __init__(self, seen, table):
        self.seen, self.table, self.images = seen, table, {}

    def images_of(self, indices):
        """The images of examples `indices` (of the whole table)."""
        wanted = {}
        for index in indices:
            if index not in self.images:
                split, position = self.table.positions[index]
                wanted.setdefault(split, {})[position] = index
        for split, positions in wanted.items():
            found = inspection.images_at(
                self.seen.bundle.splits[split], positions
            )
            for position, image in found.items():
                self.images[positions[position]] = image
        return [self.images[i] for i in indices]
