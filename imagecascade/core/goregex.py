"""Go regular expressions (RE2 syntax, `regexp.Compile`'s Perl flags) translated to Python `re`.

Docker's .dockerignore matcher (moby/patternmatcher) turns each pattern into a Go regular
expression and lets Go's `regexp` package decide. Python's `re` reads the same text differently in
places (`$` before a final newline, `\\d` as any Unicode digit, `[[:alpha:]]`, `{,n}`), so the text
is parsed here with the rules of Go's `regexp/syntax` parser (`parse.go`: `parseClass`,
`parseEscape`, `parseNamedClass`, `parsePerlClassEscape`; Go 1.24) and rewritten as an
equivalent Python pattern, to be compiled with `re.ASCII`.

Flags are Go's `syntax.Perl` (what `regexp.Compile` uses): `ClassNL` (negated classes match a
newline), `OneLine` (`^`/`$` only at the ends of the text), `PerlX` (`\\d`, `\\b`, `\\Q...\\E`,
non-greedy quantifiers) and `UnicodeGroups` (`\\pL`). Unicode groups are not ported: they raise
`NotPorted`, so a pattern using them is refused rather than matched differently.

Invalid UTF-8 in a matched path reaches Go's matcher as U+FFFD (one rune per bad byte); here paths
are decoded with `surrogateescape`, so a U+FFFD literal also matches one escaped byte.
"""

from __future__ import annotations

import re

_MAX_RUNE = 0x10FFFF
_RUNE_ERROR_CLASS = "[\\ufffd\\udc80-\\udcff]"

# Go's posixGroup table (ASCII only).
_POSIX: dict[str, list[tuple[int, int]]] = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0x5F, 0x5F)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}
# Go's perlGroup table: \d \s \w are ASCII-only in RE2 (\s has no \v).
_PERL: dict[str, list[tuple[int, int]]] = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_C_ESCAPES = {"a": 0x07, "f": 0x0C, "t": 0x09, "n": 0x0A, "r": 0x0D, "v": 0x0B}


class GoRegexError(ValueError):
    """Go's `regexp.Compile` rejects the expression (Docker then reports a bad pattern)."""


class NotPorted(ValueError):
    """The expression uses a Go feature this port does not translate (Unicode groups)."""


