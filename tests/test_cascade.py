"""The cascade: scheduling against a fake backend, then whole runs on a real engine and registry."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import CascadeRepo, RegistryServer, git
from image_repo import write_cascade
from registry_double import Answer, ScriptedServer

from imagecascade.core.backend import BuildError, BuildEvent, BuildOutcome, BuildRequest
from imagecascade.core.build_request import read_provenance
from imagecascade.core.cascade import CascadeResult, run_cascade
from imagecascade.core.decisions import CascadeOptions
from imagecascade.core.plan import Plan, compute_plan
from imagecascade.core.settings import load_settings
from imagecascade.engines.store import RegistryStore
from imagecascade.errors import BackendError, ConfigError, NotBuilt

ALL = [
    "a",
    "a1",
    "a1x",
    "a2",
    "other",
    "other-child",
]  # write_cascade: a → a1 → a1x, a → a2; other → other-child


class FakeStore:
    description = "fake store"

    def __init__(
        self, present: Iterable[str] = (), error: str = "", latest_elsewhere: Iterable[str] = ()
    ) -> None:
        self.present = set(present)
        self.error = error
        self.latest_elsewhere = set(latest_elsewhere)
        self.asked: list[str] = []
        self.moved: list[tuple[str, str]] = []

    def has(self, name: str, tag: str) -> bool:
        self.asked.append(name)
        if self.error:
            raise BackendError(self.error)
        return name in self.present

    def latest_is(self, name: str, tag: str) -> bool:
        return name not in self.latest_elsewhere

    def move_latest(self, name: str, tag: str) -> None:
        self.moved.append((name, tag))
        self.latest_elsewhere.discard(name)


class FakeBackend:
    """Records what it is asked to build; each build takes `seconds` unless cancelled."""

    name = "fake"

    def __init__(
        self,
        *,
        seconds: float = 0.0,
        fail: Iterable[str] = (),
        backend_error: Iterable[str] = (),
        on_build: Callable[[str], None] | None = None,
    ) -> None:
        self.seconds = seconds
        self.fail = set(fail)
        self.backend_error = set(backend_error)
        self.on_build = on_build
        self.requests: list[BuildRequest] = []
        self.spans: dict[str, tuple[float, float]] = {}
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def build(
        self, request: BuildRequest, on_event: Callable[[BuildEvent], None], cancelled: threading.Event
    ) -> BuildOutcome:
        name = request.image.name
        with self._lock:
            self.requests.append(request)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        started = time.monotonic()
        try:
            on_event(BuildEvent(image=name, kind="step", step=1, steps=1, message="RUN make"))
            if self.on_build is not None:
                self.on_build(name)
            if name in self.backend_error:
                raise BackendError("registry 127.0.0.1:9: cannot reach it (refused)")
            if cancelled.wait(self.seconds):
                raise BuildError(f"{name}: stopped")
            if name in self.fail:
                raise BuildError(f"{name}: build failed", tuple(f"line {index}" for index in range(50)))
            return BuildOutcome(digest=f"sha256:{name}")
        finally:
            with self._lock:
                self.active -= 1
                self.spans[name] = (started, time.monotonic())

    @property
    def built(self) -> list[str]:
        return [request.image.name for request in self.requests]

    def request(self, name: str) -> BuildRequest:
        return next(request for request in self.requests if request.image.name == name)


def make_plan(tmp_path: Path, registry: str = "127.0.0.1:5000/ns") -> Plan:
    root = write_cascade(tmp_path / "repo")
    return compute_plan(load_settings(root).with_overrides(registry=registry), use_cache=False)


def run(plan: Plan, backend: FakeBackend, store: Any = None, **options: Any) -> CascadeResult:
    return run_cascade(plan, store if store is not None else FakeStore(), backend, CascadeOptions(**options))


def test_parents_build_before_children_and_lineages_run_together(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    backend = FakeBackend(seconds=0.15)
    result = run(plan, backend, jobs=2)
    assert result.ok and sorted(result.names("built")) == sorted(ALL)
    for image in plan.images:
        if image.spec.parent:
            assert backend.spans[image.spec.parent][1] <= backend.spans[image.name][0], image.name
    assert backend.max_active == 2


@pytest.mark.parametrize("jobs", [1, 3])
def test_jobs_bounds_how_many_build_at_once(tmp_path: Path, jobs: int) -> None:
    backend = FakeBackend(seconds=0.05)
    assert run(make_plan(tmp_path), backend, jobs=jobs).ok
    assert backend.max_active == jobs


@pytest.mark.parametrize(
    ("registry", "prefix"), [("127.0.0.1:5000/ns", "127.0.0.1:5000/ns/"), ("", "")], ids=["registry", "local"]
)
def test_a_child_builds_from_its_parents_exact_hash_tag(tmp_path: Path, registry: str, prefix: str) -> None:
    plan = make_plan(tmp_path, registry)
    backend = FakeBackend()
    run(plan, backend)
    a, a1 = plan.get("a"), plan.get("a1")
    assert backend.request("a").build_args["BASE_IMAGE"] == "127.0.0.1:5000/base:1"  # the base as declared
    assert backend.request("a1").build_args["BASE_IMAGE"] == f"{prefix}a:{a.tag}"
    assert backend.request("a1").references == (f"{prefix}a1:{a1.tag}", f"{prefix}a1:latest")
    assert backend.request("a1").registry == registry
    assert not any(request.base_reference.endswith(":latest") for request in backend.requests)


def test_labels_carry_provenance_and_hashes(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    backend = FakeBackend()
    run(plan, backend)
    a, a1 = plan.get("a"), plan.get("a1")
    labels = backend.request("a1").labels
    assert labels["org.opencontainers.image.title"] == "a1"
    assert labels["org.opencontainers.image.revision"] == "unknown"  # not a git repository
    assert labels["io.imagecascade.freshness-hash"] == a1.hash
    assert labels["io.imagecascade.parent-hash"] == a.hash
    assert backend.request("a").labels["io.imagecascade.parent-hash"] == "127.0.0.1:5000/base:1"
    created = labels["org.opencontainers.image.created"]
    assert time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")


def test_provenance_from_git(tmp_path: Path) -> None:
    root = write_cascade(tmp_path / "repo")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    commit = git(root, "rev-parse", "HEAD")
    assert read_provenance(root).revision == commit
    assert read_provenance(root).source == ""
    git(root, "remote", "add", "origin", "https://user:token@git.example.invalid/team/images.git")
    assert read_provenance(root).source == "https://git.example.invalid/team/images.git"
    (root / "images" / "a" / "a.txt").write_text("changed")
    assert read_provenance(root).revision == f"{commit}-dirty"


def test_a_failure_blocks_only_its_descendants(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    backend = FakeBackend(fail={"a1"})
    result = run(plan, backend)
    outcomes = {item.name: item.outcome for item in result.results}
    assert outcomes == {
        "a": "built",
        "a1": "failed",
        "a1x": "blocked",
        "a2": "built",
        "other": "built",
        "other-child": "built",
    }
    assert not result.ok
    failed = next(item for item in result.results if item.name == "a1")
    assert len(failed.log_tail) == 50 and failed.log_tail[-1] == "line 49"  # as the backend gave it
    assert "a1x" not in backend.built


def test_only_missing_images_are_built(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    backend = FakeBackend()
    result = run(plan, backend, store=FakeStore(present={"a", "a2", "other"}))
    assert sorted(backend.built) == ["a1", "a1x", "other-child"]
    assert sorted(result.names("present")) == ["a", "a2", "other"]


def test_everything_present_builds_nothing(tmp_path: Path) -> None:
    backend = FakeBackend()
    result = run(make_plan(tmp_path), backend, store=FakeStore(present=ALL))
    assert result.ok and backend.requests == [] and result.names("present") == ALL


def test_one_image_with_a_missing_parent_stops_unless_with_parents(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    backend = FakeBackend()
    with pytest.raises(NotBuilt, match=r"a1: parent a:[0-9a-f]{16} is missing in fake store.*--with-parents"):
        run(plan, backend, only=("a1",))
    assert backend.requests == []
    result = run(plan, backend, only=("a1",), with_parents=True)
    assert backend.built == ["a", "a1"] and result.ok


def test_unknown_image_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such image: nope"):
        run(make_plan(tmp_path), FakeBackend(), only=("nope",))


@pytest.mark.parametrize(
    ("options", "built"),
    [
        ({"force": True}, ALL),
        ({"force": True, "only": ("a1",)}, ["a1"]),
        ({"force": True, "only": ("a1x",), "with_parents": True}, ["a1x"]),  # ancestors are present: kept
    ],
)
def test_force_rebuilds_what_it_names(tmp_path: Path, options: dict[str, Any], built: list[str]) -> None:
    backend = FakeBackend()
    assert run(make_plan(tmp_path), backend, store=FakeStore(present=ALL), **options).ok
    assert sorted(backend.built) == sorted(built)


def test_dry_run_builds_nothing(tmp_path: Path) -> None:
    backend = FakeBackend()
    events: list[BuildEvent] = []
    result = run_cascade(
        make_plan(tmp_path),
        FakeStore(present={"a"}),
        backend,
        CascadeOptions(dry_run=True),
        on_event=events.append,
    )
    assert backend.requests == []
    assert result.names("would build") == [name for name in ALL if name != "a"]
    assert {event.kind for event in events} == {"state"}
    assert any(event.message.startswith("would build: missing in fake store") for event in events)


@pytest.mark.parametrize(
    "store",
    [FakeStore(error="registry 127.0.0.1:9: cannot reach it (refused)"), None],
    ids=["store-error", "registry-answers-500"],
)
def test_a_store_error_stops_before_anything_is_built(tmp_path: Path, store: Any) -> None:
    backend = FakeBackend()
    if store is None:
        # A registry that answers 500: an error, never "missing".
        with ScriptedServer([Answer(500)]) as server, pytest.raises(BackendError, match="answered 500"):
            run(make_plan(tmp_path), backend, store=RegistryStore(f"{server.address}/ns"))
    else:
        with pytest.raises(BackendError, match="cannot reach"):
            run(make_plan(tmp_path), backend, store=store)
    assert backend.requests == []


def test_a_backend_error_mid_run_stops_the_run(tmp_path: Path) -> None:
    backend = FakeBackend(backend_error={"a"}, seconds=0.3)
    result = run(make_plan(tmp_path), backend, jobs=2)
    assert "a: registry 127.0.0.1:9: cannot reach it" in result.backend_error
    assert not result.ok and not result.cancelled
    assert sorted(backend.built) == ["a", "other"]  # nothing new starts once the run stops
    assert result.outcome_of("other") == "cancelled"


def test_a_cancel_stops_running_builds_and_starts_no_more(tmp_path: Path) -> None:
    cancelled = threading.Event()
    backend = FakeBackend(seconds=30, on_build=lambda name: cancelled.set() if name == "other" else None)
    started = time.monotonic()
    result = run_cascade(
        make_plan(tmp_path), FakeStore(), backend, CascadeOptions(jobs=2), cancelled=cancelled
    )
    assert time.monotonic() - started < 5
    assert result.cancelled and not result.ok
    assert sorted(backend.built) == ["a", "other"]
    assert set(result.names("cancelled")) == set(ALL)


def test_ctrl_c_stops_running_builds(tmp_path: Path) -> None:
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()

    def interrupt(name: str) -> None:
        if name == "a":
            signal.pthread_kill(main, signal.SIGINT)

    backend = FakeBackend(seconds=30, on_build=interrupt)
    started = time.monotonic()
    result = run(make_plan(tmp_path), backend, jobs=2)
    assert time.monotonic() - started < 5
    assert result.cancelled and result.names("built") == []


def test_a_second_ctrl_c_waits_for_the_running_builds_and_keeps_what_was_built(tmp_path: Path) -> None:
    """A second Ctrl-C cannot stop threads sooner: the run still ends with a truthful result."""
    main = threading.main_thread().ident
    assert main is not None

    class SlowToStop(FakeBackend):
        def build(
            self, request: BuildRequest, on_event: Callable[[BuildEvent], None], cancelled: threading.Event
        ) -> BuildOutcome:
            if request.image.name != "a1":
                return super().build(request, on_event, cancelled)
            signal.pthread_kill(main, signal.SIGINT)
            cancelled.wait(5)
            signal.pthread_kill(main, signal.SIGINT)  # while the scheduler waits for this build
            time.sleep(0.5)  # a push being cut takes a moment
            raise BuildError("a1: push of x stopped; x is not in the registry")

    result = run(make_plan(tmp_path), SlowToStop(), jobs=1)
    assert result.cancelled and "a" in result.names("built")
    assert result.outcome_of("a1") == "cancelled"
    assert "is not in the registry" in next(item.reason for item in result.results if item.name == "a1")


def test_latest_elsewhere_is_moved_back_without_a_build(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    store = FakeStore(present=ALL, latest_elsewhere={"a2", "other"})
    preview = run(plan, FakeBackend(), store=store, dry_run=True)
    assert store.moved == [] and preview.outcome_of("a2") == "present"
    assert ":latest points elsewhere" in next(item.reason for item in preview.results if item.name == "a2")
    backend = FakeBackend()
    result = run(plan, backend, store=store)
    assert result.ok and backend.built == []
    assert store.moved == [("a2", plan.get("a2").tag), ("other", plan.get("other").tag)]
    assert {item.name for item in result.results if item.latest_moved} == {"a2", "other"}
    store.moved.clear()
    assert run(plan, FakeBackend(), store=store).ok and store.moved == []


def test_a_latest_that_cannot_be_moved_stops_the_run(tmp_path: Path) -> None:
    class Refusing(FakeStore):
        def move_latest(self, name: str, tag: str) -> None:
            raise BackendError("registry 127.0.0.1:9: PUT .../manifests/latest answered 403")

    backend = FakeBackend()
    result = run(make_plan(tmp_path), backend, store=Refusing(present={"a"}, latest_elsewhere={"a"}))
    assert "answered 403" in result.backend_error and backend.built == []


def test_events_report_each_decision_and_build(tmp_path: Path) -> None:
    events: list[BuildEvent] = []
    run_cascade(
        make_plan(tmp_path), FakeStore(present={"other"}), FakeBackend(), CascadeOptions(), events.append
    )
    kinds = {(event.image, event.kind) for event in events}
    for name in ALL:
        assert (name, "state") in kinds
    for name in set(ALL) - {"other"}:
        assert {(name, "started"), (name, "step"), (name, "finished")} <= kinds
    assert (("other", "started")) not in kinds


# Engine layer: a real Docker Engine and a real registry on loopback.


class SpyBackend:
    """The real local backend, counting the builds it is asked for."""

    name = "spy"

    def __init__(self, engine: Any) -> None:
        from imagecascade.engines.local_backend import LocalBackend

        self._inner = LocalBackend(engine)
        self.built: list[str] = []

    def build(self, request: BuildRequest, on_event: Any, cancelled: threading.Event) -> BuildOutcome:
        self.built.append(request.image.name)
        return self._inner.build(request, on_event, cancelled)


@pytest.mark.engine
def test_first_run_builds_all_with_labels_then_a_no_op_sends_nothing(cascade_repo: CascadeRepo) -> None:
    cascade_repo.write("images/leaf/notes.txt", "uncommitted\n")  # the tree is dirty now
    first = cascade_repo.cascade()
    assert first.ok and sorted(first.names("built")) == ["leaf", "mid", "other", "root"]
    _check_labels(cascade_repo, first)
    spy = SpyBackend(cascade_repo.engine)
    again = cascade_repo.cascade(backend=spy)
    assert again.ok and spy.built == []
    assert again.names("present") == ["root", "mid", "leaf", "other"]
    done = cascade_repo.invoke("cascade")
    assert done.returncode == 0, done.stderr
    for name in ("root", "mid", "leaf", "other"):
        assert _row(done.stdout, name, "present")
    assert "built" not in done.stdout


def _check_labels(cascade_repo: CascadeRepo, result: CascadeResult) -> None:
    from imagecascade.engines.registry import RegistryClient

    plan = cascade_repo.plan()
    commit = git(cascade_repo.root, "rev-parse", "HEAD")
    for image in plan.images:
        for tag in (image.tag, "latest"):
            info = cascade_repo.engine.inspect_image(f"{cascade_repo.registry}/{image.name}:{tag}")
            assert info is not None, (image.name, tag)
            labels = info.labels
            assert labels["org.opencontainers.image.title"] == image.name
            assert labels["org.opencontainers.image.revision"] == f"{commit}-dirty"
            assert labels["org.opencontainers.image.description"] == image.spec.description
            assert labels["org.opencontainers.image.source"] == ""
            assert labels["io.imagecascade.freshness-hash"] == image.hash
            expected_parent = image.parent_hash if image.parent_hash else image.spec.base
            assert labels["io.imagecascade.parent-hash"] == expected_parent
            assert time.strptime(labels["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%SZ")
        # What the registry holds under the hash tag is what was pushed.
        pushed = next(item.digest for item in result.results if item.name == image.name)
        assert pushed and pushed.startswith("sha256:")
        assert RegistryClient().manifest_digest(f"{cascade_repo.registry}/{image.name}", image.tag) == pushed


@pytest.mark.engine
def test_a_change_rebuilds_exactly_the_changed_image_and_its_descendants(cascade_repo: CascadeRepo) -> None:
    assert cascade_repo.cascade().ok
    cascade_repo.write("images/leaf/leaf.txt", "leaf 2\n")
    spy = SpyBackend(cascade_repo.engine)
    assert cascade_repo.cascade(backend=spy).ok
    assert spy.built == ["leaf"]
    cascade_repo.write("images/root/root.txt", "root 2\n")
    spy = SpyBackend(cascade_repo.engine)
    result = cascade_repo.cascade(backend=spy)
    assert result.ok and spy.built == ["root", "mid", "leaf"]
    assert result.outcome_of("other") == "present"


@pytest.mark.engine
def test_a_failing_build_blocks_its_descendants_and_a_rerun_builds_the_rest(
    cascade_repo: CascadeRepo,
) -> None:
    fine = (cascade_repo.root / "images/mid/Dockerfile").read_text()
    cascade_repo.write("images/mid/Dockerfile", fine + "RUN echo 'about to fail' && exit 3\n")
    done = cascade_repo.invoke("cascade", "--jobs", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "about to fail" in done.stdout  # the failed build's log tail
    assert "failed: mid; blocked: leaf" in done.stderr
    for name, action in (("root", "built"), ("mid", "failed"), ("leaf", "blocked"), ("other", "built")):
        assert _row(done.stdout, name, action), (name, action, done.stdout)
    assert not any(
        reference.startswith(f"{cascade_repo.registry}/mid:") for reference in cascade_repo.built_references()
    )
    cascade_repo.write("images/mid/Dockerfile", fine)
    spy = SpyBackend(cascade_repo.engine)
    result = cascade_repo.cascade(backend=spy)
    assert result.ok and spy.built == ["mid", "leaf"]


def _row(table: str, name: str, action: str) -> bool:
    """Whether the summary table has the row `│ name │ action │`."""
    return any(
        [cell.strip() for cell in line.split("│")[1:3]] == [name, action] for line in table.splitlines()
    )


@pytest.mark.engine
def test_a_stopped_registry_is_a_clear_error_and_nothing_is_built(
    cascade_repo: CascadeRepo, registry_server: RegistryServer
) -> None:
    cascade_repo.registry = f"{registry_server.address}/stopped"
    registry_server.stop()
    spy = SpyBackend(cascade_repo.engine)
    with pytest.raises(BackendError, match=rf"registry {registry_server.address}: cannot reach it"):
        cascade_repo.cascade(backend=spy)
    assert spy.built == []
    done = cascade_repo.invoke("cascade", "--registry", cascade_repo.registry)
    assert done.returncode == 3
    assert f"error: registry {registry_server.address}: cannot reach it" in done.stderr


@pytest.mark.engine
def test_a_moved_upstream_is_repinned_and_its_lineage_rebuilt(cascade_repo: CascadeRepo) -> None:
    from conftest import push_as

    assert cascade_repo.cascade().ok
    declaration = cascade_repo.root / "images/root/image.toml"
    before = declaration.read_text()
    # Move the root's upstream tag: a new image pushed under the same tag.
    engine = cascade_repo.engine
    moved_source = f"{cascade_repo.registry}/upstream:bookworm"
    container = engine.client.containers.create(moved_source, command=["true"], network_mode="none")
    try:
        container.commit(repository=f"{cascade_repo.registry}/moved", tag="1", changes=["LABEL moved=yes"])
    finally:
        container.remove(force=True)
    new_digest = push_as(engine, f"{cascade_repo.registry}/moved:1", moved_source)
    check = cascade_repo.invoke("upstream", "--check")
    assert check.returncode == 1 and "root:" in check.stdout and "other" not in check.stdout, check.stdout
    assert declaration.read_text() == before
    repin = cascade_repo.invoke("upstream")
    assert repin.returncode == 0, repin.stderr
    assert declaration.read_text() == before.replace(before.split("@")[1].split('"')[0], new_digest)
    spy = SpyBackend(engine)
    result = cascade_repo.cascade(backend=spy)
    assert result.ok and spy.built == ["root", "mid", "leaf"]
    assert result.outcome_of("other") == "present"
    assert cascade_repo.invoke("upstream", "--check").returncode == 0


@pytest.mark.engine
def test_dry_run_through_invoke_touches_nothing(cascade_repo: CascadeRepo) -> None:
    done = cascade_repo.invoke("cascade", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "nothing was built" in done.stdout and "missing in" in done.stdout
    assert cascade_repo.built_references() == []
    listing = cascade_repo.invoke("--list")
    assert "build-root" in listing.stdout and "the root of the chain" in listing.stdout
    alone = cascade_repo.invoke("build-leaf")
    assert alone.returncode == 4 and "--with-parents" in alone.stderr
    assert cascade_repo.built_references() == []
