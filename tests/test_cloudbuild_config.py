"""Cloud Build configs: substitutions checked as Cloud Build checks them, and the committed files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imagecascade.cloud import cloudbuild_config
from imagecascade.cloud.cloudbuild_config import (
    apply_substitutions,
    image_substitutions,
    label_substitution,
    load_config,
    substitution_problems,
    used_substitutions,
)
from imagecascade.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "cloudbuild").glob("*.yaml"))
IMAGE_FOLDERS = sorted(path.parent.name for path in (REPO / "images").glob("*/image.toml"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${_TAG}", {"_TAG"}),
        ("$_TAG/x", {"_TAG"}),
        ("a-$PROJECT_ID-${BUILD_ID}", {"PROJECT_ID", "BUILD_ID"}),
        ("$$HOME and $$_ESCAPED", set()),
        ("$$${_A}", {"_A"}),
        ("no substitutions", set()),
        # Cloud Build's grammar: only [A-Z_][A-Z0-9_]* names are substitutions; shell code stays.
        ("for f in *; do echo $f $1 ${name} $(date) $@; done", set()),
        ("${_A}$_B-$HOME", {"_A", "_B", "HOME"}),
        ("$_lower", {"_"}),  # the name stops at the first lowercase letter, as in subst.go
        ("${_A", set()),  # an unclosed brace is not a substitution
    ],
)
def test_used_substitutions(text: str, expected: set[str]) -> None:
    assert used_substitutions({"steps": [{"args": [text]}]}) == expected


@pytest.mark.parametrize(
    ("config", "provided", "expected"),
    [
        ({"steps": [{"args": ["${_A}"]}]}, {"_A": "1"}, []),
        ({"steps": [{"args": ["${_A}", "$PROJECT_ID"]}]}, {"_A": "1"}, []),
        ({"steps": [{"args": ["${_A}"]}]}, {}, ["uses $_A, which is not provided"]),
        (
            {"steps": [{"args": ["${_A}"]}]},
            {"_A": "1", "_B": "2"},
            ["substitution _B is provided but never used"],
        ),
        (
            {"steps": [{"args": ["$HOME"]}]},
            {},
            [
                "uses $HOME, which is not a Cloud Build built-in substitution "
                "(user substitutions start with _; write $$HOME for a shell variable)"
            ],
        ),
        (
            {"steps": [{"args": ["--tag=x:$SHORT_SHA"]}]},
            {},
            [
                "uses $SHORT_SHA, which only a build trigger fills: a build of uploaded source leaves it "
                "empty (the git revision is the _OCI_REVISION substitution)"
            ],
        ),
        ({"steps": [{"args": ["bash", "-c", "for f in *; do echo $f $1; done"]}]}, {}, []),
        # ALLOW_LOOSE: missing and unused user substitutions pass; unknown built-ins still do not.
        ({"steps": [{"args": ["${_A}"]}], "options": {"substitutionOption": "ALLOW_LOOSE"}}, {"_B": "1"}, []),
        (
            {"steps": [{"args": ["$HOME"]}], "options": {"substitutionOption": "ALLOW_LOOSE"}},
            {},
            [
                "uses $HOME, which is not a Cloud Build built-in substitution "
                "(user substitutions start with _; write $$HOME for a shell variable)"
            ],
        ),
        # Only the fields Cloud Build substitutes in count: options.env is not one of them.
        (
            {"steps": [{"args": ["x"]}], "options": {"env": ["A=$_A"]}},
            {"_A": "1"},
            ["substitution _A is provided but never used"],
        ),
        ({"steps": [{"args": ["x"]}], "tags": ["t-$_A"]}, {"_A": "1"}, []),
        ({"steps": [{"args": ["${_A}"]}], "substitutions": {"_A": "default"}}, {}, []),
        (
            {"steps": [{"args": ["x"]}], "substitutions": {"_UNUSED": "default"}},
            {},
            ["substitution _UNUSED is provided but never used"],
        ),
        (
            {"steps": [{"args": ["${_a}"]}]},
            {"_a": "1"},
            [  # ${_a} is not a substitution in Cloud Build's grammar, so _a is also unused
                "substitution _a is provided but never used",
                "substitution _a must start with _ and hold only A-Z, 0-9 and _",
            ],
        ),
    ],
)
def test_substitution_problems(config: dict[str, Any], provided: dict[str, str], expected: list[str]) -> None:
    assert substitution_problems(config, provided) == expected


def test_apply_substitutions_with_allow_loose_empties_missing_user_substitutions() -> None:
    config = {
        "steps": [{"args": ["${_MISSING}-$_A-$PROJECT_ID-$f"]}],
        "options": {"substitutionOption": "ALLOW_LOOSE"},
    }
    assert apply_substitutions(config, {"_A": "a"})["steps"] == [{"args": ["-a-$PROJECT_ID-$f"]}]


def test_apply_substitutions_leaves_built_ins_and_unescapes_dollars() -> None:
    config = {"steps": [{"args": ["--tag=${_REGISTRY}/x:$_TAG", "$$HOME", "$PROJECT_ID"]}], "timeout": 60}
    assert apply_substitutions(config, {"_REGISTRY": "r", "_TAG": "t"}) == {
        "steps": [{"args": ["--tag=r/x:t", "$HOME", "$PROJECT_ID"]}],
        "timeout": 60,
    }


@pytest.mark.parametrize(
    ("label", "substitution"),
    [
        ("org.opencontainers.image.created", "_OCI_CREATED"),
        ("io.imagecascade.freshness-hash", "_LABEL_IO_IMAGECASCADE_FRESHNESS_HASH"),
        ("imagecascade.hash", "_LABEL_IMAGECASCADE_HASH"),
    ],
)
def test_label_substitution(label: str, substitution: str) -> None:
    assert label_substitution(label) == substitution


def test_image_substitutions_refuse_two_values_for_one_name() -> None:
    with pytest.raises(ConfigError, match="build arg TAG and the hash tag both map to"):
        image_substitutions(tag="t", registry="r", build_args={"TAG": "x"}, labels={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "missing"),
        ("steps: [unclosed", "invalid YAML"),
        ("images: []\n", "non-empty `steps:` list"),
        ("steps: [{name: x}]\nsubstitutions: {_A: 1}\n", "`substitutions:` must map names to strings"),
    ],
)
def test_load_config_errors(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "image.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_every_image_has_a_committed_config_and_every_config_an_image() -> None:
    assert [path.stem for path in COMMITTED] == IMAGE_FOLDERS or not IMAGE_FOLDERS
    assert COMMITTED, "cloudbuild/ holds one config per image"


@pytest.mark.parametrize("path", COMMITTED, ids=[path.stem for path in COMMITTED])
def test_committed_config_parses_and_names_its_own_image(path: Path) -> None:
    config = load_config(path)
    name = path.stem
    assert config["images"] == [f"${{_REGISTRY}}/{name}:${{_TAG}}", f"${{_REGISTRY}}/{name}:latest"]
    assert config["tags"] == ["imagecascade", name, "hash-${_TAG}"]
    assert {step["name"] for step in config["steps"]} == {"gcr.io/cloud-builders/docker"}


@pytest.mark.parametrize("name", IMAGE_FOLDERS)
def test_committed_config_is_what_the_backend_submits_for_the_real_plan(name: str) -> None:
    """Build args match image.toml, and the cascade's own request passes every Cloud Build check."""
    from google.cloud.devtools import cloudbuild_v1

    from imagecascade.cloud.submission import build_submission
    from imagecascade.core.build_options import CloudBuildFlags
    from imagecascade.core.build_request import Provenance, build_request, input_references
    from imagecascade.core.plan import compute_plan
    from imagecascade.core.settings import load_settings

    settings = load_settings(REPO).with_overrides(
        registry="us-docker.pkg.dev/example-project/arr", cloudbuild_project="example-project"
    )
    plan = compute_plan(settings, use_cache=False)
    image = plan.get(name)
    config = load_config(cloudbuild_config.config_path(REPO, name))
    assert cloudbuild_config.declared_build_args(config) == {
        "BASE_IMAGE",
        *image.spec.build_args,
        *image.spec.inputs,
    }
    request = build_request(
        plan, image, Provenance(revision="0" * 40, source="https://example.invalid/x"), "now"
    )
    submission = build_submission(request, settings, CloudBuildFlags())
    body = submission.body
    substitutions = body["substitutions"]
    assert apply_substitutions({"images": body["images"]}, substitutions)["images"] == list(
        request.references
    )
    assert substitutions["_BASE_IMAGE"] == request.base_reference
    for arg, reference in input_references(plan, image).items():  # the same way as _BASE_IMAGE
        assert substitutions[cloudbuild_config.build_arg_substitution(arg)] == reference
    minutes = image.spec.cloudbuild.timeout_minutes or 60
    assert body["timeout"] == f"{minutes * 60}s"
    # The body is a valid API Build (the generated type parses it, enums by name).
    build = cloudbuild_v1.Build.from_json(json.dumps({**body, "tags": [*body["tags"], "submission-x"]}))
    assert build.timeout.total_seconds() == minutes * 60
