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

import csv
import dataclasses
import io
import json

import keras
import numpy as np

from kerastl.evaluate import drawing
from kerastl.evaluate import duplicates
from kerastl.evaluate import label_issues
from kerastl.evaluate import plots
from kerastl.evaluate import report
from kerastl.runs import inspection
from kerastl.runs import rundir
from kerastl.runs.fit import data_folder
from kerastl.runs.recipe import Recipe
from kerastl.utils import atomic

REPORT_FILE = rundir.REPORT_FILE
RESULT_FILE = "doctor.json"
FIXES_FILE = "fixes.csv"
# Measured on Fashion-MNIST (docs/inspection.md): 99.9% of lightly noised
# copies of an image reach it, and 0.1% of images have another image as
# close (with the centred features `_near` compares).
NEAR_DUPLICATE_THRESHOLD = 0.98
# The most groups, pairs and label issues drawn in the report, and listed
# in its tables; the JSON lists them all, but for near-duplicate pairs:
# the most similar _MAX_PAIRS (a threshold too low for the features would
# pass most of the n^2 / 2 pairs).
_SHOWN = 16
_TABLE_ROWS = 100
_MAX_PAIRS = 10_000


@dataclasses.dataclass
class Diagnosis:
    """What `doctor` found.

    Attributes:
        summary: dict. Counts: examples per split, unreadable files,
            exact and near-duplicate groups and pairs (and how many cross
            splits), label issues.
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
    if isinstance(source, Recipe):
        recipe = source
        if preset is not None:
            recipe = dataclasses.replace(recipe, preset=str(preset))
    else:
        recipe = inspection.recipe_for(source, preset, multi_label)
    if fix_into is not None:
        rundir.check_outside(fix_into, data_folder(recipe.data), "the data")
        rundir.check_output_dir(fix_into)
    with inspection.claim_output(recipe, output_dir, "doctor") as lock:
        seen = inspection.inspect(
            recipe, smoke=smoke, verbose=verbose, print_fn=print_fn
        )
        table = _Table.of(seen)
        near, near_found = _near(table, threshold)
        diagnosis = Diagnosis(
            summary={},
            exact_duplicates=_exact(table),
            near_duplicates=near,
            label_issues=_label_issues(table, seen, print_fn),
            output_dir=lock.run_dir,
        )
        diagnosis.summary = _summary(
            seen, table, diagnosis, threshold, near_found
        )
        _write_report(seen, table, diagnosis, threshold)
    if fix_into is not None:
        with rundir.claim(fix_into) as fixes:
            diagnosis.fixes_path = fixes.run_dir / FIXES_FILE
            atomic.write_text(diagnosis.fixes_path, fixes_csv(diagnosis))
    print_fn(format_summary(diagnosis))
    print_fn(f"Report: {diagnosis.output_dir / REPORT_FILE}")
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


def _exact(table):
    groups = duplicates.exact_duplicate_groups(table.digests)
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


def _near(table, threshold):
    """The near-duplicate pairs, and how many passed the threshold."""
    pairs = duplicates.near_duplicate_pairs(
        # Pooled ReLU features all point into one orthant: centred, the
        # direction they share stops making every pair look alike.
        table.features - table.features.mean(axis=0),
        threshold=threshold,
        # Identical images are listed as exact duplicates already.
        exclude=duplicates.exact_duplicate_groups(table.digests),
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


def format_summary(diagnosis):
    """The console summary: one line per finding.

    Example:
    ```python
    print(kerastl.runs.doctor.format_summary(diagnosis))
    ```
    """
    s = diagnosis.summary
    examples = ", ".join(f"{k} {v}" for k, v in s["examples"].items())
    issues = f"{s['label_issues']} (about half are real errors: review)"
    if s["label_issues"] is None:
        why = "multi-label data" if s["multi_label"] else "too few examples"
        issues = f"not checked ({why})"
    return "\n".join(
        [
            f"Examples: {examples}",
            f"Unreadable files skipped: {s['unreadable_files']}",
            f"Exact duplicate groups: {s['exact_duplicate_groups']} "
            f"({s['exact_duplicate_groups_across_splits']} across splits)",
            f"Near-duplicate pairs (cosine >= {s['near_duplicate_threshold']}"
            f"): {s['near_duplicate_pairs']} "
            f"({s['near_duplicate_pairs_across_splits']} across splits)",
            f"Likely label errors: {issues}",
        ]
    )


def fixes_csv(diagnosis):
    """The suggested fixes as CSV text, for a person to review.

    One row per suggestion: `action` (`remove`: a training copy of an
    image that is also in an evaluation split, or a repeat within a
    split; `review`: a near-duplicate across splits; `relabel`), `split`,
    `example`, `label`, `suggested`, `reason`.

    Example:
    ```python
    print(kerastl.runs.doctor.fixes_csv(diagnosis))
    ```
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["action", "split", "example", "label", "suggested", "reason"]
    )
    for group in diagnosis.exact_duplicates:
        members = group["members"]
        # Evaluation copies are kept: the training copies go, as they
        # leak the answers; within one split, all but the first go.
        kept = next((m for m in members if m["split"] != "train"), members[0])
        for member in members:
            if member is not kept and (
                member["split"] == "train" or member["split"] == kept["split"]
            ):
                reason = f"identical to {kept['example']} ({kept['split']})"
                writer.writerow(_fix_row("remove", member, "", reason))
    for pair in diagnosis.near_duplicates:
        if pair["cross_split"]:
            first, second = pair["first"], pair["second"]
            train = first if first["split"] == "train" else second
            other = second if train is first else first
            reason = (
                f"cosine {pair['similarity']:.3f} to {other['example']} "
                f"({other['split']})"
            )
            writer.writerow(_fix_row("review", train, "", reason))
    for issue in diagnosis.label_issues or ():
        reason = f"p(label) {issue['self_confidence']:.3f}, out of fold"
        writer.writerow(_fix_row("relabel", issue, issue["suggested"], reason))
    return buffer.getvalue()


