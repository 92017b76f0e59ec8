"""Images with more than one input: `[inputs]` in image.toml, through every part of the repository.

write_dag: zcompile; runtime (input COMPILED = zcompile); app on runtime; other on its own. The
input sorts after its consumer by name, so nothing here passes by the accident of name order.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from image_repo import INPUT_DOCKERFILE, WIRED_DOCKERFILE, write_dag, write_image
from test_cascade import FakeBackend, FakeStore
from test_tasks_core import invoke

from imagecascade.core.build_request import Provenance, build_request
from imagecascade.core.cascade import run_cascade
from imagecascade.core.checks import effective_checks
from imagecascade.core.decisions import CascadeOptions
from imagecascade.core.declaration import load_images
from imagecascade.core.graph import ancestors, dependency_order, descendants, render
from imagecascade.core.hook import main, write_hashes
from imagecascade.core.plan import Plan, compute_plan, plan_document, stale_lines
from imagecascade.core.settings import load_settings
from imagecascade.errors import NotBuilt

REGISTRY = "127.0.0.1:5000/ns"
ALL = ["zcompile", "runtime", "app", "other"]  # dependency order


def plan_of(root: Path, registry: str = REGISTRY) -> Plan:
    return compute_plan(load_settings(root).with_overrides(registry=registry), use_cache=False)


def hashes(root: Path) -> dict[str, str]:
    return {image.name: image.hash for image in plan_of(root).images}


# --- declaration ------------------------------------------------------------------------------


def test_inputs_are_read_and_ordered_before_their_consumers(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    specs = load_images(load_settings(root))
    assert specs["runtime"].inputs == {"COMPILED": "zcompile"}
    assert specs["runtime"].dependencies == ("zcompile",)
    assert specs["app"].dependencies == ("runtime",)
    assert list(specs) == ALL
    assert dependency_order(specs) == ALL


def test_ancestors_and_descendants_follow_inputs(tmp_path: Path) -> None:
    specs = load_images(load_settings(write_dag(tmp_path)))
    assert ancestors(specs, "app") == ["zcompile", "runtime"]
    assert descendants(specs, "zcompile") == ["runtime", "app"]
    assert descendants(specs, "other") == []


def _runtime(toml_tail: str, dockerfile: str = INPUT_DOCKERFILE):  # type: ignore[no-untyped-def]
    def change(root: Path) -> None:
        write_image(root, "runtime", 'base = "127.0.0.1:5000/base:1"\n' + toml_tail, dockerfile=dockerfile)

    return change


def _input_cycle(root: Path) -> None:
    # zcompile takes app as an input; app is built on runtime, which takes zcompile.
    write_image(
        root,
        "zcompile",
        'base = "127.0.0.1:5000/devel:1"\n[inputs]\nLATER = "app"\n',
        dockerfile="ARG BASE_IMAGE\nARG LATER\nFROM ${LATER} AS later\nFROM ${BASE_IMAGE}\n",
    )


BAD_DECLARATIONS = [
    ("not a table", _runtime('inputs = "zcompile"\n'), "[inputs] must be a table"),
    ("not a string", _runtime("[inputs]\nCOMPILED = 1\n"), "inputs.COMPILED must be an image name"),
    ("bad arg name", _runtime('[inputs]\n"COMPILED-X" = "zcompile"\n'), "is not a valid build arg name"),
    ("BASE_IMAGE", _runtime('[inputs]\nBASE_IMAGE = "zcompile"\n'), "BASE_IMAGE is set from"),
    (
        "in build_args too",
        _runtime('[build_args]\nCOMPILED = "x"\n[inputs]\nCOMPILED = "zcompile"\n'),
        "build arg COMPILED is declared in both [build_args] and [inputs]",
    ),
    ("unknown image", _runtime('[inputs]\nCOMPILED = "nope"\n'), "inputs.COMPILED: unknown image 'nope'"),
    ("bad image name", _runtime('[inputs]\nCOMPILED = "No/pe"\n'), "is not an image name"),
    ("itself", _runtime('[inputs]\nCOMPILED = "runtime"\n'), "an image cannot be its own input"),
    (
        "also the parent",
        lambda root: write_image(
            root,
            "runtime",
            'parent = "zcompile"\n[inputs]\nCOMPILED = "zcompile"\n',
            dockerfile=INPUT_DOCKERFILE,
        ),
        "zcompile is already the parent",
    ),
    ("cycle through inputs", _input_cycle, "cycle through inputs"),
    (
        "required input",
        _runtime('required_build_args = ["COMPILED"]\n[inputs]\nCOMPILED = "zcompile"\n'),
        "required_build_args: COMPILED is an input",
    ),
    (
        "arg not declared before FROM",
        _runtime('[inputs]\nCOMPILED = "zcompile"\n', dockerfile=WIRED_DOCKERFILE + "ARG COMPILED\n"),
        "declares no `ARG COMPILED` before its first FROM",
    ),
]


@pytest.mark.parametrize(
    ("change", "problem"), [case[1:] for case in BAD_DECLARATIONS], ids=[case[0] for case in BAD_DECLARATIONS]
)
def test_bad_inputs_are_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, problem: str
) -> None:
    root = write_dag(tmp_path)
    write_hashes(root, io.StringIO())
    lock_before = (root / "images.lock.json").read_bytes()
    change(root)

    code = main(["--root", str(root)])

    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "image.toml" in lines[0] and problem in lines[0], lines[0]
    assert captured.out == ""
    assert (root / "images.lock.json").read_bytes() == lock_before


def test_a_cycle_names_how_each_image_depends_on_the_next(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    _input_cycle(root)
    with pytest.raises(
        Exception, match=r"cycle through inputs app -\(parent\)-> runtime -\(input COMPILED\)->"
    ):
        load_images(load_settings(root))


def test_bad_inputs_through_invoke_plan(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    _runtime('[inputs]\nCOMPILED = "nope"\n')(root)
    done = invoke(root, "plan", "--offline")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "unknown image 'nope'" in done.stderr


# --- freshness and the lock -------------------------------------------------------------------


def test_an_input_change_moves_its_consumers_and_their_descendants_only(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    before = hashes(root)
    (root / "images/zcompile/c.txt").write_text("c 2")
    after = hashes(root)
    assert {name for name in ALL if before[name] != after[name]} == {"zcompile", "runtime", "app"}


def test_a_consumer_change_does_not_move_its_input(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    before = hashes(root)
    (root / "images/runtime/r.txt").write_text("r 2")
    after = hashes(root)
    assert {name for name in ALL if before[name] != after[name]} == {"runtime", "app"}


def test_the_input_hash_is_part_of_the_hash_under_its_arg_name(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    both = INPUT_DOCKERFILE.replace("ARG COMPILED\n", "ARG COMPILED\nARG BUILT\n")
    found = set()
    for arg in ("COMPILED", "BUILT"):
        write_image(
            root,
            "runtime",
            f'base = "127.0.0.1:5000/base:1"\n[inputs]\n{arg} = "zcompile"\n',
            dockerfile=both,
        )
        found.add(hashes(root)["runtime"])
    assert len(found) == 2


def _lock_reasons(root: Path) -> dict[str, str]:
    return {line.split(":")[0]: line.split(": ", 2)[2] for line in stale_lines(plan_of(root))}


def test_the_lock_records_inputs_and_check_explains_their_changes(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    write_hashes(root, io.StringIO())
    recorded = json.loads((root / "images.lock.json").read_text())["images"]
    assert recorded["runtime"]["inputs"] == {
        "COMPILED": {"image": "zcompile", "hash": recorded["zcompile"]["hash"]}
    }
    assert recorded["app"]["inputs"] == {}

    (root / "images/zcompile/c.txt").write_text("c 2")
    reasons = _lock_reasons(root)
    assert reasons["runtime"] == "input COMPILED zcompile changed"
    assert reasons["app"] == "parent runtime changed"
    assert "other" not in reasons

    write_hashes(root, io.StringIO())
    write_image(root, "other2", 'base = "127.0.0.1:5000/other:1"\n', {"o.txt": "o2"})
    _runtime('[inputs]\nCOMPILED = "other2"\n')(root)
    assert _lock_reasons(root)["runtime"] == "input COMPILED zcompile → other2"
    _runtime(
        '[inputs]\nCOMPILED = "zcompile"\nEXTRA = "other2"\n',
        INPUT_DOCKERFILE.replace("\n", "\nARG EXTRA\n", 1),
    )(root)
    assert "input EXTRA other2 added" in _lock_reasons(root)["runtime"]
    write_hashes(root, io.StringIO())
    _runtime("", INPUT_DOCKERFILE.replace("\n", "\nARG EXTRA\n", 1))(root)
    reasons = _lock_reasons(root)["runtime"]
    assert (
        "input COMPILED removed (was zcompile)" in reasons and "input EXTRA removed (was other2)" in reasons
    )


def test_a_lock_written_before_inputs_existed_still_reads(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    write_hashes(root, io.StringIO())
    document = json.loads((root / "images.lock.json").read_text())
    for entry in document["images"].values():
        del entry["inputs"]
    (root / "images.lock.json").write_text(json.dumps(document))
    assert plan_of(root).lock_is_current  # the hashes say everything; the record is read as it is
    (root / "images/zcompile/c.txt").write_text("c 2")
    assert _lock_reasons(root)["runtime"] == "input COMPILED zcompile added"


# --- plan, graph ------------------------------------------------------------------------------


def test_plan_json_lists_inputs_and_their_exact_references(tmp_path: Path) -> None:
    plan = plan_of(write_dag(tmp_path))
    document = {item["name"]: item for item in plan_document(plan)["images"]}
    assert document["runtime"]["inputs"] == {"COMPILED": "zcompile"}
    assert document["runtime"]["input_references"] == {
        "COMPILED": f"{REGISTRY}/zcompile:{plan.get('zcompile').tag}"
    }
    assert document["app"]["inputs"] == {} and document["app"]["input_references"] == {}
    assert [item["name"] for item in plan_document(plan)["images"]] == ALL


def test_plan_json_through_invoke(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    done = invoke(root, "plan", "--json", "--offline")
    assert done.returncode == 0, done.stderr
    images = {item["name"]: item for item in json.loads(done.stdout)["images"]}
    assert images["runtime"]["inputs"] == {"COMPILED": "zcompile"}
    table = invoke(root, "plan", "--offline")
    assert "COMPILED=zcompile" in table.stdout


def test_graph_draws_input_edges_apart_from_parent_edges(tmp_path: Path) -> None:
    plan = plan_of(write_dag(tmp_path))
    labels = {image.name: image.tag for image in plan.images}
    tree = render(plan.specs, labels, ["runtime"], "tree")
    runtime_line = next(line for line in tree.splitlines() if "runtime" in line and "──" in line)
    assert runtime_line.endswith("[stale] ⇠ COMPILED=zcompile")
    assert tree.index("zcompile ") < tree.index("runtime ")
    mermaid = render(plan.specs, labels, [], "mermaid").splitlines()
    ids = {line.split("[")[0].strip(): line for line in mermaid if '["' in line and ":::" not in line}
    by_name = {line.split('["')[1].split()[0]: node for node, line in ids.items()}
    assert f'  {by_name["zcompile"]} -.->|"input COMPILED"| {by_name["runtime"]}' in mermaid
    assert f"  {by_name['runtime']} --> {by_name['app']}" in mermaid
    dot = render(plan.specs, labels, [], "dot")
    assert '"zcompile" -> "runtime" [style=dashed arrowhead=empty label="input COMPILED"];' in dot
    assert '"runtime" -> "app";' in dot


def test_graph_through_invoke_in_every_format(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    for fmt, marker in (("tree", "⇠ COMPILED=zcompile"), ("mermaid", "-.->"), ("dot", "style=dashed")):
        done = invoke(root, "graph", "--format", fmt)
        assert done.returncode == 0 and marker in done.stdout, (fmt, done.stdout, done.stderr)


# --- the cascade ------------------------------------------------------------------------------


def run(plan: Plan, backend: FakeBackend, store: Any = None, **options: Any) -> Any:
    return run_cascade(plan, store if store is not None else FakeStore(), backend, CascadeOptions(**options))


def test_an_image_waits_for_its_parent_and_every_input(tmp_path: Path) -> None:
    plan = plan_of(write_dag(tmp_path))
    backend = FakeBackend(seconds=0.1)
    assert run(plan, backend, jobs=3).ok
    assert backend.spans["zcompile"][1] <= backend.spans["runtime"][0]
    assert backend.spans["runtime"][1] <= backend.spans["app"][0]


def test_the_input_build_arg_is_the_inputs_exact_hash_reference(tmp_path: Path) -> None:
    plan = plan_of(write_dag(tmp_path))
    backend = FakeBackend()
    run(plan, backend)
    args = backend.request("runtime").build_args
    assert args["COMPILED"] == f"{REGISTRY}/zcompile:{plan.get('zcompile').tag}"
    assert args["BASE_IMAGE"] == "127.0.0.1:5000/base:1"
    assert "COMPILED" not in backend.request("app").build_args
    local = plan_of(tmp_path, registry="")
    request = build_request(local, local.get("runtime"), Provenance("unknown", ""), "2026-01-01T00:00:00Z")
    assert request.build_args["COMPILED"] == f"zcompile:{local.get('zcompile').tag}"


def test_a_failed_input_blocks_its_consumers_only(tmp_path: Path) -> None:
    backend = FakeBackend(fail={"zcompile"})
    result = run(plan_of(write_dag(tmp_path)), backend)
    outcomes = {item.name: (item.outcome, item.reason) for item in result.results}
    assert outcomes["runtime"] == ("blocked", "input COMPILED zcompile failed")
    assert outcomes["app"] == ("blocked", "parent runtime was not built")
    assert outcomes["other"][0] == "built"
    assert sorted(backend.built) == ["other", "zcompile"]


def test_an_input_that_cannot_be_built_blocks_its_consumers(tmp_path: Path) -> None:
    root = write_dag(tmp_path)
    toml = 'base = "127.0.0.1:5000/devel:1"\nrequired_build_args = ["SUM"]\n[build_args]\nSUM = ""\n'
    write_image(root, "zcompile", toml, {"c.txt": "c"})
    backend = FakeBackend()
    result = run(plan_of(root), backend)
    outcomes = {item.name: (item.outcome, item.reason) for item in result.results}
    assert outcomes["zcompile"] == ("refused", "cannot build: build arg SUM is empty")
    assert outcomes["runtime"] == ("blocked", "input COMPILED zcompile cannot be built")
    assert outcomes["app"] == ("blocked", "parent runtime cannot be built")
    assert backend.built == ["other"]


def test_a_rebuilt_input_is_the_reason_its_consumer_builds(tmp_path: Path) -> None:
    result = run(
        plan_of(write_dag(tmp_path)), FakeBackend(), store=FakeStore(present={"other"}), dry_run=True
    )
    reasons = {item.name: item.reason for item in result.results}
    assert reasons["runtime"] == "missing in fake store (input COMPILED zcompile is rebuilt)"


def test_a_missing_input_outside_the_selection_stops_unless_with_parents(tmp_path: Path) -> None:
    plan = plan_of(write_dag(tmp_path))
    backend = FakeBackend()
    with pytest.raises(
        NotBuilt, match=r"runtime: input COMPILED zcompile:[0-9a-f]{16} is missing in fake store"
    ):
        run(plan, backend, only=("runtime",))
    assert backend.requests == []
    result = run(plan, backend, only=("app",), with_parents=True)
    assert result.ok and backend.built == ["zcompile", "runtime", "app"]
    present = FakeBackend()
    assert run(plan, present, store=FakeStore(present={"zcompile"}), only=("runtime",)).ok
    assert present.built == ["runtime"]


def test_a_forced_consumer_does_not_rebuild_its_present_input(tmp_path: Path) -> None:
    backend = FakeBackend()
    options = {"only": ("runtime",), "with_parents": True, "force": True}
    assert run(plan_of(write_dag(tmp_path)), backend, store=FakeStore(present=ALL), **options).ok
    assert backend.built == ["runtime"]


def test_independent_lineages_still_build_together(tmp_path: Path) -> None:
    backend = FakeBackend(seconds=0.2)
    cancelled = threading.Event()
    result = run_cascade(
        plan_of(write_dag(tmp_path)), FakeStore(), backend, CascadeOptions(jobs=2), cancelled=cancelled
    )
    assert result.ok
    other, compile_ = backend.spans["other"], backend.spans["zcompile"]
    assert other[0] < compile_[1] and compile_[0] < other[1]  # they overlapped


# --- smoke: inputs are not inherited -----------------------------------------------------------


def test_smoke_checks_follow_the_parent_never_an_input(tmp_path: Path) -> None:
    specs = load_images(load_settings(write_dag(tmp_path)))
    assert effective_checks(specs, "runtime").imports == ("json",)
    assert effective_checks(specs, "app").imports == ("json",)


# --- on the real engine -------------------------------------------------------------------------

COMPILE_DOCKERFILE = (
    "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY compile.txt /src/compile.txt\n"
    "RUN mkdir -p /out && cat /src/compile.txt > /out/artifact && echo compiled >> /out/artifact\n"
)
RUNTIME_DOCKERFILE = (
    "ARG BASE_IMAGE\nARG COMPILED\nFROM ${COMPILED} AS compiled\nFROM ${BASE_IMAGE}\n"
    "COPY --from=compiled /out/artifact /opt/artifact\nCOPY runtime.txt /opt/runtime.txt\n"
)


def _add_compile_and_runtime(repo: Any) -> None:
    """compile (on root's pinned base) makes an artifact; runtime (on root) copies it as input."""
    base = (repo.root / "images/root/image.toml").read_text().split("base = ")[1].strip()
    repo.write("images/compile/image.toml", f"base = {base}\n")
    repo.write("images/compile/Dockerfile", COMPILE_DOCKERFILE)
    repo.write("images/compile/compile.txt", "source 1\n")
    repo.write("images/runtime/image.toml", 'parent = "root"\n[inputs]\nCOMPILED = "compile"\n')
    repo.write("images/runtime/Dockerfile", RUNTIME_DOCKERFILE)
    repo.write("images/runtime/runtime.txt", "runtime 1\n")


def _artifact(repo: Any) -> str:
    reference = f"{repo.registry}/runtime:{repo.plan().get('runtime').tag}"
    output = repo.engine.client.containers.run(
        reference, ["cat", "/opt/artifact"], network_mode="none", remove=True
    )
    return bytes(output).decode()


@pytest.mark.engine
def test_copy_from_an_input_on_the_real_engine_and_what_rebuilds(cascade_repo: Any) -> None:
    from test_cascade import SpyBackend

    _add_compile_and_runtime(cascade_repo)
    first = cascade_repo.cascade()
    assert first.ok, [(item.name, item.reason, item.log_tail) for item in first.results]
    assert sorted(first.names("built")) == ["compile", "leaf", "mid", "other", "root", "runtime"]
    assert _artifact(cascade_repo) == "source 1\ncompiled\n"

    cascade_repo.write("images/runtime/runtime.txt", "runtime 2\n")  # the consumer only
    before = {image.name: image.hash for image in cascade_repo.plan().images}
    spy = SpyBackend(cascade_repo.engine)
    assert cascade_repo.cascade(backend=spy).ok
    assert spy.built == ["runtime"]

    cascade_repo.write("images/compile/compile.txt", "source 2\n")  # the input
    after = {image.name: image.hash for image in cascade_repo.plan().images}
    assert {name for name in after if after[name] != before[name]} == {"compile", "runtime"}
    spy = SpyBackend(cascade_repo.engine)
    assert cascade_repo.cascade(backend=spy).ok
    assert spy.built == ["compile", "runtime"]
    assert _artifact(cascade_repo) == "source 2\ncompiled\n"


@pytest.mark.engine
def test_a_failing_input_blocks_its_consumer_on_the_real_engine(cascade_repo: Any) -> None:
    from test_cascade import SpyBackend

    _add_compile_and_runtime(cascade_repo)
    cascade_repo.write(
        "images/compile/Dockerfile", COMPILE_DOCKERFILE + "RUN echo 'compile broke' && exit 5\n"
    )
    done = cascade_repo.invoke("cascade", "--jobs", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed: compile; blocked: runtime" in done.stderr
    assert "input COMPILED compile failed" in done.stdout
    assert not any(
        "/runtime:" in reference or "/compile:" in reference for reference in cascade_repo.built_references()
    )
    alone = cascade_repo.invoke("build-runtime")
    assert alone.returncode == 4 and "input COMPILED compile:" in alone.stderr, alone.stderr
    cascade_repo.write("images/compile/Dockerfile", COMPILE_DOCKERFILE)
    spy = SpyBackend(cascade_repo.engine)
    result = cascade_repo.cascade(backend=spy, only=("runtime",), with_parents=True)
    assert result.ok and spy.built == ["compile", "runtime"]
