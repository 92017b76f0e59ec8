"""The .dockerignore port against Docker itself: tables of Docker's answers, then hypothesis.

The oracle is the real docker CLI (28.x) sending a context to a stand-in daemon
(`docker_oracle.ContextCapture`): it applies `.dockerignore` with today's moby/patternmatcher,
as BuildKit does. Where the classic CLI's walk differs from BuildKit's (it does not enter an
excluded folder for an exception with a wildcard), we follow BuildKit and count the difference.

`IMAGECASCADE_DIFFERENTIAL_EXAMPLES=600 python -m pytest tests/test_dockerignore.py -k hypothesis`
runs the long differential run; CI runs 40 examples.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_oracle import ContextCapture, classic_cli_listing, docker_available, listing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagecascade.core.context import scan_context
from imagecascade.core.dockerignore import (
    IgnoreRules,
    go_clean,
    go_match_syntax_error,
    load_ignore_rules,
    parse_ignore_file,
    read_ignore_lines,
)
from imagecascade.errors import ConfigError

EXAMPLES = int(os.environ.get("IMAGECASCADE_DIFFERENTIAL_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContextCapture]:
    if not docker_available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the docker CLI (/usr/local/bin/docker) is needed as the oracle")
        pytest.skip("no docker CLI at /usr/local/bin/docker")
    capture = ContextCapture(tmp_path_factory.mktemp("oracle"))
    yield capture
    capture.close()


def make_tree(root: Path, files: dict[str, str | None], ignore: bytes | None) -> Path:
    """Files (None: an empty folder) under `root/ctx`; the Dockerfile lives outside it."""
    context = root / "ctx"
    context.mkdir()
    for relative, content in files.items():
        path = context / relative
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    if ignore is not None:
        (context / ".dockerignore").write_bytes(ignore)
    (root / "Dockerfile").write_text("FROM scratch\n")
    return context


def sent_paths(context: Path) -> set[str]:
    entries = scan_context(context, context.parent / "Dockerfile")
    return {entry.path for entry in entries if entry.kind != "dir"} - {".dockerignore"}


# (id, files, .dockerignore bytes, the files Docker sends); each is also asked of Docker itself.
TREE = {
    "x.pyc": "1",
    "a/b/deep.pyc": "2",
    "ui/app.js": "3",
    "ui/node_modules/pkg/index.js": "4",
    "node_modules/top.js": "5",
    "app/main.py": "6",
    "app/secrets/key": "7",
    "file!.txt": "8",
    "filea.txt": "9",
    "fileb.txt": "10",
    "ab": "11",
    "axb": "12",
    "a/b/c": "13",
    "secret.txt": "14",
    "#keep.txt": "15",
    "keep.txt": "16",
}
ALL = set(TREE)
DOCKER_ANSWERS = [
    ("leading ** matches any prefix", b"**.pyc\n", ALL - {"x.pyc", "a/b/deep.pyc"}),
    (
        "an exception does not re-include below an excluded folder",
        b"**/node_modules\n!ui\n",
        ALL - {"ui/node_modules/pkg/index.js", "node_modules/top.js"},
    ),
    ("excluded in a re-included folder stays excluded", b"app/secrets\n!app\n", ALL - {"app/secrets/key"}),
    ("[!a] is the set of ! and a", b"file[!a].txt\n", ALL - {"file!.txt", "filea.txt"}),
    ("a**b matches a/b, not axb", b"a**b\n", ALL - {"ab", "a/b/deep.pyc", "a/b/c"}),
    ("patterns that clean to the root exclude nothing", b".\n/\nfoo/..\n./\n", ALL),
    ("a UTF-8 BOM is ignored", b"\xef\xbb\xbfsecret.txt\n", ALL - {"secret.txt"}),
    ("# is a comment only in the first column", b"#keep.txt\n #keep.txt\n", ALL - {"#keep.txt"}),
    ("CRLF line ends", b"secret.txt\r\nkeep.txt\r\n", ALL - {"secret.txt", "keep.txt"}),
    ("leading and trailing slashes", b"/a/b/\n", ALL - {"a/b/deep.pyc", "a/b/c"}),
    ("the last match wins", b"*.txt\n!file*.txt\nfileb.txt\n", ALL - {"secret.txt", "#keep.txt", "keep.txt", "fileb.txt"}),  # noqa: E501
    ("an exception below an excluded folder", b"app\n!app/secrets\n", ALL - {"app/main.py"}),
    ("** alone excludes everything", b"**\n", set()),
    ("* stops at a slash", b"*/b\n", ALL - {"a/b/deep.pyc", "a/b/c"}),
    ("? is one character", b"a?b\n", ALL - {"axb"}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "ignore", "expected"), DOCKER_ANSWERS, ids=[c[0] for c in DOCKER_ANSWERS])
def test_dockers_answers(tmp_path: Path, case: str, ignore: bytes, expected: set[str]) -> None:
    context = make_tree(tmp_path, TREE, ignore)
    assert sent_paths(context) == expected


@pytest.mark.parametrize(("case", "ignore", "expected"), DOCKER_ANSWERS, ids=[c[0] for c in DOCKER_ANSWERS])
def test_dockers_answers_are_dockers(
    tmp_path: Path, capture: ContextCapture, case: str, ignore: bytes, expected: set[str]
) -> None:
    context = make_tree(tmp_path, TREE, ignore)
    sent = capture.sent(context)
    assert isinstance(sent, dict), sent
    assert {path for path, kind in sent.items() if kind != "dir"} == expected


def test_an_exception_with_a_wildcard_is_looked_for_below_an_excluded_folder(
    tmp_path: Path, capture: ContextCapture
) -> None:
    """BuildKit (fsutil filter.go) enters `build/` for `!**/keep`; the classic CLI does not."""
    context = make_tree(tmp_path, {"build/out.o": "1", "build/keep": "2", "keep": "3"}, b"build\n!**/keep\n")
    assert sent_paths(context) == {"build/keep", "keep"}
    sent = capture.sent(context)
    assert isinstance(sent, dict)
    assert set(sent) == {"keep"}  # the documented difference of the classic builder


BAD_PATTERNS = [
    (b"ok\nfoo\\\n", 2, "syntax error in pattern"),
    (b"!\n", 1, 'illegal exclusion pattern: "!"'),
    (b"a\n ! \n", 2, 'illegal exclusion pattern: "!"'),
    (b"!/\n", 1, 'illegal exclusion pattern: "!"'),
    (b"x[a\n", 1, "syntax error in pattern"),
    (b"[]a]\n", 1, "syntax error in pattern"),
    (b"[a-]\n", 1, "syntax error in pattern"),
    (b"[\\\n", 1, "syntax error in pattern"),
    (b"*/a/[]a]\n", 1, "syntax error in pattern"),
    (b"*/[\xff]\n", 1, "syntax error in pattern"),  # invalid UTF-8 inside a class
]
# Go's Match stops at the first chunk that cannot match ".": Docker accepts these.
ACCEPTED_ODDITIES = [b"*/*/[]a]\n", b"x*/[]a]\n", b"*/*/a\\\n", b"*/*/[\xff]\n"]
# A regular expression Go refuses (`\e`) is compiled only when Docker's order reaches the pattern.
ACCEPTED_ODDITIES.append(b"nothing-here\n!\\e.txt\n")


@pytest.mark.parametrize("ignore", ACCEPTED_ODDITIES, ids=repr)
def test_patterns_docker_accepts_despite_their_syntax(
    tmp_path: Path, capture: ContextCapture, ignore: bytes
) -> None:
    context = make_tree(tmp_path, {"a.txt": "1"}, ignore)
    assert sent_paths(context) == {"a.txt"}
    assert isinstance(capture.sent(context), dict)


@pytest.mark.parametrize(("ignore", "line", "problem"), BAD_PATTERNS, ids=[repr(c[0]) for c in BAD_PATTERNS])
def test_patterns_docker_refuses_name_file_and_line(
    tmp_path: Path, capture: ContextCapture, ignore: bytes, line: int, problem: str
) -> None:
    context = make_tree(tmp_path, {"a.txt": "1"}, ignore)
    with pytest.raises(ConfigError, match=f"line {line}: {problem}") as raised:
        scan_context(context, tmp_path / "Dockerfile")
    assert str(context / ".dockerignore") in str(raised.value)
    assert isinstance(capture.sent(context), str)  # Docker refuses it too


def test_a_dockerfile_ignore_file_replaces_the_context_one(tmp_path: Path) -> None:
    context = make_tree(tmp_path, {"a.txt": "1", "b.txt": "2", "Dockerfile": "FROM x\n"}, b"a.txt\n")
    (context / "Dockerfile.dockerignore").write_text("b.txt\nDockerfile*\n")
    entries = scan_context(context, context / "Dockerfile")
    # BuildKit: the Dockerfile and its ignore file are sent only when not excluded.
    assert {entry.path for entry in entries} == {"a.txt", ".dockerignore"}
    rules = load_ignore_rules(context, context / "Dockerfile")
    assert rules.source == context / "Dockerfile.dockerignore"


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [("", "."), ("a//b", "a/b"), ("/../a", "/a"), ("a/../..", ".."), ("//a/./b/", "/a/b"), ("./", ".")],
)
def test_go_clean(path: str, cleaned: str) -> None:
    assert go_clean(path) == cleaned


def test_read_ignore_lines_follows_ignorefile_readall() -> None:
    data = b"\xef\xbb\xbf # not a comment \r\n#comment\n\n  !  /a/../b/  \n/\n\xff\n"
    assert read_ignore_lines(data) == [(1, "# not a comment"), (4, "!b"), (5, "/"), (6, "\udcff")]


@pytest.mark.parametrize(
    ("pattern", "bad"),
    [
        ("*", False),
        ("[", True),
        ("a\\", True),
        ("[^a]", False),
        ("[a-c]*", False),
        ("\\[x", False),
        ("[*]", False),
        ("*/[]a]", True),
        ("*/*/[]a]", False),
    ],
)
def test_go_match_syntax(pattern: str, bad: bool) -> None:
    assert go_match_syntax_error(pattern) is bad


GO_QUIRKS = [
    ("[*]", "]", True),  # patternmatcher's regex reads `[*]` as the class [[^/] repeated, then `]`
    ("[*]", "x]", False),
    ("[*]", "[^]", True),
    ("\\d", "5", True),  # `\d` reaches Go's regexp as a digit class
    ("\\d", "d", False),
    ("a^b", "a^b", True),  # an exact match: no regex involved
    ("a^*", "a^b", False),  # `^` is an anchor in the regex
    ("**", "anything/at/all", True),
    ("**/x", "x", True),
    ("x**", "xy/z", True),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("\ufeff*.txt", "a.txt", True),  # a BOM before a wildcard is skipped by text/scanner...
    ("\ufeffa.txt", "a.txt", False),  # ...but kept by an exact match
    ("?", "\udcff", True),  # one byte of invalid UTF-8 is one character
    ("*.txt", "a\n.txt", True),
    ("a\\*", "a*", True),
    ("[[:digit:]]", "7", True),  # POSIX classes of Go's regexp
]


@pytest.mark.parametrize(("pattern", "path", "matched"), GO_QUIRKS, ids=[repr(c[:2]) for c in GO_QUIRKS])
def test_patterns_match_as_go_does(
    tmp_path: Path, capture: ContextCapture, pattern: str, path: str, matched: bool
) -> None:
    ignore = b"# the first line may lose a BOM\n" + os.fsencode(pattern) + b"\n"
    rules = IgnoreRules(parse_ignore_file(ignore, "x"), None)
    parts = path.split("/")
    verdict, info = rules.matches(parts[0], None)
    for index in range(1, len(parts)):
        verdict, info = rules.matches("/".join(parts[: index + 1]), info)
    assert verdict is matched
    context = make_tree(tmp_path, {path: "x", "other": "y"}, ignore)
    sent = capture.sent(context)
    assert isinstance(sent, dict), sent
    assert (path not in sent) is matched


# --- hypothesis: random trees and ignore files against the real docker CLI ----------------------

_NAMES = [
    "a",
    "b",
    "c.txt",
    "d.py",
    ".hidden",
    "x.pyc",
    "node_modules",
    "ui",
    "#h",
    "!b",
    "sp ace",
    "ünï",
    "[x]",
    "q?",
    "\udcff",
]
_SEGMENTS = [*_NAMES[:8], "*", "**", "?", "*.txt", "*.py*", "a*", "**x", "[ab]", "[!a]", "[^a]", "[a-c]*"]
_SEGMENTS += ["\\*", ".", "..", "\udcff", "ü*"]
_name = st.sampled_from(_NAMES)
_kind = st.sampled_from(["file", "file", "file", "exec", "dir", "symlink", "hardlink"])
_entry = st.tuples(st.lists(_name, min_size=1, max_size=4), _kind, st.text(string.ascii_letters, max_size=4))
_tree = st.lists(_entry, min_size=3, max_size=14)
_pattern = st.builds(
    lambda bang, slash, parts, trail, pad: (
        pad + ("!" if bang else "") + ("/" if slash else "") + "/".join(parts) + ("/" if trail else "") + pad
    ),
    st.booleans(),
    st.booleans(),
    st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=3),
    st.booleans(),
    st.sampled_from(["", "", " ", "\t"]),
)
_invalid = st.sampled_from(["!", "[", "a\\", "x[a-]"])
_noise = st.sampled_from(["", "# comment", " #x", "#", "*.nothing"])


def _component(name: str) -> st.SearchStrategy[str]:
    """One path component as a pattern: itself, or with Docker's wildcards in it."""
    return st.sampled_from(
        [name, name, "*", "**", "?" + name[1:], name[:1] + "*", "*" + name[-1:], f"[{name[:1]}]{name[1:]}",
         f"[!{name[:1]}]{name[1:]}", f"[^{name[:1]}]{name[1:]}", name[:1] + "**", "\\" + name]
    )  # fmt: skip


