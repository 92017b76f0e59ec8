"""The BuildKit builder, driven through the docker CLI; and the choice between it and the classic one.

The context is the same tar of exactly the hashed entries as for the classic builder, sent on the
CLI's stdin (`docker build -`), with host networking. The build has no tag: the image id comes
back through `--iidfile`, and the finished image is tagged and pushed afterwards through the
engine, so a stopped or failed build leaves no tag. Secrets go to the CLI as `--secret
id=ID,src=PATH|env=VAR`: the CLI reads them and BuildKit mounts them for one RUN only, so no
value is in a layer, the history, a label or this process's arguments, and any value a build
prints is masked before it reaches an event or a log tail. Progress is BuildKit's `rawjson` where
buildx offers it, else `plain`; both become the same events as the classic builder's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from imagecascade.core.backend import BuildError, BuildRequest
from imagecascade.core.build_log import BuildLog, Stream, shorten
from imagecascade.core.buildkit_syntax import FrontendSupport
from imagecascade.core.context_tar import write_context_tar
from imagecascade.core.secrets import Redactor
from imagecascade.core.settings import DEFAULT_PUSH_TIMEOUT, Settings
from imagecascade.engines.credentials import CredentialResolver
from imagecascade.engines.docker_cli import DockerCli, cli_path, probe
from imagecascade.engines.local_backend import LocalBackend
from imagecascade.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from imagecascade.engines.engine import Engine

# After SIGTERM the CLI has this long to cancel the build and exit (when it can, it does within
# 0.1 s), then it is killed: its connections close, and the engine cancels the build with them.
STOP_GRACE_SECONDS = 1
# `#7 [builder 3/10] RUN make`, `#7 0.512 output`, `#7 ERROR: ...`, `#7 DONE 0.4s`, `#7 CACHED`
_PLAIN = re.compile(r"^#(\d+) (.*)$")
_STEP_NAME = re.compile(r"^\[(?:([^\]\s]+) )?(\d+)/(\d+)\] (.*)$")
_TIMED = re.compile(r"^\d+\.\d+ (.*)$")
_ENGINE_DOWN = ("cannot connect to the docker daemon", "error during connect", "is the docker daemon running")


class BuildKitBackend(LocalBackend):
    """Builds with BuildKit through `cli`; implements imagecascade.core.backend.Backend.

    Tagging, pushing, `--force`'s pulls and the build log are the classic builder's (LocalBackend);
    only the build itself differs.
    """

    where = "with BuildKit on the local engine"
    builder = "buildkit"

    def __init__(
        self,
        cli: DockerCli,
        engine: Engine | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        credentials: CredentialResolver | None = None,
        push_timeout: float | None = DEFAULT_PUSH_TIMEOUT,
    ) -> None:
        """Pushes as LocalBackend's: with `credentials`, given up after `push_timeout` s without progress."""
        if not cli.can_buildkit:
            raise ConfigError(f"--builder buildkit: {cli.describe()}")
        super().__init__(engine, support=cli.frontend(), credentials=credentials, push_timeout=push_timeout)
        self.cli = cli
        self.description = f"BuildKit ({cli.describe()})"
        self._environ = dict(os.environ if environ is None else environ)

    def command(self, request: BuildRequest, dockerfile: str, iidfile: str) -> list[str]:
        """The CLI's arguments for one build; the context comes on stdin (the final `-`)."""
        spec = request.image.spec
        verb = ["buildx", "build", "--load"] if self.cli.driver == "buildx" else ["build"]
        progress = "rawjson" if self.cli.driver == "buildx" and self.cli.rawjson else "plain"
        command = [self.cli.path, *verb, "--progress", progress, "--network", "host"]
        command += ["--file", dockerfile, "--iidfile", iidfile, "--platform", spec.platform]
        if spec.target:
            command += ["--target", spec.target]
        if request.fresh:
            command += ["--no-cache"]
        for key, value in request.build_args.items():
            command += ["--build-arg", f"{key}={value}"]
        for key, value in request.labels.items():
            command += ["--label", f"{key}={value}"]
        for source in request.secrets.values():
            command += ["--secret", source.cli_value()]
        return [*command, "-"]

    def _build(self, request: BuildRequest, log: BuildLog, cancelled: threading.Event) -> str:
        """Run the CLI on the hashed tar, logging everything; the image id, or BuildError."""
        image = request.image
        spec = image.spec
        name = image.name
        if request.fresh:
            self._pull_external(request, log)
        redact = Redactor(source.read(self._environ) for source in request.secrets.values())
        with contextlib.ExitStack() as stack:
            context = stack.enter_context(tempfile.TemporaryFile(prefix="imagecascade-context-"))
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="imagecascade-build-"))
            dockerfile = write_context_tar(spec.context, spec.dockerfile, list(image.inputs.files), context)
            context.seek(0)
            iidfile = Path(folder) / "iid"
            command = self.command(request, dockerfile, str(iidfile))
            environ = {**self._environ, "DOCKER_BUILDKIT": "1"}
            reader = _ProgressReader(log, redact, rawjson="rawjson" in command)
            code = _run(command, environ, context, reader, cancelled)
            image_id = iidfile.read_text().strip() if iidfile.is_file() else ""
        if cancelled.is_set():
            if image_id:
                self._engine.remove_image(image_id)
            raise BuildError(f"{name}: build stopped", log.failure_tail())
        if code != 0:
            if reader.engine_down:
                raise BackendError(f"Docker Engine: {reader.engine_down}")
            detail = reader.error or f"the docker CLI exited with {code}"
            raise BuildError(f"{name}: {log.failure_reason(detail)}", log.failure_tail())
        if not image_id:
            raise BuildError(f"{name}: the docker CLI reported no image id (--iidfile is empty)")
        return image_id


