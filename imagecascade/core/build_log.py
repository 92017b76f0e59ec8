"""The log of one build attempt: complete in a file, live as events, and the failing step's tail.

Every backend writes through `BuildLog`, so the local engine, BuildKit and Cloud Build produce the
same file (`reports/build-logs/<image>-<hash tag>.log`, one section per attempt, appended) and feed
the same live view (`BuildEvent` kinds `step` and `log`). Output arrives in chunks that need not end
at a line break, and stdout and stderr arrive interleaved: partial lines are kept per stream until
their line ends, so no line is cut or glued to another stream's text. ANSI escape sequences are
removed; a lone carriage return (a progress bar redrawing itself) ends a line.

The failure tail is the failing step's own output (not the builder's chatter around it): its last
`TAIL_LINES` lines plus its last `STDERR_LINES` stderr lines wherever they fell, in arrival order.
A program whose stdout is block-buffered writes its error to stderr *before* the buffered stdout
reaches the engine, so a plain "last N lines" would lose exactly the line that matters.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from imagecascade.core.backend import BuildEvent
from imagecascade.core.settings import BUILD_LOG_DIR
from imagecascade.core.workdirs import ensure_private_dir

LOG_DIR = BUILD_LOG_DIR
TAIL_LINES = 30
STDERR_LINES = 10
Stream = Literal["stdout", "stderr"]

# CSI (colours, cursor moves), OSC (titles, links) and the remaining two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_REASON_CHARS = 300


def log_path(root: Path, name: str, tag: str) -> Path:
    """Where the log of `name:tag` is written: `<root>/reports/build-logs/<name>-<tag>.log`."""
    return root / LOG_DIR / f"{name}-{tag}.log"


def strip_ansi(text: str) -> str:
    """`text` without ANSI escape sequences."""
    return _ANSI.sub("", text)


def shorten(text: str, limit: int = _REASON_CHARS) -> str:
    """One line of at most `limit` characters: line breaks folded, the middle elided."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    keep = (limit - 1) // 2
    return f"{flat[:keep]}…{flat[-keep:]}"


@dataclasses.dataclass(frozen=True)
class _Line:
    text: str
    stream: Stream


class BuildLog:
    """One attempt at building one image; use as a context manager around the build.

    `path` None keeps no file (the live view and the tail still work). The file is opened in
    append mode: a header line starts each attempt and a footer line ends it with the outcome
    (the exception that left the block, if any). Not thread-safe: one build, one thread.
    """

    def __init__(
        self,
        image: str,
        path: Path | None,
        on_event: Callable[[BuildEvent], None],
        *,
        title: str = "",
    ) -> None:
        self.image = image
        self.path = path
        self._on_event = on_event
        self._title = title or image
        self._file: IO[str] | None = None
        self._partial: dict[Stream, str] = {"stdout": "", "stderr": ""}
        self._step_lines: list[_Line] = []
        self._step: tuple[int | None, int | None, str] | None = None

    def __enter__(self) -> BuildLog:
        if self.path is not None:
            ensure_private_dir(self.path.parent)
            self._file = self.path.open("a", encoding="utf-8", errors="replace")
            self._write(f"# imagecascade: build of {self._title} started {_now()}")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.flush()
        if self._file is None:
            return
        if error is None:
            outcome = "finished"
        elif isinstance(error, KeyboardInterrupt):
            outcome = "interrupted"
        else:
            outcome = f"failed: {error}"
        self._write(f"# imagecascade: {outcome} at {_now()}")
        self._file.close()
        self._file = None

    # What backends report -------------------------------------------------------------------

    def output(self, text: str, stream: Stream = "stdout") -> None:
        """A chunk of a step's output; complete lines are logged, a trailing partial line waits."""
        pending = self._partial[stream] + strip_ansi(text).replace("\r\n", "\n")
        *lines, self._partial[stream] = re.split(r"[\r\n]", pending)
        for line in lines:
            self._output_line(line, stream)

    def step(self, number: int | None, total: int | None, instruction: str) -> None:
        """A new step begins: `number` of `total` (when known), running `instruction`."""
        self.flush()
        instruction = strip_ansi(instruction)
        self._step = (number, total, instruction)
        self._step_lines = []
        header = f"Step {number}/{total} : {instruction}" if number is not None else f"Step : {instruction}"
        self._write(header)
        self._on_event(
            BuildEvent(image=self.image, kind="step", message=instruction, step=number, steps=total)
        )

    def note(self, line: str, *, live: bool = True) -> None:
        """A line from the builder or from this tool (not a step's own output): to the file, and
        to the live view unless `live` is False (the engine's error that repeats a whole script)."""
        for part in strip_ansi(line).splitlines() or [""]:
            part = part.rstrip()
            self._write(part)
            if part and live:
                self._on_event(BuildEvent(image=self.image, kind="log", message=part))

    def event(self, event: BuildEvent) -> None:
        """Pass another event (state, pushed) to the live view."""
        self._on_event(event)

    def flush(self) -> None:
        """Log whatever partial lines are waiting (the end of a step, of the build, or of a stream)."""
        for stream, text in self._partial.items():
            if text:
                self._partial[stream] = ""
                self._output_line(text, stream)

    # What the failure report needs ----------------------------------------------------------

    @property
    def current_step(self) -> str:
        """`step 3/7 (RUN make)`, the instruction shortened; "" before the first step."""
        if self._step is None:
            return ""
        number, total, instruction = self._step
        counted = f"step {number}/{total}" if number is not None else "step"
        return f"{counted} ({shorten(instruction, 60)})"

    def failure_tail(self, lines: int = TAIL_LINES, stderr_lines: int = STDERR_LINES) -> tuple[str, ...]:
        """The current step's last `lines` lines plus its last `stderr_lines` stderr lines, in order.

        Gaps between kept lines show as `… (N lines)`.
        """
        self.flush()
        kept = set(range(max(0, len(self._step_lines) - lines), len(self._step_lines)))
        errors = [index for index, line in enumerate(self._step_lines) if line.stream == "stderr"]
        kept.update(errors[-stderr_lines:] if stderr_lines else [])
        tail: list[str] = []
        previous = -1
        for index in sorted(kept):
            if index > previous + 1:
                skipped = index - previous - 1
                tail.append(f"… ({skipped} line{'s' if skipped != 1 else ''})")
            tail.append(self._step_lines[index].text)
            previous = index
        return tuple(tail)

    def last_error_line(self) -> str:
        """The step's last non-blank stderr line, else its last non-blank line, else ""."""
        self.flush()
        for wanted in ("stderr", None):
            for line in reversed(self._step_lines):
                if line.text.strip() and (wanted is None or line.stream == wanted):
                    return line.text.strip()
        return ""

    def failure_reason(self, detail: str) -> str:
        """`step 3/7 (RUN make) failed: <detail>: <the step's last error line>` on one line."""
        parts = [part for part in (self.current_step, detail) if part]
        reason = " failed: ".join(parts) if len(parts) == 2 else (parts[0] if parts else "build failed")
        last = self.last_error_line()
        if last and last not in detail:
            reason += f": {last}"
        return shorten(reason)

    # Internals ------------------------------------------------------------------------------

    def _output_line(self, text: str, stream: Stream) -> None:
        text = text.rstrip()
        self._step_lines.append(_Line(text, stream))
        self._write(text)
        if text:
            self._on_event(BuildEvent(image=self.image, kind="log", message=text))

    def _write(self, line: str) -> None:
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