@st.composite
def _tree_pattern(draw: st.DrawFn, paths: list[str]) -> str:
    """A pattern aimed at the tree: a prefix of one of its paths, some components made wildcards."""
    parts = draw(st.sampled_from(paths)).split("/")
    parts = parts[: draw(st.integers(1, len(parts)))]
    text = "/".join(draw(_component(part)) for part in parts)
    text = (
        draw(st.sampled_from(["", "", "/", "**/", "*/", "../"]))
        + text
        + draw(st.sampled_from(["", "", "/", "/**", "/*"]))
    )
    return draw(st.sampled_from(["", "", "", "!", "! "])) + text


@st.composite
def _exclusion_and_exception(draw: st.DrawFn, paths: list[str]) -> list[str]:
    """A folder excluded, then something below it re-included: where Docker's rules are subtle."""
    parts = draw(st.sampled_from(paths)).split("/")
    cut = draw(st.integers(1, len(parts)))
    folder = "/".join(draw(_component(part)) for part in parts[:cut])
    below = "/".join(draw(_component(part)) for part in parts[cut:]) or "*"
    exceptions = [
        "!" + "/".join(parts),
        f"!{folder}/{below}",
        f"!**/{parts[-1]}",
        f"!*/{below}",
        "!" + parts[0],
    ]
    exception = draw(st.sampled_from(exceptions))
    return [draw(st.sampled_from(["", "**/", "/"])) + folder, exception]


