"""JSON encoding byte-compatible with Go's ``encoding/json``, which Postee used.

Postee users' goldens depend on it: map keys sorted, ``<``, ``>``, ``&``, U+2028 and U+2029
escaped as ``\\u003c`` etc., floats in Go's shortest form (``1e+21``, ``0.000015``), and
``MarshalIndent`` with the given indent (``jsonformat`` uses one space).

Two Rego values have no Go type of their own; they print as OPA's ``jsonformat`` (opa/main.go)
prints them. A Rego set (a Python ``set``/``frozenset`` from the embedded engine) is an array in
OPA's value order (``rego_order``), and a non-string object key is its Rego text (``true``,
``false``, ``null``, ``3``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _quote(s: str) -> str:
    out = ['"']
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_float(x: float) -> str:
    """Go's ``encoding/json`` float64 format."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"unsupported float value {x!r}")
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    a = abs(x)
    r = repr(x)
    if 1e-6 <= a < 1e21:
        if "e" not in r:  # repr is already the shortest positional form; Go drops a ".0"
            return r.removesuffix(".0")
        text = format(Decimal(r), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    mant, _, exp = r.partition("e")
    if not exp:  # repr chose positional; convert to Go's exponent form
        mant, exp = f"{x:.17e}".split("e")
        mant = repr(float(mant)).removesuffix(".0")
    sign = exp[0] if exp[0] in "+-" else "+"
    digits = exp.lstrip("+-").lstrip("0") or "0"
    if sign == "-" and len(digits) == 1:
        return f"{mant.removesuffix('.0')}e-{digits}"
    return f"{mant.removesuffix('.0')}e{sign}{digits.zfill(2)}"


def rego_order(v: Any) -> tuple[Any, ...]:
    """Sort key for OPA's order of Rego values (``ast.Compare``): null < booleans < numbers <
    strings < arrays < objects < sets; false < true, numbers by value (Python compares int and
    float exactly), strings by code point (= Go's UTF-8 byte order), arrays element-wise with a
    prefix first, objects by their (key, value) pairs in key order, sets by their sorted elements."""
    if v is None:
        return (0,)
    if v is True or v is False:
        return (1, v)
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, (int, float)):
        return (2, v)
    if isinstance(v, (list, tuple)):
        return (7, tuple([rego_order(x) for x in v]))
    if isinstance(v, dict):
        return (8, tuple(sorted([(rego_order(k), rego_order(x)) for k, x in v.items()])))
    if isinstance(v, (set, frozenset)):
        return (9, tuple(sorted([rego_order(x) for x in v])))
    raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def _key_text(k: Any) -> str:
    """An object key as OPA's jsonformat writes it: a non-string key is its Rego text."""
    if type(k) is str:
        return k
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    return str(k)


def _first(item: tuple[str, Any]) -> str:
    return item[0]


def _encode(v: Any, indent: str | None, level: int, out: list[str]) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(_quote(v))
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, float):
        out.append(format_float(v))
    elif isinstance(v, dict):
        if not v:
            out.append("{}")
            return
        # keys that print alike collide, as in the Go map OPA builds; here the last one wins
        items = sorted({_key_text(k): val for k, val in v.items()}.items(), key=_first)
        out.append("{")
        for i, (k, val) in enumerate(items):
            if i:
                out.append(",")
            if indent is not None:
                out.append("\n" + indent * (level + 1))
            out.append(_quote(k))
            out.append(": " if indent is not None else ":")
            _encode(val, indent, level + 1, out)
        if indent is not None:
            out.append("\n" + indent * level)
        out.append("}")
    elif isinstance(v, (list, tuple, set, frozenset)):
        seq = sorted(v, key=rego_order) if isinstance(v, (set, frozenset)) else v
        if not seq:
            out.append("[]")
            return
        out.append("[")
        for i, val in enumerate(seq):
            if i:
                out.append(",")
            if indent is not None:
                out.append("\n" + indent * (level + 1))
            _encode(val, indent, level + 1, out)
        if indent is not None:
            out.append("\n" + indent * level)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def marshal(v: Any) -> str:
    """``json.Marshal``: compact, sorted keys, HTML-escaped."""
    try:
        return _fast(v, None)
    except _Slow:
        pass
    out: list[str] = []
    _encode(v, None, 0, out)
    return "".join(out)


def marshal_indent(v: Any, indent: str = " ") -> str:
    """``json.MarshalIndent(v, "", indent)``."""
    try:
        return _fast(v, indent)
    except _Slow:
        pass
    out: list[str] = []
    _encode(v, indent, 0, out)
    return "".join(out)


def marshal_indent_fast(v: Any, indent: str, float_text: Callable[[float], str] = format_float) -> str | None:
    """``marshal_indent`` on the fast path only, with each float written by ``float_text``;
    ``None`` for a value that needs the reference encoder. Exceptions of ``float_text`` pass."""
    try:
        return _fast(v, indent, float_text)
    except _Slow:
        return None