def _run(
    command: list[str],
    environ: Mapping[str, str],
    context: IO[bytes],
    reader: _ProgressReader,
    cancelled: threading.Event,
) -> int:
    """Run the CLI with the tar on stdin, feeding its output to `reader`; stop it when cancelled.

    The CLI gets its own session, so a Ctrl-C reaches it only through us: on cancel it gets
    SIGTERM, and SIGKILL if it has not ended within STOP_GRACE_SECONDS. The signal alone is not
    enough with Docker CLI 20.10 and a context on stdin: on SIGINT or SIGTERM it asks the engine
    to cancel the build by its id (`POST /build/cancel`) and waits for the build to end, but
    Engine 20.10 registers the context upload under the same id (moby `builder-next/builder.go`,
    `Build`: the later of the two requests owns the cancel), so about half the time the cancel
    reaches only the finished upload and the build runs on. The build request itself is cut only
    when the CLI's connection closes, so the CLI is killed: measured, the RUN step's process is
    gone within 0.5 s of that.
    """
    try:
        process = subprocess.Popen(
            command,
            stdin=context,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(environ),
            start_new_session=True,
        )
    except OSError as error:
        raise BackendError(f"docker CLI {command[0]}: cannot start: {error}") from error
    assert process.stdout is not None
    # The log is written from this thread only: lines pass through a queue.
    lines: queue.Queue[bytes | None] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(process.stdout, lines), name="buildkit-output", daemon=True)
    pump.start()
    try:
        finished = False
        while not finished:
            try:
                raw = lines.get(timeout=0.1)
            except queue.Empty:
                raw = b""
            if raw is None:
                finished = True
            elif raw:
                reader.feed(raw)
            if cancelled.is_set() and process.poll() is None:
                _stop(process)
    finally:
        if process.poll() is None:
            _stop(process)
        pump.join(timeout=STOP_GRACE_SECONDS)
        process.stdout.close()
    process.wait()
    return int(process.returncode)


