"""The Cloud Build backend: submits, follows and cancels builds through `cloudbuild_api`.

Each image's build is its committed `cloudbuild/<image>.yaml` put together by `submission.py`,
run on a gzipped tarball of exactly the hashed context, pinned to the uploaded object's
generation. Before submitting, an ongoing build of the same image, hash, registry and region is
looked up by its tags and followed instead. A build is followed until it finishes, through any
number of transient API failures (a six-hour build is polled over a thousand times); its status,
not the log and not a poll that failed, decides the image. Only builds this run submitted are
ever cancelled (Ctrl-C, `--queued-timeout`).
"""

from __future__ import annotations

import datetime
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import google.auth.credentials

from imagecascade.cloud.cloudbuild_api import (
    CloudBuildApi,
    RemoteBuild,
    anonymous_credentials,
    application_default_credentials,
    console_url,
    endpoints,
    is_loopback_url,
    source_object_name,
)
from imagecascade.cloud.gcs import CloudStorage, SourceObject
from imagecascade.cloud.log_tail import LogTail
from imagecascade.cloud.retry import Interrupted, Timing, is_transient
from imagecascade.cloud.submission import Submission, build_submission, secret_refusals
from imagecascade.core.backend import BuildError, BuildEvent, BuildOutcome, BuildRequest
from imagecascade.core.build_log import BuildLog
from imagecascade.core.build_options import CloudBuildFlags
from imagecascade.core.context_tar import write_context_tar
from imagecascade.core.plan import PlannedImage
from imagecascade.core.refusals import Refusal
from imagecascade.core.settings import Settings
from imagecascade.errors import BackendError, ConfigError

