"""What a smoke run found: one result per check, one report per image."""

from __future__ import annotations

import dataclasses
from typing import Literal

Status = Literal["pass", "fail", "skip"]
NO_GPU = "skipped: no GPU"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check of one image; `message` is the line a person reads (`image: what happened`)."""

    image: str
    check: str
    status: Status
    message: str


@dataclasses.dataclass(frozen=True)
class ImageReport:
    image: str
    reference: str
    results: tuple[CheckResult, ...]
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(result.status == "fail" for result in self.results)

    def count(self, status: Status) -> int:
        return sum(1 for result in self.results if result.status == status)