@st.composite
def _ignore_for(draw: st.DrawFn, paths: list[str]) -> bytes:
    """An ignore file: tree-aimed and grammar patterns, comments, blanks, CRLF, a BOM, rare errors."""
    aimed = _tree_pattern(paths).map(lambda text: [text])
    single = st.one_of(_pattern, _noise).map(lambda text: [text])
    groups = st.one_of(aimed, aimed, _exclusion_and_exception(paths), single)
    lines = [line for group in draw(st.lists(groups, max_size=5)) for line in group]
    if draw(st.integers(0, 9)) == 9:  # rare (hypothesis starts from 0)
        lines.insert(draw(st.integers(0, len(lines))), draw(_invalid))
    pad = draw(st.sampled_from(["", "", " ", "\t"]))
    newline = draw(st.sampled_from([b"\n", b"\n", b"\r\n"]))
    bom = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf"]))
    return bom + newline.join(os.fsencode(pad + text + pad) for text in lines)


def _build_tree(context: Path, spec: list[tuple[list[str], str, str]]) -> None:
    files: list[Path] = []
    for parts, kind, content in spec:
        path = context.joinpath(*parts)
        if path.parts[-1] == ".dockerignore" or any(
            (part.exists() and not part.is_dir()) or part.is_symlink() for part in path.parents
        ):
            continue  # a file cannot also be a folder
        if path.exists() or path.is_symlink():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            path.mkdir()
        elif kind == "symlink":
            path.symlink_to(content or "missing")
        elif kind == "hardlink" and files:
            os.link(files[len(content) % len(files)], path)
        else:
            path.write_text(content)
            path.chmod(0o755 if kind == "exec" else 0o644)
            files.append(path)


