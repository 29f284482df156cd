"""Keeping TensorFlow's native log spam out of users' consoles.

TensorFlow (imported by Keras and keras-hub on every backend, for tf.data)
writes oneDNN, CUDA-driver and absl start-up lines straight to file
descriptor 2 from C++, before any Python logging setting can act.
`TF_CPP_MIN_LOG_LEVEL` silences what comes after the import; the import
itself is silenced by pointing descriptor 2 elsewhere while it runs.
"""

import contextlib
import logging
import os
import sys
import tempfile

VERBOSE_ENV = "KERASTL_VERBOSE"


def verbose():
    """Whether the user asked to see native logs (`KERASTL_VERBOSE=1`)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def quiet_native_logs():
    """Silences native TensorFlow/absl output for the duration of the block.

    Does nothing when `KERASTL_VERBOSE=1`. What was written is replayed if
    the block raises, so a failed import still explains itself.

    Example:
    ```python
    with kerastl.utils.logs.quiet_native_logs():
        import keras
    ```
    """
    if verbose():
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        saved = os.dup(2)
    except OSError:
        # Descriptor 2 is closed (`2>&-`, a windowless process): nothing can
        # reach the console, and `import keras` must still work.
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_python_loggers():
    """Shows only errors from TensorFlow's and absl's Python loggers.

    They warn about their own deprecations (tfds, tf.data) on every run,
    which says nothing to a kerastl user. Does nothing when
    `KERASTL_VERBOSE=1`.

    Example:
    ```python
    kerastl.utils.logs.quiet_python_loggers()
    ```
    """
    if verbose():
        return
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
