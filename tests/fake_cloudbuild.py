"""A fake Cloud Build REST server for tests: the v1 HTTP API, on 127.0.0.1, with scripted builds.

It speaks what google-cloud-build's REST transport sends and expects: create (global and
regional) answering a long-running Operation, the operations endpoint, get, cancel and list
with a `tags="..." AND ...` filter. It applies substitutions and rejects missing or unused ones
the way Cloud Build does, writes each build's log into a Cloud Storage server (the emulator) as
`log-<id>.txt`, and plays a script of phases per build, one phase step per `get`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

TERMINAL = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}
_SUBSTITUTION = re.compile(r"\$\$|\$\{(_[A-Z0-9_]+)\}|\$(_[A-Z0-9_]+)")
_BUILTIN = re.compile(r"\$\{?(PROJECT_ID|BUILD_ID|LOCATION)\}?")


@dataclasses.dataclass(frozen=True)
class Phase:
    """One state of a scripted build: `polls` answers to get report it (0: forever)."""

    status: str
    polls: int = 1
    log: str = ""  # appended to the build's log when the phase begins
    detail: str = ""
    burst: tuple[int, ...] = ()  # statuses (429, 503) answered to the first gets in this phase


@dataclasses.dataclass
class FakeBuild:
    id: str
    project: str
    location: str
    body: dict[str, Any]  # what the client submitted, as JSON
    resolved: dict[str, Any]  # steps, images and tags with substitutions applied
    phases: list[Phase]
    phase: int = 0
    polls: int = 0
    burst_served: int = 0
    log: str = ""
    digests: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.phases[self.phase].status


def substitute(value: Any, substitutions: dict[str, str], project: str, build_id: str) -> Any:
    """Cloud Build's substitution, written independently of the package under test."""
    if isinstance(value, str):
        value = _SUBSTITUTION.sub(
            lambda m: "$" if m.group(0) == "$$" else substitutions[m.group(1) or m.group(2)], value
        )
        return _BUILTIN.sub(
            lambda m: {"PROJECT_ID": project, "BUILD_ID": build_id}.get(m.group(1), ""), value
        )
    if isinstance(value, list):
        return [substitute(item, substitutions, project, build_id) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, substitutions, project, build_id) for key, item in value.items()}
    return value


