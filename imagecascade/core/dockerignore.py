"""Docker's .dockerignore rules, ported from the Go sources that BuildKit and the docker CLI run.

Ported, not reimagined: each function names the Go code it follows. Sources and versions read:

- moby/patternmatcher v0.6.1, `ignorefile/ignorefile.go` (`ReadAll`): a UTF-8 BOM is stripped
  from the first line; a line starting with `#` (before any trimming) is a comment; lines are
  trimmed of Unicode spaces, `!` marks an exception, each pattern is `filepath.Clean`ed and one
  leading `/` dropped. Lines end at `\\n`; one trailing `\\r` is dropped (bufio.ScanLines).
- moby/patternmatcher v0.6.1, `patternmatcher.go`: `New` (trim, Clean again, a lone `!` is an
  error, syntax checked with `filepath.Match(p, ".")`), `Pattern.compile` (the pattern becomes
  an exact, prefix or suffix match or a Go regular expression; see `goregex`), `Pattern.match`,
  `MatchesUsingParentResults` (what BuildKit and the docker CLI decide a path with: a pattern
  that matched a folder matches everything below it, and a later `!` pattern must match the
  path itself to re-include it) and `MatchesOrParentMatches` (what the classic daemon uses to
  drop the Dockerfile and `.dockerignore` from the context it received).
- Go 1.24 `path.Clean` and `path/filepath.Match` (`match.go`, for its syntax errors: see
  `go_match_syntax_error`; later Go sources also check the chunks after the first that fails,
  which the docker CLI 28.2 measured here does not).
- tonistiigi/fsutil `filter.go` (commit 6d9dc2e): BuildKit's walk. An excluded folder is still
  entered when an exception could match below it: always when an exception has a wildcard
  (`*[]?^\\`, after dropping a trailing `/**` or `/*`), else when an exception's text starts
  with the folder's path. The docker CLI's classic builder (moby/go-archive `TarWithOptions`)
  enters only in the second case; this module follows BuildKit, the default builder.
- moby/buildkit `frontend/dockerui` and docker/cli `cli/command/image/build/dockerignore.go`:
  `<Dockerfile>.dockerignore` next to the Dockerfile replaces the context's `.dockerignore`
  (BuildKit only; the classic builder reads only `.dockerignore`).

Paths are POSIX strings relative to the context root; bytes that are not UTF-8 are carried as
`surrogateescape` characters (what `os.fsdecode` gives), so every file name can be matched.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from imagecascade.core import goregex
from imagecascade.errors import ConfigError

IGNORE_FILE = ".dockerignore"
_BOM = b"\xef\xbb\xbf"
_MAX_LINE = 64 * 1024  # bufio.Scanner's MaxScanTokenSize: a longer line is an error
# Go's unicode.IsSpace (strings.TrimSpace trims these).
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
# fsutil's patternChars: an exception holding one of these may match anywhere below a folder.
_WILDCARDS = frozenset("*[]?^\\")
_ESCAPE_IN_REGEX = frozenset(".+()|{}$")


def go_clean(path: str) -> str:
    """Go's `path.Clean` (what `filepath.Clean` does on Linux): the shortest equivalent path."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


class _BadPattern(Exception):
    """Go's filepath.ErrBadPattern."""


def go_match_syntax_error(pattern: str) -> bool:
    """True when `filepath.Match(pattern, ".")` reports ErrBadPattern: patternmatcher's check.

    Measured against the docker CLI 28.2 (Go 1.24): Match checks a whole chunk once it looks at
    it (matchChunk keeps parsing after a mismatch) but stops at the first chunk that cannot
    match, so `*/*/[]a]` passes while `*/[]a]` and `[]a]` do not.
    """
    try:
        _go_match(pattern, ".")
    except _BadPattern:
        return True
    return False


