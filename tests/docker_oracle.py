"""Docker itself as the oracle for build contexts.

- `ContextCapture`: a stand-in daemon on a unix socket that answers the docker CLI's ping and
  keeps the body of its build request: exactly the context tar the real docker CLI (28.x, classic
  builder, today's moby/patternmatcher) sends after applying `.dockerignore`. No engine needed,
  ~20 ms per context, so hypothesis can ask it hundreds of times.
- `image_context`: what a real image holds under a folder, read from its top layer (`docker save`),
  for the builds that go through an engine (classic, BuildKit, and `invoke cascade`).
- `listing` / `classic_cli_listing`: the same description for our scan, and for the classic CLI's
  walk (moby/go-archive `TarWithOptions`), which enters excluded folders less often than BuildKit.

A listing maps each path to `file <x|-> <sha256>`, `link <target>`, `hardlink <first name>` or
`dir` (folders only when nothing below them is listed).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import socketserver
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from imagecascade.core.context import ContextEntry, walk_order
from imagecascade.core.dockerignore import IgnoreRules

DOCKER_CLI = "/usr/local/bin/docker"  # CLI 28.x: classic builder, applies .dockerignore itself
DOCKER_CLI_2010 = "/usr/bin/docker"  # CLI 20.10: drives the engine's built-in BuildKit
Listing = dict[str, str]


def listing(entries: Iterable[ContextEntry]) -> Listing:
    """Our scan in the oracle's terms."""
    result = {}
    for entry in entries:
        if entry.kind == "file":
            result[entry.path] = f"file {'x' if entry.executable else '-'} {entry.digest}"
        elif entry.kind == "dir":
            result[entry.path] = "dir"
        else:
            result[entry.path] = f"{entry.kind} {entry.digest}"
    return result


def tar_listing(data: bytes, under: str = "") -> Listing:
    """A listing of the members of a tar (below `under`, a folder prefix like `ctx/`)."""
    members: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        try:
            for member in archive:
                name = member.name.rstrip("/")
                if not name.startswith(under) or name == under.rstrip("/"):
                    continue
                name = name[len(under) :]
                if member.isreg():
                    handle = archive.extractfile(member)
                    assert handle is not None
                    digest = hashlib.sha256(handle.read()).hexdigest()
                    members[name] = f"file {'x' if member.mode & 0o111 else '-'} {digest}"
                elif member.islnk():
                    members[name] = f"hardlink {member.linkname[len(under) :]}"
                elif member.issym():
                    members[name] = f"link {member.linkname}"
                elif member.isdir():
                    members[name] = "dir"
        except tarfile.ReadError:
            pass  # the CLI stops writing when the stand-in answers; every member is complete
    return _leaf_folders_only(members)


def _leaf_folders_only(members: Listing) -> Listing:
    parents = {name.rpartition("/")[0] for name in members}
    return {name: kind for name, kind in members.items() if kind != "dir" or name not in parents}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _ping(self) -> None:
        body = b"OK"
        self.send_response(200)
        for header, value in (("API-Version", "1.41"), ("OSType", "linux"), ("Builder-Version", "1")):
            self.send_header(header, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = _ping

    def do_GET(self) -> None:
        if "/_ping" in self.path:
            self._ping()
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        data = bytearray()
        if self.headers.get("Transfer-Encoding") == "chunked":
            while size := int(self.rfile.readline().strip(), 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            data += self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.captured = bytes(data)
        self.server.query = self.path
        body = json.dumps({"error": "captured", "errorDetail": {"message": "captured"}}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    captured: bytes | None = None
    query = ""

    def get_request(self) -> tuple[Any, Any]:
        request, _ = super().get_request()
        return request, ("local", 0)


class ContextCapture:
    """Runs the real docker CLI against a stand-in daemon and returns the context it sends."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._socket = folder / "docker.sock"
        self._config = folder / "config"
        self._config.mkdir(exist_ok=True)
        self._server = _Server(str(self._socket), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sent(self, context: Path) -> Listing | str:
        """What the CLI sends for `context` with a Dockerfile from stdin, or its error text.

        The CLI adds the Dockerfile as `.dockerfile.<random>` and rewrites `.dockerignore` (the
        daemon drops both); both are left out of the listing.
        """
        self._server.captured = None
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "DOCKER_HOST": f"unix://{self._socket}",
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CONFIG": str(self._config),
        }
        result = subprocess.run(
            [DOCKER_CLI, "build", "-f", "-", str(context)],
            input=b"FROM scratch\n",
            capture_output=True,
            env=environment,
            timeout=60,
            check=False,
        )
        data = self._server.captured
        if data is None:
            return result.stderr.decode("utf-8", "replace").strip() or f"exit {result.returncode}"
        sent = tar_listing(data)
        return {
            name: kind
            for name, kind in sent.items()
            if name != ".dockerignore" and not (name.startswith(".dockerfile.") and "/" not in name)
        }


def classic_cli_listing(context: Path, rules: IgnoreRules) -> Listing:
    """What the classic CLI sends, by its own walk (moby/go-archive TarWithOptions) over our matcher.

    It differs from BuildKit in one rule: an excluded folder is entered only when an exception's
    text (trailing glob kept) starts with the folder's path, wildcards or not.
    """
    members: Listing = {}
    seen_inodes: dict[tuple[int, int], str] = {}

    def visit(folder: Path, prefix: str, parent_info: tuple[bool, ...] | None) -> None:
        names = sorted(os.listdir(folder), key=os.fsencode)
        for name in names:
            relative = prefix + name
            if relative == ".dockerignore":
                continue
            path = folder / name
            info = path.lstat()
            excluded, match_info = rules.matches(relative, parent_info) if rules.patterns else (False, ())
            if excluded:
                if not stat.S_ISDIR(info.st_mode):
                    continue
                exceptions = [pattern.text for pattern in rules.patterns if pattern.exclusion]
                if not any((text + "/").startswith(relative + "/") for text in exceptions):
                    continue
                visit(path, relative + "/", match_info if rules.patterns else None)
                continue
            if stat.S_ISDIR(info.st_mode):
                members[relative] = "dir"
                visit(path, relative + "/", match_info if rules.patterns else None)
            elif stat.S_ISLNK(info.st_mode):
                members[relative] = f"link {os.readlink(path)}"
            elif stat.S_ISREG(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if info.st_nlink > 1 and key in seen_inodes:
                    members[relative] = f"hardlink {seen_inodes[key]}"
                    continue
                seen_inodes[key] = relative
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                members[relative] = f"file {'x' if info.st_mode & 0o111 else '-'} {digest}"

    visit(context, "", None)
    return _leaf_folders_only(members)


def image_context(engine: Any, image: str, folder: str) -> Listing:
    """What `image` holds below `/folder`, from its top layer (the `COPY . /folder` step)."""
    data = b"".join(engine.client.api.get_image(image))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        manifest_file = archive.extractfile("manifest.json")
        assert manifest_file is not None
        layer_name = json.load(manifest_file)[0]["Layers"][-1]
        layer_file = archive.extractfile(layer_name)
        assert layer_file is not None
        layer = layer_file.read()
    return tar_listing(layer, folder.strip("/") + "/")


def docker_available() -> bool:
    return shutil.which(DOCKER_CLI) is not None


def sorted_walk(paths: Iterable[str]) -> list[str]:
    return sorted(paths, key=walk_order)
