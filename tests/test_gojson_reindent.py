"""gojson's fast path re-indents orjson's two-space text with one replace when no string holds two
spaces in a row, and line by line otherwise; both give what the reference encoder gives (which
tests/test_gojson_fast.py holds to Go's output). The cases here are the ones that replace could
get wrong: spaces in strings and keys next to indentation, quotes and colons, deep nesting, and
the byte searches in front of the escapes (U+2028 among other three-byte characters, backslashes).
"""

from __future__ import annotations

from typing import Any

import pytest

from app import gojson


def reference(v: Any, indent: str) -> str:
    out: list[str] = []
    gojson._encode(v, indent, 0, out)
    return "".join(out)


DEEP: Any = "leaf  two"
for _i in range(12):
    DEEP = {f"k{_i}": [DEEP, {"x  y": _i, "  ": " ", "n": 1.5}]}

CASES: list[Any] = [
    {"a": "two  spaces", "b": ["  lead", "trail  ", " ", "  ", "   "]},
    {"  key  ": {"inner": "x"}, "k": "v"},
    {"q": 'say "  " and ": "', "c": ": ", "e": ""},
    {"nested": [[[{"s": "a    b", "t": [1, 2.5, -0.0, 1e21, 1e-7]}]]]},
    {"no": "double", "spaces": ["in", "strings"], "n": {"m": {"o": [True, False, None]}}},
    {"html": "<a href='x'>&</a>", "u": "\u2026 \u2028 \u2029 \u2030 \u201c", "k\u2028": 1},
    {"bs": "back\\slash", "q": "\"quoted\"", "nl": "a\nb\tc"},
    DEEP,
    [],
    {},
    [{"a": {}}, [], [[]]],
]


@pytest.mark.parametrize("indent", [" ", "  ", "    "])
@pytest.mark.parametrize("value", CASES)
def test_fast_path_reindents_like_the_reference(value: Any, indent: str) -> None:
    assert gojson._fast(value, indent) == reference(value, indent)


@pytest.mark.parametrize("value", CASES)
def test_marshal_and_marshal_indent_unchanged(value: Any) -> None:
    assert gojson.marshal_indent(value, " ") == reference(value, " ")
    out: list[str] = []
    gojson._encode(value, None, 0, out)
    assert gojson.marshal(value) == "".join(out)


def test_literal_backslash_b_still_declines() -> None:
    with pytest.raises(gojson._Slow):
        gojson._fast({"path": "C:\\bin\\foo"}, " ")
    assert gojson.marshal_indent({"path": "C:\\bin\\foo"}) == reference({"path": "C:\\bin\\foo"}, " ")
