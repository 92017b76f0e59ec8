"""The folders are the architecture: imports point down, and the pre-commit path stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "imagecascade"

# layer -> the layers it may import (besides itself and the top-level errors module)
ALLOWED = {
    "core": set(),
    "engines": {"core"},
    "cloud": {"core", "engines"},
    "smoke": {"core", "engines"},
    "pins": {"core", "engines"},
    "rendering": {"core", "engines", "cloud", "smoke", "pins"},
    "standin": {"core", "engines", "smoke"},
}


def _imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "imagecascade" and len(parts) > 1 and parts[1] in ALLOWED:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_down(layer: str) -> None:
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        if path.name == "__main__.py":
            continue  # an entry point is an edge: it may render
        for imported in _imported_layers(path) - ALLOWED[layer] - {layer}:
            wrong.append(f"{path.relative_to(PACKAGE)} imports imagecascade.{imported}")
    assert wrong == []


def test_the_hook_imports_no_docker_google_or_rich() -> None:
    code = (
        "import sys, imagecascade.core.hook, imagecascade.core.plan;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'docker', 'google', 'rich', 'invoke'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
