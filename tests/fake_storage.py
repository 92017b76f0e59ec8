"""Cloud Storage for tests: gcp-storage-emulator behind a front that knows what the emulator does not.

The emulator stores buckets and objects and speaks the JSON and upload APIs (media, multipart and
resumable uploads, ranged downloads). The front, on its own loopback port, adds what the real
service does and the emulator does not, so the code under test meets the real behaviour:

- bucket ownership: each bucket belongs to the project that created it (`?project=` on insert);
  `buckets.list?project=P` lists only P's buckets; `own()` makes a bucket another project holds,
  optionally one this account may not read (403 on get);
- generation preconditions on uploads (`ifGenerationMatch`), answered 412 as the service does;
- the location and settings each bucket was created with;
- faults (any status, connection resets) on every call kind: `bucket.get`, `bucket.list`,
  `bucket.insert`, `object.get`, `object.read`, `upload` (a media or multipart upload, or the
  start of a resumable one) and `upload.chunk` (each chunk of a resumable upload).
"""

from __future__ import annotations

import http.client
import http.server
import json
import re
import threading
import urllib.parse
import urllib.request
from typing import Any

from tests.faults import Fault, Faults, drop_connection, error_body, send_json

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class StorageFront:
    def __init__(self, emulator_url: str) -> None:
        self.emulator = urllib.parse.urlsplit(emulator_url)
        self.faults = Faults()
        self.owners: dict[str, str] = {}  # bucket -> project
        self.unreadable: set[str] = set()  # buckets this account may not even get
        self.created: dict[str, dict[str, Any]] = {}  # bucket -> insert body, with the project
        self.requests: list[tuple[str, str, str]] = []  # (kind, method, path)
        self.chunks: list[str] = []  # Content-Range of each resumable chunk that reached the emulator
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"front": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> StorageFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def own(self, bucket: str, project: str, *, readable: bool = True) -> None:
        """Make `bucket` exist in another `project` (readable or not by the account under test)."""
        status, _, _ = self.forward(
            "POST", f"/storage/v1/b?project={project}", {"Content-Type": "application/json"},
            json.dumps({"name": bucket}).encode(),
        )  # fmt: skip
        assert status in (200, 409), status
        self.owners[bucket] = project
        if not readable:
            self.unreadable.add(bucket)

    def object_names(self, bucket: str) -> list[str]:
        status, _, body = self.forward("GET", f"/storage/v1/b/{bucket}/o", {}, b"")
        return [item["name"] for item in json.loads(body or b"{}").get("items", [])] if status == 200 else []

    def object_meta(self, bucket: str, name: str) -> dict[str, Any] | None:
        quoted = urllib.parse.quote(name, safe="")
        status, _, body = self.forward("GET", f"/storage/v1/b/{bucket}/o/{quoted}", {}, b"")
        return json.loads(body) if status == 200 else None

    def read(self, bucket: str, name: str) -> bytes | None:
        quoted = urllib.parse.quote(name, safe="")
        status, _, body = self.forward("GET", f"/storage/v1/b/{bucket}/o/{quoted}?alt=media", {}, b"")
        return body if status == 200 else None

    def write(self, bucket: str, name: str, data: bytes) -> None:
        quoted = urllib.parse.quote(name, safe="")
        status, _, _ = self.forward(
            "POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quoted}",
            {"Content-Type": "application/octet-stream"}, data,
        )  # fmt: skip
        assert status == 200, status

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.emulator.hostname, self.emulator.port, timeout=30)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


def classify(method: str, path: str) -> str:
    split = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(split.query)
    route = split.path
    if route.startswith("/upload/storage/v1/b/"):
        return "upload.chunk" if "upload_id" in query else "upload"
    if route.startswith("/download/storage/v1/") or query.get("alt") == ["media"]:
        return "object.read"
    if re.fullmatch(r"/storage/v1/b/?", route):
        return "bucket.insert" if method == "POST" else "bucket.list"
    if re.fullmatch(r"/storage/v1/b/[^/]+/?", route):
        return f"bucket.{'get' if method == 'GET' else method.lower()}"
    if re.fullmatch(r"/storage/v1/b/[^/]+/o/.+", route):
        return "object.get" if method == "GET" else f"object.{method.lower()}"
    return "other"


