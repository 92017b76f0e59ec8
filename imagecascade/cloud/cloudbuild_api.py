"""Calls to the Cloud Build REST API; the only module importing google-cloud-build.

Every call runs under the one retry policy of `retry.py`. Reads (get, list) and cancel are
idempotent and simply retried; create is not: a build is tagged with a tag unique to its
submission, and after any failed create the build is first looked up by that tag, so a create
whose answer was lost is never submitted a second time. Builds come back as `RemoteBuild` values,
so nothing above this module touches the generated types. Also: gcloud's endpoint override
conventions and Application Default Credentials.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import google.api_core.exceptions as api_exceptions
import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
from google.cloud.devtools import cloudbuild_v1
from google.protobuf import json_format

from imagecascade.cloud.cloudbuild_config import apply_substitutions
from imagecascade.cloud.retry import LOGIN_FIX, Timing, call_with_retries, describe_error
from imagecascade.core.backend import BuildError
from imagecascade.errors import BackendError, ConfigError

CLOUDBUILD_OVERRIDE = "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBUILD"
STORAGE_EMULATOR = "STORAGE_EMULATOR_HOST"
DEFAULT_ENDPOINT = "https://cloudbuild.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
TERMINAL = frozenset({"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"})
WAITING = frozenset({"PENDING", "QUEUED"})
CALL_TIMEOUT = 60.0  # seconds for one HTTP call; a hung connection is then retried
LIST_PAGE = 50
_STOPPED = threading.Event()
_STOPPED.set()  # a stop that is already set: one attempt, no retries

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RemoteBuild:
    """What the backend needs of a Cloud Build `Build` resource."""

    id: str
    location: str  # "global" or the region
    status: str  # a Build.Status name; STATUS_UNKNOWN counts as still running
    status_detail: str = ""
    failure: str = ""  # failureInfo.detail
    warnings: tuple[str, ...] = ()
    log_url: str = ""
    logs_bucket: str = ""  # gs://bucket[/prefix]: where log-<id>.txt is written
    logging: str = ""  # options.logging ("" = LEGACY)
    created: datetime.datetime | None = None
    timeout_seconds: float = 0.0  # 0: not known
    queue_ttl_seconds: float = 0.0
    steps: tuple[tuple[str, str], ...] = ()  # (id or name, status)
    images: tuple[str, ...] = ()
    digests: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tags: tuple[str, ...] = ()
    substitutions: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def pushes(self) -> tuple[str, ...]:
        """`images` with the build's own substitutions applied (Cloud Build may report either)."""
        resolved = apply_substitutions({"images": list(self.images)}, self.substitutions)
        return tuple(str(image) for image in resolved.get("images", []))

    def deadline(self, margin: float) -> datetime.datetime | None:
        """When Cloud Build will have ended this build whatever happens (plus `margin` seconds)."""
        if self.created is None or not self.timeout_seconds:
            return None
        return self.created + datetime.timedelta(
            seconds=self.queue_ttl_seconds + self.timeout_seconds + margin
        )

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def waiting(self) -> bool:
        return self.status in WAITING


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


def anonymous_credentials() -> google.auth.credentials.Credentials:
    return google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]


