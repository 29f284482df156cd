"""Image folders: one subfolder per class, optionally one folder per split."""

import os
import pathlib
import warnings

import numpy as np

from kerastl.data.examples import SPLIT_PRIORITY
from kerastl.data.examples import Examples
from kerastl.data.spec import DataError

# Split folders looked for when `DataSpec.validation` / `.test` is `None`.
_DEFAULT_FOLDERS = {"validation": ("validation", "val"), "test": ("test",)}


def _visible(name):
    return not name.startswith(".")


def _class_folders(folder):
    return sorted(
        p.name for p in folder.iterdir() if p.is_dir() and _visible(p.name)
    )


def list_files(folder):
    """Every visible file under `folder`, whatever it is, sorted.

    Hidden files and folders (names starting with `.`) are left out;
    everything else is listed: named pipes, devices, sockets, broken links,
    link loops and links to folders too, so that reading each is refused
    later with a reason and nothing in a data folder is dropped silently.
    Links to folders are listed, not followed: one could loop back up.

    Args:
        folder: str or path-like.

    Returns:
        A list of str.

    Example:
    ```python
    list_files("/data/pets/cat")  # ["/data/pets/cat/1.jpg", ...]
    ```
    """
    folder = pathlib.Path(folder)
    return sorted(
        str(p)
        for p in folder.rglob("*")
        if not (p.is_dir() and not p.is_symlink())
        and all(map(_visible, p.relative_to(folder).parts))
    )


def split_folders(spec):
    """Finds the folder of each split.

    Args:
        spec: a `DataSpec` with `source="folder"`.

    Returns:
        dict of split name to `pathlib.Path`.

    Example:
    ```python
    split_folders(DataSpec("folder", "/data/flowers"))
    ```
    """
    root = pathlib.Path(spec.name or "")
    if not spec.name or not root.is_dir():
        raise DataError(
            f"The image folder {spec.name!r} does not exist. Point "
            "data.name at a folder with one subfolder of images per class."
        )
    if not (root / spec.train).is_dir():
        if spec.train != "train" or spec.validation or spec.test:
            missing = [
                name
                for name in (spec.train, spec.validation, spec.test)
                if name and not (root / name).is_dir()
            ]
            raise DataError(
                f"The image folder {str(root)!r} has no split subfolder(s) "
                f"{missing}. Name existing subfolders in data.train, "
                "data.validation and data.test, or leave them unset to use "
                "the whole folder as training data."
            )
        return {"train": root}
    folders = {"train": root / spec.train}
    for split in ("validation", "test"):
        name = getattr(spec, split)
        if name is not None:
            if not (root / name).is_dir():
                raise DataError(
                    f"The {split} folder {str(root / name)!r} does not "
                    f"exist. Fix data.{split} or leave it unset."
                )
            folders[split] = root / name
            continue
        for candidate in _DEFAULT_FOLDERS[split]:
            if (root / candidate).is_dir():
                folders[split] = root / candidate
                break
    return folders


def load_folder(spec, multi_label, every_class=True):
    """Lists a folder dataset's images and labels, one subfolder per class.

    Class names are the sorted subfolder names of the training folder
    unless `spec.class_names` gives them. Hidden files and folders are
    ignored; every other file is an image candidate (unreadable ones are
    skipped later, with a reason). An empty class folder is an error: a
    class with no images cannot be learnt, and leaving it out silently
    would change the model's classes.

    Args:
        spec: a `DataSpec` with `source="folder"`.
        multi_label: bool. Multi-hot (one-hot here) labels if `True`.
        every_class: bool. Require the training folder to hold every class
            (to train on); evaluation data may hold a few. Defaults to
            `True`.

    Returns:
        `(class_names, splits)`: a list of str and a dict of split name to
        `Examples`.

    Example:
    ```python
    class_names, splits = load_folder(DataSpec("folder", "/data/pets"), False)
    ```
    """
    folders = split_folders(spec)
    found = _class_folders(folders["train"])
    if not found:
        raise DataError(
            f"The image folder {str(folders['train'])!r} has no class "
            "subfolders, so it holds no labelled images. Put each class's "
            "images in a subfolder named after the class."
        )
    class_names = list(spec.class_names or found)
    splits = {}
    for split, folder in folders.items():
        labels = []
        paths = []
        for name in _class_folders(folder):
            if name not in class_names:
                raise DataError(
                    f"{str(folder / name)!r} is a class folder outside the "
                    f"class list {class_names}. Remove it, or add {name!r} "
                    "to data.class_names."
                )
            files = list_files(folder / name)
            if not files:
                raise DataError(
                    f"The class folder {str(folder / name)!r} is empty. Add "
                    "its images or remove the folder."
                )
            paths += files
            labels += [class_names.index(name)] * len(files)
        if split == "train" and every_class:
            absent = sorted(set(class_names) - set(_class_folders(folder)))
            if absent:
                raise DataError(
                    f"The training folder {str(folder)!r} has no images of "
                    f"the class(es) {absent}. Add a subfolder of images for "
                    "each, or remove them from data.class_names."
                )
        labels = np.asarray(labels, dtype=np.int64)
        if multi_label:
            labels = np.eye(len(class_names), dtype=np.float32)[labels]
        splits[split] = Examples(labels, paths=paths)
    return class_names, _one_split_per_file(splits, folders["train"])


def _one_split_per_file(splits, root):
    """Drops from each split the files (compared after resolving links)
    that a split earlier in `SPLIT_PRIORITY` holds too; warns how many."""
    owner = {}
    for split in SPLIT_PRIORITY:
        for path in splits[split].paths if split in splits else ():
            owner.setdefault(os.path.realpath(path), split)
    dropped = []
    for split, examples in splits.items():
        keep = [
            i
            for i, path in enumerate(examples.paths)
            if owner[os.path.realpath(path)] == split
        ]
        if len(keep) < len(examples):
            dropped += [
                f"{len(examples) - len(keep)} from {split}",
            ]
            splits[split] = examples.take(keep)
    if dropped:
        warnings.warn(
            f"The image folder {str(root)!r} reaches the same files from "
            f"several split folders (through links); they were dropped "
            f"({', '.join(dropped)}) so that no image is both learnt from and "
            "evaluated on. Keep each image in one split folder.",
            UserWarning,
            stacklevel=2,
        )
    return splits
