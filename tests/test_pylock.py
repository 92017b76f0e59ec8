"""Hash-locked Python requirements: `[[python_locks]]`, `nox -s lock` and the offline staleness check.

The resolver is the real uv, offline: `--no-index --find-links` on wheels made here, so the
tests need no network and see exactly which distributions exist.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from image_repo import write_file, write_image

from imagecascade.core.declaration import load_images
from imagecascade.core.hook import main as hook_main
from imagecascade.core.python_locks import pins, requirement_lines
from imagecascade.core.settings import load_settings
from imagecascade.pins.pylock import ResolveFailed, check_locks, find_uv, lock_targets, write_locks

PLATFORM = "x86_64-manylinux_2_35"
LOCK = (
    '[[python_locks]]\nrequirements = "requirements.txt"\nlock = "requirements.lock"\n'
    f'python = "3.10"\nplatform = "{PLATFORM}"\n'
)
# `torchy` on the index requires an nvidia-like wheel; the one the image really installs does not.
PROVIDED = '[python_locks.provided.torchy]\nversion = "1.0"\nrequires = ["gamma"]\n'


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A pure-Python wheel with just its metadata: all a resolver reads."""
    dist = f"{name.replace('-', '_')}-{version}"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {item}\n" for item in requires)
    wheel = "Wheel-Version: 1.0\nGenerator: imagecascade-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{dist}.dist-info/METADATA", metadata)
        archive.writestr(f"{dist}.dist-info/WHEEL", wheel)
        archive.writestr(f"{dist}.dist-info/RECORD", "")


@pytest.fixture
def index(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "alpha", "1.0", ("beta>=1",))
    make_wheel(wheels, "alpha", "1.1", ("beta>=1",))
    make_wheel(wheels, "beta", "1.0")
    make_wheel(wheels, "gamma", "1.0")
    make_wheel(wheels, "torchy", "1.0", ("nvidia-thing",))
    make_wheel(wheels, "nvidia-thing", "1.0")
    make_wheel(wheels, "delta", "2.0", ("alpha", "epsilon"))
    make_wheel(wheels, "delta", "2.1", ("alpha", "epsilon"))
    make_wheel(wheels, "epsilon", "3.0")
    make_wheel(wheels, "setuptools", "75.8.0")
    return wheels


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """parent (alpha, and torchy from an input image) -> child (delta); tool: an isolated lock."""
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    root = tmp_path / "repo"
    root.mkdir()
    (root / "cascade.toml").write_text("")
    write_image(
        root,
        "parent",
        'base = "127.0.0.1:5000/base:1"\n' + LOCK + PROVIDED,
        {"requirements.txt": "alpha==1.0\n"},
    )
    write_image(
        root, "child", 'parent = "parent"\n' + LOCK, {"requirements.txt": "# the stack\ndelta==2.0\n"}
    )
    tool = LOCK.replace("requirements.txt", "build.txt").replace("requirements.lock", "build.lock")
    write_image(
        root,
        "tool",
        'parent = "parent"\n' + tool + "isolated = true\n",
        {"build.txt": "setuptools==75.8.0\n"},
    )
    return root


def lock_all(root: Path, index: Path, **options: object) -> str:
    out = io.StringIO()
    specs = load_images(load_settings(root))
    write_locks(specs, root, extra=["--no-index", "--find-links", str(index)], out=out, **options)  # type: ignore[arg-type]
    return out.getvalue()


def locked(root: Path, image: str, name: str = "requirements.lock") -> dict[str, str]:
    return pins(requirement_lines((root / "images" / image / name).read_text()))


def problems(root: Path) -> list[str]:
    return check_locks(load_images(load_settings(root)), root)