class CloudBuildApi:
    """The calls to one region of Cloud Build with the retry policy around each."""

    def __init__(
        self,
        *,
        project: str,
        region: str,
        credentials: google.auth.credentials.Credentials,
        endpoint: str | None,
        timing: Timing,
    ) -> None:
        options = {"api_endpoint": endpoint} if endpoint else None
        self._client = cloudbuild_v1.CloudBuildClient(
            transport="rest", credentials=credentials, client_options=options
        )
        self._credentials = credentials
        self._endpoint = (
            endpoint
            if endpoint and "://" in endpoint
            else f"https://{endpoint}"
            if endpoint
            else DEFAULT_ENDPOINT
        )
        self.project = project
        self.region = region
        self._timing = timing
        self._session: google.auth.transport.requests.AuthorizedSession | None = None

    @property
    def regional(self) -> bool:
        return self.region != "global"

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def close(self) -> None:
        self._client.transport.close()  # type: ignore[no-untyped-call]
        if self._session is not None:
            self._session.close()  # type: ignore[no-untyped-call]

    def call(self, what: str, function: Callable[[], T], stop: threading.Event | None = None) -> T:
        return call_with_retries("Cloud Build", what, function, self._timing, stop)

    def find(
        self, tags: tuple[str, ...] | list[str], stop: threading.Event | None = None
    ) -> list[RemoteBuild]:
        """Builds in this region carrying every one of `tags`, newest first (one page)."""
        return self.call(f"list builds tagged {', '.join(tags)}", lambda: self._list(tags), stop)

    def ongoing(
        self, tags: tuple[str, ...], reference: str, stop: threading.Event | None = None
    ) -> RemoteBuild | None:
        """The newest unfinished build with these tags, in this region, pushing `reference`."""
        for build in self.find(tags, stop):
            if not build.finished and build.location == self.region and reference in build.pushes:
                return build
        return None

    def submit(
        self, body: Mapping[str, Any], submission_tag: str, stop: threading.Event | None = None
    ) -> RemoteBuild:
        """Create the build once: after a failed create, look it up by `submission_tag` first.

        A create refused by Cloud Build (400, 409) is that image's BuildError.
        """
        try:
            build = cloudbuild_v1.Build.from_json(json.dumps(body))
        except json_format.ParseError as error:
            raise ConfigError(f"not a valid Cloud Build build: {error}") from error
        failed_before = False

        def attempt() -> RemoteBuild:
            nonlocal failed_before
            if failed_before:
                created = self._list([submission_tag])
                if created:
                    return created[0]
            failed_before = True
            return self._create(build)

        try:
            return self.call("submit the build", attempt, stop)
        except BackendError as error:
            # Over REST every 400 (INVALID_ARGUMENT, FAILED_PRECONDITION) arrives as BadRequest.
            if isinstance(error.__cause__, api_exceptions.BadRequest | api_exceptions.Conflict):
                raise BuildError(
                    f"Cloud Build refused the build: {describe_error(error.__cause__)}"
                ) from error
            raise

    def withdraw(self, submission_tag: str) -> None:
        """Cancel whatever build a submission interrupted mid-way may have created; one try, no
        retries (the run is stopping), and nothing raised."""
        try:
            for build in self._list([submission_tag]):
                if not build.finished:
                    self.cancel(build.id, _STOPPED)
        except Exception:  # best effort: the run is being cancelled anyway
            return

    def get(self, build_id: str, stop: threading.Event | None = None) -> RemoteBuild:
        if self.regional:
            request = cloudbuild_v1.GetBuildRequest(name=f"{self.parent}/builds/{build_id}")
        else:
            request = cloudbuild_v1.GetBuildRequest(project_id=self.project, id=build_id)
        return self.call(
            f"get build {build_id}",
            lambda: remote_build(
                self._client.get_build(request=request, retry=None, timeout=CALL_TIMEOUT), self.region
            ),
            stop,
        )

    def cancel(self, build_id: str, stop: threading.Event | None = None) -> None:
        if self.regional:
            request = cloudbuild_v1.CancelBuildRequest(name=f"{self.parent}/builds/{build_id}")
        else:
            request = cloudbuild_v1.CancelBuildRequest(project_id=self.project, id=build_id)
        try:
            self.call(
                f"cancel build {build_id}",
                lambda: self._client.cancel_build(request=request, retry=None, timeout=CALL_TIMEOUT),
                stop,
            )
        except BackendError as error:
            if isinstance(error.__cause__, api_exceptions.BadRequest):
                return  # 400 FAILED_PRECONDITION: it finished meanwhile, nothing left to cancel
            raise

    def _create(self, build: cloudbuild_v1.Build) -> RemoteBuild:
        if self.regional:
            request = cloudbuild_v1.CreateBuildRequest(parent=self.parent, build=build)
        else:
            request = cloudbuild_v1.CreateBuildRequest(project_id=self.project, build=build)
        operation = self._client.create_build(request=request, retry=None, timeout=CALL_TIMEOUT)
        created = remote_build(operation.metadata.build, self.region)
        if not created.id:
            raise BackendError("Cloud Build: create build answered without a build id")
        return created

    def _list(self, tags: tuple[str, ...] | list[str]) -> list[RemoteBuild]:
        query = " AND ".join(f'tags="{tag}"' for tag in tags)
        if not self.regional:
            request = cloudbuild_v1.ListBuildsRequest(
                project_id=self.project, filter=query, page_size=LIST_PAGE
            )
            pager = self._client.list_builds(request=request, retry=None, timeout=CALL_TIMEOUT)
            return [remote_build(build, self.region) for build in pager.builds]
        # projects.locations.builds.list wants `projectId` as well as the parent (the REST
        # reference marks it required). The generated client cannot send both: with project_id set
        # it picks the global path, so the regional list is sent here, on the same credentials.
        if self._session is None:
            self._session = google.auth.transport.requests.AuthorizedSession(  # type: ignore[no-untyped-call]
                self._credentials
            )
        response = self._session.get(
            f"{self._endpoint}/v1/{self.parent}/builds",
            params={"projectId": self.project, "filter": query, "pageSize": str(LIST_PAGE)},
            timeout=CALL_TIMEOUT,
        )
        if response.status_code >= 400:
            raise api_exceptions.from_http_response(response)  # type: ignore[no-untyped-call]
        listed = cloudbuild_v1.ListBuildsResponse.from_json(response.text or "{}", ignore_unknown_fields=True)
        return [remote_build(build, self.region) for build in listed.builds]


def remote_build(build: cloudbuild_v1.Build, region: str) -> RemoteBuild:
    """The `RemoteBuild` of an API `Build`; its location comes from its name when it has one."""
    parts = build.name.split("/")
    location = parts[3] if len(parts) >= 6 and parts[2] == "locations" else region
    created = build.create_time if build.create_time else None
    logging = build.options.logging.name if build.options else ""
    return RemoteBuild(
        id=build.id,
        location=location,
        status=build.status.name,
        status_detail=build.status_detail,
        failure=build.failure_info.detail if build.failure_info else "",
        warnings=tuple(warning.text for warning in build.warnings),
        log_url=build.log_url,
        logs_bucket=build.logs_bucket,
        logging="" if logging == "LOGGING_UNSPECIFIED" else logging,
        created=created,
        timeout_seconds=build.timeout.total_seconds() if build.timeout else 0.0,
        queue_ttl_seconds=build.queue_ttl.total_seconds() if build.queue_ttl else 0.0,
        steps=tuple((step.id or step.name, step.status.name) for step in build.steps),
        images=tuple(build.images),
        digests={item.name: item.digest for item in build.results.images},
        tags=tuple(build.tags),
        substitutions=dict(build.substitutions),
    )
