"""Faults a test server injects into the calls it answers: any HTTP status, or a dropped connection.

Faults are queued per call kind ("get", "create", "object.read", ...) and each is used once, in
order. A fault with `after=True` lets the server do the work first and then loses the answer:
the case where a client cannot know whether its call took effect.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import struct
import threading


@dataclasses.dataclass(frozen=True)
class Fault:
    status: int = 0  # answer this status with a Google-style error body
    reset: bool = False  # drop the connection (TCP reset) without answering
    after: bool = False  # do the work first, then fail: the answer is lost

    def __str__(self) -> str:
        what = "reset" if self.reset else str(self.status)
        return f"{what} after the work" if self.after else what


RESET = Fault(reset=True)
LOST = Fault(reset=True, after=True)  # done, but the caller never hears of it


def status(code: int, *, after: bool = False) -> Fault:
    return Fault(status=code, after=after)


_REASONS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(code: int, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "status": _REASONS.get(code, "UNKNOWN")}}


class Faults:
    """Thread-safe queues of faults per call kind, and a record of every fault served."""

    def __init__(self) -> None:
        self._queued: dict[str, list[Fault]] = {}
        self._every: dict[str, tuple[int, Fault]] = {}
        self._calls: dict[str, int] = {}
        self.served: list[tuple[str, Fault]] = []
        self._lock = threading.Lock()

    def inject(self, kind: str, *faults: Fault | int) -> None:
        """Fail the next calls of `kind`, one fault each (an int is that HTTP status)."""
        with self._lock:
            self._queued.setdefault(kind, []).extend(
                fault if isinstance(fault, Fault) else Fault(status=fault) for fault in faults
            )

    def every(self, kind: str, period: int, fault: Fault | int) -> None:
        """Fail every `period`-th call of `kind` from now on."""
        with self._lock:
            self._every[kind] = (period, fault if isinstance(fault, Fault) else Fault(status=fault))

    def clear(self, kind: str) -> None:
        """Stop failing calls of `kind`."""
        with self._lock:
            self._queued.pop(kind, None)
            self._every.pop(kind, None)

    def take(self, kind: str) -> Fault | None:
        with self._lock:
            self._calls[kind] = self._calls.get(kind, 0) + 1
            queued = self._queued.get(kind)
            fault = queued.pop(0) if queued else None
            if fault is None and kind in self._every:
                period, repeated = self._every[kind]
                fault = repeated if self._calls[kind] % period == 0 else None
            if fault is not None:
                self.served.append((kind, fault))
            return fault

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {kind: len(queue) for kind, queue in self._queued.items() if queue}

    def calls(self, kind: str) -> int:
        with self._lock:
            return self._calls.get(kind, 0)


def drop_connection(handler: http.server.BaseHTTPRequestHandler) -> None:
    """Close the handler's connection with a TCP reset, answering nothing."""
    handler.close_connection = True
    connection = handler.connection
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def send_json(handler: http.server.BaseHTTPRequestHandler, code: int, document: object) -> None:
    data = json.dumps(document).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
