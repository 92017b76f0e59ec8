"""BuildLog: lines assembled across chunks per stream, ANSI-free file, the failing step's tail."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagecascade.core.backend import BuildEvent
from imagecascade.core.build_log import BuildLog, log_path, shorten, strip_ansi


def _log(tmp_path: Path | None = None) -> tuple[BuildLog, list[BuildEvent]]:
    events: list[BuildEvent] = []
    path = tmp_path / "x.log" if tmp_path is not None else None
    return BuildLog("img", path, events.append), events


def _lines(events: list[BuildEvent]) -> list[str]:
    return [event.message for event in events if event.kind == "log"]


def test_log_path_is_per_image_and_hash_tag(tmp_path: Path) -> None:
    assert log_path(tmp_path, "arr-trainer", "0123456789abcdef") == (
        tmp_path / "reports/build-logs/arr-trainer-0123456789abcdef.log"
    )


@given(st.lists(st.text(alphabet="ab\n", max_size=8), max_size=12))
def test_chunks_become_the_same_lines_however_they_are_cut(chunks: list[str]) -> None:
    log, events = _log()
    with log:
        for chunk in chunks:
            log.output(chunk)
    text = "".join(chunks)
    expected = [line for line in text.split("\n") if line]
    assert _lines(events) == expected


def test_stdout_and_stderr_partial_lines_are_not_glued() -> None:
    log, events = _log()
    with log:
        log.output("progress: 5")
        log.output("\x1b[91mwarning: slow\n\x1b[0m", "stderr")
        log.output("0%\n")
        log.output("\x1b[91merror: ", "stderr")
        log.output("\x1b[91mdisk full\n\x1b[0m", "stderr")
    assert _lines(events) == ["warning: slow", "progress: 50%", "error: disk full"]


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("\x1b[91mred\x1b[0m", "red"),
        ("\x1b[1;32mok\x1b[m done", "ok done"),
        ("\x1b]0;title\x07after", "after"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1b[2K\x1b[1Gbar", "bar"),
        ("no escapes", "no escapes"),
    ],
)
def test_ansi_escapes_are_removed(text: str, plain: str) -> None:
    assert strip_ansi(text) == plain


def test_carriage_returns_end_lines_and_crlf_is_one_break() -> None:
    log, events = _log()
    with log:
        log.output("10%\r50%\r100%\r\nnext\r\n")
    assert _lines(events) == ["10%", "50%", "100%", "next"]


def test_a_partial_last_line_is_logged_at_the_end(tmp_path: Path) -> None:
    log, events = _log(tmp_path)
    with log:
        log.output("no newline at the end")
    assert _lines(events) == ["no newline at the end"]
    assert "no newline at the end\n" in (tmp_path / "x.log").read_text()


def test_the_file_holds_every_attempt_in_order_without_escapes(tmp_path: Path) -> None:
    log, _ = _log(tmp_path)
    with log:
        log.step(1, 2, "FROM base")
        log.note(" ---> 0123")
        log.output("out 1\n")
        log.output("\x1b[91merr 1\n\x1b[0m", "stderr")
    with pytest.raises(RuntimeError), log:
        log.step(2, 2, "RUN make")
        raise RuntimeError("boom")
    text = (tmp_path / "x.log").read_text()
    body = [line for line in text.splitlines() if not line.startswith("# imagecascade:")]
    assert body == ["Step 1/2 : FROM base", " ---> 0123", "out 1", "err 1", "Step 2/2 : RUN make"]
    marks = [line for line in text.splitlines() if line.startswith("# imagecascade:")]
    assert len(marks) == 4 and "started" in marks[0] and "finished" in marks[1]
    assert "started" in marks[2] and "failed: boom" in marks[3]
    assert "\x1b" not in text


def test_notes_can_stay_out_of_the_live_view(tmp_path: Path) -> None:
    log, events = _log(tmp_path)
    with log:
        log.note("error: The command '/bin/sh -c <long script>' returned a non-zero code: 1", live=False)
    assert _lines(events) == []
    assert "<long script>" in (tmp_path / "x.log").read_text()


def test_the_tail_is_the_failing_steps_own_output() -> None:
    log, _ = _log()
    with log:
        log.step(1, 2, "RUN first")
        log.output("from the first step\n")
        log.step(2, 2, "RUN second")
        log.output("a\nb\n")
    assert log.failure_tail() == ("a", "b")
    assert log.current_step == "step 2/2 (RUN second)"


def test_the_tail_keeps_stderr_lines_that_buffered_stdout_pushed_back() -> None:
    """A block-buffered program: its error reaches the engine before its 45 stdout lines."""
    log, _ = _log()
    with log:
        log.step(2, 2, "RUN python3 train.py")
        log.output("\x1b[91mboom-error\n\x1b[0m", "stderr")
        log.output("".join(f"line {index}\n" for index in range(45)))
    tail = log.failure_tail()
    assert tail[0] == "boom-error"
    assert tail[1] == "… (15 lines)"
    assert tail[2:] == tuple(f"line {index}" for index in range(15, 45))
    assert log.last_error_line() == "boom-error"
    assert log.failure_reason("exited with code 1") == (
        "step 2/2 (RUN python3 train.py) failed: exited with code 1: boom-error"
    )


def test_only_the_last_stderr_lines_are_kept_beyond_the_tail() -> None:
    log, _ = _log()
    with log:
        log.step(1, 1, "RUN pip install")
        for index in range(100):
            log.output(f"\x1b[91mwarning {index}\n\x1b[0m", "stderr")
        log.output("".join(f"out {index}\n" for index in range(40)))
    tail = log.failure_tail(lines=30, stderr_lines=10)
    assert tail[:11] == ("… (90 lines)", *(f"warning {index}" for index in range(90, 100)))
    assert tail[11] == "… (10 lines)"
    assert tail[12:] == tuple(f"out {index}" for index in range(10, 40))


def test_a_reason_without_output_or_step() -> None:
    log, _ = _log()
    assert log.failure_reason("the engine refused the build") == "the engine refused the build"
    assert log.failure_reason("") == "build failed"


def test_shorten_folds_lines_and_elides_the_middle() -> None:
    assert shorten("a\n  b") == "a b"
    long = "x" * 200 + "y" * 200
    short = shorten(long, 101)
    assert len(short) == 101 and short.startswith("x" * 50) and short.endswith("y" * 50)
