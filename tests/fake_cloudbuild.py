"""A fake Cloud Build REST server for tests: the v1 HTTP API, on 127.0.0.1, with scripted builds.

It speaks what google-cloud-build's REST transport sends and expects: create (global and
regional) answering a long-running Operation, the operations endpoint, get, cancel and list with
a `tags="..." AND ...` filter. Written independently of the package under test, it refuses what
the real API refuses (Cloud Build's substitution grammar and checks, as in
GoogleCloudPlatform/cloud-build-local's validate.go; a service account without a logs bucket or
logging option; timeouts above 24 h; disks above 4000 GB; machine options beside a private pool
or a pool in another region; malformed tags; a regional list without `projectId`; a source object
or generation that does not exist). It reads the uploaded source from Cloud Storage, writes each
build's log to its logs bucket as `log-<id>.txt` (none with CLOUD_LOGGING_ONLY), honours
`queueTtl` from `createTime`, and plays a script of phases per build, one phase step per `get`.
Any call kind (create, get, list, cancel, operation) can be made to fail with any HTTP status or
a connection reset, before or after doing its work (`faults`).

An `executor` may run a build for real when it succeeds (see tests/test_placement.py).
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.faults import Faults, drop_connection, error_body, send_json

TERMINAL = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}
BUILTINS = {
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "BUILD_ID",
    "LOCATION",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
}
TRIGGER_BUILTINS = {"REPO_NAME", "BRANCH_NAME", "TAG_NAME", "REVISION_ID", "COMMIT_SHA", "SHORT_SHA"}
MACHINE_TYPES = {
    "UNSPECIFIED",
    "N1_HIGHCPU_8",
    "N1_HIGHCPU_32",
    "E2_HIGHCPU_8",
    "E2_HIGHCPU_32",
    "E2_MEDIUM",
    "E2_STANDARD_2",
}
# BuildOptions enums by number (google/devtools/cloudbuild/v1/cloudbuild.proto): the REST client
# sends `$alt=json;enum-encoding=int`.
OPTION_ENUMS = {
    "machineType": dict(enumerate(["UNSPECIFIED", "N1_HIGHCPU_8", "N1_HIGHCPU_32"]))
    | {5: "E2_HIGHCPU_8", 6: "E2_HIGHCPU_32", 7: "E2_MEDIUM", 11: "E2_STANDARD_2"},
    "logging": dict(enumerate(["LOGGING_UNSPECIFIED", "LEGACY", "GCS_ONLY", "STACKDRIVER_ONLY", "NONE"]))
    | {5: "CLOUD_LOGGING_ONLY"},
    "defaultLogsBucketBehavior": dict(
        enumerate(["DEFAULT_LOGS_BUCKET_BEHAVIOR_UNSPECIFIED", "REGIONAL_USER_OWNED_BUCKET", "LEGACY_BUCKET"])
    ),
    "substitutionOption": {0: "MUST_MATCH", 1: "ALLOW_LOOSE"},
}
_KEY = re.compile(r"\$\$|\$\{([A-Z_][A-Z0-9_]*)\}|\$([A-Z_][A-Z0-9_]*)")  # cloud-build-local subst.go
_USER_KEY = re.compile(r"^_[A-Z0-9_]+$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DURATION = re.compile(r"^([0-9]+)(?:\.[0-9]+)?s$")
_ACCOUNT = re.compile(r"^projects/[^/]+/serviceAccounts/[^/]+$")
_POOL = re.compile(r"^projects/[^/]+/locations/([^/]+)/workerPools/[^/]+$")
SA_WITHOUT_LOGS = (
    "if 'build.service_account' is specified, the build must either (a) specify 'build.logs_bucket', "
    "(b) use the REGIONAL_USER_OWNED_BUCKET build.options.default_logs_bucket_behavior option, or "
    "(c) use either CLOUD_LOGGING_ONLY / NONE logging options"
)


class Refused(Exception):
    """What the real API answers 400 INVALID_ARGUMENT to."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """One state of a scripted build: `polls` answers to get report it (0: forever)."""

    status: str
    polls: int = 1
    log: str = ""  # appended to the build's log when the phase begins
    detail: str = ""  # statusDetail
    failure: str = ""  # failureInfo.detail
    warnings: tuple[str, ...] = ()


@dataclasses.dataclass
class FakeBuild:
    id: str
    project: str
    location: str
    body: dict[str, Any]  # what the client submitted, as JSON
    resolved: dict[str, Any]  # steps, images and tags with substitutions applied
    phases: list[Phase]
    created: datetime.datetime
    phase: int = 0
    polls: int = 0
    log: str = ""
    digests: dict[str, str] = dataclasses.field(default_factory=dict)
    source_files: dict[str, bytes] = dataclasses.field(default_factory=dict)  # what Cloud Build fetched

    @property
    def status(self) -> str:
        return self.phases[self.phase].status

    @property
    def logging(self) -> str:
        return str((self.body.get("options") or {}).get("logging") or "")


def _strings(value: Any, into: list[str]) -> None:
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, into)


def template_strings(body: dict[str, Any]) -> list[str]:
    """The strings Cloud Build substitutes in (validate.go's CheckSubstitutionTemplate)."""
    found: list[str] = []
    for step in body.get("steps") or []:
        for key in ("name", "args", "env", "dir", "entrypoint"):
            _strings(step.get(key), found)
    _strings(body.get("images"), found)
    _strings(body.get("tags"), found)
    objects = (body.get("artifacts") or {}).get("objects") or {}
    _strings(objects.get("location"), found)
    _strings(objects.get("paths"), found)
    return found


def substitute(value: Any, substitutions: dict[str, str], builtins: dict[str, str]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            key = match.group(1) or match.group(2)
            return substitutions.get(key, builtins.get(key, ""))

        return _KEY.sub(replace, value)
    if isinstance(value, list):
        return [substitute(item, substitutions, builtins) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, substitutions, builtins) for key, item in value.items()}
    return value


def check_build(body: dict[str, Any], location: str) -> None:
    """Raise Refused the way the real create call refuses a build."""
    if not body.get("steps"):
        raise Refused("invalid .steps field: no build steps are specified")
    for index, step in enumerate(body["steps"]):
        if not step.get("name"):
            raise Refused(f"invalid .steps field: build step {index} must specify name")
    substitutions = body.get("substitutions") or {}
    loose = (body.get("options") or {}).get("substitutionOption") == "ALLOW_LOOSE"
    if len(substitutions) > 100:
        raise Refused("invalid .substitutions field: number of substitutions exceeded (max: 100)")
    for key, value in substitutions.items():
        if not _USER_KEY.match(key) and key not in TRIGGER_BUILTINS:
            raise Refused(f'invalid .substitutions field: substitution key "{key}" does not respect format')
        if len(value) > 4000:
            raise Refused(f'invalid .substitutions field: substitution value "{key}" too long (max: 4000)')
    used: set[str] = set()
    for text in template_strings(body):
        for match in _KEY.finditer(text):
            key = match.group(1) or match.group(2)
            if not key:
                continue
            if (
                key not in substitutions
                and not _USER_KEY.match(key)
                and key not in BUILTINS | TRIGGER_BUILTINS
            ):
                raise Refused(f'key in the template "{key}" is not a valid built-in substitution')
            if key not in substitutions and _USER_KEY.match(key) and not loose:
                raise Refused(f'key in the template "{key}" is not matched in the substitution data')
            used.add(key)
    unused = sorted(set(substitutions) - used)
    if unused and not loose:
        raise Refused(f'key "{unused[0]}" in the substitution data is not matched in the template')
    for field in ("timeout", "queueTtl"):
        if field in body:
            match = _DURATION.match(str(body[field]))
            if match is None:
                raise Refused(f"invalid {field} value")
            if field == "timeout" and int(match.group(1)) > 24 * 3600:
                raise Refused("timeout exceeds the timeout limit of 24h0m0s")
    options = body.get("options") or {}
    if int(options.get("diskSizeGb") or 0) > 4000:
        raise Refused("invalid value for 'build.options.disk_size_gb': must be <= 4000")
    if options.get("machineType") and options["machineType"] not in MACHINE_TYPES:
        raise Refused(f"invalid machine type {options['machineType']}")
    pool = (options.get("pool") or {}).get("name") or options.get("workerPool")
    if pool:
        match = _POOL.match(pool)
        if match is None:
            raise Refused(f"invalid worker pool {pool}")
        if match.group(1) != location:
            raise Refused(f"worker pool {pool} is in {match.group(1)}, not in {location}")
        if options.get("machineType") or options.get("diskSizeGb"):
            raise Refused("machineType and diskSizeGb cannot be set for builds in a private pool")
    account = body.get("serviceAccount")
    if account:
        if not _ACCOUNT.match(account):
            raise Refused("invalid value for 'build.service_account': must be projects/*/serviceAccounts/*")
        logging = options.get("logging")
        behavior = options.get("defaultLogsBucketBehavior")
        if (
            not body.get("logsBucket")
            and logging not in ("CLOUD_LOGGING_ONLY", "STACKDRIVER_ONLY", "NONE")
            and (behavior != "REGIONAL_USER_OWNED_BUCKET")
        ):
            raise Refused(SA_WITHOUT_LOGS)
    tags = body.get("tags") or []
    if len(tags) > 64:
        raise Refused("invalid .tags field: too many tags (max: 64)")


class FakeCloudBuild:
    def __init__(
        self, storage_url: str, logs_bucket: str = "fake-cloudbuild-logs", project_number: str = "123456789"
    ) -> None:
        """`storage_url` is the Cloud Storage the fake itself reads and writes (no faults there)."""
        self.storage_url = storage_url.rstrip("/")
        self.logs_bucket = logs_bucket
        self.project_number = project_number
        self.script: list[Phase] = [Phase("QUEUED"), Phase("WORKING"), Phase("SUCCESS")]
        self.builds: dict[str, FakeBuild] = {}
        self.created: list[FakeBuild] = []
        self.cancelled: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.refusals: list[str] = []
        self.faults = Faults()
        self.executor: Callable[[FakeBuild], dict[str, str]] | None = None
        self._lock = threading.Lock()
        self._counter = 0
        self._storage(
            "POST", "/storage/v1/b?project=fake-google-owned", json.dumps({"name": logs_bucket}).encode()
        )
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FakeCloudBuild:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_build(
        self,
        *,
        project: str,
        tags: list[str],
        images: list[str],
        phases: list[Phase],
        location: str = "global",
    ) -> FakeBuild:
        """A build somebody else submitted earlier."""
        body = {"steps": [{"name": "gcr.io/cloud-builders/docker", "args": ["build", "."]}]}
        body |= {"images": images, "tags": tags}
        with self._lock:
            return self._register(project, location, body, dict(body), phases)

    def calls(self, method: str, pattern: str) -> list[str]:
        """Paths of the requests with `method` whose path matches the regex `pattern`."""
        return [path for seen, path in self.requests if seen == method and re.search(pattern, path)]

    # Internals, called from the handler threads under the lock.

    def _register(
        self, project: str, location: str, body: dict[str, Any], resolved: dict[str, Any], phases: list[Phase]
    ) -> FakeBuild:
        self._counter += 1
        build_id = f"00000000-fake-build-{self._counter:012d}"
        now = datetime.datetime.now(datetime.UTC)
        build = FakeBuild(build_id, project, location, body, resolved, list(phases), now)
        self.builds[build_id] = build
        self._enter_phase(build)
        return build

    def _enter_phase(self, build: FakeBuild) -> None:
        phase = build.phases[build.phase]
        if phase.log:
            build.log += phase.log
            self._write_log(build)
        if phase.status == "SUCCESS":
            if self.executor is not None:
                try:
                    build.digests = self.executor(build)
                except Exception as error:  # the build failed on the worker
                    detail = getattr(error, "stderr", b"") or str(error)
                    text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
                    build.phases[build.phase] = Phase("FAILURE", failure=text.strip().splitlines()[-1])
                    build.log += text
                    self._write_log(build)
            else:
                for reference in build.resolved.get("images", []):
                    build.digests[reference] = "sha256:" + hashlib.sha256(reference.encode()).hexdigest()

    def _logs_location(self, build: FakeBuild) -> str:
        if build.logging in ("CLOUD_LOGGING_ONLY", "STACKDRIVER_ONLY", "NONE"):
            return ""
        return str(build.body.get("logsBucket") or f"gs://{self.logs_bucket}")

    def _write_log(self, build: FakeBuild) -> None:
        location = self._logs_location(build).removeprefix("gs://")
        if not location:
            return
        bucket, _, prefix = location.partition("/")
        name = urllib.parse.quote(
            f"{prefix}/log-{build.id}.txt" if prefix else f"log-{build.id}.txt", safe=""
        )
        self._storage(
            "POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}", build.log.encode()
        )

    def _storage(self, method: str, path: str, data: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.storage_url + path, data=data, method=method)
        request.add_header(
            "Content-Type", "application/json" if path.startswith("/storage") else "text/plain"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())

    def _fetch_source(self, source: dict[str, Any]) -> dict[str, bytes]:
        """The files of the uploaded tarball, as Cloud Build's FETCHSOURCE step would get them."""
        storage = source.get("storageSource") or {}
        bucket, name = storage.get("bucket", ""), storage.get("object", "")
        quoted = urllib.parse.quote(name, safe="")
        try:
            meta = json.loads(self._storage("GET", f"/storage/v1/b/{bucket}/o/{quoted}"))
            data = self._storage("GET", f"/storage/v1/b/{bucket}/o/{quoted}?alt=media")
        except OSError as error:
            raise Refused(f"source gs://{bucket}/{name} cannot be fetched: {error}") from error
        if storage.get("generation") and str(storage["generation"]) != str(meta["generation"]):
            raise Refused(f"source gs://{bucket}/{name}#{storage['generation']} does not exist")
        files = {}
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as archive:
            for member in archive.getmembers():
                if member.isfile():
                    extracted = archive.extractfile(member)
                    files[member.name] = extracted.read() if extracted else b""
        return files

    def _advance(self, build: FakeBuild) -> None:
        """One `get` answered: after `polls` of them the build moves to its next phase."""
        phase = build.phases[build.phase]
        if phase.status in TERMINAL:
            return
        ttl = build.body.get("queueTtl")
        if ttl and phase.status in ("QUEUED", "PENDING"):
            waited = (datetime.datetime.now(datetime.UTC) - build.created).total_seconds()
            if waited > float(str(ttl).rstrip("s")):
                build.phases[build.phase + 1 :] = [Phase("EXPIRED", detail="queueTtl passed")]
                build.phase += 1
                self._enter_phase(build)
                return
        if phase.polls == 0:
            return
        build.polls += 1
        if build.polls >= phase.polls and build.phase + 1 < len(build.phases):
            build.phase += 1
            build.polls = 0
            self._enter_phase(build)

    def resource(self, build: FakeBuild) -> dict[str, Any]:
        phase = build.phases[build.phase]
        step_status = {"WORKING": "WORKING", "SUCCESS": "SUCCESS"}.get(phase.status, "QUEUED")
        steps = [dict(step, status=step_status) for step in build.resolved.get("steps", [])]
        prefix = f"projects/{build.project}/locations/{build.location}"
        document: dict[str, Any] = {
            "name": f"{prefix}/builds/{build.id}",
            "id": build.id,
            "projectId": build.project,
            "status": phase.status,
            "statusDetail": phase.detail,
            "steps": steps,
            "images": build.resolved.get("images", []),
            "tags": build.resolved.get("tags", []),
            "substitutions": build.body.get("substitutions", {}),
            "createTime": build.created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "logUrl": f"https://console.cloud.google.com/cloud-build/builds;region={build.location}/{build.id}"
            f"?project={self.project_number}",
            "options": build.body.get("options", {}),
        }
        for key in ("timeout", "queueTtl", "serviceAccount", "source"):
            if key in build.body:
                document[key] = build.body[key]
        if self._logs_location(build):
            document["logsBucket"] = self._logs_location(build)
        if phase.failure:
            document["failureInfo"] = {"type": "USER_BUILD_STEP", "detail": phase.failure}
        if phase.warnings:
            document["warnings"] = [{"text": text, "priority": "WARNING"} for text in phase.warnings]
        if build.digests:
            document["results"] = {"images": [{"name": n, "digest": d} for n, d in build.digests.items()]}
        return document

    def operation(self, build: FakeBuild) -> dict[str, Any]:
        done = build.status in TERMINAL
        name = f"operations/build/{build.project}/{build.id}"
        if build.location != "global":
            name = f"projects/{build.project}/locations/{build.location}/operations/{build.id}"
        document: dict[str, Any] = {
            "name": name,
            "metadata": {
                "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.BuildOperationMetadata",
                "build": self.resource(build),
            },
            "done": done,
        }
        if done:
            document["response"] = {
                "@type": "type.googleapis.com/google.devtools.cloudbuild.v1.Build",
                **self.resource(build),
            }
        return document

    def route(self, method: str, raw_path: str, body: bytes) -> tuple[str, Callable[[], tuple[int, Any]]]:
        """(call kind, the work) for a request; the work runs under the lock."""
        split = urllib.parse.urlsplit(raw_path)
        path = urllib.parse.unquote(split.path)
        query = urllib.parse.parse_qs(split.query)
        match = re.fullmatch(r"/v1/projects/([^/]+)(?:/locations/([^/]+))?/builds", path)
        if match and method == "POST":
            project, location = match.group(1), match.group(2) or "global"
            return "create", lambda: self._create(project, location, json.loads(body or b"{}"))
        if match and method == "GET":
            project, location = match.group(1), match.group(2)
            return "list", lambda: self._list(project, location, query)
        match = re.fullmatch(r"/v1/projects/([^/]+)(?:/locations/([^/]+))?/builds/([^/:]+)(:cancel)?", path)
        if match:
            kind = "cancel" if match.group(4) else "get"
            return kind, lambda: self._build_call(match, method)
        match = re.fullmatch(
            r"/v1/(?:projects/[^/]+/locations/[^/]+/)?operations/(?:build/[^/]+/)?([^/]+)", path
        )
        if match and method == "GET":
            return "operation", lambda: self._operation(match.group(1))
        return "other", lambda: (404, error_body(404, f"fake: no route {method} {path}"))

    def _build_call(self, match: re.Match[str], method: str) -> tuple[int, Any]:
        build = self.builds.get(match.group(3))
        if build is None or build.project != match.group(1) or build.location != (match.group(2) or "global"):
            return 404, error_body(404, "no such build")
        if match.group(4) and method == "POST":
            return self._cancel(build)
        answer = self.resource(build)
        self._advance(build)
        return 200, answer

    def _operation(self, build_id: str) -> tuple[int, Any]:
        if build_id not in self.builds:
            return 404, error_body(404, "no such operation")
        return 200, self.operation(self.builds[build_id])

    def _create(self, project: str, location: str, body: dict[str, Any]) -> tuple[int, Any]:
        options = body.get("options") or {}
        for key, names in OPTION_ENUMS.items():
            if isinstance(options.get(key), int):
                options[key] = names[options[key]]
        try:
            check_build(body, location)
            files = self._fetch_source(body["source"]) if "source" in body else {}
        except Refused as error:
            self.refusals.append(str(error))
            return 400, error_body(400, f"invalid build: {error!s}")
        template = {key: body[key] for key in ("steps", "images", "tags") if key in body}
        substitutions = dict(body.get("substitutions") or {})
        builtins = {"PROJECT_ID": project, "LOCATION": location, "PROJECT_NUMBER": self.project_number}
        resolved = substitute(template, substitutions, builtins)
        if not all(_TAG.match(tag) for tag in resolved.get("tags", [])):
            self.refusals.append(f"tags {resolved.get('tags')}")
            return 400, error_body(400, "invalid build tag")
        build = self._register(project, location, body, resolved, self.script)
        build.source_files = files
        self.created.append(build)
        return 200, self.operation(build)

    def _list(self, project: str, location: str | None, query: dict[str, list[str]]) -> tuple[int, Any]:
        if location is not None and query.get("projectId") != [project]:
            return 400, error_body(400, "projectId is required (projects.locations.builds.list)")
        text = query.get("filter", [""])[0]
        wanted = re.findall(r'tags="([^"]*)"', text)
        statuses = re.findall(r'status="([^"]*)"', text)
        found = [
            self.resource(build)
            for build in reversed(list(self.builds.values()))
            if build.project == project
            and build.location == (location or "global")
            and all(tag in build.resolved.get("tags", []) for tag in wanted)
            and (not statuses or build.status in statuses)
        ]
        return 200, {"builds": found}

    def _cancel(self, build: FakeBuild) -> tuple[int, Any]:
        if build.status in TERMINAL:
            return 400, {
                "error": {"code": 400, "message": "build is not running", "status": "FAILED_PRECONDITION"}
            }
        self.cancelled.append(build.id)
        build.phases[build.phase + 1 :] = []
        build.phases.append(Phase("CANCELLED", log="Build was cancelled.\n"))
        build.phase = len(build.phases) - 1
        self._enter_phase(build)
        return 200, self.resource(build)


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: FakeCloudBuild
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stall

    def _answer(self, method: str) -> None:
        fake = self.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        kind, work = fake.route(method, self.path, body)
        with fake._lock:
            fake.requests.append((method, self.path))
        fault = fake.faults.take(kind)
        if fault is not None and not fault.after:
            self._fail(fault.reset, fault.status)
            return
        with fake._lock:
            code, document = work()
        if fault is not None:
            self._fail(fault.reset, fault.status)
            return
        send_json(self, code, document)

    def _fail(self, reset: bool, code: int) -> None:
        if reset:
            drop_connection(self)
        else:
            send_json(self, code, error_body(code, f"injected {code} (fake)"))

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def docker_executor(docker: str = "docker") -> Callable[[FakeBuild], dict[str, str]]:
    """Run a build for real when it succeeds, as a Cloud Build worker would.

    The uploaded source is unpacked into a workspace, each docker step runs with the local docker
    CLI (`--network=cloudbuild` becomes `--network=host`: no bridge here), every image in `images:`
    is pushed, and the built images are removed again: a worker keeps nothing, so whoever needs
    them must pull them from the registry. Returns the pushed digests.
    """
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    environment = {**os.environ, "DOCKER_BUILDKIT": "0"}

    def run(build: FakeBuild) -> dict[str, str]:
        images = [str(image) for image in build.resolved.get("images", [])]
        with tempfile.TemporaryDirectory(prefix="fake-cloudbuild-") as workspace:
            for name, data in build.source_files.items():
                path = Path(workspace, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            for step in build.resolved["steps"]:
                assert str(step["name"]).endswith("cloud-builders/docker"), step["name"]
                args = [
                    "--network=host" if arg == "--network=cloudbuild" else str(arg) for arg in step["args"]
                ]
                subprocess.run(
                    [docker, *args],
                    cwd=workspace,
                    env=environment,
                    check=True,
                    capture_output=True,
                    timeout=300,
                )
        digests = {}
        try:
            for image in images:
                pushed = subprocess.run(
                    [docker, "push", image],
                    env=environment,
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                found = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed.stdout)
                assert found, pushed.stdout
                digests[image] = found.group(1)
        finally:
            subprocess.run([docker, "image", "rm", "--force", *images], capture_output=True, timeout=120)
        return digests

    return run
