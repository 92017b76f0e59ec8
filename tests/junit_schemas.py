"""The JUnit schemas CI tools read reports by (vendored in tests/data/junit, sources in its README)."""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import xmlschema

FOLDER = Path(__file__).parent / "data" / "junit"
NAMES = ("ant-junit.xsd", "jenkins-junit-10.xsd")


@functools.cache
def schema(name: str) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(FOLDER / name))


def assert_valid_junit(path: Path) -> ElementTree.Element:
    """Parse `path` (well-formed or raise) and validate it against every schema; its root."""
    root = ElementTree.parse(path).getroot()
    for name in NAMES:
        schema(name).validate(str(path))
    return root
