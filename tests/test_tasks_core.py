"""`invoke hashes`, `invoke plan` and `invoke graph` as a user runs them, in a temporary repository."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from image_repo import write_cascade

REPOSITORY = Path(__file__).resolve().parents[1]


def invoke(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPOSITORY), *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root), "COLUMNS": "200"},
    )


def test_hashes_write_then_check(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    first = invoke(root, "hashes", "--check")
    assert first.returncode == 1
    assert "a: (none) → " in first.stdout
    written = invoke(root, "hashes", "--write")
    assert written.returncode == 0, written.stderr
    assert (root / "images.lock.json").exists()
    assert invoke(root, "hashes").returncode == 0
    (root / "images/a2/a2.txt").write_text("moved")
    stale = invoke(root, "hashes", "--check")
    assert stale.returncode == 1
    assert stale.stdout.splitlines()[0].startswith("a2: ")
    assert "changed a2.txt" in stale.stdout


def test_plan_json_lists_images_in_dependency_order(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    invoke(root, "hashes", "--write")
    (root / "images/a1/a1.txt").write_text("moved")
    result = invoke(root, "plan", "--json", "--offline")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    names = [item["name"] for item in document["images"]]
    assert names == ["a", "a1", "a1x", "a2", "other", "other-child"]
    by_name = {item["name"]: item for item in document["images"]}
    assert by_name["a1"]["locked"] is False and by_name["a1"]["reasons"] == ["changed a1.txt"]
    assert by_name["a1x"]["reasons"] == ["parent a1 changed"]
    assert by_name["a2"]["locked"] is True and by_name["a2"]["reasons"] == []
    assert by_name["a"]["base"] == "127.0.0.1:5000/base:1" and by_name["a"]["base_pinned"] is False
    assert by_name["a"]["unpinned"] == ["base"] and by_name["a1"]["unpinned"] == []
    assert by_name["a1"]["tag"] == by_name["a1"]["hash"][:16]
    assert by_name["a1"]["lock_hash"] != by_name["a1"]["hash"]
    assert {"name", "parent", "base", "hash", "tag", "locked", "lock_hash", "reasons"} <= set(by_name["a"])


def test_plan_with_an_unknown_build_state_exits_3_and_says_why_once(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    # Nothing listens on port 9 of loopback: the registry cannot be reached.
    result = invoke(root, "plan", "--registry", "127.0.0.1:9/arr")
    assert result.returncode == 3, result.stderr
    assert result.stdout.count("unknown") == 6 and "cannot reach" not in result.stdout
    assert "unpinned" in result.stdout
    assert result.stderr.count("cannot reach") == 1, result.stderr
    everything = "a, a1, a1x, a2, other, other-child"
    assert result.stderr.startswith(
        f"error: build state unknown for {everything}: registry 127.0.0.1:9: cannot"
    )
    assert result.stderr.count("\n") == 1
    as_json = invoke(root, "plan", "--registry", "127.0.0.1:9/arr", "--json")
    assert as_json.returncode == 3 and as_json.stderr.count("cannot reach") == 1
    assert {item["build_state"] for item in json.loads(as_json.stdout)["images"]} == {"unknown"}
    offline = invoke(root, "plan", "--registry", "127.0.0.1:9/arr", "--offline")
    assert offline.returncode == 0 and offline.stderr == ""


def test_graph_formats(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    invoke(root, "hashes", "--write")
    (root / "images/other/o.txt").write_text("moved")
    tree = invoke(root, "graph")
    assert tree.returncode == 0, tree.stderr
    assert "other" in tree.stdout and "[stale]" in tree.stdout
    assert "a1x" in tree.stdout.split("other")[0]
    mermaid = invoke(root, "graph", "--format", "mermaid").stdout
    assert mermaid.startswith("graph TD") and "(stale)" in mermaid
    dot = invoke(root, "graph", "--format", "dot").stdout
    assert dot.startswith("digraph cascade {") and '"a1" -> "a1x";' in dot
    bad = invoke(root, "graph", "--format", "svg")
    assert bad.returncode == 2 and "unknown graph format" in bad.stderr


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    root = write_cascade(tmp_path)
    (root / "images/a/image.toml").write_text('base = "x:1"\nbogus = 1\n')
    for args in (("hashes",), ("plan", "--offline"), ("graph",)):
        result = invoke(root, *args)
        assert result.returncode == 2, args
        assert result.stderr.strip().count("\n") == 0
        assert "images/a/image.toml: unknown key bogus" in result.stderr