def _go_match(pattern: str, name: str) -> bool:
    """path/filepath.Match on Linux; raises _BadPattern."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name  # a trailing * matches the rest unless it has a /
        rest, ok = _match_chunk(chunk, name)
        if ok and (not rest or pattern):
            name = rest
            continue
        if star:
            index = 0
            found = False
            while index < len(name) and name[index] != "/":
                rest, ok = _match_chunk(chunk, name[index + 1 :])
                index += 1
                if ok:
                    if not pattern and rest:
                        continue  # the last chunk must use up the name
                    name = rest
                    found = True
                    break
            if found:
                continue
        return False
    return not name


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """scanChunk: (leading star?, the chunk up to the next star outside a class, the rest)."""
    stripped = pattern.lstrip("*")
    star = len(stripped) != len(pattern)
    in_range = False
    index = 0
    while index < len(stripped):
        char = stripped[index]
        if char == "\\" and index + 1 < len(stripped):
            index += 1
        elif char == "[":
            in_range = True
        elif char == "]":
            in_range = False
        elif char == "*" and not in_range:
            break
        index += 1
    return star, stripped[:index], stripped[index:]


def _match_chunk(chunk: str, text: str) -> tuple[str, bool]:
    """matchChunk: (rest of `text`, matched?); raises _BadPattern for a malformed chunk."""
    failed = False
    index = 0
    while index < len(chunk):
        if not failed and not text:
            failed = True
        char = chunk[index]
        if char == "[":
            rune = None
            if not failed:
                rune, text = ord(text[0]), text[1:]
            index += 1
            negated = index < len(chunk) and chunk[index] == "^"
            if negated:
                index += 1
            match = False
            ranges = 0
            while True:
                if index < len(chunk) and chunk[index] == "]" and ranges > 0:
                    index += 1
                    break
                low, index = _get_escape(chunk, index)
                high = low
                if chunk[index] == "-":
                    high, index = _get_escape(chunk, index + 1)
                if rune is not None and low <= rune <= high:
                    match = True
                ranges += 1
            if match == negated:
                failed = True
            continue
        if char == "?":
            if not failed:
                failed = text[0] == "/"
                text = text[1:]
            index += 1
            continue
        if char == "\\":
            index += 1
            if index >= len(chunk):
                raise _BadPattern
        if not failed:
            failed = chunk[index] != text[0]
            text = text[1:]
        index += 1
    return ("", False) if failed else (text, True)


def _get_escape(chunk: str, index: int) -> tuple[int, int]:
    """getEsc: one possibly escaped class character; (its code point, the index after it)."""
    if index >= len(chunk) or chunk[index] in "-]":
        raise _BadPattern
    if chunk[index] == "\\":
        index += 1
        if index >= len(chunk):
            raise _BadPattern
    if "\udc80" <= chunk[index] <= "\udcff":  # invalid UTF-8 in the pattern
        raise _BadPattern
    index += 1
    if index >= len(chunk):
        raise _BadPattern
    return ord(chunk[index - 1]), index


@dataclasses.dataclass(eq=False)
class Pattern:
    """One compiled pattern (patternmatcher's Pattern); compiled on first use, as in Go."""

    text: str  # cleaned, without the leading `!`
    exclusion: bool  # True for a `!` exception
    line: int  # 1-based line in the ignore file, for messages
    source: str  # the ignore file, for messages
    # Truthy when the path matches. Compiled on first use; from then on the compiled matcher
    # itself (one call per pattern and path is the walk's hot path).
    match: Callable[[str], object] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.match = self._compile_and_match

    def without_trailing_glob(self) -> str:
        """fsutil's patternWithoutTrailingGlob."""
        return self.text.removesuffix("/**").removesuffix("/*")

    def _compile_and_match(self, path: str) -> object:
        self.match = self._compile()
        return self.match(path)

    def _compile(self) -> Callable[[str], object]:
        """patternmatcher's Pattern.compile with the separator `/`."""
        pattern = self.text
        regex = "^"
        kind = "exact"
        position = 1 if pattern.startswith("\ufeff") else 0  # text/scanner skips a leading BOM
        iteration = 0
        while position < len(pattern):
            char = pattern[position]
            position += 1
            if char == "*":
                if position < len(pattern) and pattern[position] == "*":
                    position += 1
                    if position < len(pattern) and pattern[position] == "/":
                        position += 1
                    if position >= len(pattern):
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            regex += ".*"
                            kind = "regexp"
                    else:
                        regex += "(.*/)?"
                        kind = "regexp"
                    if iteration == 0:
                        kind = "suffix"
                else:
                    regex += "[^/]*"
                    kind = "regexp"
            elif char == "?":
                regex += "[^/]"
                kind = "regexp"
            elif char in _ESCAPE_IN_REGEX:
                regex += "\\" + char
            elif char == "\\":
                if position < len(pattern):
                    regex += "\\" + _rune(pattern[position])
                    position += 1
                    kind = "regexp"
                else:
                    regex += "\\"
            elif char in "[]":
                regex += char
                kind = "regexp"
            else:
                regex += _rune(char)
            iteration += 1
        return self._matcher_for(kind, regex + "$")

    def _matcher_for(self, kind: str, regex: str) -> Callable[[str], object]:
        text = self.text
        if kind == "exact":
            return text.__eq__
        if kind == "prefix":
            return _bytes_safe(text[:-2], str.startswith, bytes.startswith)
        if kind == "suffix":
            if not text.startswith("**"):  # a BOM before `**`: Go slices the bytes
                raw = os.fsencode(text)[2:]
                return lambda path: (
                    os.fsencode(path).endswith(raw) or (raw[:1] == b"/" and os.fsencode(path) == raw[1:])
                )
            suffix = text[2:]
            bare = suffix[1:] if suffix.startswith("/") else None
            if not any("\udc80" <= char <= "\udcff" for char in suffix):
                return lambda path: path.endswith(suffix) or path == bare
            ends = _bytes_safe(suffix, str.endswith, bytes.endswith)
            return lambda path: ends(path) or path == bare
        try:
            compiled = re.compile(goregex.translate(regex), re.ASCII)
        except goregex.NotPorted as error:
            raise ConfigError(f"{self.source}: line {self.line}: {self.text!r}: {error}") from error
        except (goregex.GoRegexError, re.error) as error:
            raise ConfigError(
                f"{self.source}: line {self.line}: {self.text!r}: syntax error in pattern ({error})"
            ) from error
        return compiled.match


def _rune(char: str) -> str:
    """A character as Go's text/scanner hands it on: an invalid UTF-8 byte becomes U+FFFD."""
    return "\ufffd" if "\udc80" <= char <= "\udcff" else char


def _bytes_safe(
    literal: str, on_text: Callable[[str, str], bool], on_bytes: Callable[[bytes, bytes], bool]
) -> Callable[[str], bool]:
    """Compare as Go does (bytes) even where the literal holds escaped invalid UTF-8."""
    if any("\udc80" <= char <= "\udcff" for char in literal):
        raw = os.fsencode(literal)
        return lambda path: on_bytes(os.fsencode(path), raw)
    return lambda path: on_text(path, literal)


MatchInfo = tuple[object, ...]  # per pattern: truthy if it matched the folder above (Go's MatchInfo)


@dataclasses.dataclass(frozen=True)
class IgnoreRules:
    """The patterns of one ignore file, in order; `source` is None when there is none."""

    patterns: tuple[Pattern, ...]
    source: Path | None
    _last_first: tuple[Pattern, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_last_first", self.patterns[::-1])

    @property
    def exclusions(self) -> bool:
        return any(pattern.exclusion for pattern in self.patterns)

    def matches(self, path: str, parent: MatchInfo | None) -> tuple[bool, MatchInfo]:
        """MatchesUsingParentResults: (excluded?, this path's MatchInfo for its children).

        `parent` is the MatchInfo of the folder holding `path`, or None at the context root
        (then every folder above is tried, as MatchesOrParentMatches does).
        """
        matched = False
        info: list[object] = []
        record = info.append
        if not parent:
            for pattern in self.patterns:
                match: object = False
                if pattern.exclusion == matched:
                    match = pattern.match(path) or _parent_matches(pattern, path)
                    if match:
                        matched = not pattern.exclusion
                record(match)
            return matched, tuple(info)
        # The hot path: once per entry below the top level.
        for inherited, pattern in zip(parent, self.patterns, strict=True):
            if not inherited:
                if pattern.exclusion != matched:
                    record(False)
                    continue
                inherited = pattern.match(path)
            record(inherited)
            if inherited:
                matched = not pattern.exclusion
        return matched, tuple(info)

    def excludes(self, path: str, parent: MatchInfo | None) -> bool:
        """`matches(path, parent)[0]` without the MatchInfo: for files, which have no children.

        The same answer, found from the last pattern back: MatchesUsingParentResults skips a
        pattern only when it could not change the verdict, so the verdict is that of the last
        pattern that matches the path or matched its folder.
        """
        try:
            if parent:
                for inherited, pattern in zip(parent[::-1], self._last_first, strict=True):
                    if inherited or pattern.match(path):
                        return not pattern.exclusion
                return False
            for pattern in self._last_first:
                if pattern.match(path) or _parent_matches(pattern, path):
                    return not pattern.exclusion
            return False
        except ConfigError:
            # A pattern Go's regexp refuses fails the build only where Docker's own order reaches it.
            return self.matches(path, parent)[0]

    def matches_or_parent_matches(self, path: str) -> bool:
        """MatchesOrParentMatches: the rule the classic daemon removes files from its context by."""
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.match(path) or _parent_matches(pattern, path):
                matched = not pattern.exclusion
        return matched

    def may_include_below(self, folder: str) -> bool:
        """fsutil filter: whether BuildKit enters the excluded `folder` looking for exceptions."""
        exceptions = [pattern.without_trailing_glob() for pattern in self.patterns if pattern.exclusion]
        if not exceptions:
            return False
        if any(_WILDCARDS.intersection(text) for text in exceptions):
            return True
        prefix = folder + "/"
        return any((text + "/").startswith(prefix) for text in exceptions)


def _parent_matches(pattern: Pattern, path: str) -> bool:
    parent = path.rpartition("/")[0]
    if not parent:
        return False
    parts = parent.split("/")
    return any(pattern.match("/".join(parts[: count + 1])) for count in range(len(parts)))


def read_ignore_lines(data: bytes) -> list[tuple[int, str]]:
    """ignorefile.ReadAll: (line number, pattern with `!` kept) for each pattern, in order.

    Raises ConfigError for a line longer than 64 KiB (Go's bufio.Scanner refuses it).
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # ScanLines yields no empty token after a final newline
    patterns: list[tuple[int, str]] = []
    for number, raw in enumerate(lines, start=1):
        if len(raw) > _MAX_LINE:
            raise ValueError(f"line {number}: longer than 64 KiB (bufio.Scanner: token too long)")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        line = os.fsdecode(raw)
        if line.startswith("#"):
            continue
        line = line.strip(_GO_SPACE)
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip(_GO_SPACE)
        if line:
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append((number, "!" + line if invert else line))
    return patterns


def compile_patterns(lines: Sequence[tuple[int, str]], source: str) -> tuple[Pattern, ...]:
    """patternmatcher.New: raises ConfigError naming `source` and the line of a refused pattern."""
    compiled: list[Pattern] = []
    for number, raw in lines:
        text = raw.strip(_GO_SPACE)
        if not text:
            continue
        text = go_clean(text)
        exclusion = text.startswith("!")
        if exclusion:
            if len(text) == 1:
                raise ConfigError(f'{source}: line {number}: illegal exclusion pattern: "!"')
            text = text[1:]
        if go_match_syntax_error(text):
            raise ConfigError(f"{source}: line {number}: syntax error in pattern {raw!r}")
        compiled.append(Pattern(text=text, exclusion=exclusion, line=number, source=source))
    return tuple(compiled)


def ignore_file_for(context: Path, dockerfile: Path) -> Path | None:
    """The ignore file BuildKit applies: `<Dockerfile>.dockerignore` if present, else `.dockerignore`."""
    specific = dockerfile.with_name(dockerfile.name + IGNORE_FILE)
    if specific.is_file():
        return specific
    general = context / IGNORE_FILE
    return general if general.is_file() else None


def parse_ignore_file(data: bytes, source: str) -> tuple[Pattern, ...]:
    """An ignore file's bytes as compiled patterns; ConfigError names `source` and the line."""
    try:
        lines = read_ignore_lines(data)
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from error
    return compile_patterns(lines, source)


def load_ignore_rules(context: Path, dockerfile: Path) -> IgnoreRules:
    """The rules BuildKit applies to `context` when building `dockerfile`."""
    source = ignore_file_for(context, dockerfile)
    if source is None:
        return IgnoreRules((), None)
    try:
        data = source.read_bytes()
    except OSError as error:
        raise ConfigError(f"{source}: cannot read: {error}") from error
    return IgnoreRules(parse_ignore_file(data, str(source)), source)
