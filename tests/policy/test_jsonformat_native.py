"""The built-in raw-json template rendered without the engine (``PackageTemplate.render_event``,
``jsonformat_of_json``) gives byte for byte what the engine gives (``jsonformat(input)`` on
regorus, whose conversion of the input to Python turns integral floats into ints and refuses
those beyond int64), and is used only where that holds: the built-in file as shipped, nothing
else at its path, the embedded engine. Anything the native path cannot vouch for goes to the
engine, so the router's answers (contents and errors) are the same with and without it.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from actions import parse_config
from app.errors import EventError
from app.routing.policy.engine import jsonformat_of_json
from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, PackageTemplate, TemplateLibrary
from app.routing.router import EventMeta, Router
from tests.harness import FIXTURES

META = EventMeta(event_id="e1", received_at=1.0)
AQUA = "https://aqua.example.com"


def router(aqua_server: str = AQUA, template_dirs: list[str] | None = None, native: bool = True) -> Router:
    cfg: dict[str, Any] = {
        "routes": [{"name": "r", "input": "not input.skip", "actions": ["hook"], "template": "raw"}],
        "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/h"}],
        "herald": {"template-dirs": template_dirs or []},
    }
    if aqua_server:
        cfg["aqua-server"] = aqua_server
    r = Router(parse_config(cfg, "test"))
    if not native:
        r.templates["raw"].native = False  # type: ignore[attr-defined]
    return r


@pytest.fixture(scope="module")
def pair() -> tuple[Router, Router]:
    native, engine = router(), router(native=False)
    assert native.templates["raw"].native and not engine.templates["raw"].native  # type: ignore[attr-defined]
    return native, engine


def outcome(r: Router, raw: bytes) -> tuple[Any, Any]:
    result = r.route(raw, META)
    return result.rendered.get("r"), [(f.route, f.error, f.error_type) for f in result.failures]


FIXTURE_PATHS = sorted(p for d in ("postee", "tracee", "falco") for p in (FIXTURES / d).glob("*.json"))


def test_fixtures_are_there() -> None:
    assert len(FIXTURE_PATHS) >= 5


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_events_render_natively_as_on_the_engine(pair: tuple[Router, Router], path: Path) -> None:
    native, engine = pair
    raw = path.read_bytes()
    event = native.parse(raw)
    assert native.templates["raw"].render_event(event, native.postee) is not None  # type: ignore[attr-defined]
    assert outcome(native, raw) == outcome(engine, raw)
    assert outcome(native, raw)[0] is not None
    # and what the template gives on its own input, as before the router set the event once
    separate = TemplateLibrary([BUILTIN_TEMPLATE_DIR])
    content = PackageTemplate("raw", "postee.rawmessage.json", separate).render(native.render_input(event))
    assert replace(outcome(native, raw)[0], owners="") == content  # owners: the router's addition


# numbers as JSON text, where the engine and orjson + Python part ways if anywhere
NUMBERS = ["0", "-0", "0.0", "-0.0", "1", "-1", "4.0", "1.5", "-2.25", "1e2", "1E2", "2.5e-5", "1e-7", "0.1",
           "0.30000000000000004", "123.0e-1", "1e15", "1e16", "1e20", "1e21", "1e300", "-1e300", "5e-324",
           "9007199254740993", "9007199254740993.0", "9223372036854775807", "9223372036854775808",
           "9223372036854775808.0", "-9223372036854775808", "-9223372036854775808.0", "-9223372036854775809",
           "-9223372036854777856.0", "18446744073709551615", "18446744073709551616", "123456789012345678901234567890",
           "1.7976931348623157e308"]
STRINGS = ['""', '"a"', '"two  spaces"', '"<b>&amp;</b>"', '"\\u2028\\u2029"', '"\\u00e9\\u2026"', '"tab\\tnl\\n"',
           '"\\"q\\""', '"back\\\\slash"', '"C:\\\\bin"', '"\\b\\f"', '"\\u0000"', '"\\ud83d\\ude00"', '" lead"']


def random_json(rng: random.Random, depth: int = 0) -> str:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice(NUMBERS)
    if kind == 1:
        return rng.choice(STRINGS)
    if kind == 2:
        return rng.choice(["true", "false", "null"])
    if kind == 3:
        return rng.choice(NUMBERS + STRINGS)
    if kind == 4:
        return "[" + ", ".join(random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    keys = [rng.choice(['"k"', '"a b"', '"postee"', '"<k>"', '"n"', '"\\u00e9"', '"z  z"']) for _ in range(rng.randint(0, 4))]
    return "{" + ", ".join(f"{k}: {random_json(rng, depth + 1)}" for k in keys) + "}"


DOCS = [random_json(random.Random(seed)) for seed in range(300)]
EVENTS = [f'{{"image": "x", "doc": {d}}}'.encode() for d in DOCS] + [f'{{"n": {n}}}'.encode() for n in NUMBERS]


def test_random_events_route_the_same_with_and_without_the_native_path(pair: tuple[Router, Router]) -> None:
    native, engine = pair
    took_native = 0
    for raw in EVENTS:
        try:
            event = native.parse(raw)
        except EventError:
            continue  # not an event (orjson refuses it): the router never renders it
        if native.templates["raw"].render_event(event, native.postee) is not None:  # type: ignore[attr-defined]
            took_native += 1
        got = outcome(native, raw)
        assert got == outcome(engine, raw), raw
        assert got[0] is not None or got[1], raw  # rendered, or a failure to compare
    assert took_native > len(EVENTS) // 2  # most events do take the native path


@pytest.mark.parametrize("number", ["1e20", "9223372036854775808.0", "18446744073709551616", "-1e19"])
def test_integral_floats_beyond_int64_go_to_the_engine(number: str) -> None:
    assert jsonformat_of_json(orjson.loads(f'{{"n": {number}}}')) is None


def test_integral_floats_print_as_the_engine_hands_them_to_jsonformat() -> None:
    assert jsonformat_of_json(orjson.loads('{"a": 4.0, "b": -0.0, "c": 1e16, "d": 1.5, "e": -9223372036854775808.0}')) == (
        '{\n "a": 4,\n "b": 0,\n "c": 10000000000000000,\n "d": 1.5,\n "e": -9223372036854775808\n}')


def test_not_native_when_anything_else_defines_the_path(tmp_path: Path) -> None:
    def native(files: dict[str, str]) -> bool:
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text)
        library = TemplateLibrary([BUILTIN_TEMPLATE_DIR, d])
        return PackageTemplate("t", "postee.rawmessage.json", library).native

    assert native({}) is True
    assert native({"other.rego": "package user.x\n\ntitle := 1\n"}) is True
    assert native({"more.rego": "package postee.rawmessage.json\n\nurl := \"u\"\n"}) is False
    assert native({"sub.rego": "package postee.rawmessage.json.extra\n\nx := 1\n"}) is False
    assert native({"above.rego": "package postee.rawmessage\n\nother := 1\n"}) is False
    assert native({"data.json": '{"anything": 1}'}) is False
    library = TemplateLibrary([BUILTIN_TEMPLATE_DIR])
    assert PackageTemplate("t", "postee.rawmessage.html", library).native is False
    library.engine = SimpleNamespace(kind="opa")  # OPA converts nothing: its jsonformat is Go's
    assert PackageTemplate("t", "postee.rawmessage.json", library).native is False


def test_a_user_override_is_rendered_by_the_engine(tmp_path: Path) -> None:
    # a user package replaces the built-in one as a whole (app/routing/policy/templates.py)
    (tmp_path / "raw.rego").write_text('package postee.rawmessage.json\n\ntitle := "-"\n\n'
                                       'result := jsonformat(input)\n\nurl := "https://example.com"\n')
    r = router(template_dirs=[str(tmp_path)])
    assert r.templates["raw"].native is False  # type: ignore[attr-defined]
    content = r.route(b'{"a": 1}', META).rendered["r"]
    assert content.url == "https://example.com" and content.description.startswith('{\n "a": 1,')
