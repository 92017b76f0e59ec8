"""Dockerfiles read by BuildKit's parser, the checks on top, and the features only BuildKit builds.

Which builder builds which feature is measured on the engine in test_dockerfile_engine.py.
"""

from __future__ import annotations

import pytest

from imagecascade.core.dockerfile import (
    BuildKitFeature,
    base_wiring_problem,
    buildkit_features,
    copy_sources,
    parse_dockerfile,
)
from imagecascade.errors import ConfigError

WIRED = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"

# Dockerfiles Docker builds that the hand-written parser rejected.
VALID = {
    "a UTF-8 BOM": b"\xef\xbb\xbfARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n",
    "an empty line inside a continuation": (WIRED + "RUN echo a \\\n\n    b\n").encode(),
    "arithmetic that looks like a heredoc": (WIRED + "ARG SHIFT=3\nRUN echo $((1<<SHIFT))\n").encode(),
    "several names in one ARG": b"ARG VERSION=1 BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
    "a comment inside a continuation": (WIRED + "RUN echo a \\\n# note\n  b\n").encode(),
    "the escape directive": b"# escape=`\nARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo a `\n  b\n",
    "lower-case instructions and stage names": b"arg BASE_IMAGE\nfrom ${BASE_IMAGE} as Build\nfrom build\n",
    "CRLF line ends": b"ARG BASE_IMAGE\r\nFROM ${BASE_IMAGE}\r\n",
    "invalid UTF-8 in a RUN": b"ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo \xff\n",
    "other stages from other build args": (
        b"ARG BASE_IMAGE\nARG WHEELS_IMAGE\nFROM ${WHEELS_IMAGE} AS wheels\nFROM ${BASE_IMAGE}\n"
        b"COPY --from=wheels /etc/fstab /w\n"
    ),
}


@pytest.mark.parametrize("data", VALID.values(), ids=VALID.keys())
def test_dockerfiles_docker_builds_are_accepted(data: bytes) -> None:
    parsed = parse_dockerfile(data, "Dockerfile")
    assert base_wiring_problem(parsed) is None


def test_a_heredoc_cannot_hide_a_final_stage_that_ignores_base_image() -> None:
    text = WIRED + "RUN echo $((1<<SHIFT))\nFROM debian:12\nRUN true\n"
    problem = base_wiring_problem(parse_dockerfile(text.encode(), "Dockerfile"))
    assert problem is not None
    assert "line 4" in problem and "debian:12" in problem


def test_a_real_heredoc_body_is_not_read_as_instructions() -> None:
    text = WIRED + "RUN <<EOF\nFROM debian:12\nEOF\n"
    parsed = parse_dockerfile(text.encode(), "Dockerfile")
    assert base_wiring_problem(parsed) is None
    assert [item.keyword for item in parsed.instructions] == ["ARG", "FROM", "RUN"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("FROM debian:12\n", "ARG BASE_IMAGE"),
        ("FROM ${BASE_IMAGE}\nARG BASE_IMAGE\n", "ARG BASE_IMAGE"),
        (WIRED + "FROM debian:12\n", "line 3: the built stage derives from 'debian:12'"),
        ("ARG BASE_IMAGE\nFROM b AS a\nFROM ${BASE_IMAGE} AS b\nFROM a\n", "derives from 'b'"),
    ],
)
def test_base_wiring_problems(text: str, problem: str) -> None:
    found = base_wiring_problem(parse_dockerfile(text.encode(), "Dockerfile"))
    assert found is not None and problem in found


