"""Smoke reports as JUnit XML: a testsuite per image, a testcase per check."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagecascade.smoke.results import ImageReport


def junit_document(reports: Sequence[ImageReport]) -> ElementTree.ElementTree:
    suites = ElementTree.Element("testsuites", name="smoke")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for report in reports:
        counts = {
            "tests": len(report.results),
            "failures": report.count("fail"),
            "skipped": report.count("skip"),
        }
        for key, value in counts.items():
            totals[key] += value
        attributes = {"name": report.image, **{key: str(value) for key, value in counts.items()}}
        attributes.update(errors="0", time=f"{report.seconds:.3f}")
        suite = ElementTree.SubElement(suites, "testsuite", attributes)
        ElementTree.SubElement(
            ElementTree.SubElement(suite, "properties"), "property", name="reference", value=report.reference
        )
        for result in report.results:
            case = ElementTree.SubElement(
                suite, "testcase", classname=f"smoke.{report.image}", name=result.check, time="0"
            )
            if result.status == "fail":
                failure = ElementTree.SubElement(case, "failure", message=result.message, type="SmokeCheck")
                failure.text = result.message
            elif result.status == "skip":
                ElementTree.SubElement(case, "skipped", message=result.message)
            else:
                ElementTree.SubElement(case, "system-out").text = result.message
    suites.attrib.update({key: str(value) for key, value in totals.items()})
    suites.set("errors", "0")
    document = ElementTree.ElementTree(suites)
    ElementTree.indent(document)
    return document


def write_junit(reports: Sequence[ImageReport], path: Path) -> None:
    """Write the reports to `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_document(reports).write(path, encoding="utf-8", xml_declaration=True)
