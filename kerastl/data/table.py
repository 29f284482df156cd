"""CSV tables of image paths and labels."""

import csv
import pathlib

from kerastl.data.examples import Examples
from kerastl.data.examples import encode_labels
from kerastl.data.spec import DataError

SPLIT_COLUMN = "split"
# `split` column values used when `DataSpec.validation` / `.test` is `None`.
_DEFAULT_VALUES = {"validation": ("validation", "val"), "test": ("test",)}


def _read_rows(path, spec):
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(
            f"The CSV file {str(path)!r} does not exist. Point data.name "
            "(and data.validation / data.test, when they name CSV files) at "
            "an existing CSV of image paths and labels."
        )
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    needed = [spec.path_column]
    needed += list(spec.label_columns or [spec.label_column])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"The CSV file {str(path)!r} has no column(s) {missing} (it has "
            f"{columns}). Set data.path_column and data.label_column (or "
            "data.label_columns) to its column names."
        )
    return rows, columns


def _row_labels(row, spec, place):
    if spec.label_columns:
        names = []
        for column in spec.label_columns:
            value = (row[column] or "").strip()
            try:
                on = float(value or 0) != 0
            except ValueError:
                raise DataError(
                    f"{place}: column {column!r} holds {value!r}, not 0 or "
                    "1. One-hot label columns hold 0 or 1."
                ) from None
            if on:
                names.append(column)
        return names
    value = row[spec.label_column] or ""
    return [n.strip() for n in value.split(spec.label_delimiter) if n.strip()]


def _row_path(row, spec, folder, place):
    value = (row[spec.path_column] or "").strip()
    if not value:
        raise DataError(
            f"{place} has an empty {spec.path_column!r} column. Give every "
            "row an image path."
        )
    path = pathlib.Path(value)
    return str(path if path.is_absolute() else folder / path)


def load_table(spec, multi_label):
    """Lists a CSV dataset's image paths and labels.

    Each row names an image (`spec.path_column`, relative to the CSV's
    folder or absolute) and its labels: names separated by
    `spec.label_delimiter` in `spec.label_column`, or a 0/1 column per
    class (`spec.label_columns`). A `split` column assigns rows to
    `spec.train`, `spec.validation` (`validation` or `val` when `None`) and
    `spec.test` (`test` when `None`); without one, every row is training
    data and `spec.validation` / `spec.test` may name further CSV files.
    Images listed but missing are skipped later, with the reason
    `"missing"`.

    Args:
        spec: a `DataSpec` with `source="csv"`.
        multi_label: bool. Multi-hot labels if `True`; otherwise each row
            must have exactly one label.

    Returns:
        `(class_names, splits)`: a list of str and a dict of split name to
        `Examples`.

    Example:
    ```python
    class_names, splits = load_table(DataSpec("csv", "tags.csv"), True)
    ```
    """
    csv_path = pathlib.Path(spec.name or "")
    rows, columns = _read_rows(csv_path, spec)
    folder = csv_path.parent
    # Each split: a list of (image path, label names, where) triples.
    raw = {}
    if SPLIT_COLUMN in columns:
        wanted = {"train": (spec.train,)}
        for split in ("validation", "test"):
            value = getattr(spec, split)
            wanted[split] = (value,) if value else _DEFAULT_VALUES[split]
        lookup = {v: split for split, vs in wanted.items() for v in vs}
        for number, row in enumerate(rows, start=2):
            place = f"Row {number} of {str(csv_path)!r}"
            value = (row[SPLIT_COLUMN] or "").strip()
            if value not in lookup:
                raise DataError(
                    f"{place} has split {value!r}, which is none of "
                    f"{sorted(lookup)}. Fix the value, or name the split in "
                    "data.train, data.validation or data.test."
                )
            raw.setdefault(lookup[value], []).append(
                (
                    _row_path(row, spec, folder, place),
                    _row_labels(row, spec, place),
                    place,
                )
            )
    else:
        tables = {"train": (csv_path, rows)}
        for split in ("validation", "test"):
            name = getattr(spec, split)
            if name:
                other = pathlib.Path(name)
                other = other if other.is_absolute() else folder / other
                tables[split] = (other, _read_rows(other, spec)[0])
        for split, (path, split_rows) in tables.items():
            raw[split] = []
            for number, row in enumerate(split_rows, start=2):
                place = f"Row {number} of {str(path)!r}"
                raw[split].append(
                    (
                        _row_path(row, spec, path.parent, place),
                        _row_labels(row, spec, place),
                        place,
                    )
                )
    if not raw.get("train"):
        raise DataError(
            f"The CSV file {str(csv_path)!r} lists no training images. Add "
            "rows, or check data.train against its split column."
        )
    if spec.class_names:
        class_names = list(spec.class_names)
    elif spec.label_columns:
        class_names = list(spec.label_columns)
    else:
        class_names = sorted(
            {n for r in raw.values() for _, ns, _ in r for n in ns}
        )
    splits = {}
    for split, triples in raw.items():
        if not triples:
            raise DataError(
                f"The {split} CSV lists no images. Add rows, or leave "
                f"data.{split} unset."
            )
        paths, label_sets, places = zip(*triples, strict=True)
        labels = encode_labels(label_sets, class_names, multi_label, places)
        splits[split] = Examples(labels, paths=list(paths))
    return class_names, splits
