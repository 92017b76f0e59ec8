"""The Cloud Build backend: submits, follows and cancels builds through `cloudbuild_api`.

Each image's build is its committed `cloudbuild/<image>.yaml` with substitutions filled in from
the plan, run on a gzipped tarball of exactly the hashed context. Before submitting, an ongoing
build of the same image and hash is looked up by its tags and followed instead, so a build is
never submitted twice. Monitoring polls the build with backoff; 429 and 503 answers are retried
and never count as failures.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import google.auth.credentials
from google.cloud.devtools import cloudbuild_v1
from google.protobuf import json_format

from imagecascade.cloud import cloudbuild_config
from imagecascade.cloud.cloudbuild_api import (
    ONGOING,
    WAITING,
    BuildLogReader,
    CloudBuildApi,
    CloudBuildFlags,
    Interrupted,
    Status,
    Timing,
    application_default_credentials,
    call_with_retries,
    console_url,
    endpoints,
    is_loopback_url,
    source_object_name,
)
from imagecascade.cloud.gcs import CloudStorage
from imagecascade.core.backend import BuildError, BuildEvent, BuildOutcome, BuildRequest
from imagecascade.core.build_log import BuildLog
from imagecascade.core.build_options import CloudBuildOptions
from imagecascade.core.context_tar import plan_packing, write_context_tar
from imagecascade.core.declaration import ImageSpec
from imagecascade.core.dockerfile import buildkit_features, read_dockerfile
from imagecascade.core.plan import PlannedImage
from imagecascade.core.refusals import Refusal
from imagecascade.core.settings import Settings
from imagecascade.errors import ConfigError


class CloudBuildBackend:
    """Builds images on Google Cloud Build; implements imagecascade.core.backend.Backend."""

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
        self._cloudbuild_endpoint, self._storage_endpoint = endpoints(environ)
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

    def secret_versions(self, spec: ImageSpec) -> dict[str, str]:
        """The image's declared secrets that have a Secret Manager version (image.toml over cascade.toml)."""
        mapping = {**self._settings.cloudbuild_secrets, **spec.cloudbuild.secrets}
        return {key: mapping[key] for key in spec.secrets if key in mapping}

    def refusal(self, image: PlannedImage, settings: Settings) -> tuple[Refusal, ...]:
        """A required secret without a Secret Manager version stops the image before submitting."""
        versions = self.secret_versions(image.spec)
        return tuple(
            Refusal(
                f"required secret {secret_id!r} has no Secret Manager version for Cloud Build",
                f'set {secret_id} = "projects/PROJECT/secrets/NAME/versions/latest" under '
                "[cloudbuild.secrets] in cascade.toml or the image's image.toml",
            )
            for secret_id in image.spec.required_secrets
            if secret_id not in versions
        )

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
        dockerfile = plan_packing(
            image.spec.context, image.spec.dockerfile, image.inputs.files, any_side_name=False
        ).dockerfile_name
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
        buildkit = bool(buildkit_features(read_dockerfile(image.spec.dockerfile)))
        body = cloudbuild_config.with_secrets(path, body, self.secret_versions(image.spec), buildkit=buildkit)
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
                image.spec.context,
                image.spec.dockerfile,
                image.inputs.files,
                tarball,
                compression="gz",
                any_side_name=False,
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
        title = f"{image.name}:{image.tag} on Cloud Build"
        with BuildLog(image.name, request.log_path, on_event, title=title) as build_log:
            return self._build(request, build_log, cancelled)

    def _build(self, request: BuildRequest, build_log: BuildLog, cancelled: threading.Event) -> BuildOutcome:
        image = request.image

        def emit(kind: Any, message: str, step: int | None = None, steps: int | None = None) -> None:
            # Steps and log lines go through the build log (file and live view); the rest is live only.
            if kind == "step":
                build_log.step(step, steps, message)
            elif kind == "log":
                build_log.output(message + "\n")
            else:
                build_log.note(message, live=False)
                build_log.event(BuildEvent(image=image.name, kind=kind, message=message))

        submission, options = self.submission(request)
        region = self.region_for(options)
        client = self._client()
        storage = self._storage()
        remote = CloudBuildApi(client, self._project, region, self._timing)
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
            except Interrupted as error:
                raise BuildError(f"{image.name}: cancelled") from error
        finally:
            client.transport.close()  # type: ignore[no-untyped-call]
            storage.close()

    def _follow(
        self,
        remote: CloudBuildApi,
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
        log = BuildLogReader.for_build(storage, build, timing.log_tail_lines)
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
            except Interrupted:
                continue  # the cancellation branch above runs next
            elapsed = time.monotonic() - started
            if build.status != state:
                state = build.status
                interval = timing.poll_initial
                emit("state", f"{state.name} (elapsed {_clock(elapsed)})")
            if log is None:
                log = BuildLogReader.for_build(storage, build, timing.log_tail_lines)
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
        log: BuildLogReader | None,
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
