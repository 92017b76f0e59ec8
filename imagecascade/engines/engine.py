"""The Docker Engine, through the docker SDK. The only module that imports `docker`.

Every build and container uses host or no networking (these machines must never touch
private-range addresses), and engine failures raise BackendError, never "missing".
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import docker
import docker.credentials
import docker.errors
import docker.types
import docker.utils
import requests.exceptions
import urllib3.exceptions

from imagecascade.core.backend import BuildError
from imagecascade.core.build_log import shorten
from imagecascade.core.platforms import platform_in
from imagecascade.engines.containers import (
    ContainerSummary,
    ImageInfo,
    LocalImage,
    PathError,
    PathStat,
    PushStalled,
    PushStopped,
    build_refusal,
    clean_engine_path,
    engine_message,
    local_images,
    path_stat_from_archive,
    read_head,
    read_tail,
    root_cause,
    split_reference,
    without_url,
)
from imagecascade.engines.gpu import GpuAccess
from imagecascade.errors import BackendError

if TYPE_CHECKING:
    from imagecascade.engines.credentials import CredentialResolver


# The json-file log of a smoke container is cut at this size on the host's disk.
LOG_LIMIT_BYTES = 16 * 1024 * 1024


class Engine:
    """A small set of verbs over one Docker Engine connection."""

    def __init__(self, client: docker.DockerClient, connection: dict[str, Any] | None = None) -> None:
        self._client = client
        # How to open another connection to the same engine (one per build stream).
        self._connection = connection

    @classmethod
    def from_environment(cls) -> Engine:
        """Connect to what DOCKER_HOST (or the default socket) points at."""
        connection: dict[str, Any] = {}
        try:
            connection = docker.utils.kwargs_from_env()
            client = docker.DockerClient(timeout=600, **connection)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            where = connection.get("base_url") or "unix:///var/run/docker.sock"
            raise BackendError(
                f"Docker Engine: cannot connect to {where} ({root_cause(error)}); "
                "start dockerd or set DOCKER_HOST"
            ) from None
        return cls(client, connection)

    @property
    def client(self) -> docker.DockerClient:
        return self._client

    def inspect_image(self, reference: str) -> ImageInfo | None:
        """The local image named `reference`, or None when the engine has no such image."""
        try:
            image = self._client.images.get(reference)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.DockerException as error:
            raise BackendError(f"Docker Engine: cannot inspect {reference}: {error}") from error
        attrs = image.attrs
        config = attrs.get("Config") or {}
        return ImageInfo(
            id=image.id,
            labels=dict(config.get("Labels") or {}),
            config=config,
            size=int(attrs.get("Size") or 0),
            platform=platform_in(attrs),
            tags=tuple(tag for tag in attrs.get("RepoTags") or () if tag != "<none>:<none>"),
        )

    def list_images(self, repository: str, *, label: str | None = None) -> list[LocalImage]:
        """The images the engine lists under `repository` (a tag there, or only a digest from a push
        or pull), optionally only those carrying `label`, newest first. One listing call: no image
        is inspected, so images that other clients remove meanwhile cannot fail it."""
        filters = {"label": label} if label else None
        try:
            found = self._client.api.images(name=repository, filters=filters)
        except docker.errors.DockerException as error:
            raise BackendError(f"Docker Engine: cannot list images of {repository}: {error}") from error
        return local_images(found)

    def list_untagged(self, label: str) -> list[LocalImage]:
        """The untagged (dangling) images carrying `label`, newest first: what failed, stopped
        or repeated builds leave. One listing call, as list_images."""
        try:
            found = self._client.api.images(filters={"dangling": True, "label": label})
        except docker.errors.DockerException as error:
            raise BackendError(f"Docker Engine: cannot list untagged images: {error}") from error
        return local_images(found)

    def image_exists(self, reference: str) -> bool:
        return self.inspect_image(reference) is not None

    def create_container(
        self,
        reference: str,
        *,
        entrypoint: Sequence[str],
        command: Sequence[str],
        labels: Mapping[str, str],
        gpus: GpuAccess | None = None,
    ) -> str:
        """Create (not start) a network-less, unprivileged container of `reference`; its id.

        All capabilities dropped, `no-new-privileges`, entrypoint overridden, the json-file log
        capped at LOG_LIMIT_BYTES on the host; with `gpus`, every GPU the way `gpus` says.
        """
        log = docker.types.LogConfig(
            type="json-file", config={"max-size": str(LOG_LIMIT_BYTES), "max-file": "1"}
        )
        with _engine_errors(f"cannot create a container of {reference}"):
            return str(
                self._client.api.create_container(
                    reference,
                    entrypoint=list(entrypoint),
                    command=list(command),
                    labels=dict(labels),
                    host_config=self._client.api.create_host_config(
                        network_mode="none",
                        cap_drop=["ALL"],
                        security_opt=["no-new-privileges"],
                        device_requests=None if gpus is None else [gpus.device_request()],
                        log_config=log,
                    ),
                )["Id"]
            )

    def start_container(self, container_id: str) -> str | None:
        """Start it; the engine's reason when it cannot (usually the image's fault: no such program)."""
        try:
            self._client.api.start(container_id)
        except docker.errors.APIError as error:
            return " ".join(str(error.explanation or error).split())
        except docker.errors.DockerException as error:
            raise BackendError(f"Docker Engine: cannot start container {container_id}: {error}") from error
        return None

    def wait_container(self, container_id: str, timeout_seconds: float) -> int | None:
        """Its exit status, or None when it still runs after `timeout_seconds`."""
        with _engine_errors(f"cannot wait for container {container_id}"):
            try:
                return int(self._client.api.wait(container_id, timeout=timeout_seconds).get("StatusCode", -1))
            except requests.exceptions.ReadTimeout:
                return None

    def container_output(self, container_id: str, *, stdout_limit: int, stderr_limit: int) -> tuple[str, str]:
        """(stdout, stderr) of a stopped container, read as streams: no more than the first
        `stdout_limit` bytes of stdout and the last `stderr_limit` bytes of stderr are held."""
        logs = self._client.api.logs
        with _engine_errors(f"cannot read the output of {container_id}"):
            head = read_head(logs(container_id, stdout=True, stderr=False, stream=True), stdout_limit)
            tail = read_tail(logs(container_id, stdout=False, stderr=True, stream=True), stderr_limit)
        return head.decode("utf-8", "replace"), tail.decode("utf-8", "replace")

    def remove_container(self, container_id: str) -> None:
        """Kill and remove it with its anonymous volumes; a container already gone is fine."""
        try:
            self._client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as error:
            if "already in progress" in str(getattr(error, "explanation", "")):
                return
            raise BackendError(f"Docker Engine: cannot remove container {container_id}: {error}") from error

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerSummary]:
        """Every container (running or not) that carries all of `labels`."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        with _engine_errors("cannot list containers"):
            found = self._client.api.containers(all=True, filters=filters)
        return [
            ContainerSummary(str(item["Id"]), dict(item.get("Labels") or {}), str(item.get("State")))
            for item in found
        ]

    def stat_path(self, container_id: str, path: str) -> PathStat | None:
        """What is at `path` in the container's filesystem, read by the engine, not by a process in it.

        Folders on the way are resolved in the container's root, as a process in it would see
        them; a symlink at `path` itself is reported as such, with its fully resolved target.
        None when nothing is there. Raises PathError when the engine cannot say (a symlink loop,
        a file used as a folder, no such container) and BackendError when it cannot be reached.
        """
        with self._archive(container_id, path, "HEAD") as response:
            header = response.headers.get("X-Docker-Container-Path-Stat")
            if response.status_code == 200 and header:
                return path_stat_from_archive(header)
        # A HEAD answer has no body; the same GET says whether the path or the container is missing.
        with self._archive(container_id, path, "GET") as response:
            message = (
                clean_engine_path(engine_message(response)) or f"the engine answered {response.status_code}"
            )
        if response.status_code == 404 and "could not find the file" in message.lower():
            return None
        raise PathError(message)

    def path_owner(self, container_id: str, path: str) -> tuple[int, int]:
        """(uid, gid) owning `path`, from the header of the engine's tar of it (the body is not read)."""
        with self._archive(container_id, path, "GET") as response:
            if response.status_code != 200:
                raise PathError(clean_engine_path(engine_message(response)))
            response.raw.decode_content = True  # the engine may gzip the tar
            try:
                with tarfile.open(fileobj=response.raw, mode="r|") as archive:
                    member = archive.next()
            except (tarfile.TarError, OSError) as error:
                raise PathError(f"cannot read the engine's archive of {path}: {error}") from error
            if member is None:
                raise PathError(f"the engine sent an empty archive for {path}")
            return member.uid, member.gid

    @contextlib.contextmanager
    def _archive(self, container_id: str, path: str, method: str) -> Iterator[Any]:
        """The archive API's streamed response for `path` (HEAD: its stat only), closed afterwards."""
        api = self._client.api
        with _engine_errors(f"cannot look at {path}"):
            response = api.request(
                method, api._url("/containers/{0}/archive", container_id), params={"path": path}, stream=True
            )
        try:
            yield response
        finally:
            response.close()

    def info(self) -> dict[str, Any]:
        """The engine's `docker info` document (`GET /info`)."""
        with _engine_errors("cannot read engine info"):
            return dict(self._client.info())

    def build_stream(
        self,
        context: IO[bytes],
        *,
        dockerfile: str,
        build_args: dict[str, str],
        labels: dict[str, str],
        platform: str | None,
        target: str | None,
        cancelled: threading.Event,
        no_cache: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Send a tar context to the classic builder; yield its decoded stream chunks.

        Builds with host networking and no tag: the caller tags only a finished image. Chunks
        carrying `error` are yielded, not raised. When `cancelled` is set, the connection is cut,
        which makes the engine stop the build and remove its containers; the stream then ends.
        `no_cache` builds every step afresh. Raises BuildError when the engine refuses this build
        request (a Dockerfile it cannot parse: 400; build args too large for the URL: 431), and
        BackendError when the engine cannot be reached or fails itself.
        """
        api = _StreamingClient(
            timeout=None, version=self._client.api.api_version, **self._connection_kwargs()
        )
        finished = threading.Event()
        try:
            try:
                chunks = api.build(
                    fileobj=context,
                    custom_context=True,
                    dockerfile=dockerfile,
                    buildargs=build_args,
                    labels=labels,
                    platform=platform,
                    target=target,
                    network_mode="host",
                    rm=True,
                    forcerm=True,
                    pull=False,
                    nocache=no_cache,
                    decode=True,
                )
            except docker.errors.APIError as error:
                raise _build_api_error(error) from None
            except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
                # Their text can hold the request URL, and with it every build arg: never print it.
                raise BackendError(
                    f"Docker Engine: cannot start a build: {shorten(without_url(str(error)))}"
                ) from None
            except docker.credentials.StoreError as error:  # the SDK lists every helper's credentials
                raise BackendError(
                    f"Docker Engine: cannot start a build: credential helper: {shorten(str(error))}"
                ) from None
            cutter = threading.Thread(
                target=_cut_when, args=(api, cancelled.is_set, finished), name="build-cancel", daemon=True
            )
            cutter.start()
            try:
                yield from chunks
            except docker.errors.APIError as error:  # the SDK checks the status on the first read
                raise _build_api_error(error) from None
            except _STREAM_ERRORS as error:
                if cancelled.is_set():
                    return
                raise BackendError(
                    f"Docker Engine: the build stream broke off: {shorten(without_url(str(error)))}"
                ) from None
        finally:
            finished.set()
            api.close()

    def tag_image(self, image_id: str, reference: str) -> None:
        repository, tag = split_reference(reference)
        try:
            self._client.api.tag(image_id, repository, tag)
        except docker.errors.DockerException as error:
            raise BackendError(f"Docker Engine: cannot tag {image_id} as {reference}: {error}") from error

    def push_image(
        self,
        reference: str,
        *,
        auth: Mapping[str, str] | None = None,
        progress_timeout: float | None = None,
        cancelled: threading.Event | None = None,
    ) -> tuple[str | None, str | None]:
        """Push `reference`; (digest, None) on success, (None, error text) when the stream reports one.

        `auth` is the registry's X-Registry-Auth document (None: the SDK reads docker's config).
        The push is given up, by cutting the connection (which makes the engine stop it), when
        `cancelled` is set (PushStopped) or when the engine reports no progress for
        `progress_timeout` seconds (PushStalled). Failures to talk to the engine raise BackendError.
        """
        repository, tag = split_reference(reference)
        # Its own connection, so that cutting it stops this push and nothing else. The socket
        # timeout only backs up the watchdog (e.g. while waiting for the response headers).
        socket_timeout = None if progress_timeout is None else progress_timeout + 30
        api = _StreamingClient(
            timeout=socket_timeout, version=self._client.api.api_version, **self._connection_kwargs()
        )
        finished = threading.Event()
        last_progress = [time.monotonic()]
        why: list[str] = []

        def should_cut() -> bool:
            if cancelled is not None and cancelled.is_set():
                why.append("stopped")
            elif progress_timeout is not None and time.monotonic() - last_progress[0] > progress_timeout:
                why.append("stalled")
            return bool(why)

        cutter = threading.Thread(
            target=_cut_when, args=(api, should_cut, finished), name="push-watch", daemon=True
        )
        digest: str | None = None
        try:
            auth_config = None if auth is None else dict(auth)
            chunks = api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config)
            cutter.start()
            for chunk in chunks:
                last_progress[0] = time.monotonic()
                if chunk.get("error"):
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    return None, str(detail)
                aux = chunk.get("aux") or {}
                if aux.get("Digest"):
                    digest = str(aux["Digest"])
        except _STREAM_ERRORS as error:
            if why == ["stopped"] or (cancelled is not None and cancelled.is_set()):
                raise PushStopped(reference) from error
            if why == ["stalled"] or _is_timeout(error):
                raise PushStalled(reference, progress_timeout or 0.0) from error
            raise BackendError(f"Docker Engine: cannot push {reference}: {error}") from error
        finally:
            finished.set()
            api.close()
        if why:  # cut just as the stream ended
            if why == ["stopped"]:
                raise PushStopped(reference)
            raise PushStalled(reference, progress_timeout or 0.0)
        return digest, None

    def pull_image(
        self, reference: str, credentials: CredentialResolver | None = None, *, platform: str | None = None
    ) -> ImageInfo | None:
        """Pull `reference` from its registry (of `platform`, e.g. `linux/arm64`, from an image index;
        None: the engine's own); None when the registry has no such tag.

        Credentials come from `credentials` (default: the docker CLI's config, as for every other
        registry request). Anything else than "no such tag" (registry unreachable, auth, 5xx)
        raises BackendError: never "missing".
        """
        from imagecascade.engines.credentials import CredentialResolver
        from imagecascade.engines.registry import RepositoryRef

        name, _, digest = reference.partition("@")
        repository, tag = split_reference(name)
        if digest:  # the engine pulls by digest when the tag field holds one
            tag, reference = digest, f"{repository}@{digest}"
        auth = (credentials or CredentialResolver()).engine_auth(RepositoryRef.parse(repository).host)
        try:
            for chunk in self._client.api.pull(
                repository, tag=tag, stream=True, decode=True, auth_config=auth, platform=platform
            ):
                if chunk.get("error"):
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    raise BackendError(f"Docker Engine: cannot pull {reference}: {detail}")
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
            raise BackendError(f"Docker Engine: cannot pull {reference}: {error}") from error
        return self.inspect_image(reference)

    def remove_image(self, reference: str, *, force: bool = False) -> None:
        """Remove (or untag) an image; absent images and images still in use are left alone."""
        try:
            self._client.api.remove_image(reference, force=force, noprune=False)
        except (docker.errors.NotFound, docker.errors.ImageNotFound):
            pass
        except docker.errors.APIError as error:
            if error.status_code == 409:  # still used by a container or another tag
                return
            raise BackendError(f"Docker Engine: cannot remove {reference}: {error}") from error
        except docker.errors.DockerException as error:
            raise BackendError(f"Docker Engine: cannot remove {reference}: {error}") from error

    def untag_image(self, reference: str) -> str:
        """Remove the tag `reference` (the image goes with its last tag); "" when done, else why not
        (still used by a container). Other engine errors raise BackendError."""
        try:
            self._client.api.remove_image(reference, force=False, noprune=False)
        except (docker.errors.NotFound, docker.errors.ImageNotFound):
            return ""
        except docker.errors.APIError as error:
            if error.status_code == 409:
                return _engine_words(error)
            raise BackendError(f"Docker Engine: cannot remove {reference}: {_engine_words(error)}") from None
        except docker.errors.DockerException as error:
            raise BackendError(f"Docker Engine: cannot remove {reference}: {error}") from error
        return ""

    def _connection_kwargs(self) -> dict[str, Any]:
        if self._connection is not None:
            return dict(self._connection)
        return dict(docker.utils.kwargs_from_env())

    def close(self) -> None:
        self._client.close()


# What a broken or cut build stream raises: the stream is read from the raw urllib3 response.
_STREAM_ERRORS = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)


def _build_api_error(error: docker.errors.APIError) -> BuildError | BackendError:
    """BuildError when the engine refused the build request for the image's own fault, else
    BackendError; either way one short line, without the request URL."""
    return build_refusal(error.status_code, _engine_words(error))


def _engine_words(error: docker.errors.APIError) -> str:
    """What the engine said, without the request URL the SDK adds (it can hold megabytes of args)."""
    explanation = error.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    text = str(explanation or "").strip() or f"HTTP {error.status_code}"
    return shorten(without_url(text))


@contextlib.contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    """Turn the SDK's and the connection's failures into BackendError("Docker Engine: <what>: ...")."""
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise BackendError(f"Docker Engine: {what}: {error}") from error


class _StreamingClient(docker.APIClient):  # type: ignore[misc]
    """An API connection that remembers the response it streams, so another thread can cut it."""

    streamed_response: Any = None

    def _stream_helper(self, response: Any, decode: bool = False) -> Any:
        self.streamed_response = response
        return super()._stream_helper(response, decode=decode)


def _cut_when(api: _StreamingClient, should_cut: Callable[[], bool], finished: threading.Event) -> None:
    """Shut down `api`'s streamed response once `should_cut()` says so, unless `finished` first."""
    while not finished.wait(0.1):
        if should_cut():
            break
    else:
        return
    response = api.streamed_response
    if response is None:
        return
    try:
        raw = api._get_raw_response_socket(response)
        # Shutting the socket down wakes the reading thread; closing it would not.
        getattr(raw, "_sock", raw).shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError, docker.errors.DockerException):
        pass


def _is_timeout(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, TimeoutError | urllib3.exceptions.TimeoutError | requests.exceptions.Timeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
