"""Calls to the Cloud Build REST API with their retry policy; the only module importing google-cloud-build.

429 and 503 answers are retried with backoff and never count as failures; other API errors and
unreachable endpoints are BackendErrors. Also: the build log reader (ranged reads of the logs
bucket) and gcloud's endpoint override conventions.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import google.api_core.exceptions as api_exceptions
import google.auth
import google.auth.credentials
import google.auth.exceptions
import requests.exceptions
import tenacity
from google.cloud.devtools import cloudbuild_v1

from imagecascade.cloud.gcs import CloudStorage
from imagecascade.core.build_options import CloudBuildOptions
from imagecascade.errors import BackendError, ConfigError

CLOUDBUILD_OVERRIDE = "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD"
STORAGE_EMULATOR = "STORAGE_EMULATOR_HOST"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
LOGIN_FIX = "run `gcloud auth application-default login`"

Status = cloudbuild_v1.Build.Status
ONGOING = frozenset({Status.PENDING, Status.QUEUED, Status.WORKING})
WAITING = frozenset({Status.PENDING, Status.QUEUED})
TRANSIENT = (api_exceptions.TooManyRequests, api_exceptions.ServiceUnavailable)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timing:
    """How often to ask and how long to wait; tests shrink these to milliseconds."""

    poll_initial: float = 2.0  # seconds between polls right after a change
    poll_max: float = 15.0  # polls slow down to this while nothing changes
    retry_initial: float = 1.0  # first wait after a 429/503
    retry_max: float = 30.0
    transient_limit: float = 900.0  # 429/503 for this long in a row is a BackendError
    log_tail_lines: int = 30


@dataclasses.dataclass(frozen=True, kw_only=True)
class CloudBuildFlags:
    """Command-line flags; None means not given (the image's own `[cloudbuild]` value stays)."""

    machine_type: str | None = None
    disk_size_gb: int | None = None
    timeout_minutes: int | None = None
    worker_pool: str | None = None
    region: str | None = None
    queued_timeout: float | None = None  # seconds a build may wait in QUEUED before it is cancelled

    def options_for(self, image_options: CloudBuildOptions) -> CloudBuildOptions:
        return image_options.with_overrides(
            machine_type=self.machine_type,
            disk_size_gb=self.disk_size_gb,
            timeout_minutes=self.timeout_minutes,
            worker_pool=self.worker_pool,
            region=self.region,
        )


def is_loopback_url(url: str) -> bool:
    host = urllib.parse.urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def console_url(build_id: str, region: str, project: str) -> str:
    return f"https://console.cloud.google.com/cloud-build/builds;region={region}/{build_id}?project={project}"


def source_object_name(image: str, full_hash: str) -> str:
    return f"source/{image}/{full_hash}.tar.gz"


def endpoints(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(Cloud Build endpoint, Cloud Storage endpoint) from gcloud's override conventions."""
    cloudbuild = environ.get(CLOUDBUILD_OVERRIDE, "").rstrip("/") or None
    if cloudbuild and cloudbuild.endswith("/v1"):
        cloudbuild = cloudbuild[: -len("/v1")]
    storage = environ.get(STORAGE_EMULATOR, "").rstrip("/") or None
    if storage and "://" not in storage:
        storage = f"http://{storage}"
    return cloudbuild, storage


def application_default_credentials() -> google.auth.credentials.Credentials:
    """Application Default Credentials, or one ConfigError line saying how to get them."""
    try:
        credentials, _ = google.auth.default(scopes=list(SCOPES))
    except google.auth.exceptions.DefaultCredentialsError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "none found"
        raise ConfigError(
            f"Google Cloud: no Application Default Credentials ({first_line}); {LOGIN_FIX}"
        ) from error
    return credentials


def describe_error(error: Exception) -> str:
    if isinstance(error, api_exceptions.GoogleAPICallError):
        text = f"{error.code} {error.message}" if error.code else str(error.message)
        if isinstance(error, api_exceptions.Unauthenticated | api_exceptions.PermissionDenied):
            text += f" (check the project and your access; {LOGIN_FIX})"
        return text
    return str(error)


def call_with_retries(
    service: str, what: str, function: Callable[[], T], timing: Timing, stop: threading.Event | None = None
) -> T:
    """`function()`, retrying 429/503 with backoff until `transient_limit` passes or `stop` is set.

    Other API errors and unreachable endpoints are BackendErrors at once.
    """
    stop = stop or threading.Event()

    def sleep(seconds: float) -> None:
        stop.wait(seconds)  # a cancellation ends the wait at once

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TRANSIENT),
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
    except TRANSIENT as error:
        if stop.is_set():
            raise Interrupted() from error
        raise BackendError(
            f"{service}: {what}: still {describe_error(error)} "
            f"after {timing.transient_limit:.0f} s of retries"
        ) from error
    except api_exceptions.GoogleAPICallError as error:
        raise BackendError(f"{service}: {what}: {describe_error(error)}") from error
    except requests.exceptions.RequestException as error:
        raise BackendError(f"{service}: {what}: cannot reach the service ({error})") from error


class Interrupted(Exception):
    """Retries stopped because the run was cancelled."""


class CloudBuildApi:
    """The calls to one region of Cloud Build with the retry policy around each."""

    def __init__(
        self, client: cloudbuild_v1.CloudBuildClient, project: str, region: str, timing: Timing
    ) -> None:
        self.client = client
        self.project = project
        self.region = region
        self._timing = timing

    @property
    def regional(self) -> bool:
        return self.region != "global"

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def call(self, what: str, function: Callable[[], T], stop: threading.Event | None = None) -> T:
        return call_with_retries("Cloud Build", what, function, self._timing, stop)

    def ongoing(self, image: str, tag: str) -> cloudbuild_v1.Build | None:
        """The newest QUEUED/WORKING build of this image and hash, found by its tags."""
        query = f'tags="imagecascade" AND tags="{image}" AND tags="hash-{tag}"'
        if self.regional:
            request = cloudbuild_v1.ListBuildsRequest(parent=self.parent, filter=query, page_size=50)
        else:
            request = cloudbuild_v1.ListBuildsRequest(project_id=self.project, filter=query, page_size=50)

        def first_ongoing() -> cloudbuild_v1.Build | None:
            # One page is enough: builds come newest first, and an ongoing one is recent.
            pager = self.client.list_builds(request=request, retry=None)
            build: cloudbuild_v1.Build
            for build in pager.builds:
                if build.status in ONGOING and f"hash-{tag}" in build.tags:
                    return build
            return None

        return self.call(f"list builds of {image}", first_ongoing)

    def create(self, build: cloudbuild_v1.Build) -> cloudbuild_v1.Build:
        if self.regional:
            request = cloudbuild_v1.CreateBuildRequest(parent=self.parent, build=build)
        else:
            request = cloudbuild_v1.CreateBuildRequest(project_id=self.project, build=build)
        operation = self.client.create_build(request=request, retry=None)
        created: cloudbuild_v1.Build = operation.metadata.build
        if not created.id:
            raise BackendError("Cloud Build: create build answered without a build id")
        return created

    def get(self, build_id: str, stop: threading.Event | None = None) -> cloudbuild_v1.Build:
        if self.regional:
            request = cloudbuild_v1.GetBuildRequest(name=f"{self.parent}/builds/{build_id}")
        else:
            request = cloudbuild_v1.GetBuildRequest(project_id=self.project, id=build_id)
        return self.call(
            f"get build {build_id}", lambda: self.client.get_build(request=request, retry=None), stop
        )

    def cancel(self, build_id: str) -> None:
        if self.regional:
            request = cloudbuild_v1.CancelBuildRequest(name=f"{self.parent}/builds/{build_id}")
        else:
            request = cloudbuild_v1.CancelBuildRequest(project_id=self.project, id=build_id)
        try:
            self.call(
                f"cancel build {build_id}", lambda: self.client.cancel_build(request=request, retry=None)
            )
        except BackendError as error:
            if isinstance(error.__cause__, api_exceptions.FailedPrecondition):
                return  # it finished meanwhile: nothing left to cancel
            raise


@dataclasses.dataclass
class BuildLogReader:
    """Streams `log-<id>.txt` from the logs bucket by ranged reads, keeping the last lines."""

    storage: CloudStorage
    bucket: str
    name: str
    tail: collections.deque[str]
    offset: int = 0
    pending: bytes = b""
    broken: str = ""

    @classmethod
    def for_build(
        cls, storage: CloudStorage, build: cloudbuild_v1.Build, lines: int
    ) -> BuildLogReader | None:
        location = build.logs_bucket.removeprefix("gs://").strip("/")
        if not location:
            return None
        bucket, _, prefix = location.partition("/")
        name = f"{prefix}/log-{build.id}.txt" if prefix else f"log-{build.id}.txt"
        return cls(storage=storage, bucket=bucket, name=name, tail=collections.deque(maxlen=lines))

    def read_new(self, final: bool = False) -> Iterator[str]:
        if self.broken:
            return
        try:
            data = self.storage.read_from(self.bucket, self.name, self.offset)
        except TRANSIENT:
            return  # the next poll reads it
        except (BackendError, api_exceptions.GoogleAPICallError) as error:
            self.broken = f"cannot stream the log: {describe_error(error)}"
            yield self.broken
            return
        self.offset += len(data)
        self.pending += data
        *complete, self.pending = self.pending.split(b"\n")
        if final and self.pending:
            complete.append(self.pending)
            self.pending = b""
        for raw in complete:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            self.tail.append(line)
            yield line
