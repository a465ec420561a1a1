"""xl.cfg, read the way xl reads it (``spec/streams.md`` §5; ``tools/libs/util/libxlu_cfg*``).

Grammar::

    file      := { statement }
    statement := NEWLINE | ";" | KEY ("=" | "+=") value (NEWLINE | ";" | end of file)
    value     := STRING | NUMBER | "[" nl [ value nl { "," nl value nl } [ "," nl ] ] "]"
    nl        := { NEWLINE }

Tokens: KEY ``[a-z][._0-9a-z]*``; NUMBER ``[0-9][0-9a-fx]*``, kept as text and converted with C ``strtol`` base 0
(decimal, 0-octal, 0x-hex) only when a numeric key is read; STRING in single or double quotes on one line; ``#``
starts a comment that runs to the end of the line *and needs that newline*; spaces and tabs separate tokens. Any of
``+ - . ( ) :`` outside a string (other than ``+=``) makes the file "likely Python" and is a lexical error, as is
any other character (a carriage return included: xl does not accept CRLF files).

Checked against xl's own parser (libxlutil 4.17, ``tests/toolstack/test_xlcfg_differential.py``: 20,000 generated
and mutated configs a run, fresh seed each time), which fixed three quirks at the edges of a file:

- A comment on the last line with no newline after it is an error: xl's comment rule includes the newline, so
  without one ``#`` is a stray character followed by text.
- A stray character that is the file's very last byte is accepted: xl's scanner reports a stray character together
  with the text after it, and at the end of the input there is none, so ``a = 1;.`` or a final lone carriage return
  passes. One character more, or a character of two UTF-8 bytes, and it is an error.
- An octal escape reads the three characters after its first digit with C's ``strtoul``, which skips leading white
  space and takes a sign: ``"\\1\\r01"`` (with a carriage return) and ``"\\1 5"`` are (silent) escapes, and
  ``"\\1 x"`` is an error.

Settings: a later ``key = v`` replaces an earlier one. ``key += v`` concatenates with the earlier value (string to
string, list to list; mixing them is an error) and marks the setting as added-to, which a numeric key then refuses.

Escapes follow what xl does, not what the manual says (both are in ``spec/streams.md`` §5): ``\\" \\' \\\\ \\a \\b
\\f \\n \\r \\t \\v`` work; ``\\x`` is always an error (xl skips one character too many, then wants more hex
digits than it reads); an octal escape ``\\ooo`` is consumed and yields no character (xl reads the three
characters after the first digit with ``strtoul`` in base 10, wants it to consume at least two, and emits
nothing). Each octal escape adds a warning, since the same file means something else to a reader of the manual.

Limits that xl does not state but a reader must have (xl reads the whole file into a buffer whose length is a C
``int``, and its bison parser gives up at a stack depth of 10,000): :func:`read_file` reads only regular files, of at
most :data:`MAX_CONFIG_BYTES` (1 MiB; real configs are a few KiB), so ``/dev/zero`` or a named pipe is refused at
once instead of filling memory or blocking; lists nest at most :data:`MAX_NESTING` deep (no xl key uses more than
three levels); a number is a C ``long``, and one outside its range is an error naming the key, as
``xlu_cfg_get_long`` reports ``ERANGE``.

Every error is an :class:`~xenabi.errors.XlCfgError` with line and column (1-based).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from xenabi.errors import ConfigError, XlCfgError

MAX_CONFIG_BYTES = 1 << 20
MAX_NESTING = 64
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
KEY_RE = re.compile(r"[a-z][._0-9a-z]*")
NUMBER_RE = re.compile(r"[0-9][0-9a-fx]*")
PYTHONISH = set("+-.():")
TOKEN_STARTS = set("=[],;\n abcdefghijklmnopqrstuvwxyz0123456789\t")  # what can begin a token or blank on its own
SIMPLE_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}

TokenKind = Literal["key", "number", "string", "=", "+=", "[", "]", ",", ";", "newline", "eof"]


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class XlAtom:
    """A STRING or NUMBER value, as text (xl stores numbers as strings too)."""

    text: str
    kind: Literal["string", "number"]
    line: int
    column: int

    def plain(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class XlList:
    items: tuple[XlValue, ...]
    line: int
    column: int

    def plain(self) -> list[object]:
        return [item.plain() for item in self.items]


XlValue = XlAtom | XlList


@dataclass(frozen=True, slots=True)
class XlSetting:
    key: str
    op: Literal["=", "+="]
    value: XlValue
    line: int
    column: int


@dataclass
class XlConfig:
    """A parsed xl.cfg: the settings in force (later ones replace earlier ones) and the parser's warnings."""

    settings: dict[str, XlSetting] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source: str = "<config>"

    def __contains__(self, key: str) -> bool:
        return key in self.settings

    def __iter__(self) -> Iterator[str]:
        return iter(self.settings)

    # --- typed getters, with xl's rules (``xlu_cfg_get_*``) ---------------------------------------------------
    def get_string(self, key: str) -> str | None:
        setting = self.settings.get(key)
        if setting is None:
            return None
        if not isinstance(setting.value, XlAtom):
            raise ConfigError(
                "is a list but should be a single value", key=key, value=setting.value.plain(), line=setting.line
            )
        return setting.value.text

    def get_long(self, key: str, minimum: int = -(2**63), maximum: int = 2**63 - 1) -> int | None:
        setting = self.settings.get(key)
        if setting is None:
            return None
        text = self.get_string(key)
        assert text is not None
        if setting.op == "+=":
            raise ConfigError("can't use += with numbers", key=key, value=text, line=setting.line)
        value = strtol(text)
        if value is None:
            problem = "is out of range (a C long)" if NUMBER_SYNTAX.fullmatch(text) else "is not a valid number"
            raise ConfigError(problem, key=key, value=_brief(text), line=setting.line)
        if not minimum <= value <= maximum:
            raise ConfigError(f"{value} is outside {minimum}..{maximum}", key=key, value=text, line=setting.line)
        return value

    def get_list(self, key: str) -> XlList | None:
        setting = self.settings.get(key)
        if setting is None:
            return None
        if not isinstance(setting.value, XlList):
            raise ConfigError(
                "is a single value but should be a list", key=key, value=setting.value.text, line=setting.line
            )
        return setting.value

    def get_string_list(self, key: str) -> list[str] | None:
        values = self.get_list(key)
        if values is None:
            return None
        out = []
        for item in values.items:
            if not isinstance(item, XlAtom):
                raise ConfigError("entries must be strings, not lists", key=key, value=item.plain(), line=item.line)
            out.append(item.text)
        return out

    def plain(self) -> dict[str, object]:
        """Every setting as plain Python: strings and (nested) lists of strings."""
        return {key: setting.value.plain() for key, setting in self.settings.items()}


