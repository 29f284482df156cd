"""Telling a machine without network access from a broken download.

Presets come from Kaggle or Hugging Face and tfds datasets from their
publishers' servers, on first use. Offline, each client fails in its own
words (`NameResolutionError`, `MaxRetryError`, ...) and some retry for
minutes first. kerastl recognizes those failures and answers with one
paragraph: what could not be fetched, that the machine seems offline, and
the two ways on.
"""

import socket
import threading
import urllib.parse

from kerastl.errors import OfflineError

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


def network_failure(error):
    """The exception in `error`'s chain that says the network is out of
    reach, or `None`.

    Args:
        error: an exception, as raised by a download client.

    Example:
    ```python
    kerastl.utils.downloads.network_failure(socket.gaierror(-2, "unknown"))
    ```
    """
    seen = set()
    found = None
    # The innermost match is the most telling ("Name or service not known"
    # rather than a client's "Max retries exceeded with url ...").
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, socket.gaierror) or any(
            cls.__name__ in _NETWORK_ERROR_NAMES for cls in type(error).__mro__
        ):
            found = error
        error = error.__cause__ or error.__context__
    return found


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
    raise kerastl.utils.downloads.offline_error(
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


def unreachable(url, *, timeout=4.0):
    """The network failure that keeps `url`'s server out of reach, or
    `None` when it answers.

    Sends one HEAD request for `url`, without retries, through requests:
    the client tfds downloads with, so proxy settings (`HTTPS_PROXY`, ...)
    apply as they do to the download itself. Any answer, an HTTP error
    included, means the network is there; only a failure to connect counts.
    This lets a caller fail in seconds where a client that retries with
    backoff (tfds: 10 times, about 200 s) would keep an offline user waiting.

    Args:
        url: str. An address the download is about to fetch.
        timeout: float. Seconds to wait for the connection, and again for
            the answer. A lookup of the host name (which requests cannot
            time out) that takes longer than both together counts as a
            failure too.

    Returns:
        The exception that says the network is out of reach (a
        `TimeoutError` when nothing came back in time), or `None`.

    Example:
    ```python
    failure = kerastl.utils.downloads.unreachable("https://www.cs.toronto.edu/")
    if failure is not None:
        raise kerastl.utils.downloads.offline_error(
            "CIFAR-10", "use a local copy", failure
        )
    ```
    """
    import requests

    outcome = {}

    def head():
        try:
            with requests.Session() as session:
                session.head(url, timeout=timeout, allow_redirects=False)
        except Exception as error:
            outcome["error"] = error
        outcome["done"] = True

    # A daemon thread: a name lookup that hangs must not keep the process
    # alive once the caller has given up on it.
    thread = threading.Thread(target=head, daemon=True)
    thread.start()
    thread.join(2 * timeout)
    if "done" not in outcome:
        host = urllib.parse.urlsplit(url).hostname
        return TimeoutError(f"no answer from {host} in {2 * timeout:g} s")
    error = outcome.get("error")
    # Reached, but the certificate or the answer was bad: a download
    # problem of its own, not a missing network.
    if isinstance(
        error, (requests.exceptions.SSLError, requests.exceptions.ReadTimeout)
    ):
        return None
    return None if error is None else network_failure(error)
