"""What a smoke run found: one result per check, one report per image.

Every message is plain text on one line: terminal escape sequences (a coloured error line a
command printed) and other control characters are removed when a result is made, so the table,
the CI log and the JUnit report can all carry it as it is.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

Status = Literal["pass", "fail", "skip"]
NO_GPU = "skipped: no GPU"

# ECMA-48 control sequences (CSI ... final byte, OSC ... BEL or ST, ESC [intermediates] final), line breaks
# and tabs, then every other C0/C1 control and what XML 1.0 cannot carry.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -/]*[0-~]"
)
_SPACES = re.compile(r"[\t\n\r\x0b\x0c]+")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")


def without_escapes(text: str) -> str:
    """`text` without terminal escape sequences (colours, cursor moves, titles)."""
    return _ESCAPES.sub("", text)


def plain_text(text: str) -> str:
    """`text` without terminal escape sequences or control characters, on one line."""
    return _CONTROLS.sub("", _SPACES.sub(" ", _ESCAPES.sub("", text)))


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check of one image; `message` is the line a person reads (`image: what happened`)."""

    image: str
    check: str
    status: Status
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "check", plain_text(self.check))
        object.__setattr__(self, "message", plain_text(self.message))


@dataclasses.dataclass(frozen=True)
class ImageReport:
    """One image's results; `size` in bytes as the engine counts it (None when unknown)."""

    image: str
    reference: str
    results: tuple[CheckResult, ...]
    seconds: float = 0.0
    size: int | None = None

    @property
    def failed(self) -> bool:
        return any(result.status == "fail" for result in self.results)

    def count(self, status: Status) -> int:
        return sum(1 for result in self.results if result.status == status)
