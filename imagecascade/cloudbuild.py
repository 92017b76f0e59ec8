"""The Cloud Build backend. The only module that imports google-cloud-build.

Each image's build is its committed `cloudbuild/<image>.yaml` with substitutions filled in from
the plan, run on a gzipped tarball of exactly the hashed context. Before submitting, an ongoing
build of the same image and hash is looked up by its tags and followed instead, so a build is
never submitted twice. Monitoring polls the build with backoff; 429 and 503 answers are retried
and never count as failures.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import google.api_core.exceptions as api_exceptions
import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import requests.exceptions
import tenacity
from google.cloud.devtools import cloudbuild_v1
from google.protobuf import json_format

from imagecascade import cloudbuild_config
from imagecascade.backend import BuildError, BuildEvent, BuildOutcome, BuildRequest
from imagecascade.build_options import CloudBuildOptions
from imagecascade.context import dockerfile_name_in_tar, write_context_tar
from imagecascade.errors import BackendError, ConfigError
from imagecascade.gcs import CloudStorage
from imagecascade.settings import Settings

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


def _endpoints(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
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


def _describe(error: Exception) -> str:
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
            raise _Interrupted() from error
        raise BackendError(
            f"{service}: {what}: still {_describe(error)} after {timing.transient_limit:.0f} s of retries"
        ) from error
    except api_exceptions.GoogleAPICallError as error:
        raise BackendError(f"{service}: {what}: {_describe(error)}") from error
    except requests.exceptions.RequestException as error:
        raise BackendError(f"{service}: {what}: cannot reach the service ({error})") from error


class _Interrupted(Exception):
    """Retries stopped because the run was cancelled."""


class _Remote:
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
class _LogReader:
    """Streams `log-<id>.txt` from the logs bucket by ranged reads, keeping the last lines."""

    storage: CloudStorage
    bucket: str
    name: str
    tail: collections.deque[str]
    offset: int = 0
    pending: bytes = b""
    broken: str = ""

    @classmethod
    def for_build(cls, storage: CloudStorage, build: cloudbuild_v1.Build, lines: int) -> _LogReader | None:
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
            self.broken = f"cannot stream the log: {_describe(error)}"
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


class CloudBuildBackend:
    """Builds images on Google Cloud Build; implements imagecascade.backend.Backend."""

    name = "cloudbuild"

    def __init__(
        self,
        settings: Settings,
        flags: CloudBuildFlags | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        credentials: google.auth.credentials.Credentials | None = None,
        timing: Timing | None = None,
    ) -> None:
        """Check the configuration and credentials now, so a bad setup fails before any build."""
        environ = os.environ if environ is None else environ
        self._settings = settings
        self._flags = flags or CloudBuildFlags()
        self._timing = timing or Timing()
        if not settings.cloudbuild_project:
            raise ConfigError(
                "Cloud Build needs a Google Cloud project: pass --project PROJECT or set "
                "[cloudbuild] project in cascade.toml"
            )
        if not settings.registry:
            raise ConfigError(
                "Cloud Build pushes what it builds: pass --registry (e.g. us-docker.pkg.dev/PROJECT/REPO) "
                "or set [registry] url in cascade.toml"
            )
        self._project = settings.cloudbuild_project
        self._bucket = settings.effective_bucket
        self._cloudbuild_endpoint, self._storage_endpoint = _endpoints(environ)
        anonymous = google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
        need_adc = not (
            self._cloudbuild_endpoint
            and is_loopback_url(self._cloudbuild_endpoint)
            and self._storage_endpoint
            and is_loopback_url(self._storage_endpoint)
        )
        adc = (
            credentials
            if credentials is not None
            else (application_default_credentials() if need_adc else None)
        )
        self._cloudbuild_credentials = (
            anonymous if self._cloudbuild_endpoint and is_loopback_url(self._cloudbuild_endpoint) else adc
        )
        self._storage_credentials = (
            anonymous if self._storage_endpoint and is_loopback_url(self._storage_endpoint) else adc
        )

    def _client(self) -> cloudbuild_v1.CloudBuildClient:
        options = {"api_endpoint": self._cloudbuild_endpoint} if self._cloudbuild_endpoint else None
        return cloudbuild_v1.CloudBuildClient(
            transport="rest", credentials=self._cloudbuild_credentials, client_options=options
        )

    def _storage(self) -> CloudStorage:
        return CloudStorage.connect(self._project, self._storage_credentials, self._storage_endpoint)

    def region_for(self, options: CloudBuildOptions) -> str:
        if options.region:
            return options.region
        if options.worker_pool:
            # Builds on a private pool run in the pool's region: projects/P/locations/R/workerPools/N.
            parts = options.worker_pool.split("/")
            if len(parts) >= 4 and parts[2] == "locations":
                return parts[3]
        return self._settings.cloudbuild_region or "global"

    def submission(self, request: BuildRequest) -> tuple[cloudbuild_v1.Build, CloudBuildOptions]:
        """The build to submit for `request` (without its source), checked like Cloud Build would."""
        image = request.image
        path = cloudbuild_config.config_path(self._settings.root, image.name)
        config = cloudbuild_config.load_config(path)
        substitutions = cloudbuild_config.image_substitutions(
            tag=image.tag, registry=request.registry, build_args=request.build_args, labels=request.labels
        )
        cloudbuild_config.check_substitutions(path, config, substitutions)
        resolved = cloudbuild_config.apply_substitutions(
            config, {**config.get("substitutions", {}), **substitutions}
        )
        listed = [str(item) for item in resolved.get("images") or []]
        if listed != list(request.references):
            raise ConfigError(
                f"{path}: images: must list {', '.join(request.references)} (the hash tag first, then "
                f"latest); with these substitutions it lists {', '.join(listed) or 'none'}"
            )
        expected_tags = {"imagecascade", image.name, f"hash-{image.tag}"}
        if not expected_tags <= set(resolved.get("tags") or []):
            raise ConfigError(f"{path}: tags: must include imagecascade, {image.name} and hash-${{_TAG}}")
        dockerfile = dockerfile_name_in_tar(image.spec.context, image.spec.dockerfile)
        declared = [
            arg.partition("=")[2]
            for step in resolved["steps"]
            for arg in (step.get("args") or [])
            if isinstance(arg, str) and arg.startswith("--file=")
        ]
        if declared and declared != [dockerfile]:
            raise ConfigError(
                f"{path}: the docker step must read --file={dockerfile} (the Dockerfile's path in the source)"
            )
        options = self._flags.options_for(image.spec.cloudbuild)
        body = {key: value for key, value in config.items() if key != "substitutions"}
        try:
            build = cloudbuild_v1.Build.from_json(json.dumps(body))
        except json_format.ParseError as error:
            raise ConfigError(f"{path}: not a valid Cloud Build config: {error}") from error
        build.substitutions = {**config.get("substitutions", {}), **substitutions}
        build.timeout = datetime.timedelta(minutes=options.timeout_minutes)
        if options.worker_pool:
            # A private pool fixes machine type and disk itself; Cloud Build refuses both beside it.
            build.options.pool = cloudbuild_v1.BuildOptions.PoolOption(name=options.worker_pool)
            return build, options
        machine_types = cloudbuild_v1.BuildOptions.MachineType.__members__
        if options.machine_type and options.machine_type not in machine_types:
            known = ", ".join(name for name in machine_types if name != "UNSPECIFIED")
            raise ConfigError(f"{image.name}: machine type {options.machine_type!r} is not one of {known}")
        if options.machine_type:
            build.options.machine_type = machine_types[options.machine_type]
        if options.disk_size_gb:
            build.options.disk_size_gb = options.disk_size_gb
        return build, options

    def upload_source(self, request: BuildRequest, storage: CloudStorage) -> tuple[str, str, bool]:
        """(bucket, object, uploaded now) for the gzipped tarball of exactly the hashed files."""
        image = request.image
        name = source_object_name(image.name, image.hash)
        with tempfile.TemporaryFile() as tarball:
            write_context_tar(
                image.spec.context, image.spec.dockerfile, list(image.inputs.files), tarball, compression="gz"
            )
            tarball.seek(0)
            default_bucket = self._bucket == f"{self._project}_cloudbuild"
            uploaded = storage.upload_once(self._bucket, name, tarball, create_bucket=default_bucket)
        return self._bucket, name, uploaded

    def build(
        self,
        request: BuildRequest,
        on_event: Callable[[BuildEvent], None],
        cancelled: threading.Event,
    ) -> BuildOutcome:
        image = request.image

        def emit(kind: Any, message: str, step: int | None = None, steps: int | None = None) -> None:
            on_event(BuildEvent(image=image.name, kind=kind, message=message, step=step, steps=steps))

        submission, options = self.submission(request)
        region = self.region_for(options)
        client = self._client()
        storage = self._storage()
        remote = _Remote(client, self._project, region, self._timing)
        try:
            try:
                current = remote.ongoing(image.name, image.tag)
                owned = current is None
                if current is None:
                    bucket, name, uploaded = call_with_retries(
                        "Cloud Storage",
                        "upload the source",
                        lambda: self.upload_source(request, storage),
                        self._timing,
                    )
                    emit(
                        "state",
                        f"source gs://{bucket}/{name} {'uploaded' if uploaded else 'already uploaded'}",
                    )
                    submission.source = cloudbuild_v1.Source(
                        storage_source=cloudbuild_v1.StorageSource(bucket=bucket, object_=name)
                    )
                    if cancelled.is_set():
                        raise BuildError(f"{image.name}: cancelled before submitting")
                    # A 429/503 on create may hide a build that was created: look again before each retry.
                    current = remote.call(
                        f"submit {image.name}",
                        lambda: remote.ongoing(image.name, image.tag) or remote.create(submission),
                    )
                    action = "submitted"
                else:
                    action = "following the ongoing"
                url = console_url(current.id, region, self._project)
                emit("state", f"{action} Cloud Build {current.id}: {url}")
                return self._follow(remote, storage, current, owned, request, emit, cancelled)
            except _Interrupted as error:
                raise BuildError(f"{image.name}: cancelled") from error
        finally:
            client.transport.close()  # type: ignore[no-untyped-call]
            storage.close()

    def _follow(
        self,
        remote: _Remote,
        storage: CloudStorage,
        build: cloudbuild_v1.Build,
        owned: bool,
        request: BuildRequest,
        emit: Callable[..., None],
        cancelled: threading.Event,
    ) -> BuildOutcome:
        image = request.image
        timing = self._timing
        queued_timeout = self._flags.queued_timeout
        started = time.monotonic()
        state: Any = None
        working_step = -1
        interval = timing.poll_initial
        log = _LogReader.for_build(storage, build, timing.log_tail_lines)
        while True:
            if cancelled.is_set():
                if owned:
                    remote.cancel(build.id)
                    raise BuildError(f"{image.name}: cancelled; Cloud Build {build.id} cancelled")
                raise BuildError(
                    f"{image.name}: cancelled; Cloud Build {build.id} (not started here) left running"
                )
            try:
                build = remote.get(build.id, cancelled)
            except _Interrupted:
                continue  # the cancellation branch above runs next
            elapsed = time.monotonic() - started
            if build.status != state:
                state = build.status
                interval = timing.poll_initial
                emit("state", f"{state.name} (elapsed {_clock(elapsed)})")
            if log is None:
                log = _LogReader.for_build(storage, build, timing.log_tail_lines)
            steps = len(build.steps)
            for index, step in enumerate(build.steps):
                if step.status == Status.WORKING and index > working_step:
                    working_step = index
                    emit("step", step.id or step.name, step=index + 1, steps=steps)
            if log is not None:
                for line in log.read_new(final=build.status not in ONGOING):
                    emit("log", line)
            if build.status not in ONGOING:
                return self._result(build, request, log, emit)
            if build.status in WAITING and queued_timeout is not None and elapsed > queued_timeout:
                remote.cancel(build.id)
                raise BuildError(
                    f"{image.name}: Cloud Build {build.id} waited in {build.status.name} for more than "
                    f"{queued_timeout:.0f} s (--queued-timeout); cancelled it",
                    tuple(log.tail) if log else (),
                )
            cancelled.wait(interval)
            interval = min(interval * 1.5, timing.poll_max)

    def _result(
        self,
        build: cloudbuild_v1.Build,
        request: BuildRequest,
        log: _LogReader | None,
        emit: Callable[..., None],
    ) -> BuildOutcome:
        name = request.image.name
        tail = tuple(log.tail) if log else ()
        if build.status != Status.SUCCESS:
            detail = f": {build.status_detail}" if build.status_detail else ""
            raise BuildError(f"{name}: Cloud Build {build.id} ended {build.status.name}{detail}", tail)
        digests = {item.name: item.digest for item in build.results.images}
        for reference in request.references:
            if reference in digests:
                emit("pushed", f"{reference}@{digests[reference]}")
        digest = digests.get(request.references[0])
        if not digest:
            raise BuildError(
                f"{name}: Cloud Build {build.id} succeeded without a digest for {request.references[0]}",
                tail,
            )
        return BuildOutcome(digest=digest, log_tail=tail)


def _clock(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}"


class _RegistryCredentials(Mapping[str, tuple[str, str]]):
    """Registry credentials: ADC access tokens for Google's registries, docker's config for others.

    Artifact Registry and gcr.io take `oauth2accesstoken:<token>` at their token service (the
    flow `gcloud auth configure-docker` sets up), so a manifest HEAD there gets a Bearer token
    from Application Default Credentials. Tokens are refreshed when they expire.
    """

    def __init__(
        self,
        fallback: Mapping[str, tuple[str, str]],
        token: Callable[[], str],
        is_google_host: Callable[[str], bool],
    ) -> None:
        self._fallback = fallback
        self._token = token
        self._is_google_host = is_google_host

    def __getitem__(self, host: str) -> tuple[str, str]:
        if self._is_google_host(host):
            return ("oauth2accesstoken", self._token())
        return self._fallback[host]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fallback)

    def __len__(self) -> int:
        return len(self._fallback)

    def get(self, host: str, default: Any = None) -> Any:
        try:
            return self[host]
        except KeyError:
            return default


def is_google_registry(host: str) -> bool:
    name = host.partition(":")[0]
    return name.endswith((".pkg.dev", ".gcr.io")) or name == "gcr.io"


def adc_token_provider(credentials: google.auth.credentials.Credentials | None = None) -> Callable[[], str]:
    """A function returning a valid access token from ADC, refreshing it when needed."""
    lock = threading.Lock()
    state: dict[str, Any] = {"credentials": credentials}

    def token() -> str:
        with lock:
            if state["credentials"] is None:
                state["credentials"] = application_default_credentials()
            current = state["credentials"]
            if not current.valid:
                try:
                    current.refresh(google.auth.transport.requests.Request())
                except google.auth.exceptions.GoogleAuthError as error:
                    raise BackendError(
                        f"Google Cloud: cannot refresh the access token ({error}); {LOGIN_FIX}"
                    ) from error
            return str(current.token)

    return token


class CloudRegistryStore:
    """ "Already built" on Artifact Registry (or any registry): a manifest HEAD, never gcloud."""

    def __init__(
        self,
        registry: str,
        token: Callable[[], str],
        *,
        is_google_host: Callable[[str], bool] = is_google_registry,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        from imagecascade.registry import RegistryClient, load_docker_credentials

        credentials = _RegistryCredentials(load_docker_credentials(environ), token, is_google_host)
        self._client = RegistryClient(credentials=credentials)
        self._registry = registry
        self.description = registry

    def has(self, name: str, tag: str) -> bool:
        return self._client.manifest_digest(f"{self._registry}/{name}", tag) is not None


def cloudbuild_store(
    settings: Settings,
    *,
    token: Callable[[], str] | None = None,
    is_google_host: Callable[[str], bool] = is_google_registry,
    environ: Mapping[str, str] | None = None,
) -> CloudRegistryStore:
    """The store `--backend cloudbuild` decides "already built" with: the target registry."""
    if not settings.registry:
        raise ConfigError(
            "Cloud Build pushes what it builds: pass --registry (e.g. us-docker.pkg.dev/PROJECT/REPO) "
            "or set [registry] url in cascade.toml"
        )
    return CloudRegistryStore(
        settings.registry, token or adc_token_provider(), is_google_host=is_google_host, environ=environ
    )
