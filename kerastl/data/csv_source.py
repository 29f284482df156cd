"""CSV tables of image paths and labels."""

import codecs
import csv
import dataclasses
import functools
import io
import os
import pathlib
import warnings

from kerastl.data.examples import SPLIT_PRIORITY
from kerastl.data.examples import Examples
from kerastl.data.examples import encode_labels
from kerastl.data.spec import DataError

SPLIT_COLUMN = "split"
# `split` column values used when `DataSpec.validation` / `.test` is `None`.
_DEFAULT_VALUES = {"validation": ("validation", "val"), "test": ("test",)}
# How many images a warning names before "and N more".
_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class _Row:
    """One image row: its path (joined to the CSV's folder), its label
    names, and where it is, for messages."""

    path: str
    labels: tuple
    table: pathlib.Path
    number: int
    # Numbers of further rows of the same image merged into this one.
    merged: tuple = ()

    @property
    def place(self):
        place = f"Row {self.number} of {str(self.table)!r}"
        if self.merged:
            rows = _listed(map(str, self.merged), len(self.merged))
            place += f" (with row(s) {rows}, the same image)"
        return place

    @functools.cached_property
    def image(self):
        # The file itself: two spellings of a path, or a symlink and its
        # target, are one image.
        return os.path.realpath(self.path)


def _read_rows(path, spec):
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(
            f"The CSV file {str(path)!r} does not exist. Point data.name "
            "(and data.validation / data.test, when they name CSV files) at "
            "an existing CSV of image paths and labels."
        )
    data = path.read_bytes()
    # Excel's "CSV UTF-8" starts with a byte order mark: not a header byte.
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        line = data.count(b"\n", 0, offset) + 1
        utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        # The byte order mark names UTF-16; Latin-1 is the usual otherwise.
        source = "utf-16" if utf16 else "latin1"
        saved = (
            'UTF-16 (Excel\'s "Unicode Text")'
            if utf16
            else "another encoding, most often Latin-1 (Windows-1252) by "
            "Excel or an older tool"
        )
        raise DataError(
            f"The CSV file {str(path)!r} is not UTF-8: the byte at offset "
            f"{offset} (0x{data[offset]:02x}, line {line}) is not valid "
            f"UTF-8, so the file was saved in {saved}. Save it as UTF-8, "
            'e.g. in Excel with Save As > "CSV UTF-8", or with '
            f"`iconv -f {source} -t utf-8 old.csv > new.csv`."
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
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
    `"missing"`. Files must be UTF-8 (a byte order mark, as Excel writes,
    is fine); any other encoding is a `DataError` saying so.

    An image is one file, whatever the spelling of its path or a symlink
    to it. Listed more than once, it is used once, with a warning:

    - in one split with the same labels: the repeated rows are dropped;
    - in one split with different labels: for multi-label data it gets
      the union of its rows' labels (one row per image and label is a
      common layout); for single-label data it is a conflict, and the
      image is left out of that split and named;
    - in several splits: it stays only in test, else validation, and is
      dropped from the others, so no image is both learned from (or
      tuned on) and evaluated on.

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
    if SPLIT_COLUMN in columns:
        raw = _rows_by_split_column(rows, spec, csv_path)
    else:
        raw = _rows_by_file(rows, spec, csv_path)
    raw = {
        split: _one_row_per_image(split_rows, multi_label)
        for split, split_rows in raw.items()
    }
    if not raw.get("train"):
        raise DataError(
            f"The CSV file {str(csv_path)!r} lists no training images. Add "
            "rows, or check data.train against its split column."
        )
    raw = _one_split_per_image(raw, csv_path)
    if not raw["train"]:
        raise DataError(
            f"Every training image of {str(csv_path)!r} is also listed in "
            "validation or test, so none is left to train on. Give training "
            "its own images."
        )
    class_names = _class_names(spec, raw)
    splits = {
        split: _examples(split, split_rows, class_names, multi_label)
        for split, split_rows in raw.items()
    }
    return class_names, splits


def _rows_by_split_column(rows, spec, csv_path):
    """`{split: [_Row]}` of one CSV whose split column names each row's."""
    wanted = {"train": (spec.train,)}
    for split in ("validation", "test"):
        value = getattr(spec, split)
        wanted[split] = (value,) if value else _DEFAULT_VALUES[split]
    lookup = {v: split for split, vs in wanted.items() for v in vs}
    raw = {}
    for number, row in enumerate(rows, start=2):
        place = _place(number, csv_path)
        value = (row[SPLIT_COLUMN] or "").strip()
        if value not in lookup:
            raise DataError(
                f"{place} has split {value!r}, which is none of "
                f"{sorted(lookup)}. Fix the value, or name the split in "
                "data.train, data.validation or data.test."
            )
        raw.setdefault(lookup[value], []).append(
            _table_row(row, spec, csv_path, number, place)
        )
    return raw


def _rows_by_file(rows, spec, csv_path):
    """`{split: [_Row]}`: the CSV is training data, and data.validation and
    data.test may name further CSV files."""
    folder = csv_path.parent
    tables = {"train": (csv_path, rows)}
    for split in ("validation", "test"):
        name = getattr(spec, split)
        if name:
            other = pathlib.Path(name)
            other = other if other.is_absolute() else folder / other
            tables[split] = (other, _read_rows(other, spec)[0])
    return {
        split: [
            _table_row(
                row, spec, path, number, f"Row {number} of {str(path)!r}"
            )
            for number, row in enumerate(split_rows, start=2)
        ]
        for split, (path, split_rows) in tables.items()
    }


