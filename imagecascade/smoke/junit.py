"""Smoke reports as JUnit XML (written with junitparser): a testsuite per image, a testcase per check.

The document is valid against both schemas CI tools read JUnit by: Apache Ant's (windyroad
JUnit.xsd: every suite has `id`, `package`, `timestamp`, `hostname`, `properties`, `system-out`
and `system-err`; the root has no attributes; a testcase has at most one result) and Jenkins'
(xunit plugin junit-10.xsd). Text is plain (`results.plain_text`), so it is always well-formed.
The file is replaced atomically: a reader never sees half of it.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from junitparser import Attr, Error, Failure, JUnitXml, Skipped, SystemErr, SystemOut, TestCase, TestSuite

from imagecascade.smoke.results import ImageReport, plain_text


class _Suite(TestSuite):
    """A testsuite with the attributes Ant's schema requires inside <testsuites>."""

    id = Attr()
    package = Attr()


def junit_document(
    reports: Sequence[ImageReport],
    *,
    interrupted: tuple[str, str] | None = None,
    now: datetime.datetime | None = None,
) -> JUnitXml:
    """The JUnit document for `reports`; `interrupted` = (image, message) adds an error testcase
    for the image whose checks a signal stopped."""
    moment = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%S")
    host = plain_text(socket.gethostname()) or "localhost"
    document = JUnitXml()
    entries: list[tuple[str, str, float, list[TestCase], list[str]]] = []
    for report in reports:
        cases: list[TestCase] = []
        lines: list[str] = []
        for result in report.results:
            case = TestCase(name=result.check, classname=f"smoke.{report.image}", time=0.0)
            if result.status == "fail":
                failure = Failure(message=result.message, type_="SmokeCheckFailed")
                failure.text = result.message
                case.result = [failure]
            elif result.status == "skip":
                case.result = [Skipped(message=result.message)]
            cases.append(case)
            lines.append(f"{result.status}: {result.message}")
        entries.append((report.image, report.reference, report.seconds, cases, lines))
    if interrupted is not None:
        image, message = interrupted
        case = TestCase(name="interrupted", classname=f"smoke.{image}", time=0.0)
        case.result = [Error(message=plain_text(message), type_="Interrupted")]
        entries.append((image, "", 0.0, [case], [f"error: {plain_text(message)}"]))
    for index, (image, reference, seconds, cases, lines) in enumerate(entries):
        suite = _Suite(plain_text(image))
        suite.id = str(index)
        suite.package = "smoke"
        suite.hostname = host
        suite.timestamp = moment
        suite.add_property("reference", plain_text(reference))
        suite.add_testcases(cases)
        suite.time = round(seconds, 3)
        suite.append(SystemOut("\n".join(lines)))  # type: ignore[no-untyped-call]
        suite.append(SystemErr(""))  # type: ignore[no-untyped-call]
        document.add_testsuite(suite)
    return document


def write_junit(
    reports: Sequence[ImageReport], path: Path, *, interrupted: tuple[str, str] | None = None
) -> None:
    """Write the reports to `path` (creating its folder), replacing any earlier file in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            junit_document(reports, interrupted=interrupted).write(stream)
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; a report is for every reader
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
