"""xl.cfg grammar (``spec/streams.md`` §5): what xl accepts, what it rejects, and where it says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xenabi.errors import ConfigError, XlCfgError
from xenabi.toolstack.xlcfg import XlAtom, XlList, parse, quote, render, strtol

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "xl"
# Xen's own example files, beside the repository where the project's shared folder is: read if present
needs_xen_examples = pytest.mark.skipif(not SHARED.is_dir(), reason="Xen's example xl.cfg files (../shared) absent")


def values(text: str) -> dict[str, object]:
    return parse(text).plain()


@needs_xen_examples
def test_real_hvm_example() -> None:
    cfg = parse((SHARED / "xlexample.hvm").read_text(), "xlexample.hvm")
    assert cfg.plain() == {
        "type": "hvm",
        "name": "example.hvm",
        "memory": "128",
        "vcpus": "2",
        "vif": [""],
        "disk": ["/dev/vg/guest-volume,raw,xvda,rw"],
        "sdl": "1",
    }
    assert cfg.get_long("memory") == 128 and cfg.warnings == []


@needs_xen_examples
def test_real_pv_example() -> None:
    cfg = parse((SHARED / "xlexample.pvlinux").read_text())
    assert cfg.get_string("kernel") == "/boot/vmlinuz" and cfg.get_string("extra") == "root=/dev/xvda1"
    assert "type" not in cfg and cfg.get_string_list("disk") == ["/dev/vg/guest-volume,raw,xvda,rw"]


def test_comments_semicolons_and_blank_lines() -> None:
    assert values("# c\n\na = 1; b = 'x' # trailing\n;;\nc=2") == {"a": "1", "b": "x", "c": "2"}


def test_comment_at_end_of_file_without_newline_is_refused_as_xl_refuses_it() -> None:
    """Issue 16: xl's comment rule is ``#.*\\n``; without the newline '#' is a stray character (libxlutil 4.17)."""
    with pytest.raises(XlCfgError) as refused:
        values("a = 1 # no newline")
    assert (refused.value.line, refused.value.column) == (1, 7) and "needs a newline" in str(refused.value)
    assert values("a = 1 # with newline\n") == {"a": "1"}


@pytest.mark.parametrize("tail", ["\r", "+", ".", "(", ")", ":", "-", "#", "'", '"', "@"])
def test_a_stray_last_character_is_accepted_as_xl_accepts_it(tail: str) -> None:
    """Issue 16: xl's scanner reports a stray character only with the text after it; at the very end of the input
    there is none, so libxlutil 4.17 accepts the file. One more character, and it is an error."""
    assert values("a = 1;" + tail) == {"a": "1"}
    assert values("a = 1\n" + tail) == {"a": "1"}
    with pytest.raises(XlCfgError):
        values("a = 1;" + tail + "x")


def test_keys_may_contain_dots_digits_underscores() -> None:
    assert values("vif.default.script = 'x'\nk_2 = 3") == {"vif.default.script": "x", "k_2": "3"}


@pytest.mark.parametrize(("token", "number"), [("10", 10), ("010", 8), ("0x1f", 31), ("0", 0), ('"0X10"', 16)])
def test_numbers_are_strtol_base_0(token: str, number: int) -> None:
    assert parse(f"n = {token}").get_long("n") == number


@pytest.mark.parametrize("token", ["08", "0x", "1f", "12a"])
def test_number_tokens_that_strtol_rejects_fail_when_read(token: str) -> None:
    cfg = parse(f"n = {token}")
    assert cfg.get_string("n") == token
    with pytest.raises(ConfigError) as info:
        cfg.get_long("n")
    assert info.value.key == "n" and info.value.line == 1


def test_quoted_numbers_work_for_numeric_keys() -> None:
    assert parse('memory = "64"').get_long("memory") == 64


def test_nested_lists_trailing_commas_and_newlines() -> None:
    text = "l = [\n  'a',\n  [ 1, 2, ],\n\n  [],\n]\n"
    assert values(text) == {"l": ["a", ["1", "2"], []]}
    assert values("e = []") == {"e": []}


def test_escapes_xl_honours() -> None:
    assert values(r'''s = "\"\'\\\a\b\f\n\r\t\v"''') == {"s": "\"'\\\a\b\f\n\r\t\v"}
    assert values(r"""s = 'it\'s'""") == {"s": "it's"}
    assert values("s = 'a\"b'") == {"s": 'a"b'}


def test_octal_escape_yields_nothing_with_a_warning() -> None:
    cfg = parse(r's = "A\101B"')
    assert cfg.get_string("s") == "AB"
    assert len(cfg.warnings) == 1 and "1:7" in cfg.warnings[0]  # the backslash