NUMBER_SYNTAX = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def strtol(text: str) -> int | None:
    """C ``strtol(text, &end, 0)`` that must consume all of ``text`` and fit a C long (xl's number rule); None if
    it does not. A number of any length is judged without converting more than a long's worth of digits."""
    match = NUMBER_SYNTAX.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    significant = digits[2:] if digits[:2] in ("0x", "0X") else digits
    if len(significant.lstrip("0")) > 22:  # more digits than any base needs for 2**63: out of range
        return None
    if digits[:2] in ("0x", "0X"):
        value = int(digits, 16)
    elif digits.startswith("0"):
        value = int(digits, 8) if len(digits) > 1 else 0
    else:
        value = int(digits)
    value = -value if sign == "-" else value
    return value if LONG_MIN <= value <= LONG_MAX else None


def _brief(text: str, limit: int = 40) -> str:
    """A value short enough to quote in an error."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# --- lexer ----------------------------------------------------------------------------------------------------
class _Lexer:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.warnings: list[str] = []

    def error(self, message: str, column: int | None = None, line: int | None = None) -> XlCfgError:
        col = column if column is not None else self.pos - self.line_start + 1
        return XlCfgError(message, line=line or self.line, column=col, source=self.source)

    def tokens(self) -> Iterator[Token]:
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos] in " \t":
                self.pos += 1
            if self.pos >= len(text):
                yield Token("eof", "", self.line, self.pos - self.line_start + 1)
                return
            ch = text[self.pos]
            column = self.pos - self.line_start + 1
            if self.pos == len(text) - 1 and ch not in TOKEN_STARTS and len(ch.encode("utf-8", "surrogateescape")) == 1:
                # xl's scanner enters its error state on a stray character and reports the error on the text
                # after it; when the stray character is the input's last, the input ends first and nothing is
                # reported, so xl accepts it (a lone '#', '\r', '+' or quote at the very end of the file). xl reads
                # bytes: a character of two or more UTF-8 bytes has text after its first byte, and is an error.
                self.pos += 1
                continue
            if ch == "#":
                end = text.find("\n", self.pos)
                if end < 0:  # xl's comment rule wants the newline: without one '#' is a stray character
                    raise self.error("a comment on the last line needs a newline after it (xl refuses it)")
                self.pos = end
                continue
            if ch == "\n":
                yield Token("newline", "\n", self.line, column)
                self.pos += 1
                self.line += 1
                self.line_start = self.pos
                continue
            if text.startswith("+=", self.pos):
                self.pos += 2
                yield Token("+=", "+=", self.line, column)
                continue
            if ch in "=[],;":
                self.pos += 1
                yield Token(ch, ch, self.line, column)  # type: ignore[arg-type]
                continue
            if ch in "\"'":
                yield self._string(ch, column)
                continue
            match = KEY_RE.match(text, self.pos) or NUMBER_RE.match(text, self.pos)
            if match is not None:
                self.pos = match.end()
                kind: TokenKind = "key" if ch.isalpha() else "number"
                yield Token(kind, match.group(), self.line, column)
                continue
            if ch in PYTHONISH:
                raise self.error(f"unexpected {ch!r}: this looks like Python, which xl.cfg no longer accepts")
            if ch == "\r":
                raise self.error("carriage return: xl reads only Unix line endings")
            if ch.isalpha():
                raise self.error(f"unexpected {ch!r}: keys are lower case ([a-z][._0-9a-z]*)")
            raise self.error(f"unexpected character {ch!r}")

    def _string(self, quote: str, column: int) -> Token:
        text = self.text
        start = self.pos
        self.pos += 1
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise self.error("unterminated string (strings cannot span lines)", column)
            ch = text[self.pos]
            if ch == "\\":
                if self.pos + 1 >= len(text) or text[self.pos + 1] == "\n":
                    raise self.error("unterminated string (strings cannot span lines)", column)
                self.pos += 2
                continue
            self.pos += 1
            if ch == quote:
                break
        return Token("string", self._dequote(text[start + 1 : self.pos - 1], start + 1), self.line, column)

    def _dequote(self, body: str, body_pos: int) -> str:
        out: list[str] = []
        i = 0
        while i < len(body):
            ch = body[i]
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            column = body_pos + i - self.line_start + 1
            nc = body[i + 1]
            i += 2
            if nc in SIMPLE_ESCAPES:
                out.append(SIMPLE_ESCAPES[nc])
            elif nc == "x":
                raise self.error(
                    "xl rejects every \\x escape in a quoted string (the manual documents \\xHH; xl's reader "
                    "skips a character too many and then finds too few hex digits)",
                    column,
                )
            elif "0" <= nc <= "7":
                consumed = _strtoul_span(body[i : i + 3])
                if consumed < 2:
                    raise self.error("invalid digit after backslash octal numerical character escape", column)
                self.warnings.append(
                    f"{self.source}:{self.line}:{column}: octal escape \\{nc}{body[i : i + consumed]} yields no "
                    "character in xl (the manual says it is one character); read as xl does"
                )
                i += consumed
            else:
                raise self.error(f"invalid character {nc!r} after backslash in quoted string", column)
        return "".join(out)


def _strtoul_span(text: str) -> int:
    """How many characters of ``text`` C's ``strtoul(text, &end, 10)`` consumes: leading white space, a sign, then
    decimal digits; 0 when there are no digits. xl's octal escape is this on the three characters after the first
    digit, which is why ``"\\1\r01"`` is a (silent) escape to xl: the carriage return is white space to strtoul."""
    match = re.match(r"[ \t\n\v\f\r]*[+-]?[0-9]+", text)
    return match.end() if match else 0


# --- parser ---------------------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, lexer: _Lexer) -> None:
        self.lexer = lexer
        self.stream = lexer.tokens()
        self.tok = next(self.stream)

    def advance(self) -> Token:
        tok = self.tok
        if tok.kind != "eof":
            self.tok = next(self.stream)
        return tok

    def error(self, message: str, tok: Token | None = None) -> XlCfgError:
        tok = tok or self.tok
        near = "end of file" if tok.kind == "eof" else "end of line" if tok.kind == "newline" else repr(tok.text)
        return XlCfgError(f"{message}, near {near}", line=tok.line, column=tok.column, source=self.lexer.source)

    def skip_newlines(self) -> None:
        while self.tok.kind == "newline":
            self.advance()

    def parse(self) -> XlConfig:
        config = XlConfig(source=self.lexer.source)
        while self.tok.kind != "eof":
            if self.tok.kind in ("newline", ";"):
                self.advance()
                continue
            if self.tok.kind != "key":
                raise self.error("expected a key (lower case, [a-z][._0-9a-z]*)")
            key = self.advance()
            if self.tok.kind not in ("=", "+="):
                raise self.error(f"expected '=' or '+=' after {key.text!r}")
            op = self.advance().kind
            value = self.value()
            if self.tok.kind not in ("newline", ";", "eof"):
                raise self.error("expected the end of the statement (a newline or ';')")
            self.store(config, XlSetting(key.text, op, value, key.line, key.column))  # type: ignore[arg-type,unused-ignore]
        config.warnings = self.lexer.warnings
        return config

    def value(self, depth: int = 0) -> XlValue:
        tok = self.tok
        if tok.kind in ("string", "number"):
            self.advance()
            return XlAtom(tok.text, tok.kind, tok.line, tok.column)
        if tok.kind != "[":
            raise self.error("expected a value (a quoted string, a number or a [list])")
        if depth >= MAX_NESTING:
            raise self.error(f"lists nested more than {MAX_NESTING} deep")
        self.advance()
        self.skip_newlines()
        items: list[XlValue] = []
        while self.tok.kind != "]":
            items.append(self.value(depth + 1))
            self.skip_newlines()
            kind: TokenKind = self.tok.kind  # a fresh read: value() and skip_newlines() moved the token on
            if kind == ",":
                self.advance()
                self.skip_newlines()
            elif kind != "]":
                raise self.error("expected ',' or ']' in a list")
        self.advance()
        return XlList(tuple(items), tok.line, tok.column)

    def store(self, config: XlConfig, setting: XlSetting) -> None:
        previous = config.settings.pop(setting.key, None)
        if setting.op == "+=" and previous is not None:
            old, new = previous.value, setting.value
            if isinstance(old, XlAtom) and isinstance(new, XlAtom):
                value: XlValue = XlAtom(old.text + new.text, "string", new.line, new.column)
            elif isinstance(old, XlList) and isinstance(new, XlList):
                value = XlList(old.items + new.items, new.line, new.column)
            else:
                raise XlCfgError(
                    f'can\'t add [list] to "string" or vice versa (for {setting.key!r})',
                    line=setting.line,
                    column=setting.column,
                    source=self.lexer.source,
                )
            setting = XlSetting(setting.key, "+=", value, setting.line, setting.column)
        config.settings[setting.key] = setting


def parse(text: str, source: str = "<config>") -> XlConfig:
    """Parse xl.cfg text; :class:`~xenabi.errors.XlCfgError` (with line and column) if it is not valid."""
    return _Parser(_Lexer(text, source)).parse()


def read_file(path: str | os.PathLike[str]) -> str:
    """The text of an xl.cfg file: a regular file of at most :data:`MAX_CONFIG_BYTES`, decoded as UTF-8 with
    undecodable bytes kept (as surrogate escapes) for the lexer to report where they are. Raises ``OSError`` when
    the file cannot be read and :class:`~xenabi.errors.ConfigError` (key ``file``) when it is not a config file."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, pipe or socket)"
        raise ConfigError(f"is {kind}; a config is read only from a regular file", key="file", value=str(path))
    with open(path, "rb") as stream:
        data = stream.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"is larger than {MAX_CONFIG_BYTES} bytes, the most xenabi reads as a config", key="file", value=str(path)
        )
    return data.decode("utf-8", errors="surrogateescape")


def quote(text: str) -> str:
    """A double-quoted xl string that reads back as ``text`` (only escapes xl honours)."""
    inverse = {v: k for k, v in SIMPLE_ESCAPES.items() if k != "'"}
    return '"' + "".join("\\" + inverse[ch] if ch in inverse else ch for ch in text) + '"'


def render(value: object) -> str:
    """An xl value for a plain string, int or (nested) list."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, list | tuple):
        return "[ " + ", ".join(render(item) for item in value) + " ]"
    raise TypeError(f"cannot write {type(value).__name__} to xl.cfg")
