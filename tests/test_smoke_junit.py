"""The smoke JUnit report: always well-formed, valid against the JUnit schemas, plain text only."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import xmlschema
from junit_schemas import NAMES, assert_valid_junit, schema

from imagecascade.smoke.junit import write_junit
from imagecascade.smoke.results import CheckResult, ImageReport, plain_text

NASTY = '\x1b[31merror:\x1b[0m <bad> & "quoted" \x00\x07\x08 \ud800 tab\there\r\nnext line é ✓'


def report(image: str, *results: tuple[str, str, str], seconds: float = 1.5) -> ImageReport:
    made = tuple(
        CheckResult(image, check, status, f"{image}: {message}") for check, status, message in results
    )
    return ImageReport(
        image=image, reference=f"{image}:0123456789abcdef", results=made, seconds=seconds, size=10
    )


def test_control_characters_and_escapes_never_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "smoke-junit.xml"
    reports = [
        report(
            "arr-ml-stack",
            ("command colours", "fail", f"command colours exited 1: {NASTY}"),
            ("import torch", "pass", "module torch imports"),
            ("cuda available", "skip", "skipped: no GPU"),
        ),
        report("arr-trainer", ("no checks", "skip", "declares no smoke checks")),
    ]
    write_junit(reports, path)
    root = assert_valid_junit(path)
    assert root.tag == "testsuites" and root.attrib == {}
    stack, trainer = root.findall("testsuite")
    assert (stack.get("name"), stack.get("tests"), stack.get("failures"), stack.get("skipped")) == (
        "arr-ml-stack",
        "3",
        "1",
        "1",
    )
    assert (stack.get("id"), stack.get("package"), stack.get("time")) == ("0", "smoke", "1.5")
    failure = stack.find("testcase[@name='command colours']/failure")
    assert failure is not None
    expected = 'arr-ml-stack: command colours exited 1: error: <bad> & "quoted"   tab here next line é ✓'
    assert failure.get("message") == failure.text == expected
    passed = stack.find("testcase[@name='import torch']")
    assert passed is not None and len(passed) == 0
    skipped = trainer.find("testcase[@name='no checks']/skipped")
    assert skipped is not None and skipped.get("message") == "arr-trainer: declares no smoke checks"
    raw = path.read_bytes()
    assert b"\x1b" not in raw and b"\x00" not in raw and b"\x07" not in raw
    assert [entry.name for entry in path.parent.iterdir()] == ["smoke-junit.xml"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_interrupted_run_reports_what_finished(tmp_path: Path) -> None:
    path = tmp_path / "smoke-junit.xml"
    path.write_text("<old report/>")
    finished = report("arr-pytorch-base", ("import torch", "pass", "module torch imports"))
    write_junit(
        [finished], path, interrupted=("arr-ml-stack", "stopped by SIGTERM before its checks finished")
    )
    root = assert_valid_junit(path)
    names = [suite.get("name") for suite in root.findall("testsuite")]
    assert names == ["arr-pytorch-base", "arr-ml-stack"]
    error = root.find("testsuite[@name='arr-ml-stack']/testcase[@name='interrupted']/error")
    assert error is not None and error.get("message") == "stopped by SIGTERM before its checks finished"
    assert root.find("testsuite[@name='arr-ml-stack']").get("errors") == "1"


def test_an_empty_run_is_a_valid_report(tmp_path: Path) -> None:
    path = tmp_path / "smoke-junit.xml"
    write_junit([], path)
    assert list(assert_valid_junit(path)) == []


@pytest.mark.parametrize("name", NAMES)
def test_the_schemas_do_reject(tmp_path: Path, name: str) -> None:
    # The validation above could not fail if the schemas let anything through.
    bad = tmp_path / "bad.xml"
    bad.write_text('<testsuites><testsuite name="x"><testcase/></testsuite></testsuites>')
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema(name).validate(str(bad))
    raw_control = tmp_path / "control.xml"
    raw_control.write_bytes(b'<testsuites><testsuite name="a\x1b[31m"/></testsuites>')
    with pytest.raises(ElementTree.ParseError):
        ElementTree.parse(raw_control)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("\x1b[1;31mred\x1b[0m", "red"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1b]0;title\x07after", "after"),
        ("50%\r100%", "50% 100%"),
        ("a\x00b\x7fc\x85d", "abcd"),
        ("keep é ✓ 中", "keep é ✓ 中"),
        ("lone \ud800 surrogate", "lone  surrogate"),
        ("\x1b(Bcharset", "charset"),
    ],
)
def test_plain_text(text: str, plain: str) -> None:
    assert plain_text(text) == plain
