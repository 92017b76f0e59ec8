"""Which Dockerfile syntax needs BuildKit and which frontend: the table, and refusals per builder.

The engine-backed check that these answers match Docker Engine 20.10's own frontend is in
tests/test_buildkit.py; here the rules themselves, without an engine.
"""

from __future__ import annotations

import pytest

from imagecascade.core import buildkit_syntax
from imagecascade.core.buildkit_syntax import LABS, FrontendSupport
from imagecascade.core.dockerfile import Dockerfile, buildkit_features, parse_dockerfile
from imagecascade.core.refusals import Refusal

HEAD = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
ENGINE_20_10 = FrontendSupport(builder="buildkit", frontend=(1, 2), describe="frontend X", remedy="upgrade")
NEWEST = FrontendSupport(builder="buildkit", frontend=(1, 14), describe="frontend Y", remedy="upgrade")
UNKNOWN = FrontendSupport(builder="buildkit", frontend=None, describe="frontend Z", remedy="upgrade")
CLASSIC = FrontendSupport(builder="classic", frontend=None, describe="classic only", remedy="use BuildKit")


def parsed(text: str) -> Dockerfile:
    return parse_dockerfile(text.encode(), "Dockerfile")


def features(body: str) -> list[tuple[int, str, tuple[int, int]]]:
    tree = parsed(HEAD + body)
    return [(item.line, *buildkit_syntax.needed(item, tree)) for item in buildkit_features(tree)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("RUN echo hi\nCOPY --chown=1:1 a /a\nCOPY --from=x /a /b\n", []),
        ("RUN --mount=type=cache,target=/c true\n", [(3, "RUN --mount", (1, 2))]),
        ("RUN --mount=target=/src true\n", [(3, "RUN --mount", (1, 2))]),
        ("RUN --mount=type=secret,id=t true\n", [(3, "RUN --mount", (1, 2))]),
        ("RUN --mount=type=secret,id=t,env=T true\n", [(3, "RUN --mount=type=secret with env=", (1, 10))]),
        (
            "RUN --mount=type=tmpfs,target=/t,size=10 true\n",
            [(3, "RUN --mount=type=tmpfs with size=", (1, 4))],
        ),
        ("COPY --chmod=755 a /a\n", [(3, "COPY --chmod", (1, 2))]),
        ("COPY --chmod=u+x a /a\n", [(3, "COPY --chmod (symbolic)", (1, 10))]),
        ("ONBUILD COPY --link a /a\n", [(3, "ONBUILD COPY --link", (1, 4))]),
        ("COPY --link a /a\n", [(3, "COPY --link", (1, 4))]),
        ("ADD --link a /a\n", [(3, "ADD --link", (1, 4))]),
        ("ADD --checksum=sha256:00 https://x/y /y\n", [(3, "ADD --checksum", (1, 6))]),
        ("RUN --network=none true\n", [(3, "RUN --network", (1, 3))]),
        ("RUN --security=insecure true\n", [(3, "RUN --security", LABS)]),
        ("COPY --parents a/b /x/\n", [(3, "COPY --parents", LABS)]),
        ("RUN <<EOF\necho hi\nEOF\n", [(3, "heredoc in RUN", (1, 4))]),
        ("COPY <<EOF /x\nhello\nEOF\n", [(3, "heredoc in COPY", (1, 4))]),
        # $((1<<N)) is shell arithmetic, not a heredoc.
        ("RUN echo $((1<<3))\n", []),
        (
            "FROM --platform=$BUILDPLATFORM ${BASE_IMAGE} AS b\n",
            [(3, "$BUILDPLATFORM in FROM", (1, 0))],
        ),
        (
            "RUN echo a \\\n    && echo b\nCOPY --link a /a\n",
            [(5, "COPY --link", (1, 4))],
        ),
    ],
)
def test_features_and_the_frontend_they_need(
    body: str, expected: list[tuple[int, str, tuple[int, int]]]
) -> None:
    assert features(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("RUN --mount=type=secret,id=tok true\n", [("tok", False, 3)]),
        ("RUN --mount=type=secret,id=tok,required=true true\n", [("tok", True, 3)]),
        ("RUN --mount=type=secret,id=tok,required true\n", [("tok", True, 3)]),
        ("RUN --mount=type=secret,id=tok,required=false true\n", [("tok", False, 3)]),
        # Without an id, BuildKit uses the file name of the target.
        ("RUN --mount=type=secret,target=/run/secrets/netrc true\n", [("netrc", False, 3)]),
        (
            "RUN --mount=type=cache,target=/c --mount=type=secret,id=a --mount=type=secret,id=b true\n",
            [("a", False, 3), ("b", False, 3)],
        ),
    ],
)
def test_secret_mounts(body: str, expected: list[tuple[str, bool, int]]) -> None:
    found = [
        (mount.id, mount.required, mount.line) for mount in buildkit_syntax.secret_mounts(parsed(HEAD + body))
    ]
    assert found == expected


def test_refusals_name_file_line_feature_and_what_it_needs() -> None:
    tree = parse_dockerfile((HEAD + "RUN echo ok\nCOPY --link a /a\n").encode(), "images/app/Dockerfile")
    assert buildkit_syntax.refusal(tree, NEWEST) is None
    assert buildkit_syntax.refusal(tree, UNKNOWN) is None
    refused = buildkit_syntax.refusal(tree, ENGINE_20_10)
    assert refused == Refusal(
        "images/app/Dockerfile: line 4: COPY --link needs Dockerfile frontend 1.4 or newer, "
        "but the frontend X is 1.2",
        "upgrade",
    )
    classic = buildkit_syntax.refusal(tree, CLASSIC)
    assert classic == Refusal(
        "images/app/Dockerfile: line 4: COPY --link needs BuildKit, but classic only", "use BuildKit"
    )


@pytest.mark.parametrize("directive", ["# syntax=docker/dockerfile:1.4", "#syntax = docker/dockerfile:1"])
def test_a_syntax_directive_is_refused_with_buildkit_and_ignored_by_classic(directive: str) -> None:
    tree = parsed(f"{directive}\n{HEAD}RUN echo hi\n")
    refused = buildkit_syntax.refusal(tree, NEWEST)
    assert refused is not None and refused.reason.startswith(
        "Dockerfile: line 1: `# syntax=docker/dockerfile:1"
    )
    assert "registry" in refused.reason and refused.fix.startswith("remove the line")
    assert buildkit_syntax.refusal(tree, CLASSIC) is None
    # A comment after the first instruction is not a directive.
    assert buildkit_syntax.refusal(parsed(f"{HEAD}{directive}\nRUN echo hi\n"), NEWEST) is None
