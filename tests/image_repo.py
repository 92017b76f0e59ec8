"""Write small image repositories into temporary folders for tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

WIRED_DOCKERFILE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /app\n"


def write_image(
    root: Path,
    name: str,
    toml: str,
    files: Mapping[str, str | bytes] | None = None,
    dockerfile: str = WIRED_DOCKERFILE,
) -> Path:
    folder = root / "images" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    (folder / "image.toml").write_text(toml)
    for relative, content in (files or {}).items():
        write_file(folder / relative, content)
    return folder


def write_file(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def write_cascade(root: Path) -> Path:
    """Two lineages: base -> a -> a1, a -> a2 (siblings); other -> other-child."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cascade.toml").write_text("")
    write_image(root, "a", 'base = "127.0.0.1:5000/base:1"\n', {"a.txt": "a", ".dockerignore": "*.log\n"})
    write_image(root, "a1", 'parent = "a"\n', {"a1.txt": "a1"})
    write_image(root, "a2", 'parent = "a"\n', {"a2.txt": "a2"})
    write_image(root, "a1x", 'parent = "a1"\n', {"leaf.txt": "leaf"})
    write_image(root, "other", 'base = "127.0.0.1:5000/other:1"\n', {"o.txt": "o"})
    write_image(root, "other-child", 'parent = "other"\n', {"oc.txt": "oc"})
    return root


# `runtime` copies what `compile` made: `FROM ${COMPILED} AS compiled` then `COPY --from=compiled`.
INPUT_DOCKERFILE = (
    "ARG BASE_IMAGE\nARG COMPILED\nFROM ${COMPILED} AS compiled\n"
    "FROM ${BASE_IMAGE}\nCOPY --from=compiled /app /compiled\nCOPY . /app\n"
)


def write_dag(root: Path) -> Path:
    """compile (a base image); runtime (a base image) with input COMPILED = compile; app on runtime;
    other on its own. Names sort so that the input comes after its consumer by name."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cascade.toml").write_text("")
    write_image(
        root, "zcompile", 'base = "127.0.0.1:5000/devel:1"\n[smoke]\nimports = ["compiled"]\n', {"c.txt": "c"}
    )
    write_image(
        root,
        "runtime",
        'base = "127.0.0.1:5000/base:1"\n[inputs]\nCOMPILED = "zcompile"\n[smoke]\nimports = ["json"]\n',
        {"r.txt": "r"},
        dockerfile=INPUT_DOCKERFILE,
    )
    write_image(root, "app", 'parent = "runtime"\n', {"app.txt": "app"})
    write_image(root, "other", 'base = "127.0.0.1:5000/other:1"\n', {"o.txt": "o"})
    return root
