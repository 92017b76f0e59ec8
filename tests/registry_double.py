"""Scripted stand-ins for a registry and its token service on loopback ports, for HTTP-level tests."""

from __future__ import annotations

import base64
import dataclasses
import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DIGEST = "sha256:" + "ab" * 32
TOKEN = "secret-token"
# What a registry puts on every answer; a 404 counts as "not there" only with it (or an error body).
REGISTRY = {"Docker-Distribution-API-Version": "registry/2.0"}


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    reset: bool = False  # drop the connection without answering


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


Responder = Callable[[Seen], Answer]


class ScriptedServer:
    """Answers each request with the next scripted Answer (the last one repeats), or asks `respond`."""

    def __init__(self, answers: list[Answer] | None = None, respond: Responder | None = None) -> None:
        self.answers = list(answers or [])
        self.seen: list[Seen] = []
        server = self

        def next_answer(seen: Seen) -> Answer:
            if respond is not None:
                return respond(seen)
            return server.answers.pop(0) if len(server.answers) > 1 else server.answers[0]

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = Seen(self.command, self.path, dict(self.headers.items()), body)
                server.seen.append(seen)
                answer = next_answer(seen)
                if answer.reset:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = _answer
            do_HEAD = _answer
            do_POST = _answer
            do_PUT = _answer

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def token_registry(
    user: str | None = None, password: str | None = None
) -> Iterator[tuple[ScriptedServer, ScriptedServer]]:
    """(registry, token service): the registry wants `Bearer TOKEN`, the service hands it out.

    With `user`, the token service demands those basic credentials.
    """
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None

    def hand_out(seen: Seen) -> Answer:
        if expected and seen.headers.get("Authorization") != expected:
            return Answer(401)
        return Answer(200, {"Content-Type": "application/json"}, b'{"token": "%s"}' % TOKEN.encode())

    with ScriptedServer(respond=hand_out) as tokens:
        realm = f"http://{tokens.address}/token"
        challenge = f'Bearer realm="{realm}",service="test-registry",scope="repository:team/app:pull"'

        def gate(seen: Seen) -> Answer:
            if seen.headers.get("Authorization") == f"Bearer {TOKEN}":
                return Answer(200, {"Docker-Content-Digest": DIGEST, **REGISTRY})
            return Answer(401, {"WWW-Authenticate": challenge, **REGISTRY})

        with ScriptedServer(respond=gate) as registry:
            yield registry, tokens