Emit = Callable[..., None]


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
        self._flags.check()
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
        self._cloudbuild_endpoint, self._storage_endpoint = endpoints(environ)
        build_local = bool(self._cloudbuild_endpoint and is_loopback_url(self._cloudbuild_endpoint))
        storage_local = bool(self._storage_endpoint and is_loopback_url(self._storage_endpoint))
        adc = credentials
        if adc is None and not (build_local and storage_local):
            adc = application_default_credentials()
        self._cloudbuild_credentials = anonymous_credentials() if build_local else adc
        self._storage_credentials = anonymous_credentials() if storage_local else adc
        self._buckets: dict[str, threading.Lock] = {}
        self._ready: set[str] = set()
        self._buckets_lock = threading.Lock()

    def submission(self, request: BuildRequest) -> Submission:
        """What would be submitted for `request` (without its source); ConfigError when refused."""
        return build_submission(request, self._settings, self._flags)

    def refusal(self, image: PlannedImage, settings: Settings) -> tuple[Refusal, ...]:
        """Why Cloud Build cannot build `image`: a required secret without a Secret Manager version."""
        return secret_refusals(image, settings)

    def build(
        self, request: BuildRequest, on_event: Callable[[BuildEvent], None], cancelled: threading.Event
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

        try:
            submission = self.submission(request)
        except ConfigError as error:
            raise BuildError(f"{image.name}: {error}") from error
        for note in submission.notes:
            emit("state", note)
        region = submission.region
        assert self._cloudbuild_credentials is not None
        api = CloudBuildApi(
            project=self._project,
            region=region,
            credentials=self._cloudbuild_credentials,
            endpoint=self._cloudbuild_endpoint,
            timing=self._timing,
        )
        storage = CloudStorage.connect(
            self._project, self._storage_credentials, self._storage_endpoint, self._timing
        )
        try:
            current = api.ongoing(submission.lookup_tags, request.references[0], cancelled)
            owned = current is None
            if current is None:
                source = self._upload(request, region, storage, cancelled)
                emit(
                    "state", f"source gs://{source.bucket}/{source.name}#{source.generation} {source.action}"
                )
                if cancelled.is_set():
                    raise BuildError(f"{image.name}: cancelled before submitting")
                tag = f"submission-{uuid.uuid4().hex[:16]}"
                body = submission.with_source(source.bucket, source.name, source.generation, tag)
                try:
                    current = api.submit(body, tag, cancelled)
                except Interrupted:
                    api.withdraw(tag)  # a create whose answer was lost may have made it
                    raise
                action = "submitted"
            else:
                action = "following the ongoing"
            url = current.log_url or console_url(current.id, region, self._project)
            emit("state", f"{action} Cloud Build {current.id}: {url}")
            return self._follow(api, storage, current, owned, submission, request, emit, cancelled)
        except Interrupted as error:
            raise BuildError(f"{image.name}: cancelled") from error
        except ConfigError as error:
            raise BuildError(f"{image.name}: {error}") from error
        finally:
            api.close()
            storage.close()

    def _upload(
        self, request: BuildRequest, region: str, storage: CloudStorage, cancelled: threading.Event
    ) -> SourceObject:
        """The gzipped tarball of exactly the hashed files, in a bucket that is the project's."""
        image = request.image
        bucket, default = self._settings.source_bucket(region)
        with self._buckets_lock:
            lock = self._buckets.setdefault(bucket, threading.Lock())
        with lock:  # parallel builds check and create the bucket once
            if bucket not in self._ready:
                storage.ensure_bucket(
                    bucket,
                    project=self._project,
                    location=region if default and region != "global" else "",
                    owned_by_project=default,
                    stop=cancelled,
                )
                self._ready.add(bucket)
        with tempfile.TemporaryFile() as tarball:
            # The configs name the Dockerfile, so a side file gets the fixed name (core/context_tar.py).
            write_context_tar(
                image.spec.context,
                image.spec.dockerfile,
                image.inputs.files,
                tarball,
                compression="gz",
                any_side_name=False,
            )
            return storage.upload_source(
                bucket, source_object_name(image.name, image.hash), tarball, cancelled
            )

    def _follow(
        self,
        api: CloudBuildApi,
        storage: CloudStorage,
        build: RemoteBuild,
        owned: bool,
        submission: Submission,
        request: BuildRequest,
        emit: Emit,
        cancelled: threading.Event,
    ) -> BuildOutcome:
        name = request.image.name
        timing = self._timing
        started = time.monotonic()
        state = ""
        working_step = -1
        interval = timing.poll_initial
        log = LogTail(storage, timing.log_tail_lines)
        warnings: set[str] = set()
        give_up_at = _give_up_at(build, timing)
        said_unreachable = said_not_ours = False
        while True:
            if cancelled.is_set():
                if owned:
                    api.cancel(build.id)
                    raise BuildError(f"{name}: cancelled; Cloud Build {build.id} cancelled")
                raise BuildError(f"{name}: cancelled; Cloud Build {build.id} (not started here) left running")
            try:
                build = api.get(build.id, cancelled)
                give_up_at = _give_up_at(build, timing)
            except Interrupted:
                continue  # the cancellation branch above runs next
            except BackendError as error:
                cause = error.__cause__
                if not (cause is not None and is_transient(cause) and time.monotonic() < give_up_at):
                    raise BackendError(
                        f"{error}; Cloud Build {build.id} goes on without this run "
                        f"({console_url(build.id, api.region, self._project)}); a rerun follows it"
                    ) from error
                if not said_unreachable:
                    said_unreachable = True
                    emit(
                        "state", f"warning: Cloud Build does not answer ({error}); still following {build.id}"
                    )
                cancelled.wait(interval)
                continue
            elapsed = time.monotonic() - started
            if build.status != state:
                state = build.status
                interval = timing.poll_initial
                emit("state", f"{state} (elapsed {_clock(elapsed)})")
            for text in build.warnings:
                if text not in warnings:
                    warnings.add(text)
                    emit("state", f"Cloud Build warning: {text}")
            for index, (step, status) in enumerate(build.steps):
                if status == "WORKING" and index > working_step:
                    working_step = index
                    emit("step", step, step=index + 1, steps=len(build.steps))
            for kind, line in log.read(build, submission.logging):
                emit(kind, line)
            if build.finished:
                return self._result(build, request, log, emit)
            waited = _queued_for(build)
            if build.waiting and submission.queued_timeout is not None and waited > submission.queued_timeout:
                if owned:
                    api.cancel(build.id)
                    raise BuildError(
                        f"{name}: Cloud Build {build.id} waited in {build.status} for {waited:.0f} s, "
                        f"more than --queued-timeout {submission.queued_timeout:.0f} s; cancelled it",
                        tuple(log.tail),
                    )
                if not said_not_ours:
                    said_not_ours = True
                    emit("state", "queued beyond --queued-timeout, but not submitted by this run: left alone")
            cancelled.wait(interval)
            interval = min(interval * 1.5, timing.poll_max)

    def _result(self, build: RemoteBuild, request: BuildRequest, log: LogTail, emit: Emit) -> BuildOutcome:
        name = request.image.name
        tail = tuple(log.tail)
        if build.status != "SUCCESS":
            details = [text for text in (build.failure, build.status_detail) if text]
            detail = f": {'; '.join(dict.fromkeys(details))}" if details else ""
            where = f" (log: {build.log_url})" if build.log_url else ""
            raise BuildError(f"{name}: Cloud Build {build.id} ended {build.status}{detail}{where}", tail)
        for reference in request.references:
            if reference in build.digests:
                emit("pushed", f"{reference}@{build.digests[reference]}")
        digest = build.digests.get(request.references[0])
        if not digest:
            raise BuildError(
                f"{name}: Cloud Build {build.id} succeeded without a digest for {request.references[0]}", tail
            )
        return BuildOutcome(digest=digest, log_tail=tail)


def _give_up_at(build: RemoteBuild, timing: Timing) -> float:
    """The monotonic time after which a build that cannot be asked about is given up.

    Polls go on through transient failures for as long as the build itself may run.
    """
    at_least = time.monotonic() + timing.transient_limit
    deadline = build.deadline(timing.deadline_margin)
    if deadline is None:
        return at_least
    remaining = (deadline - datetime.datetime.now(datetime.UTC)).total_seconds()
    return max(at_least, time.monotonic() + remaining)


def _queued_for(build: RemoteBuild) -> float:
    """Seconds since Cloud Build created `build` (queueTtl counts from createTime too)."""
    if build.created is None:
        return 0.0
    return (datetime.datetime.now(datetime.UTC) - build.created).total_seconds()


def _clock(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}"