# -- fast path ------------------------------------------------------------------------------------
# ``jsonformat`` (the raw-json template) runs this on every event, and the encoder above takes
# ~0.7 ms for a 7 KB event. orjson writes the same bytes once floats are pre-formatted the Go way
# and the HTML characters are escaped afterwards (outside strings, JSON text never contains
# < > & or U+2028/9, so a byte replace is exact). Sets become lists in OPA's order and
# non-string keys their Rego text before orjson sees them. Whatever orjson would still write
# differently (ints beyond 64 bits, lone surrogates, the \b and \f escapes) takes the encoder
# above.


class _Slow(Exception):
    """This value needs the reference encoder."""


def _go_floats(v: Any, float_text: Callable[[float], str] = format_float) -> Any:
    """``v`` with every float replaced by its Go text (an ``orjson.Fragment``), every set by a
    list in OPA's order and every non-string key by its Rego text; containers without any of
    those are returned as they are, not copied. (Strings, ints, booleans and None are skipped
    in the loops, without a call: most of an event is those.)"""
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return v
    if t is float:
        return orjson.Fragment(float_text(v))  # ValueError for NaN/Inf, like the encoder above
    if t is dict:
        new: Any = None
        for k, x in v.items():
            if type(k) is not str:
                return {_key_text(k): _go_floats(x, float_text) for k, x in v.items()}
            tx = type(x)
            if tx is str or tx is int or tx is bool or x is None:
                continue
            y = _go_floats(x, float_text)
            if y is not x:
                if new is None:
                    new = dict(v)
                new[k] = y
        return v if new is None else new
    if t is list or t is tuple:
        new = None
        for i, x in enumerate(v):
            tx = type(x)
            if tx is str or tx is int or tx is bool or x is None:
                continue
            y = _go_floats(x, float_text)
            if y is not x:
                if new is None:
                    new = list(v)
                new[i] = y
        return v if new is None else new
    if t is set or t is frozenset:
        return [_go_floats(x, float_text) for x in sorted(v, key=rego_order)]
    raise _Slow


_HTML = ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"),
         (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))
_BF_ESCAPE = re.compile(rb"\\[bf]")
_TWO_SPACES = re.compile(rb"  ")  # (a regex search for it is faster than bytes.find here)


def _fast(v: Any, indent: str | None, float_text: Callable[[float], str] = format_float) -> str:
    if indent is not None and (not indent or indent.strip(" ")):
        raise _Slow  # the re-indenting below handles indents of spaces only
    prepared = _go_floats(v, float_text)
    try:
        data = orjson.dumps(prepared, option=orjson.OPT_SORT_KEYS | (orjson.OPT_INDENT_2 if indent else 0))
    except (orjson.JSONEncodeError, TypeError):
        raise _Slow from None
    # (searches for one byte first: a one-byte search is a memchr, several times faster than a
    # search for two or three bytes, and most events have no backslash or U+2000-U+2FFF)
    if b"\\" in data and _BF_ESCAPE.search(data):
        raise _Slow  # orjson's \b and \f are \u0008 and \u000c in Go (or this is a literal \\b)
    for char, escaped in _HTML:
        if char[0:1] in data and char in data:
            data = data.replace(char, escaped)
    if indent and indent != "  ":
        return _reindent(data, prepared, indent)
    return data.decode()


def _reindent(data: bytes, prepared: Any, indent: str) -> str:
    """orjson's two spaces per level -> ``indent`` (spaces) per level.

    Outside strings, orjson's indented text has spaces only as indentation (two per level, after
    a newline) and as the single space after a key's colon. So when no string holds two spaces in
    a row (the compact text, which has the same strings, tells), every pair of spaces is one level
    of indentation and one replace re-indents the whole text; otherwise it goes line by line.
    """
    if not _TWO_SPACES.search(orjson.dumps(prepared)):
        return data.replace(b"  ", indent.encode()).decode()
    text = data.decode()
    if indent == " ":
        # after orjson's indentation a line never starts with a space
        text = "\n".join([line[(len(line) - len(line.lstrip(" "))) // 2:] for line in text.split("\n")])
    else:
        text = "\n".join([indent * ((len(line) - len(body)) // 2) + body
                          for line in text.split("\n") for body in (line.lstrip(" "),)])
    return text


def format_value(v: Any) -> str:
    """Go's ``fmt.Sprintf("%v", v)`` for decoded JSON values (used by dedup keys)."""
    if v is None:
        return "<nil>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e21:
            return str(int(v))
        r = repr(v)
        if "e" in r:
            mant, exp = r.split("e")
            sign = exp[0] if exp[0] in "+-" else "+"
            return f"{mant}e{sign}{exp.lstrip('+-').zfill(2)}"
        return r
    if isinstance(v, dict):
        inner = " ".join(f"{k}:{format_value(v[k])}" for k in sorted(v))
        return f"map[{inner}]"
    if isinstance(v, list):
        return "[" + " ".join(format_value(x) for x in v) + "]"
    return str(v)
