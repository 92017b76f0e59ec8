"""Real parts for registry auth and faults, on loopback: what `docker-registry` needs and what it lacks.

- `TokenService`: a registry token server (distribution's token spec). It signs JWTs that a real
  `docker-registry` with `auth: token` verifies, hands them out for basic credentials (GET) and for
  OAuth2 refresh tokens (POST grant_type=refresh_token), and records every request.
- `htpasswd_auth`: the `auth:` section of a `docker-registry` that wants basic credentials.
- `write_credential_helper`: a `docker-credential-<name>` executable speaking the helper protocol.
- `FaultProxy`: a TCP proxy in front of a registry that, per request, passes, hangs, throttles the
  upload or answers like something that is not a registry.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import hashlib
import http.server
import json
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SERVICE = "imagecascade-test-registry"
ISSUER = "imagecascade-test-issuer"


def htpasswd_auth(folder: Path, users: dict[str, str]) -> str:
    """The `auth:` YAML of a registry that wants these users' basic credentials (bcrypt htpasswd)."""
    path = folder / "htpasswd"
    lines = [
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user, pw in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return f"{{htpasswd: {{realm: test, path: {path}}}}}"


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _libtrust_key_id(key: ec.EllipticCurvePublicKey) -> str:
    """The key id docker-registry computes for a trusted key (docker/libtrust keyIDFromCryptoKey)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[index : index + 4] for index in range(0, len(text), 4))


@dataclasses.dataclass
class TokenRequest:
    method: str
    grant_type: str
    account: str  # the user the token was issued to ("" when refused or anonymous)
    scope: str
    client_id: str


class TokenService:
    """A token server for a real `docker-registry`: ES256 JWTs with the asked-for access.

    `users` are accepted as basic credentials on GET; `refresh_tokens` (token -> user) on POST
    with grant_type=refresh_token. Anything else gets 401. Anonymous GETs get a token without
    access, so the registry refuses them.
    """

    def __init__(
        self, folder: Path, users: dict[str, str] | None = None, refresh_tokens: dict[str, str] | None = None
    ) -> None:
        self.users = dict(users or {})
        self.refresh_tokens = dict(refresh_tokens or {})
        self.requests: list[TokenRequest] = []
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        self.certificate = folder / "token-issuer.pem"
        self.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        self._key_id = _libtrust_key_id(self._key.public_key())
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                scopes = query.get("scope", [])
                user = service._basic_user(self.headers.get("Authorization"))
                if self.headers.get("Authorization") and user is None:
                    service._record("GET", "", "", scopes, "")
                    return self._reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                service._record("GET", "", user or "", scopes, query.get("client_id", [""])[0])
                self._reply(200, {"token": service.issue(user or "", scopes)})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                scopes = " ".join(form.get("scope", [])).split()
                user = service.refresh_tokens.get(form.get("refresh_token", [""])[0])
                if grant != "refresh_token" or user is None:
                    service._record("POST", grant, "", scopes, form.get("client_id", [""])[0])
                    return self._reply(401, {"error": "invalid_grant"})
                service._record("POST", grant, user, scopes, form.get("client_id", [""])[0])
                self._reply(200, {"access_token": service.issue(user, scopes), "expires_in": 300})

            def _reply(self, status: int, document: dict[str, object]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def registry_auth(self) -> str:
        """The `auth:` YAML of a registry that trusts this service's tokens."""
        return (
            f'{{token: {{realm: "http://{self.address}/token", service: {SERVICE}, '
            f"issuer: {ISSUER}, rootcertbundle: {self.certificate}}}}}"
        )

    def issue(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes if user else []:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        header = {"typ": "JWT", "alg": "ES256", "kid": self._key_id}
        signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(claims).encode())
        r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return (signing_input + b"." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))).decode()

    def _basic_user(self, header: str | None) -> str | None:
        if not header or not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None

    def _record(self, method: str, grant: str, user: str, scopes: list[str], client_id: str) -> None:
        self.requests.append(TokenRequest(method, grant, user, " ".join(scopes), client_id))

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def write_credential_helper(
    folder: Path, name: str, answers: dict[str, tuple[str, str]], *, broken: bool = False
) -> Path:
    """`folder/docker-credential-<name>`: answers `get` and `list` from `answers` (server -> (user, secret)).

    Unknown servers get the protocol's "credentials not found in native keychain"; `broken`
    makes every call fail. Each call is appended to `folder/<name>.log` as `action server`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / f"{name}.json"
    table.write_text(json.dumps(answers))
    script = folder / f"docker-credential-{name}"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "action = sys.argv[1] if len(sys.argv) > 1 else ''\n"
        "server = sys.stdin.read().strip()\n"
        f"with open({str(folder / f'{name}.log')!r}, 'a') as log:\n"
        "    log.write(f'{action} {server}\\n')\n"
        f"if {broken!r}:\n"
        "    print('the keychain is locked'); sys.exit(1)\n"
        f"answers = json.load(open({str(table)!r}))\n"
        "if action == 'list':\n"
        "    print(json.dumps({key: value[0] for key, value in answers.items()}))\n"
        "elif action == 'get' and server in answers:\n"
        "    user, secret = answers[server]\n"
        "    print(json.dumps({'ServerURL': server, 'Username': user, 'Secret': secret}))\n"
        "else:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
    )
    script.chmod(0o755)
    return script


def helper_calls(folder: Path, name: str) -> list[str]:
    log = folder / f"{name}.log"
    return log.read_text().splitlines() if log.exists() else []


Fault = Literal["pass", "hang", "throttle", "web-404", "reject"]
NOT_A_REGISTRY = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 22\r\nConnection: close\r\n\r\n"
    b"<h1>404 Not Found</h1>"
)
SERVER_ERROR = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FaultProxy:
    """A TCP proxy to `upstream`; `rule(method, path)` picks each request's fault.

    The engine opens one connection per registry request (no keep-alive), so the first line of
    a connection names its request. `hang` stops reading (the sender's buffers fill, its progress
    stops); `throttle` forwards the request at `rate` bytes/s; `web-404` answers like a web
    server; `reject` answers 500. Connections that are not HTTP (the engine's TLS probe) pass.
    """

    def __init__(self, upstream: str, rule: Callable[[str, str], Fault], rate: int = 64 * 1024) -> None:
        self.upstream = upstream
        self.rule = rule
        self.rate = rate
        self.seen: list[tuple[str, str, Fault]] = []
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            first = client.recv(65536)
        except OSError:
            return
        method, _, rest = first.partition(b" ")
        path = rest.split(b" ", 1)[0].decode("latin-1")
        fault: Fault = self.rule(method.decode("latin-1"), path) if method.isalpha() else "pass"
        self.seen.append((method.decode("latin-1"), path, fault))
        if fault == "hang":
            self._closed.wait()
            return
        if fault in ("web-404", "reject"):
            client.sendall(NOT_A_REGISTRY if fault == "web-404" else SERVER_ERROR)
            client.close()
            return
        host, port = self.upstream.rsplit(":", 1)
        try:
            upstream = socket.create_connection((host, int(port)))
        except OSError:
            client.close()
            return
        self._held.append(upstream)
        upstream.sendall(first)
        threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()
        self._pipe(client, upstream, self.rate if fault == "throttle" else None)

    def _pipe(self, source: socket.socket, target: socket.socket, rate: int | None) -> None:
        try:
            while not self._closed.is_set():
                data = source.recv(8192 if rate else 65536)
                if not data:
                    break
                target.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for held in self._held:
            try:
                held.shutdown(socket.SHUT_RDWR)
                held.close()
            except OSError:
                pass
