"""gojson writes exactly what Go's encoding/json writes, on its orjson fast path and off it.

Go is the reference: ``tests/goref`` (a dependency-free Go program, built once per test session
into ``.cache/goref/``) decodes each case into the Go value the Python value stands for and
prints ``json.Marshal(v)`` or ``json.MarshalIndent(v, "", indent)``; every case compares
``gojson.marshal``/``gojson.marshal_indent`` with that byte for byte. All cases go to one Go
process run at the start of the session.

What a Python value stands for in Go (``to_wire`` below, as in opa/main.go's jsonformat):
str -> string, int -> an integer of any size (json.Number, written verbatim), float -> float64
(sent as ``repr``, which round-trips exactly), dict -> map[string]any (int keys as their
decimal text, bool and None keys as Rego prints them), list/tuple -> []any, set/frozenset -> a
Rego set, which OPA's jsonformat prints as an array in OPA's sort order. A missing ``go`` or a
failed build fails these tests; nothing is skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from app import gojson
from tests.harness import FIXTURES

GOREF_SRC = Path(__file__).resolve().parent / "goref"
CACHE = Path(os.environ.get("HERALD_CACHE_DIR") or Path(__file__).resolve().parent.parent / ".cache")

INDENTS: tuple[str | None, ...] = (None, " ", "  ", "\t", "    ", "")  # None: marshal, else marshal_indent
FAST_INDENTS: tuple[str | None, ...] = (None, " ", "  ", "    ")  # the indents gojson._fast handles


# -- the Go value each Python value stands for ----------------------------------------------------


class NoGoValue(Exception):
    """This Python value has no Go counterpart to compare with."""


def go_key(k: Any) -> str:
    if isinstance(k, bool):
        return "true" if k else "false"  # opa/main.go: non-string keys print as their Rego text
    if k is None:
        return "null"
    if isinstance(k, int):
        return str(k)
    if isinstance(k, str):
        return go_string(k)
    raise NoGoValue(f"key {k!r}")


def go_string(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise NoGoValue(f"string {s!r} is not valid Unicode (lone surrogate)") from None
    return s


def to_wire(v: Any) -> Any:
    """``v`` in tests/goref's wire format (see tests/goref/main.go): JSON whose objects are tags."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        return go_string(v)
    if isinstance(v, int):
        return v  # json.dumps writes the exact digits; goref keeps integer literals as json.Number
    if isinstance(v, float):
        if math.isnan(v):
            return {"float": "NaN"}
        if math.isinf(v):
            return {"float": "+Inf" if v > 0 else "-Inf"}
        return v  # json.dumps writes float.__repr__, which goref parses back to the same float64
    if isinstance(v, dict):
        obj = {go_key(k): to_wire(x) for k, x in v.items()}
        if len(obj) != len(v):
            raise NoGoValue(f"keys of {v!r} collide in Go")
        return {"object": obj}
    if isinstance(v, (list, tuple)):
        return [to_wire(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return {"set": [to_wire(x) for x in v]}
    raise NoGoValue(f"{type(v).__name__} {v!r}")


def request(v: Any, indent: str | None) -> str:
    return json.dumps({"indent": indent, "doc": to_wire(v)}, ensure_ascii=True, allow_nan=False)


# -- building and running tests/goref -------------------------------------------------------------


def build_goref() -> Path:
    """Build tests/goref with the machine's ``go`` into .cache/goref/<hash>/ (reused while the
    sources and the Go version are unchanged)."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("'go' is not on PATH: Go 1.26 or newer is needed to build tests/goref, the reference "
                    "encoder these tests compare gojson with", pytrace=False)
    env = {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    version = subprocess.run([go, "version"], capture_output=True, text=True, env=env)
    if version.returncode != 0:
        pytest.fail(f"'go version' failed:\n{version.stderr}", pytrace=False)
    digest = hashlib.sha256(version.stdout.encode())
    for name in ("go.mod", "main.go"):
        digest.update((GOREF_SRC / name).read_bytes())
    binary = CACHE / "goref" / digest.hexdigest()[:16] / "goref"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f"goref.{os.getpid()}.tmp")
    build = subprocess.run([go, "build", "-trimpath", "-o", str(tmp), "."], cwd=GOREF_SRC, env=env,
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0:
        pytest.fail(f"building tests/goref failed ({version.stdout.strip()}):\n{build.stdout}{build.stderr}",
                    pytrace=False)
    os.replace(tmp, binary)
    return binary


class GoReference:
    """Answers from tests/goref: ``{"out": text}`` or ``{"err": message}`` per (value, indent)."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.answers: dict[str, dict[str, str]] = {}
        self.runs = 0

    def prefetch(self, requests: list[str]) -> None:
        missing = [r for r in dict.fromkeys(requests) if r not in self.answers]
        if not missing:
            return
        self.runs += 1
        proc = subprocess.run([str(self.binary)], input="\n".join(missing) + "\n", capture_output=True,
                              text=True, encoding="utf-8", timeout=300)
        if proc.returncode != 0:
            pytest.fail(f"tests/goref failed (exit {proc.returncode}): {proc.stderr[-3000:]}", pytrace=False)
        lines = proc.stdout.splitlines()
        assert len(lines) == len(missing), f"tests/goref answered {len(lines)} of {len(missing)} requests"
        for req, line in zip(missing, lines):
            self.answers[req] = json.loads(line)

    def answer(self, v: Any, indent: str | None) -> dict[str, str]:
        req = request(v, indent)
        if req not in self.answers:
            self.prefetch([req])
        return self.answers[req]

    def out(self, v: Any, indent: str | None) -> str:
        answer = self.answer(v, indent)
        assert "out" in answer, f"Go cannot encode {v!r}: {answer.get('err')}"
        return answer["out"]


def encode(v: Any, indent: str | None) -> str:
    return gojson.marshal(v) if indent is None else gojson.marshal_indent(v, indent)


def check(go: GoReference, v: Any, indents: tuple[str | None, ...] = INDENTS) -> None:
    """marshal and marshal_indent write what Go writes for ``v``, or raise ValueError where Go fails."""
    for indent in indents:
        answer = go.answer(v, indent)
        if "err" in answer:
            with pytest.raises(ValueError):
                encode(v, indent)
        else:
            assert encode(v, indent) == answer["out"], f"indent={indent!r}"


def check_fallback(go: GoReference, v: Any) -> None:
    """The encoder gojson._fast falls back to (gojson._encode) writes what Go writes for ``v``."""
    for indent in INDENTS:
        out: list[str] = []
        gojson._encode(v, indent, 0, out)
        assert "".join(out) == go.out(v, indent), f"indent={indent!r}"


def check_fast_path(go: GoReference, v: Any) -> None:
    """gojson._fast handles ``v`` itself (it raises gojson._Slow to decline) and writes what Go writes."""
    for indent in FAST_INDENTS:
        try:
            text = gojson._fast(v, indent)
        except gojson._Slow:
            pytest.fail(f"gojson._fast declined a value it should handle (indent={indent!r})")
        assert text == go.out(v, indent), f"indent={indent!r}"


# -- the cases ------------------------------------------------------------------------------------

STRINGS = ["", "plain", "a<b>&c", "line\nbreak\ttab\rcr", "\x00\x01\x1f\x7f", "bell\x07", "back\x08space",
           "form\x0cfeed", "\\b literal", "quote\"back\\slash", "\u2028\u2029", "é ü ß", "日本語", "emoji 😀",
           "  leading spaces", "trailing  ", "\ufffd", "</script>", "a\\u003c", "\uffff", "\U0001F600"]
FLOATS = [0.0, -0.0, 1.0, -2.5, 7.5, 5.020931, 1e20, 1e21, 1.5e21, 123456789012345680000.0, 1e-6, 9.99e-7,
          1.5e-7, 0.000015, 1e-4, 3.14159265358979, 1e16, 2**53 + 0.0, 1e300, -1e-300, 5e-324, 0.1 + 0.2]
INTS = [0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**30]

# what orjson writes differently from Go, so the fast path declines it: \b and \f (and a literal
# backslash before b or f), ints beyond int64/uint64
PLAIN_STRINGS = [s for s in STRINGS if not any(c in s for c in "\x08\x0c\\")]
PLAIN_INTS = [i for i in INTS if -(2**63) <= i < 2**64]


def random_value(rng: random.Random, depth: int = 0, plain: bool = False) -> Any:
    """A random document; ``plain`` ones hold nothing that makes gojson._fast decline."""
    strings, ints = (PLAIN_STRINGS, PLAIN_INTS) if plain else (STRINGS, INTS)
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice(ints + [rng.randint(-(10**6), 10**6)])
    if kind == 3:
        return rng.choice(FLOATS + [rng.uniform(-1e6, 1e6), rng.random() * 10 ** rng.randint(-30, 30)])
    if kind in (4, 5):
        chars = (chr(rng.choice([rng.randint(32, 126), rng.randint(0, 0x2FFF)])) for _ in range(rng.randint(0, 6)))
        return rng.choice(strings) + "".join(c for c in chars if not (plain and c in "\x08\x0c\\"))
    if kind == 6:
        return [random_value(rng, depth + 1, plain) for _ in range(rng.randint(0, 4))]
    if kind == 7:
        return tuple(random_value(rng, depth + 1, plain) for _ in range(rng.randint(0, 3)))
    keys = [rng.choice(strings) + str(rng.randint(0, 99)) for _ in range(rng.randint(0, 5))]
    return {k: random_value(rng, depth + 1, plain) for k in keys}


SEEDS = range(40)
RANDOM_DOCS: dict[int, list[Any]] = {}
PLAIN_DOCS: dict[int, list[Any]] = {}
for _seed in SEEDS:
    _rng = random.Random(_seed)
    RANDOM_DOCS[_seed] = [{"root": random_value(_rng), "more": [random_value(_rng) for _ in range(3)]}
                          for _ in range(25)]
    _rng = random.Random(1000 + _seed)
    PLAIN_DOCS[_seed] = [{"root": random_value(_rng, plain=True), "more": [random_value(_rng, plain=True)]}
                         for _ in range(10)]

SCALARS = STRINGS + FLOATS + INTS + [None, True, False, [], {}, [[]], {"a": {}}]

FIXTURE_PATHS = sorted((FIXTURES / "postee").glob("*.json")) + sorted((FIXTURES / "tracee").glob("*.json"))
FIXTURE_DOCS = {path.name: orjson.loads(path.read_bytes()) for path in FIXTURE_PATHS}

# values orjson cannot write (or writes differently): int keys, sets, ints beyond 64 bits, tuples
UNUSUAL = [{1: "int key", "b": 2}, {"s": {3, 1, 2}}, frozenset({"x"}), {"big": 2**70}, {"t": (1.5, "x")},
           {"s": {"a", "b<", "c&"}}, {"n": frozenset({-1, 1.5, 2**70})}, [{2: [], -3: {}}]]
# Rego sets and non-string keys, as the embedded engine (regorus) hands them to jsonformat:
# a set is a Python set, which OPA's jsonformat prints in OPA's value order (ast.Compare: null <
# booleans < numbers by value < strings by code point < arrays element-wise < objects < sets),
# not in the order of the elements' JSON text; a boolean or null key is True/False/None, which
# OPA prints as its Rego text "true"/"false"/"null". goref sorts sets the same way; spot-checked
# against the OPA that scripts/build-opa.sh builds (v1.22.3), including arrays before sets,
# which goref does not order (test_rego_order).
REGO_VALUES = [
    pytest.param({10, 9}, id="set-numeric-order"),
    pytest.param({"=", "<"}, id="set-escaped-string-order"),
    pytest.param({None, True, "a"}, id="set-mixed-types"),
    pytest.param({True: "x"}, id="bool-key"),
    pytest.param({False: 1, True: 2, None: 3, 3: 4, "s": 5, -7: 6, 2**70: 7}, id="rego-keys"),
    pytest.param({None, False, True, -1, 2.5, "", "a", "B"}, id="set-every-scalar-type"),
    pytest.param({2**53 + 1, 9007199254740994.0, 9007199254740992, -(2**64), 2**70, 1e300, -1e-300, 0.5, 1e21,
                  1e-7, 999, -0.5}, id="set-numbers-by-value"),
    pytest.param({"é", "z", "Z", "日本", "😀", "\uffff", "\u2028", "a<", "a=", "a&", "a\"", "a\n", "", " "},
                 id="set-strings-by-code-point"),
    pytest.param({(1, "a"), (1,), (0, 5), (), (1, "a", None), (True,), ("x",), (-1.5, ())}, id="set-of-arrays"),
    pytest.param({(1, 2), 3, "s", None, ((),)}, id="set-arrays-after-scalars"),
    pytest.param({frozenset({2, 1}), frozenset({0}), frozenset(), frozenset({1})}, id="set-of-sets"),
    pytest.param({"s": {3, 10}, "l": [{"b", "a"}, frozenset({20, 3})], True: {None: {False, True}}}, id="nested"),
    pytest.param({"\x08b", "\x0c", "a"}, id="set-fallback-escapes"),
    pytest.param({"k": {2**70, 2**64 - 1, 1}, False: "x"}, id="set-fallback-big-int"),
]
# REGO_VALUES the fast path handles itself (no \b, \f or ints beyond 64 bits)
REGO_FAST = [p for p in REGO_VALUES if p.id not in ("set-fallback-escapes", "set-fallback-big-int",
                                                     "set-numbers-by-value")]


def random_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice(INTS + [rng.randint(-100, 100)])
    if kind == 3:
        return rng.choice(FLOATS + [rng.uniform(-100, 100), rng.random() * 10 ** rng.randint(-30, 30)])
    return rng.choice(STRINGS) + "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 3)))


def random_set_element(rng: random.Random, depth: int = 0) -> Any:
    if depth < 2 and rng.random() < 0.2:
        return tuple(random_set_element(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    return random_scalar(rng)


def random_rego_value(rng: random.Random) -> Any:
    """A random set, or an object with Rego's non-string keys holding sets."""
    def a_set() -> Any:
        return {random_set_element(rng) for _ in range(rng.randint(0, 8))}
    if rng.random() < 0.5:
        return a_set()
    keys = [True, False, None, rng.randint(-5, 5), 2**64 + rng.randint(0, 9), "k" + str(rng.randint(0, 9))]
    return {k: rng.choice([a_set(), [a_set()], random_scalar(rng)]) for k in rng.sample(keys, rng.randint(1, 6))}


RANDOM_REGO = {seed: [random_rego_value(random.Random(2000 + seed * 100 + i)) for i in range(25)] for seed in range(20)}
GO_KNOWN = [(1e21, None, "1e+21"), (1.5e-7, None, "1.5e-7"), (0.000015, None, "0.000015"), (-0.0, None, "-0"),
            (2**70, None, "1180591620717411303424"),
            ({"b": [1, "<&>"], "a": None}, None, '{"a":null,"b":[1,"\\u003c\\u0026\\u003e"]}'),
            ({"a": [1]}, "\t", '{\n\t"a": [\n\t\t1\n\t]\n}'), ({10, 9, "a"}, None, '[9,10,"a"]'),
            ("\x08\x0c\\b", None, '"\\u0008\\u000c\\\\b"')]
NON_FINITE = [float("nan"), {"x": [float("inf")]}, -float("inf"), {"a": 1, "b": [1.5, float("nan")]}]


def float_cases() -> list[float]:
    rng = random.Random(7)
    xs = list(FLOATS)
    for base in (1e21, 1e-6, 1e20, 1e-7, 1e16, 2.0**53, 2.0**63, 2.0**64, 5e-324, sys.float_info.max):
        xs += [base, math.nextafter(base, 0), math.nextafter(base, math.inf)]
    xs += [sys.float_info.min, 0.1, 1 / 3, 2 / 3, 100.0, 123.456, 1e-5, 1e-8, 1.25e-6, 9.5e20, 999999999999999.9]
    xs += [10.0**k for k in range(-30, 31)] + [1.2345 * 10.0**k for k in range(-30, 31)]
    xs += [round(rng.uniform(-1e4, 1e4), rng.randint(0, 6)) for _ in range(300)]
    xs = [x for x in xs if math.isfinite(x)]  # nextafter(max, inf) is inf
    while len(xs) < 3000:  # random bit patterns: every exponent, every digit count
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(x):
            xs.append(x)
    return xs + [-x for x in xs]


FLOAT_CASES = float_cases()


def all_requests() -> list[str]:
    reqs: list[str] = []
    docs: list[Any] = [d for ds in RANDOM_DOCS.values() for d in ds] + [d for ds in PLAIN_DOCS.values() for d in ds]
    docs += [x for v in SCALARS for x in (v, {"k": v, "list": [v, v]})]
    docs += list(FIXTURE_DOCS.values()) + UNUSUAL + NON_FINITE + [p.values[0] for p in REGO_VALUES]
    docs += [d for ds in RANDOM_REGO.values() for d in ds]
    for doc in docs:
        reqs += [request(doc, indent) for indent in INDENTS]
    reqs += [request(x, None) for x in FLOAT_CASES]
    reqs += [request(value, indent) for value, indent, _ in GO_KNOWN] + [request(float("nan"), None)]
    return reqs


@pytest.fixture(scope="session")
def go() -> GoReference:
    ref = GoReference(build_goref())
    ref.prefetch(all_requests())  # every case in one Go run
    return ref


# -- the tests ------------------------------------------------------------------------------------


def test_go_reference_is_go(go: GoReference) -> None:
    # known encoding/json output: guards the harness itself (wire format, numbers, sets)
    for value, indent, text in GO_KNOWN:
        assert go.out(value, indent) == text, value
    assert "err" in go.answer(float("nan"), None)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_documents_encode_like_go(go: GoReference, seed: int) -> None:
    for doc in RANDOM_DOCS[seed]:
        check(go, doc)


@pytest.mark.parametrize("seed", SEEDS)
def test_plain_random_documents_take_the_fast_path(go: GoReference, seed: int) -> None:
    for doc in PLAIN_DOCS[seed]:
        check(go, doc)
        check_fast_path(go, doc)


@pytest.mark.parametrize("value", SCALARS)
def test_scalars_and_empty_containers(go: GoReference, value: Any) -> None:
    check(go, value)
    check(go, {"k": value, "list": [value, value]})


def test_fixture_events_are_there() -> None:
    assert len(FIXTURE_DOCS) >= 2, f"no fixture events under {FIXTURES} (postee/*.json, tracee/*.json)"


@pytest.mark.parametrize("name", sorted(FIXTURE_DOCS))
def test_fixture_events_encode_like_go_on_the_fast_path(go: GoReference, name: str) -> None:
    doc = FIXTURE_DOCS[name]
    check(go, doc)
    check_fast_path(go, doc)  # real events do take the fast path


@pytest.mark.parametrize("value", UNUSUAL, ids=repr)
def test_values_orjson_cannot_write_encode_like_go(go: GoReference, value: Any) -> None:
    check(go, value)


def test_lone_surrogates_pass_through() -> None:
    # No Go counterpart: a Go string holds bytes, and every decoder Herald reads events with
    # (orjson, regorus) rejects a lone surrogate, so such a str never reaches gojson from an
    # event. Pinned here: marshal does not fail on one (orjson does; the fallback writes it as is).
    assert gojson.marshal({"lone": "\ud800"}) == '{"lone":"\ud800"}'
    assert gojson.marshal_indent({"lone": "\ud800"}) == '{\n "lone": "\ud800"\n}'


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
def test_nan_and_infinity_are_rejected_like_go(go: GoReference, value: Any) -> None:
    for indent in INDENTS:
        assert "err" in go.answer(value, indent)  # json: unsupported value: NaN / +Inf / -Inf
    check(go, value)
    with pytest.raises(ValueError):
        gojson.marshal_indent(value)


def test_format_float_matches_go(go: GoReference) -> None:
    wrong = [(x, gojson.format_float(x), go.out(x, None)) for x in FLOAT_CASES
             if gojson.format_float(x) != go.out(x, None) or gojson.marshal(x) != go.out(x, None)]
    assert not wrong[:20], f"{len(wrong)} of {len(FLOAT_CASES)} floats differ from Go (value, gojson, Go)"


@pytest.mark.parametrize("value", REGO_VALUES)
def test_rego_sets_and_keys_print_like_opa(go: GoReference, value: Any) -> None:
    check(go, value)
    check_fallback(go, value)


@pytest.mark.parametrize("value", REGO_FAST)
def test_rego_sets_and_keys_take_the_fast_path(go: GoReference, value: Any) -> None:
    check_fast_path(go, value)


@pytest.mark.parametrize("seed", sorted(RANDOM_REGO))
def test_random_rego_sets_and_keys_print_like_opa(go: GoReference, seed: int) -> None:
    for value in RANDOM_REGO[seed]:
        check(go, value)
        check_fallback(go, value)


def test_rego_order() -> None:
    # OPA's ast.Compare, including what goref does not order (arrays before sets, objects)
    ordered = [None, False, True, -(2**70), -1.5, 0, 1, 1.5, 2**70, "", "A", "a", "é", "😀", (), (None,), (0,),
               (0, 0), (1,), ("a",), {}, {None: 1}, {0: 0}, {0: 1}, {0: 1, 1: 0}, {"a": 0}, frozenset(),
               frozenset({0}), frozenset({0, 1}), frozenset({1})]
    assert sorted(reversed(ordered), key=gojson.rego_order) == ordered
    assert gojson.marshal({(1,), frozenset({0})}) == "[[1],[0]]"  # an array sorts before a set
    with pytest.raises(TypeError):
        gojson.marshal({1, object()})


def test_keys_that_print_alike_keep_one() -> None:
    # No Go counterpart to compare with: Go's map keeps one of the two keys (which one depends
    # on the object's iteration order). gojson keeps the last, on both paths.
    value = {1: "a", "1": "b"}
    assert gojson.marshal(value) == '{"1":"b"}'
    assert gojson.marshal_indent(value, "\t") == '{\n\t"1": "b"\n}'
