"""The report of `kerastl doctor`: `doctor.json`, `report.md` with its
tables and thumbnail grids, the console summary and the CSV of suggested
fixes. It renders a `kerastl.runs.doctor.Diagnosis`; finding is done
there.
"""

import csv
import dataclasses
import io
import json

import numpy as np

from kerastl.evaluate import drawing
from kerastl.evaluate import plots
from kerastl.evaluate import report
from kerastl.runs import rundir
from kerastl.utils import atomic

REPORT_FILE = rundir.REPORT_FILE
RESULT_FILE = "doctor.json"
FIXES_FILE = "fixes.csv"
# The most groups, pairs and label issues drawn in the report, and listed
# in its tables; the JSON lists them all.
_SHOWN = 16
_TABLE_ROWS = 100


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


def write_report(diagnosis, images_of):
    """Writes `doctor.json` and `report.md` (with its figures) into
    `diagnosis.output_dir`.

    Args:
        diagnosis: a `kerastl.runs.doctor.Diagnosis`.
        images_of: callable taking a list of example indices and returning
            their images, for the thumbnails.

    Example:
    ```python
    kerastl.runs.doctor_report.write_report(diagnosis, images_of)
    ```
    """
    folder = diagnosis.output_dir
    atomic.write_text(
        folder / RESULT_FILE,
        json.dumps(dataclasses.asdict(diagnosis), indent=2, default=str),
    )
    facts = diagnosis.facts
    sections = [
        ("Summary", "```\n" + format_summary(diagnosis) + "\n```"),
        ("Classes", _classes_section(facts["class_counts"], folder)),
        ("Image sizes", _sizes_section(facts["image_sizes"])),
        ("Unreadable files", _unreadable_section(facts["unreadable"])),
        (
            "Exact duplicates",
            _groups_section(diagnosis.exact_duplicates, images_of, folder),
        ),
        (
            "Near-duplicates (cosine >= "
            f"{diagnosis.summary['near_duplicate_threshold']})",
            _pairs_section(diagnosis.near_duplicates, images_of, folder),
        ),
        (
            "Likely label errors",
            _issues_section(diagnosis.label_issues, images_of, folder),
        ),
    ]
    lines = [f"# Data check of {facts['recipe']}", ""]
    lines += [
        f"- preset: `{facts['preset']}`",
        f"- backend: {facts['backend']}",
    ]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    atomic.write_text(folder / REPORT_FILE, "\n".join(lines) + "\n")


def _classes_section(counts, folder):
    train = np.array(list(counts["train"].values()))
    present = train[train > 0]
    lines = []
    if len(present):
        lines.append(
            f"Imbalance (largest / smallest training class): "
            f"{present.max() / present.min():.1f}"
        )
    missing = [n for n, c in counts["train"].items() if c == 0]
    if missing:
        lines.append(f"Classes without training images: {', '.join(missing)}")
    plots.comparison(
        list(counts["train"]),
        {split: list(values.values()) for split, values in counts.items()},
        folder / "class_counts.png",
        "Images per class, by split",
    )
    lines += ["", "![Images per class](class_counts.png)"]
    return "\n".join(lines)


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


def _listing(items, what, header, rows, figure):
    """A section's body: how many are listed, the table, the figure."""
    return "\n".join(
        [_more(items, what), report.markdown_table(header, rows), "", figure]
    )


def _more(items, what):
    if len(items) <= _TABLE_ROWS:
        return ""
    return (
        f"The first {_TABLE_ROWS} of {len(items)} {what}; `{RESULT_FILE}` "
        "lists them all.\n"
    )


def _caption(member):
    return f"{member['split']}: {member['label']}\n{member['example'][-28:]}"


def _groups_section(groups, images_of, folder):
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
    drawing.image_grid(
        images_of(indices),
        captions,
        folder / "exact_duplicates.png",
        "Exact duplicates (leaks across splits first)",
    )
    return _listing(
        groups,
        "groups",
        ["group", "across splits", "labels differ", "images"],
        rows,
        "![Exact duplicates](exact_duplicates.png)",
    )


def _pairs_section(pairs, images_of, folder):
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
    drawing.image_grid(
        images_of(indices),
        captions,
        folder / "near_duplicates.png",
        "Near-duplicate pairs, most similar first",
        columns=4,
    )
    return _listing(
        pairs,
        "pairs",
        ["cosine", "across splits", "first", "second"],
        rows,
        "![Near-duplicates](near_duplicates.png)",
    )


def _issues_section(issues, images_of, folder):
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
    drawing.image_grid(
        images_of([issue["index"] for issue in shown]),
        [
            f"{issue['label']} -> {issue['suggested']}\n"
            f"p {issue['self_confidence']:.2f} {issue['example'][-20:]}"
            for issue in shown
        ],
        folder / "label_issues.png",
        "Likely label errors: given -> suggested (p of given label)",
    )
    return (
        "Ranked by the out-of-fold probability of the given label, lowest "
        "first. About half of such flags are real errors: review them "
        "before relabelling.\n"
    ) + _listing(
        issues,
        "flagged images",
        ["rank", "split", "example", "label", "suggested", "p(label)"],
        rows,
        "![Likely label errors](label_issues.png)",
    )