def _fix_row(action, member, suggested, reason):
    return [
        action,
        member["split"],
        member["example"],
        member["label"],
        suggested,
        reason,
    ]


def _write_report(seen, table, diagnosis, threshold):
    folder = diagnosis.output_dir
    summary = {
        "recipe": seen.recipe.name,
        "preset": seen.recipe.preset,
        "backend": keras.config.backend(),
        **diagnosis.summary,
        "class_counts": _class_counts(table),
        "image_sizes": _sizes(seen),
        "unreadable": [dataclasses.asdict(s) for s in seen.bundle.skipped],
        "exact_duplicates": diagnosis.exact_duplicates,
        "near_duplicates": diagnosis.near_duplicates,
        "label_issues": diagnosis.label_issues,
    }
    atomic.write_text(folder / RESULT_FILE, json.dumps(summary, indent=2))
    thumbnails = _Thumbnails(seen, table)
    sections = [
        ("Summary", "```\n" + format_summary(diagnosis) + "\n```"),
        ("Classes", _classes_section(table, summary, folder)),
        ("Image sizes", _sizes_section(summary["image_sizes"])),
        ("Unreadable files", _unreadable_section(summary["unreadable"])),
        (
            "Exact duplicates",
            _groups_section(diagnosis.exact_duplicates, thumbnails, folder),
        ),
        (
            f"Near-duplicates (cosine >= {threshold})",
            _pairs_section(diagnosis.near_duplicates, thumbnails, folder),
        ),
        (
            "Likely label errors",
            _issues_section(diagnosis.label_issues, thumbnails, folder),
        ),
    ]
    lines = [f"# Data check of {seen.recipe.name}", ""]
    lines += [
        f"- preset: `{seen.recipe.preset}`",
        f"- backend: {keras.config.backend()}",
    ]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    atomic.write_text(folder / REPORT_FILE, "\n".join(lines) + "\n")


class _Thumbnails:
    """Model-ready images of chosen examples, read in one pass per split."""

    def __init__(self, seen, table):
        self.seen, self.table, self.images = seen, table, {}

    def load(self, indices):
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

    def grid(self, indices, captions, path, title, columns=None):
        self.load(indices)
        return drawing.image_grid(
            [self.images[i] for i in indices], captions, path, title, columns
        )


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


def _classes_section(table, summary, folder):
    counts = summary["class_counts"]
    train = np.array(list(counts["train"].values()))
    present = train[train > 0]
    lines = []
    if len(present) and present.min() > 0:
        lines.append(
            f"Imbalance (largest / smallest training class): "
            f"{present.max() / present.min():.1f}"
        )
    missing = [n for n, c in counts["train"].items() if c == 0]
    if missing:
        lines.append(f"Classes without training images: {', '.join(missing)}")
    plots.comparison(
        table.class_names,
        {split: list(values.values()) for split, values in counts.items()},
        folder / "class_counts.png",
        "Images per class, by split",
    )
    lines += ["", "![Images per class](class_counts.png)"]
    return "\n".join(lines)


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