def test_target_selects_the_built_stage_through_named_stages() -> None:
    text = WIRED.replace("}\n", "} AS base\n") + "FROM base AS final\nFROM debian:12 AS other\n"
    parsed = parse_dockerfile(text.encode(), "Dockerfile")
    assert base_wiring_problem(parsed, "FINAL") is None
    assert "derives from 'debian:12'" in str(base_wiring_problem(parsed, "other"))
    assert "no stage named 'nope'" in str(base_wiring_problem(parsed, "nope"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ARG BASE_IMAGE\n", "Dockerfile: has no FROM instruction"),
        (b"", "Dockerfile: file with no instructions"),
        (b"FROM a\nRUN <<EOF\nx\n", "Dockerfile: unterminated heredoc"),
        (b"# escape=x\nFROM a\n", "Dockerfile: invalid escape token"),
        (b"FROM a\nRUN \0\n", "Dockerfile: holds a NUL byte"),
    ],
)
def test_what_buildkits_parser_refuses_names_the_file(data: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_dockerfile(data, "Dockerfile")


def test_copy_sources_skip_other_stages_heredocs_and_urls() -> None:
    text = WIRED + (
        "COPY a b /dst/\nCOPY --from=x /y /z\nCOPY <<EOF /f\nhi\nEOF\n"
        'ADD https://example.invalid/x /x\nCOPY ["with space", "/d"]\nADD --chown=1 c /c\n'
    )
    found = [(item.line, sources) for item, sources in copy_sources(parse_dockerfile(text.encode(), "D"))]
    assert found == [(3, ["a", "b"]), (8, []), (9, ["with space"]), (10, ["c"])]


def test_invalid_utf8_comes_back_as_the_same_bytes() -> None:
    parsed = parse_dockerfile(WIRED.encode() + b"COPY caf\xe9 /x\n", "D")
    [(_, sources)] = copy_sources(parsed)
    assert [source.encode("utf-8", "surrogateescape") for source in sources] == [b"caf\xe9"]


FEATURES = [
    ("RUN --mount=type=cache,target=/c true", "RUN --mount", "buildkit"),
    ("RUN --network=none true", "RUN --network", "newer-frontend"),
    ("RUN --security=sandbox true", "RUN --security", "newer-frontend"),
    ("RUN --device=x true", "RUN --device", "newer-frontend"),
    ("COPY --chmod=755 a /a", "COPY --chmod", "buildkit"),
    ("COPY --chmod=u+x a /a", "COPY --chmod", "newer-frontend"),
    ("ADD --chmod=644 a /a", "ADD --chmod", "buildkit"),
    ("COPY --link a /a", "COPY --link", "newer-frontend"),
    ("COPY --parents a /a/", "COPY --parents", "newer-frontend"),
    ("COPY --exclude=*.log . /a", "COPY --exclude", "newer-frontend"),
    ("ADD --checksum=sha256:00 a /a", "ADD --checksum", "newer-frontend"),
    ("ADD --keep-git-dir=true a /a", "ADD --keep-git-dir", "newer-frontend"),
    ("ADD --link a /a", "ADD --link", "newer-frontend"),
    ("RUN <<EOF\ntrue\nEOF", "heredoc in RUN", "newer-frontend"),
    ("COPY <<EOF /f\nhi\nEOF", "heredoc in COPY", "newer-frontend"),
    ("FROM --platform=$BUILDPLATFORM ${BASE_IMAGE} AS x", "$BUILDPLATFORM in FROM", "buildkit"),
    ("FROM ${BASE_IMAGE}-${TARGETARCH} AS y", "$TARGETARCH in FROM", "buildkit"),
    ("ONBUILD RUN --mount=type=tmpfs,target=/t true", "ONBUILD RUN --mount", "buildkit"),
    ("HEALTHCHECK --start-interval=1s CMD true", "HEALTHCHECK --start-interval", "newer-frontend"),
]


@pytest.mark.parametrize(("line", "feature", "needs"), FEATURES, ids=[f[1] for f in FEATURES])
def test_buildkit_only_features_are_listed_with_line_and_need(line: str, feature: str, needs: str) -> None:
    parsed = parse_dockerfile((WIRED + "COPY x /x\n" + line + "\n").encode(), "D")
    assert buildkit_features(parsed) == [BuildKitFeature(line=4, feature=feature, needs=needs)]  # type: ignore[arg-type]


def test_what_the_classic_builder_builds_is_no_feature() -> None:
    text = WIRED + (
        "COPY --from=x --chown=1:1 a /a\nADD --chown=1 b /b\nFROM --platform=linux/amd64 ${BASE_IMAGE}\n"
        "HEALTHCHECK --interval=5s --timeout=1s --start-period=1s --retries=2 CMD true\n"
        "RUN echo $((1<<2))\nONBUILD COPY a /a\n# syntax=docker/dockerfile:1\n"
    )
    assert buildkit_features(parse_dockerfile(text.encode(), "D")) == []


def test_the_syntax_directive_is_read_but_is_no_feature() -> None:
    parsed = parse_dockerfile(b"# syntax=docker/dockerfile:1.7\n# check=skip=all\n" + WIRED.encode(), "D")
    assert parsed.syntax == ("docker/dockerfile:1.7", 1)
    assert buildkit_features(parsed) == []
