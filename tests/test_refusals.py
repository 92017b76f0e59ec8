"""Images that cannot be built are known before anything is built: plan says so, cascade refuses them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import CascadeRepo
from image_repo import write_cascade, write_image
from test_cascade import FakeBackend, FakeStore, run
from test_tasks_core import invoke

from imagecascade.core.declaration import load_image
from imagecascade.core.plan import compute_plan
from imagecascade.core.refusals import Refusal
from imagecascade.core.settings import load_settings
from imagecascade.errors import ConfigError

REPOSITORY = Path(__file__).resolve().parents[1]
REQUIRED = 'required_build_args = ["SHA"]\n'
REFUSED_A1 = f'parent = "a"\n{REQUIRED}[build_args]\nSHA = ""\n'


def _repo(tmp_path: Path, a2_toml: str) -> Path:
    root = write_cascade(tmp_path / "repo")
    write_image(root, "a2", a2_toml, {"a2.txt": "a2"})
    return root


def _plan(root: Path) -> Any:
    return compute_plan(load_settings(root).with_overrides(registry="127.0.0.1:5000/ns"), use_cache=False)


@pytest.mark.parametrize(
    ("toml", "reasons"),
    [
        (f'parent = "a"\n{REQUIRED}[build_args]\nSHA = ""\n', ["build arg SHA is empty"]),
        (f'parent = "a"\n{REQUIRED}[build_args]\nSHA = "  "\n', ["build arg SHA is empty"]),
        (f'parent = "a"\n{REQUIRED}', ["build arg SHA is not set"]),
        (
            'parent = "a"\nrequired_build_args = ["X", "Y", "X"]\n[build_args]\nY = ""\n',
            ["build arg X is not set", "build arg Y is empty"],
        ),
        (f'parent = "a"\n{REQUIRED}[build_args]\nSHA = "0f"\n', []),
        ('parent = "a"\n', []),
    ],
)
def test_required_build_args_make_refusals(tmp_path: Path, toml: str, reasons: list[str]) -> None:
    root = _repo(tmp_path, toml)
    image = _plan(root).get("a2")
    assert [refusal.reason for refusal in image.cannot_build] == reasons
    assert all(refusal.fix.startswith("set build_args.") for refusal in image.cannot_build)
    assert all(refusal.fix.endswith(" in images/a2/image.toml") for refusal in image.cannot_build)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"SHA"', "must be a list of build arg names"),
        ('["1SHA"]', "must be a list of build arg names"),
        ('["A B"]', "must be a list of build arg names"),
        ("[1]", "must be a list of build arg names"),
        ('["BASE_IMAGE"]', "BASE_IMAGE is always set"),
    ],
)
def test_bad_required_build_args_are_config_errors(tmp_path: Path, value: str, problem: str) -> None:
    folder = write_image(tmp_path, "x", f'base = "127.0.0.1:5000/b:1"\nrequired_build_args = {value}\n')
    with pytest.raises(ConfigError, match=problem) as raised:
        load_image(folder, tmp_path)
    assert str(raised.value).startswith(f"{folder / 'image.toml'}: required_build_args")


def test_required_build_args_do_not_move_the_hash(tmp_path: Path) -> None:
    before = _plan(_repo(tmp_path / "1", 'parent = "a"\n[build_args]\nSHA = ""\n')).get("a2").hash
    after = _plan(_repo(tmp_path / "2", REFUSED_A1))
    assert after.get("a2").hash == before


def test_the_cascade_builds_everything_else_and_blocks_the_descendants(tmp_path: Path) -> None:
    root = write_cascade(tmp_path / "repo")
    write_image(root, "a1", REFUSED_A1, {"a1.txt": "a1"})
    backend = FakeBackend()
    result = run(_plan(root), backend, jobs=2)
    assert sorted(backend.built) == ["a", "a2", "other", "other-child"]
    outcomes = {item.name: (item.outcome, item.reason) for item in result.results}
    assert outcomes["a1"] == ("refused", "cannot build: build arg SHA is empty")
    assert outcomes["a1x"] == ("blocked", "parent a1 cannot be built")
    assert not result.ok and result.names("failed") == []
    refused = next(item for item in result.results if item.name == "a1")
    assert refused.fixes == ("set build_args.SHA in images/a1/image.toml",)


@pytest.mark.parametrize(
    ("present", "options", "refused", "built"),
    [
        # Already in the target: nothing to refuse, and its children build on it.
        ({"a", "a1"}, {}, [], ["a1x", "a2", "other", "other-child"]),
        # Forced, a refusal stands.
        ({"a", "a1"}, {"force": True, "only": ("a1",)}, ["a1"], []),
        ({"a"}, {"only": ("a1x",), "with_parents": True}, ["a1"], []),
    ],
)
def test_refusals_apply_only_to_what_would_be_built(
    tmp_path: Path, present: set[str], options: dict[str, Any], refused: list[str], built: list[str]
) -> None:
    root = write_cascade(tmp_path / "repo")
    write_image(root, "a1", REFUSED_A1, {"a1.txt": "a1"})
    backend = FakeBackend()
    result = run(_plan(root), backend, store=FakeStore(present), **options)
    assert result.names("refused") == refused
    assert sorted(backend.built) == built


def test_dry_run_shows_refused_and_blocked(tmp_path: Path) -> None:
    root = write_cascade(tmp_path / "repo")
    write_image(root, "a1", REFUSED_A1, {"a1.txt": "a1"})
    result = run(_plan(root), FakeBackend(), dry_run=True)
    assert result.outcome_of("a1") == "refused" and result.outcome_of("a1x") == "blocked"
    assert result.outcome_of("a2") == "would build"


def test_refusals_added_at_run_time_count_like_declared_ones(tmp_path: Path) -> None:
    plan = _plan(write_cascade(tmp_path / "repo"))
    extra = plan.with_refusals({"other": [Refusal("secret pip_conf is not provided", "pass --secret")]})
    assert extra.get("other").cannot_build and not plan.get("other").cannot_build
    backend = FakeBackend()
    result = run(extra, backend)
    assert result.outcome_of("other") == "refused" and result.outcome_of("other-child") == "blocked"
    assert "other" not in backend.built and "a" in backend.built
    with pytest.raises(KeyError):
        plan.with_refusals({"nope": []})


def test_plan_marks_images_that_cannot_build(tmp_path: Path) -> None:
    root = write_cascade(tmp_path / "repo")
    write_image(root, "a1", REFUSED_A1, {"a1.txt": "a1"})
    listed = invoke(root, "plan", "--offline")
    assert listed.returncode == 0, listed.stderr
    line = next(
        line
        for line in listed.stdout.splitlines()
        if [cell.strip() for cell in line.split("│")[1:2]] == ["a1"]
    )
    assert "cannot build: build arg SHA is empty" in line
    # Below the table, unwrapped: each reason with its fix, as `invoke cascade` prints them.
    assert "a1: cannot build: build arg SHA is empty; fix: set build_args.SHA in images/a1/image.toml" in (
        listed.stdout.splitlines()
    )
    document = json.loads(invoke(root, "plan", "--json", "--offline").stdout)
    by_name = {item["name"]: item for item in document["images"]}
    assert by_name["a1"]["cannot_build"] == [
        {"reason": "build arg SHA is empty", "fix": "set build_args.SHA in images/a1/image.toml"}
    ]
    assert by_name["a2"]["cannot_build"] == []


def test_this_repositorys_launcher_cannot_build_until_its_checksum_is_recorded() -> None:
    plan = compute_plan(load_settings(REPOSITORY), use_cache=False)
    launcher = plan.get("arr-vertex-launcher")
    assert [refusal.reason for refusal in launcher.cannot_build] == [
        "unpinned artifact gcloud-cli (build arg GCLOUD_SHA256 is empty)"
    ]
    assert [image.name for image in plan.images if image.cannot_build] == ["arr-vertex-launcher"]


@pytest.mark.engine
def test_invoke_cascade_refuses_up_front_and_builds_the_rest(cascade_repo: CascadeRepo) -> None:
    declaration = cascade_repo.root / "images/mid/image.toml"
    declaration.write_text(declaration.read_text() + f'{REQUIRED}[build_args]\nSHA = ""\n')
    done = cascade_repo.invoke("cascade")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "mid: cannot build: build arg SHA is empty; fix: set build_args.SHA in images/mid/image.toml" in (
        done.stdout
    )
    assert "error: cannot build: mid; blocked: leaf" in done.stderr
    built = {reference.rsplit("/", 1)[1].split(":")[0] for reference in cascade_repo.built_references()}
    assert built == {"root", "other"}


def test_a_dry_run_exits_as_the_real_run_would_when_an_image_is_refused(tmp_path: Path) -> None:
    root = write_cascade(tmp_path / "repo")
    assert run(_plan(root), FakeBackend(), dry_run=True).verdict() == (0, "")
    write_image(root, "a1", REFUSED_A1, {"a1.txt": "a1"})
    code, message = run(_plan(root), FakeBackend(), dry_run=True).verdict()
    assert code == 2
    assert message.startswith("error: cannot build: a1; blocked: a1x; the rest would be built (dry run)")


def test_plan_refuses_a_secret_source_no_image_declares(tmp_path: Path) -> None:
    root = write_cascade(tmp_path / "repo")
    (root / "cascade.local.toml").write_text('[secrets]\ntypo = { env = "HOME" }\n')
    listed = invoke(root, "plan", "--offline")
    assert listed.returncode == 2
    assert listed.stderr.startswith("error: secret typo (cascade.local.toml")
    assert "no image declares it" in listed.stderr
