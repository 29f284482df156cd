"""What files a run's data was, so a resumed run can tell it changed.

A manifest maps each file under a local source's folder (or the CSV file
itself) to its size and modification time; reading them costs a `stat` per
file, not a read. tfds datasets and in-memory arrays have no manifest.
"""

import json
import os
import pathlib

from kerastl.utils import atomic


def _files(spec):
    """`{path: [size, mtime_ns]}` of the files `spec` reads, or `None`."""
    # A CSV's own rows say which images it holds; a folder's files do.
    if spec.source not in ("csv", "folder", "idx") or not spec.name:
        return None
    root = pathlib.Path(spec.name)
    if root.is_file():
        found = [str(root)]
    else:
        found = [
            os.path.join(folder, name)
            for folder, _, names in os.walk(root)
            for name in names
        ]
    entries = {}
    for path in found:
        try:
            stat = os.stat(path)
        except OSError:
            continue  # a dangling link: the data loader reports it
        entries[path] = [stat.st_size, stat.st_mtime_ns]
    return entries


def record(spec, path):
    """Writes the manifest of `spec`'s files to `path` (nothing for sources
    without files).

    Args:
        spec: a `kerastl.data.DataSpec`.
        path: where the manifest goes (JSON).

    Example:
    ```python
    kerastl.data.manifest.record(spec, run_dir / "checkpoint/data.json")
    ```
    """
    files = _files(spec)
    if files is None:
        return
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(files))


def changes(spec, path):
    """How many files were added, removed or changed since `record`.

    Args:
        spec: a `kerastl.data.DataSpec`.
        path: the manifest `record` wrote.

    Returns:
        An int; `0` also when there is no manifest to compare with.

    Example:
    ```python
    kerastl.data.manifest.changes(spec, run_dir / "checkpoint/data.json")
    ```
    """
    path = pathlib.Path(path)
    files = _files(spec)
    if files is None or not path.is_file():
        return 0
    before = json.loads(path.read_text())
    return len(set(before) ^ set(files)) + sum(
        1 for name in set(before) & set(files) if before[name] != files[name]
    )
