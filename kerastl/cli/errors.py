"""The one place kerastl's errors become Click's one-paragraph messages."""

import contextlib
import errno

import click

from kerastl import errors

# Failed writes a user can fix: a full disk, a read-only or foreign folder.
_WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
}


@contextlib.contextmanager
def user_errors():
    """Turns the errors a user can fix into one paragraph, no traceback.

    This is the one place kerastl's own errors (`kerastl.errors`, the
    library's `ValueError`s) become Click errors: a bad recipe or override
    is a usage error (exit 2), anything else exit 1.
    """
    try:
        yield
    except errors.RecipeError as error:
        raise click.UsageError(str(error)) from error
    except (
        ValueError,
        errors.OfflineError,
        errors.TrainingDiverged,
    ) as error:
        raise click.ClickException(str(error)) from error
    except OSError as error:
        if error.errno not in _WRITE_ERRNOS:
            raise
        where = f" {error.filename}" if error.filename else ""
        raise click.ClickException(
            f"Could not write{where}: {error.strerror}. Nothing half-written "
            "was left behind (kerastl writes files whole or not at all). "
            "Free some disk space or choose a writable --output-dir, then "
            "run the command again (an interrupted `fit` continues with "
            "--resume)."
        ) from error
