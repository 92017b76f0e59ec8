"""The one retry policy for every call to Google Cloud (Cloud Build and Cloud Storage).

What is transient: HTTP 408, 429, 500, 502, 503 and 504, and a connection that is refused, reset
or times out, on any call. That is gcloud's rule for its own API calls
(googlecloudsdk/core/transports: `RETRYABLE_STATUS_CODES`, connection errors) and
google-cloud-storage's (`google.cloud.storage.retry._should_retry`). Transient failures are
retried with exponential backoff and jitter until `Timing.transient_limit` has passed; anything
else fails at once. The policy is carried out by tenacity for Cloud Build calls (its waits end
as soon as the run is cancelled) and handed to google-cloud-storage as a
`google.api_core.retry.Retry` built from the same numbers and predicate, so that its resumable
uploads resume a failed chunk instead of starting over.

Only idempotent calls are retried blindly; creating a build is not (see
`cloudbuild_api.CloudBuildApi.submit`).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from typing import TypeVar

import google.api_core.exceptions as api_exceptions
import google.api_core.retry
import google.auth.exceptions
import requests
import tenacity
import urllib3.exceptions

from imagecascade.errors import BackendError

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
LOGIN_FIX = "run `gcloud auth application-default login`"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timing:
    """How often to ask and how long to keep trying; tests shrink these to milliseconds."""

    poll_initial: float = 2.0  # seconds between polls right after a change
    poll_max: float = 15.0  # polls slow down to this while nothing changes
    retry_initial: float = 1.0  # first wait after a transient failure; doubles each time
    retry_max: float = 30.0  # longest single wait
    transient_limit: float = 900.0  # transient failures for this long in a row are a BackendError
    log_tail_lines: int = 30
    upload_chunk_bytes: int = 8 * 1024 * 1024  # resumable upload chunk (a multiple of 256 KiB)
    # A build is followed through API failures until its own deadline (created + queueTtl +
    # timeout) plus this margin has passed, and at least for `transient_limit`.
    deadline_margin: float = 600.0


class Interrupted(Exception):
    """Retries stopped because the run was cancelled."""


def is_transient(error: BaseException) -> bool:
    """True for the failures worth asking again: 408/429/5xx answers and broken connections."""
    if isinstance(error, api_exceptions.GoogleAPICallError):
        return error.code in TRANSIENT_STATUS
    if isinstance(
        error,
        requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | requests.exceptions.ChunkedEncodingError
        | urllib3.exceptions.ProtocolError
        | ConnectionError
        | TimeoutError
        | google.auth.exceptions.TransportError,
    ):
        return True
    # google-cloud-storage's media errors (InvalidResponse) carry the HTTP response.
    response = getattr(error, "response", None)
    return isinstance(response, requests.Response) and response.status_code in TRANSIENT_STATUS


def describe_error(error: BaseException) -> str:
    """One line for a user: the status and the service's own message, or the connection failure."""
    if isinstance(error, api_exceptions.GoogleAPICallError):
        # Over REST the message starts with the method and URL; the service's own words follow.
        message = re.sub(r"^[A-Z]+ \S+: ", "", str(error.message))
        text = f"{error.code} {message}" if error.code else message
        if isinstance(error, api_exceptions.Unauthenticated | api_exceptions.PermissionDenied):
            text += f" (check the project and your access; {LOGIN_FIX})"
        return text
    if isinstance(error, google.auth.exceptions.RefreshError):
        return f"the access token cannot be refreshed ({error}); {LOGIN_FIX}"
    if isinstance(error, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return f"cannot reach the service ({type(error).__name__})"
    response = getattr(error, "response", None)
    if isinstance(response, requests.Response):
        return f"{response.status_code} {response.reason}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def call_with_retries(
    service: str,
    what: str,
    function: Callable[[], T],
    timing: Timing,
    stop: threading.Event | None = None,
) -> T:
    """`function()` under the policy: transient failures are retried until `transient_limit`.

    Raises Interrupted when `stop` is set during a wait, and BackendError (its `__cause__` the
    original exception) for anything else: a persistent transient failure, an API error, an
    unreachable endpoint, credentials that cannot be refreshed.
    """
    stop = stop or threading.Event()

    def sleep(seconds: float) -> None:
        stop.wait(seconds)  # a cancellation ends the wait at once

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=tenacity.wait_exponential(multiplier=timing.retry_initial, max=timing.retry_max)
        + tenacity.wait_random(0, timing.retry_initial),
        stop=tenacity.stop_any(
            tenacity.stop_after_delay(timing.transient_limit), tenacity.stop_when_event_set(stop)
        ),
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(function)
    except (BackendError, Interrupted):
        raise
    except Exception as error:
        if stop.is_set() and is_transient(error):
            raise Interrupted() from error
        if is_transient(error):
            raise BackendError(
                f"{service}: {what}: still {describe_error(error)} "
                f"after {timing.transient_limit:.0f} s of retries"
            ) from error
        if isinstance(
            error,
            api_exceptions.GoogleAPICallError
            | requests.exceptions.RequestException
            | google.auth.exceptions.GoogleAuthError,
        ):
            raise BackendError(f"{service}: {what}: {describe_error(error)}") from error
        raise


def storage_retry(timing: Timing, stop: threading.Event | None = None) -> google.api_core.retry.Retry:
    """The same policy as a `google.api_core.retry.Retry`, for google-cloud-storage's own calls.

    A set `stop` ends the retries at the next failure (the wait in progress still runs out).
    """

    def give_up_when_stopped(error: Exception) -> None:
        if stop is not None and stop.is_set():
            raise Interrupted() from error

    return google.api_core.retry.Retry(
        predicate=is_transient,
        initial=timing.retry_initial,
        maximum=timing.retry_max,
        multiplier=2.0,
        timeout=timing.transient_limit,
        on_error=give_up_when_stopped,
    )