def _sizes_section(sizes):
    if not sizes:
        return "Not measured: tfds images exist only inside their dataset."
    rows = []
    for split, facts in sizes.items():
        rows.append(
            [
                split,
                *(
                    "{min:g} / {median:g} / {max:g}".format(**facts[key])
                    for key in ("height", "width")
                ),
                "{min:.2f} / {median:.2f} / {max:.2f}".format(
                    **facts["aspect_ratio"]
                ),
                f"{facts['grayscale_share']:.1%}",
            ]
        )
    return report.markdown_table(
        [
            "split",
            "height min / median / max",
            "width",
            "aspect (w/h)",
            "grayscale",
        ],
        rows,
    )


def _unreadable_section(unreadable):
    if not unreadable:
        return "None."
    rows = [[s["path"], s["reason"]] for s in unreadable]
    return report.markdown_table(["file", "reason"], rows)


def _more(items, what):
    if len(items) <= _TABLE_ROWS:
        return ""
    return (
        f"The first {_TABLE_ROWS} of {len(items)} {what}; `{RESULT_FILE}` "
        "lists them all.\n"
    )


def _caption(member):
    return f"{member['split']}: {member['label']}\n{member['example'][-28:]}"


def _groups_section(groups, thumbnails, folder):
    if not groups:
        return "None found."
    rows = [
        [
            str(number),
            "yes" if group["cross_split"] else "",
            "yes" if group["labels_differ"] else "",
            "; ".join(
                f"{m['split']}: {m['example']} ({m['label']})"
                for m in group["members"]
            ),
        ]
        for number, group in enumerate(groups[:_TABLE_ROWS], start=1)
    ]
    shown = [g for g in groups if g["cross_split"]] + [
        g for g in groups if not g["cross_split"]
    ]
    indices, captions = [], []
    for group in shown:
        if len(indices) + len(group["indices"]) > _SHOWN:
            break
        indices += group["indices"]
        captions += [_caption(m) for m in group["members"]]
    thumbnails.grid(
        indices,
        captions,
        folder / "exact_duplicates.png",
        "Exact duplicates (leaks across splits first)",
    )
    return "\n".join(
        [
            _more(groups, "groups"),
            report.markdown_table(
                ["group", "across splits", "labels differ", "images"], rows
            ),
            "",
            "![Exact duplicates](exact_duplicates.png)",
        ]
    )


def _pairs_section(pairs, thumbnails, folder):
    if not pairs:
        return "None found."
    rows = [
        [
            f"{p['similarity']:.3f}",
            "yes" if p["cross_split"] else "",
            f"{p['first']['split']}: {p['first']['example']}",
            f"{p['second']['split']}: {p['second']['example']}",
        ]
        for p in pairs[:_TABLE_ROWS]
    ]
    shown = pairs[: _SHOWN // 2]
    indices = [i for p in shown for i in p["indices"]]
    captions = [
        _caption(p[key]) + f" ({p['similarity']:.3f})"
        for p in shown
        for key in ("first", "second")
    ]
    thumbnails.grid(
        indices,
        captions,
        folder / "near_duplicates.png",
        "Near-duplicate pairs, most similar first",
        columns=4,
    )
    return "\n".join(
        [
            _more(pairs, "pairs"),
            report.markdown_table(
                ["cosine", "across splits", "first", "second"], rows
            ),
            "",
            "![Near-duplicates](near_duplicates.png)",
        ]
    )


def _issues_section(issues, thumbnails, folder):
    if issues is None:
        return (
            "Not checked: confident learning here is single-label, and "
            "needs two or more examples in at least two classes."
        )
    if not issues:
        return "None found."
    rows = [
        [
            str(number),
            issue["split"],
            issue["example"],
            issue["label"],
            issue["suggested"],
            f"{issue['self_confidence']:.3f}",
        ]
        for number, issue in enumerate(issues[:_TABLE_ROWS], start=1)
    ]
    shown = issues[:_SHOWN]
    thumbnails.grid(
        [issue["index"] for issue in shown],
        [
            f"{issue['label']} -> {issue['suggested']}\n"
            f"p {issue['self_confidence']:.2f} {issue['example'][-20:]}"
            for issue in shown
        ],
        folder / "label_issues.png",
        "Likely label errors: given -> suggested (p of given label)",
    )
    return "\n".join(
        [
            "Ranked by the out-of-fold probability of the given label, "
            "lowest first. About half of such flags are real errors: "
            "review them before relabelling.",
            _more(issues, "flagged images"),
            report.markdown_table(
                ["rank", "split", "example", "label", "suggested", "p(label)"],
                rows,
            ),
            "",
            "![Likely label errors](label_issues.png)",
        ]
    )
