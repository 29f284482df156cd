"""Locking a run directory: two processes never write one run."""

import datetime
import fcntl
import json
import os
import pathlib
import socket

from kerastl.errors import RunDirError

LOCK_FILE = ".kerastl.lock"


class RunLock:
    """An exclusive hold on a run directory for this process.

    `fcntl.flock` on `.kerastl.lock`: the kernel drops it when the process
    exits, even on `kill -9`, so a lock is never stale; the file also names
    the holder (pid, host, start time) for the message another process
    gets.

    Args:
        run_dir: path of an existing directory.

    Example:
    ```python
    with kerastl.runs.locking.RunLock(run_dir):
        ...  # write the run
    ```
    """

    def __init__(self, run_dir):
        self.run_dir = pathlib.Path(run_dir)
        self._fd = None

    def acquire(self):
        """Takes the lock, or raises `RunDirError` naming its holder."""
        path = self.run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096)
            os.close(fd)
            raise in_use(self.run_dir, holder) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self, remove=True):
        """Drops the lock and, with `remove`, the lock file."""
        if self._fd is None:
            return
        if remove:
            (self.run_dir / LOCK_FILE).unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def in_use(run_dir, holder):
    """The error for a run directory another process holds, naming it.

    Args:
        run_dir: the directory.
        holder: bytes. The lock file's content (pid, host, start time).

    Example:
    ```python
    raise kerastl.runs.locking.in_use(run_dir, b'{"pid": 1}')
    ```
    """
    try:
        holder = json.loads(holder.decode("utf-8"))
        who = (
            f"process {holder['pid']} on {holder['host']}, started "
            f"{holder['started']}"
        )
    except (ValueError, KeyError, TypeError):
        who = "a process that is still starting"
    return RunDirError(
        f"{run_dir} is in use by another kerastl process ({who}). Two runs "
        "never share a directory: wait for it to finish (or stop it), or "
        "choose another --output-dir."
    )
