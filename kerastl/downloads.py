"""Telling a machine without network access from a broken download.

Presets come from Kaggle or Hugging Face and tfds datasets from their
publishers' servers, on first use. Offline, each client fails in its own
words (`NameResolutionError`, `MaxRetryError`, ...) and some retry for
minutes first. kerastl recognizes those failures and answers with one
paragraph: what could not be fetched, that the machine seems offline, and
the two ways on.
"""

import socket

# Exception class names (anywhere in an exception's MRO) that mean "the
# network could not be reached", across the clients kerastl's downloads go
# through: requests and urllib3 (kagglehub, huggingface_hub), httpx, the
# standard library, and pytest-socket in tests.
_NETWORK_ERROR_NAMES = frozenset(
    {
        "ConnectionError",
        "ConnectError",
        "ConnectTimeout",
        "ConnectTimeoutError",
        "NameResolutionError",
        "NewConnectionError",
        "MaxRetryError",
        "ProxyError",
        "SocketBlockedError",
        "OfflineModeIsEnabled",
        "gaierror",
        "timeout",
        "TimeoutError",
        "URLError",
    }
)


class OfflineError(ConnectionError):
    """Something had to be downloaded and the network could not be reached.

    The message names what could not be fetched and the ways on without a
    network. The CLI shows it as one paragraph.

    Example:
    ```python
    try:
        model = kerastl.TransferClassifier.from_preset("resnet_50_imagenet")
    except kerastl.downloads.OfflineError as error:
        print(error)
    ```
    """


def network_failure(error):
    """The exception in `error`'s chain that says the network is out of
    reach, or `None`.

    Args:
        error: an exception, as raised by a download client.

    Example:
    ```python
    kerastl.downloads.network_failure(socket.gaierror(-2, "unknown"))
    ```
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, socket.gaierror) or any(
            cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(error).__mro__
        ):
            return error
        error = error.__cause__ or error.__context__
    return None


def offline_error(what, local_way, error):
    """The `OfflineError` for a download of `what` that failed with `error`.

    Args:
        what: str. What could not be fetched, e.g. "the preset
            'resnet_50_imagenet' (from Kaggle)".
        local_way: str. How to use a copy on disk instead, e.g. "point the
            recipe at a local preset directory with `--set preset=PATH`".
        error: the exception the download failed with.

    Example:
    ```python
    raise kerastl.downloads.offline_error(
        "the preset 'resnet_50_imagenet'",
        "point the recipe at a local preset with `--set preset=PATH`",
        error,
    ) from error
    ```
    """
    cause = network_failure(error) or error
    return OfflineError(
        f"Could not download {what}: this machine seems to be offline "
        f"({type(cause).__name__}: {_first_line(cause)}). Two ways on "
        "without a network: run the recipe with `--smoke`, which trains on "
        "synthetic data and stands in a tiny random-weight model for a "
        f"preset it cannot fetch; or {local_way}."
    )


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else "no details"
