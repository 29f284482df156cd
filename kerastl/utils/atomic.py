"""Atomic writes: a file or directory appears whole or not at all.

A run killed while saving must never leave a half-written model where the
last good one was. Everything is written next to its destination under a
temporary name and moved into place with `os.replace`, which is atomic on
POSIX file systems.
"""

import contextlib
import os
import pathlib
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path that replaces `path` when the block succeeds.

    Works for files and directories: write a file, or create a directory and
    fill it, at the yielded path. On an exception nothing at `path` changes
    and the temporary is removed.

    Args:
        path: str or path-like. The final destination.
        suffix: str. Ending of the temporary name, for writers that insist on
            an extension (`".keras"`).

    Example:
    ```python
    from kerastl.utils.atomic import atomic_path

    with atomic_path("pets.keras", suffix=".keras") as tmp:
        model.save(tmp)
    ```
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent
    )
    os.close(handle)
    tmp = pathlib.Path(name)
    tmp.unlink()
    try:
        yield tmp
        _replace(tmp, path)
    finally:
        _remove(tmp)


def write_text(path, text):
    """Writes `text` to `path` atomically, as UTF-8 whatever the locale.

    File names that are not valid UTF-8 (decoded by Python with surrogate
    escapes) are written back as their original bytes.

    Args:
        path: str or path-like.
        text: str.

    Example:
    ```python
    kerastl.utils.atomic.write_text("run/metrics.json", json.dumps(metrics))
    ```
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")


def _replace(tmp, path):
    if tmp.is_dir() and path.is_dir():
        # Directories cannot be swapped in one step: move the old one aside
        # first, so that at every instant one complete copy exists.
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def _remove(path):
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