def _place(number, path):
    return f"Row {number} of {str(path)!r}"


def _table_row(row, spec, csv_path, number, place):
    return _Row(
        _row_path(row, spec, csv_path.parent, place),
        tuple(_row_labels(row, spec, place)),
        csv_path,
        number,
    )


def _class_names(spec, raw):
    if spec.class_names:
        return list(spec.class_names)
    if spec.label_columns:
        return list(spec.label_columns)
    return sorted(
        {n for split_rows in raw.values() for r in split_rows for n in r.labels}
    )


def _examples(split, split_rows, class_names, multi_label):
    if not split_rows:
        raise DataError(
            f"The {split} CSV lists no images. Add rows, or leave "
            f"data.{split} unset."
        )
    labels = encode_labels(
        [r.labels for r in split_rows],
        class_names,
        multi_label,
        [r.place for r in split_rows],
    )
    return Examples(labels, paths=[r.path for r in split_rows])


def _one_row_per_image(rows, multi_label):
    """The split's rows with each image once; warns about what it dropped
    or merged (see `load_table`)."""
    by_image = {}
    for row in rows:
        by_image.setdefault(row.image, []).append(row)
    kept, duplicates, merged, conflicts = [], [], [], []
    for image_rows in by_image.values():
        first = image_rows[0]
        seen = [set(first.labels)]
        for row in image_rows[1:]:
            if set(row.labels) in seen:
                duplicates.append(row)
            else:
                seen.append(set(row.labels))
        if len(seen) == 1:
            kept.append(first)
            continue
        # Label order as first listed, so the merged row reads naturally.
        names = tuple(dict.fromkeys(n for r in image_rows for n in r.labels))
        described = _described(image_rows, names)
        if multi_label:
            merged_numbers = tuple(row.number for row in image_rows[1:])
            kept.append(
                dataclasses.replace(first, labels=names, merged=merged_numbers)
            )
            merged.append(described)
        else:
            conflicts.append(described)
    if duplicates:
        examples = [
            f"row {row.number} ({row.path})" for row in duplicates[:_SHOWN]
        ]
        _warn(
            f"The CSV file {str(rows[0].table)!r}: dropped "
            f"{_count(len(duplicates), 'duplicate row')} that "
            f"{_verb(len(duplicates), 'lists', 'list')} an image again in "
            "the same split with the same labels: "
            f"{_listed(examples, len(duplicates))}. Each image is used once."
        )
    if merged:
        _warn(
            f"The CSV file {str(rows[0].table)!r}: "
            f"{_count(len(merged), 'image')} "
            f"{_verb(len(merged), 'is', 'are')} listed on several rows with "
            "different labels. The task is multi-label, so each such image "
            "has the labels of all its rows: "
            f"{_listed(merged[:_SHOWN], len(merged))}. Remove a row if its "
            "labels are a mistake."
        )
    if conflicts:
        _warn(
            f"The CSV file {str(rows[0].table)!r}: "
            f"{_count(len(conflicts), 'image')} "
            f"{_verb(len(conflicts), 'has', 'have')} conflicting labels and "
            f"{_verb(len(conflicts), 'was', 'were')} left out, as the task "
            "is single-label (one class per image): "
            f"{_listed(conflicts[:_SHOWN], len(conflicts))}. Keep one label "
            "per image, or train with multi_label=True if an image can "
            "show several classes."
        )
    return kept


def _one_split_per_image(raw, csv_path):
    """Each image in one split only, the first of `SPLIT_PRIORITY` that
    lists it; warns how many were dropped from the others."""
    owner = {}
    for split in SPLIT_PRIORITY:
        for row in raw.get(split, ()):
            owner.setdefault(row.image, split)
    dropped = {}
    kept = {}
    for split, rows in raw.items():
        kept[split] = [row for row in rows if owner[row.image] == split]
        dropped[split] = [row for row in rows if owner[row.image] != split]
    parts = []
    if dropped.get("train"):
        parts.append(
            f"{_count(len(dropped['train']), 'image')} listed in training "
            "and in validation or test "
            f"{_verb(len(dropped['train']), 'was', 'were')} dropped from "
            "training"
        )
    if dropped.get("validation"):
        parts.append(
            f"{_count(len(dropped['validation']), 'image')} listed in "
            "validation and in test "
            f"{_verb(len(dropped['validation']), 'was', 'were')} dropped "
            "from validation"
        )
    if parts:
        rows = dropped.get("train", []) + dropped.get("validation", [])
        _warn(
            f"The CSV data of {str(csv_path)!r}: {' and '.join(parts)}, so "
            "no image is both learned from and evaluated on (paths are "
            "compared after resolving symlinks): "
            f"{_listed([row.path for row in rows[:_SHOWN]], len(rows))}. "
            "List each image in one split only."
        )
    return kept


def _described(rows, names):
    numbers = _listed([str(row.number) for row in rows], len(rows))
    return f"{rows[0].path} (rows {numbers}: {', '.join(names)})"


def _count(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _verb(count, singular, plural):
    return singular if count == 1 else plural


def _listed(items, total):
    """The items as "a, b and c", or "a, b and 7 more" past those shown."""
    items = list(items)
    if total > len(items):
        return f"{', '.join(items)} and {total - len(items)} more"
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _warn(message):
    warnings.warn(message, UserWarning, stacklevel=2)