def _negate(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    result = []
    next_low = 0
    for low, high in sorted(ranges):
        if low > next_low:
            result.append((next_low, low - 1))
        next_low = max(next_low, high + 1)
    if next_low <= _MAX_RUNE:
        result.append((next_low, _MAX_RUNE))
    return result


def _class_text(ranges: list[tuple[int, int]], negated: bool) -> str:
    if negated:
        ranges = _negate(ranges)
    if not ranges:
        return "(?!)"  # an empty class matches nothing
    parts = [f"\\U{low:08x}" if low == high else f"\\U{low:08x}-\\U{high:08x}" for low, high in ranges]
    return "[" + "".join(parts) + "]"


def _literal(char: str) -> str:
    if char == "\ufffd":
        return _RUNE_ERROR_CLASS
    return re.escape(char)


def _escape(text: str, index: int) -> tuple[int, int]:
    """Go's parseEscape: one escaped rune starting at the backslash at `index`; (rune, next index)."""
    if index + 1 >= len(text):
        raise GoRegexError("trailing backslash at end of expression")
    char = text[index + 1]
    rest = index + 2
    if char < "\x80" and not char.isalnum():
        return ord(char), rest
    if "1" <= char <= "7" and not (rest < len(text) and "0" <= text[rest] <= "7"):
        raise GoRegexError(f"invalid escape sequence: \\{char}")  # a backreference
    if "0" <= char <= "7":
        value = int(char)
        for _ in range(2):
            if rest < len(text) and "0" <= text[rest] <= "7":
                value = value * 8 + int(text[rest])
                rest += 1
        return value, rest
    if char == "x":
        if rest < len(text) and text[rest] == "{":
            end = text.find("}", rest)
            digits = text[rest + 1 : end] if end > 0 else ""
            if not re.fullmatch("[0-9A-Fa-f]+", digits) or int(digits, 16) > _MAX_RUNE:
                raise GoRegexError("invalid escape sequence: \\x{")
            return int(digits, 16), end + 1
        digits = text[rest : rest + 2]
        if not re.fullmatch("[0-9A-Fa-f]{2}", digits):
            raise GoRegexError("invalid escape sequence: \\x")
        return int(digits, 16), rest + 2
    if char in _C_ESCAPES:
        return _C_ESCAPES[char], rest
    raise GoRegexError(f"invalid escape sequence: \\{char}")


def _parse_class(text: str, index: int) -> tuple[str, int]:
    """Go's parseClass from the `[` at `index`; (Python class, index after the closing `]`)."""
    position = index + 1
    negated = position < len(text) and text[position] == "^"
    if negated:
        position += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while position >= len(text) or text[position] != "]" or first:
        first = False
        if position >= len(text):
            raise GoRegexError(f"missing closing ]: {text[index:]}")
        if text.startswith("[:", position) and len(text) - position > 2:
            end = text.find(":]", position + 2)
            if end >= 0:
                name = text[position + 2 : end]
                group = _POSIX.get(name.removeprefix("^"))
                if group is None:
                    raise GoRegexError(f"invalid character class range: [:{name}:]")
                ranges += _negate(group) if name.startswith("^") else group
                position = end + 2
                continue
        if text.startswith(("\\p", "\\P"), position):
            raise NotPorted("Unicode character classes (\\p) are not supported")
        if text[position] == "\\" and position + 1 < len(text) and text[position + 1].lower() in _PERL:
            group = _PERL[text[position + 1].lower()]
            ranges += _negate(group) if text[position + 1].isupper() else group
            position += 2
            continue
        low, position = _class_char(text, position, index)
        high = low
        if position + 1 < len(text) and text[position] == "-" and text[position + 1] != "]":
            high, position = _class_char(text, position + 1, index)
            if high < low:
                raise GoRegexError("invalid character class range")
        ranges.append((low, high))
    # An escaped byte of a path (a surrogate here) is U+FFFD to Go: give both the same membership.
    ranges = [piece for low, high in ranges for piece in _without_surrogates(low, high)]
    if any(low <= 0xFFFD <= high for low, high in ranges):
        ranges.append((0xDC80, 0xDCFF))
    return _class_text(ranges, negated), position + 1


def _without_surrogates(low: int, high: int) -> list[tuple[int, int]]:
    pieces = []
    if low < 0xDC80:
        pieces.append((low, min(high, 0xDC7F)))
    if high > 0xDCFF:
        pieces.append((max(low, 0xDD00), high))
    return pieces


def _class_char(text: str, position: int, start: int) -> tuple[int, int]:
    if position >= len(text):
        raise GoRegexError(f"missing closing ]: {text[start:]}")
    if text[position] == "\\":
        return _escape(text, position)
    return ord(text[position]), position + 1


def translate(go_expression: str) -> str:
    """The Python `re` pattern (for `re.ASCII`) that matches what `go_expression` matches in Go.

    Raises GoRegexError where Go's `regexp.Compile` fails, NotPorted for Unicode groups.
    """
    out: list[str] = []
    index = 0
    text = go_expression
    depth = 0
    # What the last item was: "atom" (may take a quantifier), "quantifier", "greedy" (a quantifier
    # that may still take a `?`), or "none" (start, `(` or `|`: nothing to repeat).
    last = "none"
    while index < len(text):
        char = text[index]
        if char in "*+?" or (char == "{" and re.match(r"\{\d+(,\d*)?\}", text[index:])):
            if char == "{":
                match = re.match(r"\{(\d+)(,(\d*))?\}", text[index:])
                assert match is not None
                low, high = int(match.group(1)), match.group(3)
                if low > 1000 or (high and int(high) > 1000) or (high and int(high) < low):
                    raise GoRegexError(f"invalid repeat count: {match.group(0)}")
                token = match.group(0)
            else:
                token = char
            if last == "greedy" and char == "?":
                out.append("?")
                last = "quantifier"
                index += 1
                continue
            if last in ("quantifier", "greedy"):
                raise GoRegexError(f"invalid nested repetition operator: {text[index - 1 : index + 1]}")
            if last == "none":
                raise GoRegexError(f"missing argument to repetition operator: {token}")
            out.append(token)
            last = "greedy"
            index += len(token)
            continue
        if char == "(":
            if text.startswith("(?", index):
                raise NotPorted("Go regex groups with flags are not supported")
            out.append("(?:")
            depth += 1
            last = "none"
            index += 1
        elif char == ")":
            if depth == 0:
                raise GoRegexError(f"unexpected ): {text}")
            depth -= 1
            out.append(")")
            last = "atom"
            index += 1
        elif char == "|":
            out.append("|")
            last = "none"
            index += 1
        elif char == "^":
            out.append("\\A")
            last = "atom"
            index += 1
        elif char == "$":
            out.append("\\Z")
            last = "atom"
            index += 1
        elif char == ".":
            out.append("[^\\n]")
            last = "atom"
            index += 1
        elif char == "[":
            piece, index = _parse_class(text, index)
            out.append(piece)
            last = "atom"
        elif char == "\\":
            piece, index = _top_level_escape(text, index)
            if piece:  # an empty \Q\E is nothing at all, not an atom
                out.append(piece)
                last = "atom"
        else:
            out.append(_literal(char))
            last = "atom"
            index += 1
    if depth:
        raise GoRegexError(f"missing closing ): {text}")
    return "".join(out)


def _top_level_escape(text: str, index: int) -> tuple[str, int]:
    """An escape outside a class: assertions, \\Q...\\E, Perl classes, or one escaped rune."""
    following = text[index + 1 : index + 2]
    if following in ("A", "z"):
        return ("\\A" if following == "A" else "\\Z"), index + 2
    if following in ("b", "B"):
        return "\\" + following, index + 2
    if following == "C":
        raise GoRegexError("invalid escape sequence: \\C")
    if following == "Q":
        end = text.find("\\E", index + 2)
        quoted = text[index + 2 :] if end < 0 else text[index + 2 : end]
        after = len(text) if end < 0 else end + 2
        # No group: as in Go, a quantifier after \E repeats only the last quoted character.
        return "".join(_literal(char) for char in quoted), after
    if following in ("p", "P"):
        raise NotPorted("Unicode character classes (\\p) are not supported")
    if following.lower() in _PERL and following:
        group = _PERL[following.lower()]
        return _class_text(group, following.isupper()), index + 2
    rune, after = _escape(text, index)
    return _literal(chr(rune)), after
