"""The [smoke] schema: strict parsing and inheritance down the cascade."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

import pytest

from imagecascade.core.checks import (
    CommandCheck,
    ConfigChecks,
    CudaChecks,
    FileCheck,
    SmokeChecks,
    effective_checks,
    parse_smoke_checks,
)
from imagecascade.errors import ConfigError

WHERE = "images/x/image.toml: [smoke]"

FULL = """
inherit = true
python = "python3"
timeout_seconds = 120
imports = ["torch", "torchvision"]
pip_check = true
[versions]
torch = "==2.6.0"
[[commands]]
name = "torchrun-help"
run = ["torchrun", "--help"]
output = "usage"
gpu = false
[[files]]
path = "/usr/local/bin/torchrun"
executable = true
[[files]]
path = "/opt/conda"
exists = false
[env]
PYTHONUNBUFFERED = "1"
[labels]
"org.opencontainers.image.title" = "arr-trainer"
[config]
user = "launcher"
non_root = true
entrypoint = ["accelerate", "launch", "-m", "arr_trainer.train"]
cmd = ["--max-steps", "100"]
workdir = "/workspace"
[cuda]
torch_cuda = "12.4"
cudnn = ">=9"
arch_list = ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90"]
nccl = true
available = true
min_devices = 1
matmul = true
"""


def parse(text: str) -> SmokeChecks:
    return parse_smoke_checks(tomllib.loads(text), WHERE)


def test_empty_table_is_the_default() -> None:
    assert parse("") == SmokeChecks()
    assert SmokeChecks().interpreter == "python3"
    assert SmokeChecks().timeout == 120
    with pytest.raises(dataclasses.FrozenInstanceError):
        SmokeChecks().inherit = False  # type: ignore[misc]


def test_full_schema_parses() -> None:
    checks = parse(FULL)
    assert checks.imports == ("torch", "torchvision")
    assert checks.versions == {"torch": "==2.6.0"}
    assert checks.commands == (
        CommandCheck(name="torchrun-help", run=("torchrun", "--help"), output="usage", gpu=False),
    )
    assert checks.files == (
        FileCheck(path="/usr/local/bin/torchrun", exists=True, executable=True),
        FileCheck(path="/opt/conda", exists=False),
    )
    assert checks.env == {"PYTHONUNBUFFERED": "1"}
    assert checks.labels == {"org.opencontainers.image.title": "arr-trainer"}
    assert checks.config == ConfigChecks(
        user="launcher",
        non_root=True,
        entrypoint=("accelerate", "launch", "-m", "arr_trainer.train"),
        cmd=("--max-steps", "100"),
        workdir="/workspace",
    )
    assert checks.cuda == CudaChecks(
        torch_cuda="12.4",
        cudnn=">=9",
        arch_list=("sm_75", "sm_80", "sm_86", "sm_89", "sm_90"),
        nccl=True,
        available=True,
        min_devices=1,
        matmul=True,
    )
    assert checks.cuda.needs_gpu


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("improts = []", "unknown key 'improts'"),
        ("inherit = 1", "inherit must be true or false, not integer"),
        ('python = ""', "python must not be empty"),
        ("timeout_seconds = true", "timeout_seconds must be an integer, not boolean"),
        ('timeout_seconds = "60"', "timeout_seconds must be an integer, not string"),
        ("timeout_seconds = 0", "timeout_seconds must be at least 1"),
        ('imports = "torch"', "imports must be an array of strings"),
        ('imports = ["torch-vision"]', "imports: 'torch-vision' is not a module name"),
        ('pip_check = "yes"', "pip_check must be true or false, not string"),
        ('versions = ["torch"]', "versions must be a table, not array"),
        ("[versions]\ntorch = 2", "versions.torch must be a string specifier, not integer"),
        ('[versions]\ntorch = "2.6"', "versions.torch: '2.6' is not a PEP 440 version specifier"),
        ('[versions]\ntorch = "=>2.6"', "versions.torch: '=>2.6' is not a PEP 440 version specifier"),
        ('[versions]\n"torch!" = "==1"', "versions: 'torch!' is not a distribution name"),
        ("[commands]\nname = 'x'", "commands must be an array of tables"),
        ("[[commands]]\nrun = ['true']", "commands[0]: name is required"),
        ("[[commands]]\nname = 'a b'\nrun = ['true']", "commands[0]: name 'a b' must be"),
        ("[[commands]]\nname = 'x'", "commands[0]: run is required"),
        ("[[commands]]\nname = 'x'\nrun = 'true'", "commands[0]: run must be an array of strings"),
        ("[[commands]]\nname = 'x'\nrun = []", "commands[0]: run is required"),
        ("[[commands]]\nname = 'x'\nrun = ['true']\nshell = true", "commands[0]: unknown key 'shell'"),
        ("[[commands]]\nname = 'x'\nrun = ['true']\noutput = '('", "commands[0]: output: '(' is not a valid"),
        ("[[commands]]\nname = 'x'\nrun = ['true']\ngpu = 'no'", "commands[0]: gpu must be true or false"),
        (
            "[[commands]]\nname = 'x'\nrun = ['true']\n[[commands]]\nname = 'x'\nrun = ['false']",
            "commands[1]: duplicate command name 'x'",
        ),
        ("[[files]]\npath = 'relative'", "files[0]: path is required and must be absolute"),
        ("[[files]]\nexists = true", "files[0]: path is required"),
        ("[[files]]\npath = '/x'\nmode = 493", "files[0]: unknown key 'mode'"),
        ("[[files]]\npath = '/x'\nexists = false\nexecutable = true", "files[0]: executable makes no sense"),
        ("[[files]]\npath = '/x'\n[[files]]\npath = '/x'", "files[1]: duplicate path '/x'"),
        ("[env]\nPATH = 1", "env.PATH must be a string (a regex), not integer"),
        ("[env]\n'BAD-NAME' = 'x'", "env: 'BAD-NAME' is not an environment variable name"),
        ("[env]\nPATH = '[unclosed'", "env.PATH: '[unclosed' is not a valid regular expression"),
        ("[labels]\n'a.b' = '*'", "labels.a.b: '*' is not a valid regular expression"),
        ("[config]\nuid = 0", "config: unknown key 'uid'"),
        ("[config]\nentrypoint = 'accelerate'", "config: entrypoint must be an array of strings"),
        ("[config]\nnon_root = 'yes'", "config: non_root must be true or false"),
        ("[cuda]\ncuda = '12.4'", "cuda: unknown key 'cuda'"),
        ("[cuda]\ncudnn = '9'", "cuda.cudnn: '9' is not a PEP 440 version specifier"),
        ("[cuda]\narch_list = ['80']", "cuda.arch_list: '80' is not a CUDA architecture"),
        ("[cuda]\nmin_devices = 0", "cuda.min_devices must be at least 1"),
        ("[cuda]\nmin_devices = 1.5", "cuda: min_devices must be an integer, not float"),
        ("[cuda]\nmatmul = 1", "cuda: matmul must be true or false, not integer"),
        ("max_size_gb = 0", "max_size_gb must be a positive number of GB, not 0"),
        ("max_size_gb = -1.5", "max_size_gb must be a positive number of GB, not -1.5"),
        ("max_size_gb = inf", "max_size_gb must be a positive number of GB, not inf"),
        ("max_size_gb = nan", "max_size_gb must be a positive number of GB, not nan"),
        ("max_size_gb = '10'", "max_size_gb must be a positive number of GB, not '10'"),
        ("max_size_gb = true", "max_size_gb must be a positive number of GB, not True"),
        (
            "[[commands]]\nname = 'x'\nrun = ['x']\ntimeout_seconds = 0",
            "commands[0]: timeout_seconds must be at least 1",
        ),
        (
            "[[commands]]\nname = 'x'\nrun = ['x']\ntimeout_seconds = 1.5",
            "commands[0]: timeout_seconds must be an integer, not float",
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(text)
    text_of_error = str(raised.value)
    assert text_of_error.startswith(f"{WHERE}: ")
    assert message in text_of_error
    assert "\n" not in text_of_error


@dataclasses.dataclass(frozen=True)
class Spec:
    parent: str | None
    smoke: SmokeChecks


def cascade(**tables: tuple[str | None, str]) -> dict[str, Spec]:
    return {name: Spec(parent, parse(text)) for name, (parent, text) in tables.items()}


PARENT = """
timeout_seconds = 300
imports = ["torch", "numpy"]
[versions]
torch = "==2.6.0"
numpy = "<2"
[[commands]]
name = "torchrun-help"
run = ["torchrun", "--help"]
[[commands]]
name = "nvcc"
run = ["nvcc", "--version"]
[[files]]
path = "/opt/conda"
exists = false
[env]
PYTHONUNBUFFERED = "1"
[labels]
"org.opencontainers.image.title" = "arr-ml-stack"
[config]
workdir = "/workspace"
[cuda]
torch_cuda = "12.4"
arch_list = ["sm_80", "sm_90"]
"""

CHILD = """
python = "python3.11"
imports = ["transformers", "torch"]
[versions]
numpy = ">=2"
transformers = ">=4.53"
[[commands]]
name = "nvcc"
run = ["nvcc", "-V"]
output = "release"
[[files]]
path = "/opt/conda"
exists = true
[labels]
"org.opencontainers.image.title" = "arr-trainer"
[config]
user = "launcher"
[cuda]
arch_list = ["sm_90"]
matmul = true
"""


def test_child_inherits_and_overrides_by_key() -> None:
    specs = cascade(
        parent=(None, PARENT), child=("parent", CHILD), grandchild=("child", 'imports = ["accelerate"]')
    )
    checks = effective_checks(specs, "child")
    assert checks.python == "python3.11"
    assert checks.timeout == 300
    assert checks.imports == ("torch", "numpy", "transformers")
    assert checks.versions == {"torch": "==2.6.0", "numpy": ">=2", "transformers": ">=4.53"}
    assert [(command.name, command.run) for command in checks.commands] == [
        ("torchrun-help", ("torchrun", "--help")),
        ("nvcc", ("nvcc", "-V")),
    ]
    assert checks.files == (FileCheck(path="/opt/conda", exists=True),)
    assert checks.env == {"PYTHONUNBUFFERED": "1"}
    assert checks.labels == {"org.opencontainers.image.title": "arr-trainer"}
    assert checks.config == ConfigChecks(user="launcher", workdir="/workspace")
    assert checks.cuda == CudaChecks(torch_cuda="12.4", arch_list=("sm_90",), matmul=True)
    grandchild = effective_checks(specs, "grandchild")
    assert grandchild.imports == ("torch", "numpy", "transformers", "accelerate")
    assert grandchild.versions == checks.versions
    assert grandchild.config.user == "launcher"


def test_inherit_false_drops_the_ancestors() -> None:
    specs = cascade(parent=(None, PARENT), child=("parent", 'inherit = false\nimports = ["json"]'))
    checks = effective_checks(specs, "child")
    assert checks == parse('inherit = false\nimports = ["json"]')
    assert checks.timeout == 120


def test_inherit_false_in_the_middle_stops_there() -> None:
    specs = cascade(
        root=(None, PARENT),
        middle=("root", 'inherit = false\nimports = ["json"]'),
        leaf=("middle", 'imports = ["os"]'),
    )
    assert effective_checks(specs, "leaf").imports == ("json", "os")
    assert effective_checks(specs, "leaf").versions == {}


def test_root_checks_are_its_own() -> None:
    specs: dict[str, Any] = cascade(parent=(None, PARENT))
    assert effective_checks(specs, "parent") == specs["parent"].smoke


def test_name_stands_for_the_image_in_expected_values() -> None:
    checks = parse(
        """
        [[commands]]
        name = "banner"
        run = ["{name}", "--version"]
        output = "^{name} [0-9.]+$"
        [env]
        APP = "{name}"
        [labels]
        "org.opencontainers.image.title" = "{name}"
        "literal" = "\\\\{name\\\\}"
        [config]
        user = "{name}"
        workdir = "/srv/{name}"
        entrypoint = ["/usr/local/bin/{name}"]
        cmd = ["--as", "{name}"]
        """
    )
    mine = checks.for_image("arr-ml.stack+1")
    escaped = re.escape("arr-ml.stack+1")
    assert mine.labels == {"org.opencontainers.image.title": escaped, "literal": "\\{name\\}"}
    assert re.fullmatch(mine.labels["org.opencontainers.image.title"], "arr-ml.stack+1")
    assert not re.fullmatch(mine.labels["org.opencontainers.image.title"], "arr-mlXstack11")
    assert mine.env == {"APP": escaped}
    assert mine.commands[0].output == f"^{escaped} [0-9.]+$"
    assert mine.commands[0].run == ("{name}", "--version"), "commands run as written"
    assert mine.config == ConfigChecks(
        user="arr-ml.stack+1",
        workdir="/srv/arr-ml.stack+1",
        entrypoint=("/usr/local/bin/arr-ml.stack+1",),
        cmd=("--as", "arr-ml.stack+1"),
    )


def test_an_inherited_title_holds_in_every_child() -> None:
    specs = cascade(
        base=(None, '[labels]\n"org.opencontainers.image.title" = "{name}"'),
        child=("base", ""),
    )
    child = effective_checks(specs, "child").for_image("child")
    assert re.fullmatch(child.labels["org.opencontainers.image.title"], "child")
    assert not re.fullmatch(child.labels["org.opencontainers.image.title"], "base")


@pytest.mark.parametrize(
    ("text", "nothing"),
    [
        ("", True),
        ("timeout_seconds = 10\npython = 'python3.11'\ninherit = false", True),
        ("pip_check = false", True),
        ("pip_check = true", False),
        ("max_size_gb = 5", False),
        ("[config]\nnon_root = false", False),
        ("[labels]\nx = 'y'", False),
        ("[cuda]\nnccl = true", False),
        ("[[files]]\npath = '/x'", False),
    ],
)
def test_declares_nothing(text: str, nothing: bool) -> None:
    assert parse(text).declares_nothing is nothing


def test_max_size_and_command_timeouts_are_inherited() -> None:
    specs = cascade(
        base=(None, 'max_size_gb = 20\n[[commands]]\nname = "t"\nrun = ["t"]\ntimeout_seconds = 5'),
        child=("base", "max_size_gb = 25.5"),
    )
    child = effective_checks(specs, "child")
    assert child.max_size_gb == 25.5
    assert child.commands[0].timeout_seconds == 5
    assert effective_checks(specs, "base").max_size_gb == 20.0
