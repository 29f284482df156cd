"""The cache root: where kerastl keeps what it can always rebuild."""

import os
import pathlib

CACHE_DIR_ENV = "KERASTL_CACHE_DIR"


def cache_root():
    """Where kerastl keeps what it can always rebuild: `$KERASTL_CACHE_DIR`,
    else `~/.cache/kerastl`. Features go to `features/`, smoke-run
    stand-in presets to `standins/`.

    Example:
    ```python
    kerastl.utils.cache.cache_root()  # ~/.cache/kerastl
    ```
    """
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return pathlib.Path(configured).expanduser()
    return pathlib.Path.home() / ".cache" / "kerastl"