def test_locks_are_complete_hashed_and_never_repeat_the_parents_packages(repo: Path, index: Path) -> None:
    assert problems(repo) == [
        "images/parent/requirements.lock: missing; run `nox -s lock`",
        "images/child/requirements.lock: missing; run `nox -s lock`",
        "images/tool/build.lock: missing; run `nox -s lock`",
    ]
    lock_all(repo, index)
    # The provided torchy is resolved with its declared requirements (gamma), not the index's.
    assert locked(repo, "parent") == {"alpha": "1.0", "beta": "1.0", "gamma": "1.0"}
    # The child gets only what it adds: alpha, beta, gamma and torchy are the parent's.
    assert locked(repo, "child") == {"delta": "2.0", "epsilon": "3.0"}
    assert locked(repo, "tool", "build.lock") == {"setuptools": "75.8.0"}
    text = (repo / "images/child/requirements.lock").read_text()
    assert text.startswith("# Hash-locked by `nox -s lock` (uv ")
    assert "on top of what parent installs" in text and "/tmp" not in text
    for line in requirement_lines(text):
        assert "==" in line
    assert text.count("--hash=sha256:") == 2
    assert problems(repo) == []


def test_nothing_current_is_resolved_again(repo: Path, index: Path) -> None:
    lock_all(repo, index)
    before = {path: path.read_bytes() for path in repo.glob("images/*/*.lock")}
    assert lock_all(repo, index).splitlines() == [
        "images/parent/requirements.lock: current",
        "images/child/requirements.lock: current",
        "images/tool/build.lock: current",
    ]
    assert {path: path.read_bytes() for path in repo.glob("images/*/*.lock")} == before


def test_a_changed_top_level_pin_makes_only_its_lock_stale(repo: Path, index: Path) -> None:
    lock_all(repo, index)
    make_wheel(index, "epsilon", "3.1")  # newer, but the lock's version is kept when re-locking
    write_file(repo / "images/child/requirements.txt", "delta==2.1\n")
    assert problems(repo) == [
        "images/child/requirements.lock: stale: requirements.txt pins delta==2.1, the lock has 2.0; "
        "run `nox -s lock`"
    ]
    parent_before = (repo / "images/parent/requirements.lock").read_bytes()
    assert "images/child/requirements.lock: written" in lock_all(repo, index)
    assert locked(repo, "child") == {"delta": "2.1", "epsilon": "3.0"}
    assert (repo / "images/parent/requirements.lock").read_bytes() == parent_before
    assert problems(repo) == []
    lock_all(repo, index, upgrade=True)
    assert locked(repo, "child")["epsilon"] == "3.1"


def test_a_comment_does_not_make_a_lock_stale_but_a_new_requirement_does(repo: Path, index: Path) -> None:
    lock_all(repo, index)
    write_file(repo / "images/child/requirements.txt", "# the stack, reworded\ndelta==2.0  # pinned\n")
    assert problems(repo) == []
    write_file(repo / "images/child/requirements.txt", "delta==2.0\nepsilon==3.0\n")
    (message,) = problems(repo)
    assert message.startswith("images/child/requirements.lock: stale: what it was resolved from changed")


def test_a_new_parent_lock_makes_the_childs_stale_and_they_are_locked_in_order(
    repo: Path, index: Path
) -> None:
    lock_all(repo, index)
    write_file(repo / "images/parent/requirements.txt", "alpha==1.1\n")
    stale = problems(repo)
    assert stale[0].startswith("images/parent/requirements.lock: stale: requirements.txt pins alpha==1.1")
    lock_all(repo, index)  # the parent is written first, then the child sees its new pins
    assert locked(repo, "parent")["alpha"] == "1.1"
    assert problems(repo) == []


def test_a_hand_edited_lock_is_caught(repo: Path, index: Path) -> None:
    lock_all(repo, index)
    path = repo / "images/child/requirements.lock"
    text = path.read_text()
    path.write_text(text + "alpha==1.0\nzeta==1\n")
    assert problems(repo) == [
        "images/child/requirements.lock: locks alpha, which is installed by parent; run `nox -s lock`",
        "images/child/requirements.lock: alpha==1.0 has no sha256 hash",
        "images/child/requirements.lock: zeta==1 has no sha256 hash",
    ]
    path.write_text(text.replace("# inputs-sha256: ", "# something: "))
    assert problems(repo) == [
        "images/child/requirements.lock: not written by `nox -s lock` (no `# inputs-sha256:` line); "
        "run `nox -s lock`"
    ]