def test_later_assignment_replaces_earlier() -> None:
    assert values("a = 1\na = 2") == {"a": "2"}


def test_append_concatenates_strings_and_lists() -> None:
    assert values("s = 'a'\ns += 'b'\nl = ['x']\nl += ['y', 'z']") == {"s": "ab", "l": ["x", "y", "z"]}
    assert values("new += ['only']") == {"new": ["only"]}


def test_append_makes_a_number_unreadable() -> None:
    cfg = parse("memory = 1\nmemory += 2")
    with pytest.raises(ConfigError, match=r"\+="):
        cfg.get_long("memory")


def test_list_where_string_wanted_and_vice_versa() -> None:
    cfg = parse("a = [1]\nb = 'x'")
    with pytest.raises(ConfigError) as info:
        cfg.get_string("a")
    assert info.value.key == "a"
    with pytest.raises(ConfigError):
        cfg.get_list("b")
    with pytest.raises(ConfigError):
        parse("a = ['x', ['y']]").get_string_list("a")


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("a = 1 +2", 1, 7, "Python"),
        ("a = -1", 1, 5, "Python"),
        ("a = 1.5", 1, 6, "Python"),
        ("a = f(1)", 1, 5, "value"),
        ("a = (1)", 1, 5, "Python"),
        ("a = 0X10", 1, 6, "lower case"),  # the lexer's numbers know only a lower-case x
        ("a = 'x'\nb: 1", 2, 2, "Python"),
        ("Name = 'x'", 1, 1, "lower case"),
        ("_a = 1", 1, 1, "unexpected"),
        ("a = 'x", 1, 5, "unterminated"),
        ("a = 'x\n'", 1, 5, "unterminated"),
        ('a = "x\\\ny"', 1, 5, "unterminated"),
        ("a = [1 2]", 1, 8, "',' or ']'"),
        ("a = [1,", 1, 8, "value"),
        ("a = [1", 1, 7, "',' or ']'"),
        ("a", 1, 2, "'='"),
        ("a b", 1, 3, "'='"),
        ("a =", 1, 4, "value"),
        ("a = 1 2", 1, 7, "end of the statement"),
        ("= 1", 1, 1, "key"),
        ("a = 1\r\n", 1, 6, "carriage return"),
        ("a = '\\x41'", 1, 6, "\\x"),
        ("a = '\\q'", 1, 6, "after backslash"),
        ("a = '\\8'", 1, 6, "after backslash"),
        ("a = '\\1'", 1, 6, "octal"),
        ("a = [1]\na += 'x'", 2, 1, "can't add"),
        ("a = 'x'\na += ['y']", 2, 1, "can't add"),
        ("\n\n  a = @x", 3, 7, "unexpected character"),
    ],
)
def test_syntax_errors_name_line_and_column(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(XlCfgError) as info:
        parse(text, "vm.cfg")
    error = info.value
    assert (error.line, error.column) == (line, column), str(error)
    assert fragment in error.message and str(error).startswith(f"vm.cfg:{line}:{column}:")


def test_atoms_remember_where_they_were() -> None:
    cfg = parse("\n  l = [ 'a',\n 7 ]")
    value = cfg.settings["l"].value
    assert isinstance(value, XlList) and (value.line, value.column) == (2, 7)
    assert value.items[1] == XlAtom("7", "number", 3, 2)


def test_strtol_edges() -> None:
    assert strtol("077") == 63 and strtol(" 5") == 5 and strtol("-3") == -3
    assert strtol("") is None and strtol("0x") is None and strtol(str(2**63)) is None


plain_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=20)
plain_values = st.recursive(
    plain_text | st.integers(0, 2**31),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=10,
)


def _as_read(value: object) -> object:
    if isinstance(value, list):
        return [_as_read(item) for item in value]
    return str(value)


@given(st.dictionaries(st.from_regex(r"[a-z][._0-9a-z]{0,8}", fullmatch=True), plain_values, max_size=5))
def test_rendered_values_read_back(settings: dict[str, object]) -> None:
    text = "".join(f"{key} = {render(value)}\n" for key, value in settings.items())
    assert parse(text).plain() == {key: _as_read(value) for key, value in settings.items()}


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        parse(text)
    except XlCfgError as error:
        assert error.line >= 1 and error.column >= 1


def test_quote_escapes_what_xl_unescapes() -> None:
    assert quote('a"b\\c\n') == '"a\\"b\\\\c\\n"'