def _used(value: Any) -> set[str]:
    if isinstance(value, str):
        return {m.group(1) or m.group(2) for m in _SUBSTITUTION.finditer(value) if m.group(0) != "$$"}
    if isinstance(value, list):
        return set().union(*(_used(item) for item in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(_used(item) for item in value.values())) if value else set()
    return set()


class FakeCloudBuild:
    def __init__(self, storage_url: str, logs_bucket: str = "fake-cloudbuild-logs") -> None:
        self.storage_url = storage_url.rstrip("/")
        self.logs_bucket = logs_bucket
        self.script: list[Phase] = [Phase("QUEUED"), Phase("WORKING"), Phase("SUCCESS")]
        self.builds: dict[str, FakeBuild] = {}
        self.created: list[FakeBuild] = []
        self.cancelled: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self._throttle: list[int] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._storage_request(
            "POST", "/storage/v1/b?project=fake", json.dumps({"name": logs_bucket}).encode()
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

    def throttle(self, count: int, status: int = 429) -> None:
        """Answer the next `count` requests with `status` (429 or 503) and a Google error body."""
        with self._lock:
            self._throttle += [status] * count

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
            return self._register(project, location, body, lambda _id: dict(body), phases)

    # Internals, called from the handler threads.

    def _register(
        self,
        project: str,
        location: str,
        body: dict[str, Any],
        resolve: Callable[[str], dict[str, Any]],
        phases: list[Phase],
    ) -> FakeBuild:
        self._counter += 1
        build_id = f"00000000-fake-build-{self._counter:012d}"
        build = FakeBuild(build_id, project, location, body, resolve(build_id), list(phases))
        self.builds[build_id] = build
        self._enter_phase(build)
        return build

    def _enter_phase(self, build: FakeBuild) -> None:
        phase = build.phases[build.phase]
        if phase.log:
            build.log += phase.log
            self._write_log(build)
        if phase.status == "SUCCESS":
            for reference in build.resolved.get("images", []):
                build.digests[reference] = "sha256:" + hashlib.sha256(reference.encode()).hexdigest()

    def _write_log(self, build: FakeBuild) -> None:
        name = urllib.parse.quote(f"log-{build.id}.txt", safe="")
        self._storage_request(
            "POST",
            f"/upload/storage/v1/b/{self.logs_bucket}/o?uploadType=media&name={name}",
            build.log.encode(),
        )

    def _storage_request(self, method: str, path: str, data: bytes) -> None:
        request = urllib.request.Request(self.storage_url + path, data=data, method=method)
        request.add_header(
            "Content-Type", "application/json" if path.startswith("/storage") else "text/plain"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def _advance(self, build: FakeBuild) -> None:
        """One `get` answered: after `polls` of them the build moves to its next phase."""
        phase = build.phases[build.phase]
        if phase.status in TERMINAL or phase.polls == 0:
            return
        build.polls += 1
        if build.polls >= phase.polls and build.phase + 1 < len(build.phases):
            build.phase += 1
            build.polls = 0
            build.burst_served = 0
            self._enter_phase(build)

    def resource(self, build: FakeBuild) -> dict[str, Any]:
        phase = build.phases[build.phase]
        working = phase.status == "WORKING"
        steps = [
            dict(
                step, status="WORKING" if working else ("SUCCESS" if phase.status == "SUCCESS" else "QUEUED")
            )
            for step in build.resolved.get("steps", [])
        ]
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
            "logsBucket": f"gs://{self.logs_bucket}",
            "createTime": "2026-11-28T12:00:00Z",
        }
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

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append((method, raw_path))
            if self._throttle:
                return self._error(self._throttle.pop(0))
            return self._route(method, raw_path, body)

    @staticmethod
    def _error(status: int) -> tuple[int, dict[str, Any]]:
        reason = "RESOURCE_EXHAUSTED" if status == 429 else "UNAVAILABLE"
        return status, {"error": {"code": status, "message": "slow down (fake)", "status": reason}}

    def _route(self, method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        split = urllib.parse.urlsplit(raw_path)
        path = urllib.parse.unquote(split.path)
        query = urllib.parse.parse_qs(split.query)
        match = re.fullmatch(r"/v1/projects/([^/]+)(?:/locations/([^/]+))?/builds", path)
        if match and method == "POST":
            return self._create(match.group(1), match.group(2) or "global", json.loads(body or b"{}"))
        if match and method == "GET":
            return self._list(match.group(1), match.group(2) or "global", query.get("filter", [""])[0])
        match = re.fullmatch(r"/v1/projects/([^/]+)(?:/locations/([^/]+))?/builds/([^/:]+)(:cancel)?", path)
        if match:
            build = self.builds.get(match.group(3))
            if (
                build is None
                or build.project != match.group(1)
                or build.location != (match.group(2) or "global")
            ):
                return 404, {"error": {"code": 404, "message": "no such build", "status": "NOT_FOUND"}}
            if match.group(4) and method == "POST":
                return self._cancel(build)
            burst = build.phases[build.phase].burst
            if method == "GET" and build.burst_served < len(burst):
                build.burst_served += 1
                return self._error(burst[build.burst_served - 1])
            if method == "GET":
                answer = self.resource(build)
                self._advance(build)
                return 200, answer
        match = re.fullmatch(
            r"/v1/(?:projects/[^/]+/locations/[^/]+/)?operations/(?:build/[^/]+/)?([^/]+)", path
        )
        if match and method == "GET" and match.group(1) in self.builds:
            return 200, self.operation(self.builds[match.group(1)])
        return 404, {
            "error": {"code": 404, "message": f"fake: no route {method} {path}", "status": "NOT_FOUND"}
        }

    def _create(self, project: str, location: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        substitutions = dict(body.get("substitutions") or {})
        template = {key: body.get(key) for key in ("steps", "images", "tags") if key in body}
        used = _used(template)
        missing, unused = sorted(used - set(substitutions)), sorted(set(substitutions) - used)
        if missing or unused:
            message = f"invalid substitutions: missing {missing}, unused {unused}"
            return 400, {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
        build = self._register(
            project,
            location,
            body,
            lambda build_id: substitute(template, substitutions, project, build_id),
            self.script,
        )
        self.created.append(build)
        return 200, self.operation(build)

    def _list(self, project: str, location: str, query: str) -> tuple[int, dict[str, Any]]:
        wanted = re.findall(r'tags="([^"]*)"', query)
        statuses = re.findall(r'status="([^"]*)"', query)
        found = [
            self.resource(build)
            for build in reversed(list(self.builds.values()))
            if build.project == project
            and build.location == location
            and all(tag in build.resolved.get("tags", []) for tag in wanted)
            and (not statuses or build.status in statuses)
        ]
        return 200, {"builds": found}

    def _cancel(self, build: FakeBuild) -> tuple[int, dict[str, Any]]:
        if build.status in TERMINAL:
            return 400, {
                "error": {"code": 400, "message": "build already finished", "status": "FAILED_PRECONDITION"}
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

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, document = self.fake.handle(method, self.path, body)
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def log_message(self, format: str, *args: Any) -> None:
        pass