def test_what_cannot_be_resolved_is_uvs_own_explanation_and_nothing_is_written(
    repo: Path, index: Path
) -> None:
    write_file(repo / "images/child/requirements.txt", "delta==9.9\n")
    with pytest.raises(
        ResolveFailed, match=r"(?s)images/child/requirements.txt: uv could not resolve.*delta"
    ):
        lock_all(repo, index)
    assert not (repo / "images/child/requirements.lock").exists()
    assert (repo / "images/parent/requirements.lock").exists()  # locked before the child


def test_check_from_the_command_line_exits_1_with_one_line_per_problem(repo: Path, index: Path) -> None:
    lock_all(repo, index)
    write_file(repo / "images/child/requirements.txt", "delta==2.1\n")
    done = subprocess.run(
        [sys.executable, "-m", "imagecascade.pins.pylock", "--check"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and done.stderr == ""
    assert done.stdout.splitlines() == [
        "images/child/requirements.lock: stale: requirements.txt pins delta==2.1, the lock has 2.0; "
        "run `nox -s lock`"
    ]
    unknown = subprocess.run(
        [sys.executable, "-m", "imagecascade.pins.pylock", "--check", "nope"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown image nope")


def test_the_lock_targets_know_what_the_ancestors_install(repo: Path, index: Path) -> None:
    lock_all(repo, index)
    targets = {target.image: target for target in lock_targets(load_images(load_settings(repo)))}
    assert dict(targets["child"].installed) == {
        "alpha": "1.0",
        "beta": "1.0",
        "gamma": "1.0",
        "torchy": "1.0",
    }
    assert targets["tool"].installed == {}  # isolated: resolved on its own
    assert [item.name for item in targets["child"].metadata] == ["torchy"]


def test_find_uv_finds_the_installed_resolver() -> None:
    version = subprocess.run([find_uv(), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("uv ")


def _python_locks(tail: str):  # type: ignore[no-untyped-def]
    def change(root: Path) -> None:
        write_image(root, "img", 'base = "x:1"\n' + tail, {"requirements.txt": "alpha==1.0\n"})

    return change


BAD = [
    ("not an array", 'python_locks = "x"\n', "python_locks must be an array of tables"),
    ("unknown key", LOCK + "pyhton = 1\n", "unknown key 'pyhton'"),
    (
        "missing requirements",
        LOCK.replace("requirements.txt", "nope.txt"),
        "requirements 'nope.txt' is missing",
    ),
    (
        "outside",
        LOCK.replace('"requirements.lock"', '"../x.lock"'),
        "lock '../x.lock' is outside the image folder",
    ),
    ("same file", LOCK.replace('"requirements.lock"', '"requirements.txt"'), "lock must be another file"),
    ("bad python", LOCK.replace('"3.10"', '"3"'), "python '3' must be a version X.Y"),
    ("bad platform", LOCK.replace(PLATFORM, "Linux x86"), "platform 'Linux x86' is not a platform"),
    ("isolated not bool", LOCK + 'isolated = "yes"\n', "isolated must be true or false"),
    (
        "provided version",
        LOCK + '[python_locks.provided.torch]\nversion = ">=2"\n',
        "version must be an exact version",
    ),
    (
        "provided requires",
        LOCK + '[python_locks.provided.torch]\nversion = "2"\nrequires = "x"\n',
        "requires must be a list",
    ),
]


@pytest.mark.parametrize(("tail", "problem"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_python_locks_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tail: str, problem: str
) -> None:
    (tmp_path / "cascade.toml").write_text("")
    _python_locks(tail)(tmp_path)
    assert hook_main(["--root", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "images/img/image.toml: python_locks" in lines[0] and problem in lines[0], (
        lines
    )


def test_the_stand_in_installs_the_same_locked_packages_arr_ml_stacks_lock_leaves_out(tmp_path: Path) -> None:
    """`nox -s standin` gives arr-ml-stack a parent holding arr-pytorch-base's locked packages."""
    from imagecascade.standin.session import STANDIN, prepare_repository

    root = Path(__file__).resolve().parents[1]
    repo = prepare_repository(root, tmp_path)
    copied = repo / "images" / STANDIN / "requirements.lock"
    assert copied.read_bytes() == (root / "images/arr-pytorch-base/requirements.lock").read_bytes()
    assert "requirements.lock" in (repo / "images" / STANDIN / "Dockerfile").read_text()
