"""gojson's orjson fast path writes exactly what the reference encoder writes (Go's encoding/json).

The reference is ``gojson._encode`` (the pure-Python encoder the fast path falls back to); each
case compares ``marshal``/``marshal_indent`` with it byte for byte.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from app import gojson
from tests.harness import FIXTURES


def reference(v: Any, indent: str | None) -> str:
    out: list[str] = []
    gojson._encode(v, indent, 0, out)
    return "".join(out)


def check(v: Any) -> None:
    assert gojson.marshal(v) == reference(v, None)
    for indent in (" ", "  ", "\t", "    ", ""):
        assert gojson.marshal_indent(v, indent) == reference(v, indent), indent


STRINGS = ["", "plain", "a<b>&c", "line\nbreak\ttab\rcr", "\x00\x01\x1f\x7f", "bell\x07", "back\x08space",
           "form\x0cfeed", "\\b literal", "quote\"back\\slash", "\u2028\u2029", "é ü ß", "日本語", "emoji 😀",
           "  leading spaces", "trailing  ", "\ufffd", "</script>", "a\\u003c", "\uffff", "\U0001F600"]
FLOATS = [0.0, -0.0, 1.0, -2.5, 7.5, 5.020931, 1e20, 1e21, 1.5e21, 123456789012345680000.0, 1e-6, 9.99e-7,
          1.5e-7, 0.000015, 1e-4, 3.14159265358979, 1e16, 2**53 + 0.0, 1e300, -1e-300, 5e-324, 0.1 + 0.2]
INTS = [0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**30]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice(INTS + [rng.randint(-(10**6), 10**6)])
    if kind == 3:
        return rng.choice(FLOATS + [rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randint(-30, 30)])
    if kind in (4, 5):
        return rng.choice(STRINGS) + "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0, 0x2FFF)]))
                                             for _ in range(rng.randint(0, 6)))
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 7:
        return tuple(random_value(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    keys = [rng.choice(STRINGS) + str(rng.randint(0, 99)) for _ in range(rng.randint(0, 5))]
    return {k: random_value(rng, depth + 1) for k in keys}


@pytest.mark.parametrize("seed", range(40))
def test_random_documents_encode_like_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        doc = {"root": random_value(rng), "more": [random_value(rng) for _ in range(3)]}
        check(doc)


@pytest.mark.parametrize("value", STRINGS + FLOATS + INTS + [None, True, False, [], {}, [[]], {"a": {}}])
def test_scalars_and_empty_containers(value: Any) -> None:
    check(value)
    check({"k": value, "list": [value, value]})


@pytest.mark.parametrize("path", sorted((FIXTURES / "postee").glob("*.json")) + sorted(
    (FIXTURES / "tracee").glob("*.json")), ids=lambda p: p.name)
def test_fixtures_encode_like_the_reference(path: Any) -> None:
    doc = orjson.loads(path.read_bytes())
    check(doc)
    assert gojson._fast(doc, " ") == reference(doc, " ")  # real events do take the fast path


def test_values_orjson_cannot_write_take_the_reference_encoder() -> None:
    for value in ({1: "int key", "b": 2}, {"s": {3, 1, 2}}, frozenset({"x"}), {"big": 2**70},
                  {"lone": "\ud800"}, {"t": (1.5, "x")}):
        check(value)


def test_nan_and_infinity_are_rejected_like_the_reference() -> None:
    for value in (float("nan"), {"x": [float("inf")]}, -float("inf")):
        with pytest.raises(ValueError):
            gojson.marshal_indent(value)
        with pytest.raises(ValueError):
            reference(value, " ")


def test_format_float_matches_go() -> None:
    # values checked against Go's encoding/json output
    cases = {1.0: "1", 7.5: "7.5", 1e20: "100000000000000000000", 1e21: "1e+21", 1.5e-7: "1.5e-7",
             0.000015: "0.000015", 1e-6: "0.000001", -0.0: "-0", 123.456: "123.456", 1e16: "10000000000000000"}
    for value, text in cases.items():
        assert gojson.format_float(value) == text