class _Handler(http.server.BaseHTTPRequestHandler):
    front: StorageFront
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        front = self.front
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        kind = classify(self.command, self.path)
        with front._lock:
            front.requests.append((kind, self.command, self.path))
        fault = front.faults.take(kind)
        if fault is not None and not fault.after:
            self._fail(fault)
            return
        refusal = self._refusal(kind, body)
        if refusal is not None:
            send_json(self, refusal[0], error_body(*refusal))
            return
        headers = {key: value for key, value in self.headers.items() if key.lower() not in _HOP_HEADERS}
        headers["Host"] = self.headers.get("Host", "")
        status, answer_headers, answer = front.forward(self.command, self.path, headers, body)
        if kind == "upload.chunk":
            with front._lock:
                front.chunks.append(self.headers.get("Content-Range", ""))
        answer = self._after(kind, status, body, answer)
        if fault is not None:
            self._fail(fault)
            return
        self.send_response(status)
        for key, value in answer_headers:
            if key.lower() not in _HOP_HEADERS:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    def _fail(self, fault: Fault) -> None:
        if fault.reset:
            drop_connection(self)
        else:
            send_json(self, fault.status, error_body(fault.status, f"injected {fault.status} (fake)"))

    def _refusal(self, kind: str, body: bytes) -> tuple[int, str] | None:
        front = self.front
        split = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(split.query)
        bucket = _bucket_of(split.path)
        if kind == "bucket.get" and bucket in front.unreadable:
            return 403, f"the caller does not have storage.buckets.get access to {bucket}"
        if kind == "bucket.insert":
            name = json.loads(body or b"{}").get("name", "")
            if name in front.owners or name in front.created:
                return (
                    409,
                    "Your previous request to create the named bucket succeeded and you already own it.",
                )
        if kind == "upload" and "ifGenerationMatch" in query:
            name = query.get("name", [""])[0] or json.loads(_json_part(body) or b"{}").get("name", "")
            current = front.object_meta(bucket, name)
            expected = int(query["ifGenerationMatch"][0])
            actual = int(current["generation"]) if current else 0
            if expected != actual:
                return 412, "At least one of the pre-conditions you specified did not hold."
        return None

    def _after(self, kind: str, status: int, body: bytes, answer: bytes) -> bytes:
        front = self.front
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if kind == "bucket.insert" and status == 200:
            sent = json.loads(body or b"{}")
            project = query.get("project", [""])[0]
            with front._lock:
                front.owners[sent["name"]] = project
                front.created[sent["name"]] = {**sent, "project": project}
            document = json.loads(answer)
            if sent.get("location"):
                document["location"] = sent["location"].upper()
            return json.dumps(document).encode()
        if kind == "bucket.list" and status == 200:
            project = query.get("project", [""])[0]
            document = json.loads(answer or b"{}")
            items = [item for item in document.get("items", []) if front.owners.get(item["name"]) == project]
            prefix = query.get("prefix", [""])[0]
            document["items"] = [item for item in items if item["name"].startswith(prefix)]
            return json.dumps(document).encode()
        return answer


def _bucket_of(path: str) -> str:
    match = re.match(r"^(?:/upload|/download)?/storage/v1/b/([^/?]+)", path)
    return urllib.parse.unquote(match.group(1)) if match else ""


def _json_part(body: bytes) -> bytes:
    """The JSON metadata part of a multipart upload body (or the whole body)."""
    for part in body.split(b"\r\n\r\n")[1:]:
        candidate = part.split(b"\r\n--", 1)[0].strip()
        if candidate.startswith(b"{"):
            return candidate
    return body if body.strip().startswith(b"{") else b""