def _pump(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    try:
        for raw in stream:
            lines.put(raw)
    finally:
        lines.put(None)


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class _ProgressReader:
    """Turns BuildKit progress (plain text or rawjson) into the build log: steps and their output.

    Every line is masked with `redact` before it reaches the log, its file or an event.
    """

    def __init__(self, log: BuildLog, redact: Redactor, *, rawjson: bool) -> None:
        self._log = log
        self._redact = redact
        self._rawjson = rawjson
        self._names: dict[str, str] = {}  # vertex -> its name, once announced
        self._current = ""
        self.error = ""  # BuildKit's error for the failing step, once known
        self.engine_down = ""

    def feed(self, raw: bytes) -> None:
        text = self._redact(raw.decode("utf-8", "replace").rstrip("\r\n"))
        if self._rawjson and text.startswith("{"):
            self._json(text)
        else:
            self._plain(text)

    def _announce(self, key: str, name: str) -> None:
        if key in self._names:
            return
        self._names[key] = name
        match = _STEP_NAME.match(name)
        if match:
            stage, instruction = match.group(1), match.group(4)
            named = f"[{stage}] " if stage and not re.fullmatch(r"stage-\d+", stage) else ""
            self._log.step(int(match.group(2)), int(match.group(3)), named + instruction)
        else:
            self._log.note(name)  # [internal] load ..., exporting to image
        self._current = key

    def _output(self, key: str, text: str, stream: Stream = "stdout") -> None:
        if key != self._current and key in self._names:
            # Output of another vertex (stages run in parallel): say whose it is.
            self._log.note(f"[{self._names[key]}]", live=False)
            self._current = key
        self._log.output(text + "\n", stream)

    def _plain(self, text: str) -> None:
        match = _PLAIN.match(text)
        if match is None:
            lowered = text.lower()
            if any(marker in lowered for marker in _ENGINE_DOWN):
                self.engine_down = text.strip()
            if text.startswith(("error:", "ERROR:", "failed to solve")) and not self.error:
                prefixed = text.startswith(("error", "ERROR"))
                self.error = _short_error(text.split(":", 1)[1] if prefixed else text)
            if text.strip() and not set(text.strip()) <= {"-"}:
                self._log.note(text, live=False)
            return
        key, body = match.group(1), match.group(2)
        if key not in self._names:
            self._announce(key, body)
            return
        if body.startswith(("ERROR:", "ERROR ")):
            self.error = _short_error(body.split(" ", 1)[1] if " " in body else body)
            self._log.note(body, live=False)
            return
        if body.startswith(("DONE", "CACHED", "sha256:")) or body == "...":
            return
        timed = _TIMED.match(body)
        if timed:
            self._output(key, timed.group(1))
        else:
            self._log.note(body, live=False)  # the builder's own progress (transferring, exporting)

    def _json(self, text: str) -> None:
        try:
            status = {key.lower(): value for key, value in json.loads(text).items()}
        except (json.JSONDecodeError, AttributeError):
            self._log.note(text, live=False)
            return
        for raw in status.get("vertexes") or []:
            vertex = {key.lower(): value for key, value in raw.items()}
            key, name = str(vertex.get("digest", "")), self._redact(str(vertex.get("name", "")))
            if name and vertex.get("started"):
                self._announce(key, name)
            if vertex.get("error"):
                self.error = _short_error(self._redact(str(vertex["error"])))
                self._log.note(f"ERROR: {self.error}", live=False)
        for raw in status.get("logs") or []:
            entry = {key.lower(): value for key, value in raw.items()}
            try:
                data = base64.b64decode(entry.get("data") or "").decode("utf-8", "replace")
            except ValueError:
                continue
            stream: Stream = "stderr" if entry.get("stream") == 2 else "stdout"
            for line in data.splitlines():
                self._output(str(entry.get("vertex", "")), self._redact(line), stream)


def _short_error(error: str) -> str:
    """BuildKit's `executor failed running [/bin/sh -c <script>]: exit code: 7` -> `exited with code 7`."""
    error = error.strip()
    match = re.search(
        r"(?:executor failed running|process) .*?(?:exit code|did not complete successfully)[: ]+(\d+)",
        error,
        re.DOTALL,
    )
    if match:
        return f"exited with code {match.group(1)}"
    return shorten(error)


def choose_local_builder(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    credentials: CredentialResolver | None = None,
) -> Any:
    """The local backend for `settings.builder`: BuildKit, the classic builder, or (auto) whichever
    the docker CLI supports. `buildkit` without a CLI that can drive it is a ConfigError. Pushes use
    `credentials` and give up after `settings.push_timeout` seconds without progress."""
    environ = dict(os.environ if environ is None else environ)
    builder = settings.builder
    timeout = settings.push_timeout
    if builder == "classic":
        return LocalBackend(credentials=credentials, push_timeout=timeout)
    path = cli_path(settings.docker_cli, environ)
    cli = probe(path, environ) if path is not None else None
    if cli is not None and cli.can_buildkit:
        return BuildKitBackend(cli, environ=environ, credentials=credentials, push_timeout=timeout)
    what = cli.describe() if cli is not None else "no docker CLI on PATH"
    remedy = (
        "set IMAGECASCADE_DOCKER_CLI or [build] docker_cli to a docker CLI that drives BuildKit "
        "(with the buildx plugin, or a CLI older than 23 such as Debian's docker.io)"
    )
    if builder == "buildkit":
        raise ConfigError(f"--builder buildkit: {what}; {remedy}")
    support = FrontendSupport(
        builder="classic",
        frontend=None,
        describe=f"only the classic builder is available ({what})",
        remedy=remedy,
    )
    return LocalBackend(support=support, credentials=credentials, push_timeout=timeout)