class Tally:
    examples = 0
    refused = 0
    regex_refused = 0  # of which: a regular expression Go refuses (classic CLI: truncated context)
    excluding = 0  # examples where the ignore file left something out
    reincluding = 0  # ...and an exception brought something back
    differences = 0


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=_tree, data=st.data())
def test_hypothesis_trees_and_ignore_files_against_the_docker_cli(
    tmp_path_factory: pytest.TempPathFactory,
    capture: ContextCapture,
    tree: list[tuple[list[str], str, str]],
    data: st.DataObject,
) -> None:
    ignore = data.draw(_ignore_for(["/".join(parts) for parts, _, _ in tree]))
    root = tmp_path_factory.mktemp("tree")
    context = root / "ctx"
    context.mkdir()
    _build_tree(context, tree)
    (context / ".dockerignore").write_bytes(ignore)
    (root / "Dockerfile").write_text("FROM scratch\n")
    Tally.examples += 1
    docker = capture.sent(context)
    try:
        ours = listing(scan_context(context, root / "Dockerfile"))
    except ConfigError as error:
        Tally.refused += 1
        if "syntax error in pattern (" in str(error):
            # Go's regexp refuses it when first used: BuildKit fails the build; the classic CLI
            # logs the error, stops its walk and sends what it had.
            Tally.regex_refused += 1
            return
        assert isinstance(docker, str), f"we refuse ({error}), Docker sends {docker}"
        return
    assert isinstance(docker, dict), f"Docker refuses ({docker}), we send {ours}"
    ours.pop(".dockerignore", None)
    classic = classic_cli_listing(context, load_ignore_rules(context, root / "Dockerfile"))
    assert docker == classic  # the matcher, and the classic CLI's walk, are Docker's
    everything = classic_cli_listing(context, IgnoreRules((), None))
    if ours != everything:
        Tally.excluding += 1
        rules = load_ignore_rules(context, root / "Dockerfile")
        without_exceptions = IgnoreRules(tuple(p for p in rules.patterns if not p.exclusion), None)
        if classic_cli_listing(context, without_exceptions) != classic:
            Tally.reincluding += 1
    if ours != classic:
        Tally.differences += 1
        # Only BuildKit's wider look below excluded folders may differ: it sends more, never less.
        assert set(classic) - set(ours) <= {
            path for path in classic if any(p.startswith(path + "/") for p in ours)
        }
        assert any(pattern.exclusion for pattern in load_ignore_rules(context, root / "Dockerfile").patterns)


def test_hypothesis_tally(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints how many examples ran and how many hit the documented classic/BuildKit difference."""
    with capsys.disabled():
        print(
            f"\ndifferential: {Tally.examples} examples: {Tally.refused} refused "
            f"({Tally.regex_refused} by Go's regexp, where the classic CLI truncates instead), "
            f"{Tally.excluding} excluding something, {Tally.reincluding} re-including with `!`, "
            f"{Tally.differences} with the classic-walk difference"
        )


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_pattern, max_size=6), parts=st.lists(st.sampled_from(_NAMES), min_size=1, max_size=4))
def test_a_files_verdict_from_the_last_pattern_back_is_the_forward_one(
    lines: list[str], parts: list[str]
) -> None:
    path = "/".join(parts)
    try:
        rules = IgnoreRules(parse_ignore_file("\n".join(lines).encode("utf-8", "surrogateescape"), "x"), None)
        info = None
        for depth in range(1, len(parts)):
            info = rules.matches("/".join(parts[:depth]), info)[1]
        forward = rules.matches(path, info)[0]
    except ConfigError:  # refused by Docker too: a bad pattern, or a regex its order reaches
        return
    assert rules.excludes(path, info) == forward
