"""Seeded unit-level fuzz of the Postee compatibility parsers (issue 13 item 5; seed from
``HERALD_FUZZ_SEED`` as in test_fuzz_e2e.py): the legacy scan renderers, the plugin timeout
grammar, RFC 3339 event times and the Go JSON encoder. Each either gives a result that satisfies
its property or raises the one documented error naming the field; nothing else escapes."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from app import gojson
from app.errors import ConfigError, EventError, TemplateError
from app.forensics.eventtime import parse_rfc3339_ns
from app.config.loader import parse_plugin_timeout
from app.routing.legacy import LegacyTemplate
from tests.harness import FIXTURES
from tests.test_fuzz_e2e import SEED, Gen

N = 1500


def values(r: random.Random, depth: int = 3) -> Any:
    """A JSON value as Python data (what orjson gives the renderers)."""
    x = r.random()
    if depth <= 0 or x < 0.5:
        return r.choice([0, -1, 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1, 0.1, -0.0, 1e308, 5e-324, 1e21, 1e-7,
                         123456.789, True, False, None, "", "a", "é😀", "<b>&</b>", "\u2028\u2029", "\x00\x1f",
                         "x" * 200, "${HOME}", "{{.}}"])
    if x < 0.75:
        return {r.choice(["a", "b", "", "é", "<k>", "name", "version", "x.y"]): values(r, depth - 1)
                for _ in range(r.randint(0, 4))}
    return [values(r, depth - 1) for _ in range(r.randint(0, 4))]


@pytest.mark.parametrize("kind", ["html", "slack", "jira"])
def test_legacy_renderers_render_or_name_the_bad_property(kind: str) -> None:
    gen = Gen(SEED)
    r = random.Random(SEED)
    template = LegacyTemplate("legacy", kind, "https://aqua.example.com/#/images/")
    aqua = json.loads((FIXTURES / "postee" / "aqua-input.json").read_bytes())
    rendered = refused = 0
    for i in range(N):
        body = gen.mutated_aqua(b'"legacy"') if i % 3 else json.dumps(
            {**aqua, r.choice(["image", "registry", "resources", "vulnerability_summary", "scan_options",
                               "image_assurance_results", "malware", "sensitive_data"]): values(r)}).encode()
        try:
            content = template.render(body.decode())
        except TemplateError as exc:
            assert "property" in str(exc) or "not an Aqua scan event" in str(exc), exc
            refused += 1
            continue
        rendered += 1
        assert content.title.endswith("vulnerability scan report")
        if kind == "slack":  # Block Kit sections, each followed by a comma
            blocks = json.loads("[" + content.description.rstrip().rstrip(",") + "]")
            assert all(isinstance(b, dict) and b.get("type") for b in blocks)
    assert rendered > N // 4 and refused > N // 20, (rendered, refused)


def test_legacy_html_escapes_event_text() -> None:
    template = LegacyTemplate("legacy", "html", "")
    aqua = json.loads((FIXTURES / "postee" / "aqua-input.json").read_bytes())
    hostile = "<script>alert(1)</script>"
    event = {**aqua, "image": hostile, "registry": hostile}
    event["resources"][0]["resource"]["name"] = hostile
    content = template.render(json.dumps(event))
    assert "<script>" not in content.description and "&lt;script&gt;" in content.description


def test_plugin_timeouts() -> None:
    r = random.Random(SEED)
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for _ in range(N):
        n, unit = r.randint(0, 10**6), r.choice(list(units))
        text = f"{' ' * r.randint(0, 2)}{n}{' ' * r.randint(0, 1)}{unit.upper() if r.random() < 0.3 else unit}"
        assert parse_plugin_timeout(text, "routes.r.plugins") == n * units[unit]
        # "١٠s": Arabic-Indic digits, which Python's \d and int() accept and Go's Atoi does not
        bad = r.choice(["-1", "1.5s", "10ms", "1w", "s", "1 0x", "١٠s", "१२m", "10m5s", "0x10", "1e3", "\x00", "+5"])
        with pytest.raises(ConfigError) as err:
            parse_plugin_timeout(bad, "routes.r.plugins.aggregate-message-timeout")
        assert "routes.r.plugins.aggregate-message-timeout" in str(err.value) or err.value.args


def test_rfc3339_times() -> None:
    r = random.Random(SEED)
    base = datetime(2000, 1, 1, tzinfo=UTC)
    for _ in range(N):
        moment = base + timedelta(seconds=r.randint(0, 200 * 365 * 86400))
        digits = "".join(r.choice("0123456789") for _ in range(r.randint(0, 9)))
        minutes = r.choice([0, 60, -60, 330, -570, 14 * 60, -12 * 60])
        zone = "Z" if minutes == 0 and r.random() < 0.7 else (
            f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}{':' if r.random() < 0.8 else ''}{abs(minutes) % 60:02d}")
        local = moment.astimezone(timezone(timedelta(minutes=minutes)))
        text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{digits}" if digits else "") + zone
        want = int(moment.timestamp()) * 10**9 + int(digits.ljust(9, "0") or "0")
        assert parse_rfc3339_ns(text) == want, text
        # mutations are either another valid time or None, never an exception
        i = r.randrange(len(text))
        mutated = text[:i] + r.choice(["", "9", "x", ":", "\x00", "٣", " ", "99"]) + text[i + 1:]
        got = parse_rfc3339_ns(mutated)
        assert got is None or isinstance(got, int), (mutated, got)
        # digits of other scripts are not digits to Go's time.Parse (Python's \d took them)
        assert parse_rfc3339_ns(text.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))) is None


def test_go_json_encoder_fast_path_matches_the_reference_and_round_trips() -> None:
    r = random.Random(SEED)
    fast_checked = 0
    for _ in range(N):
        value = values(r, 4)
        reference: list[str] = []
        gojson._encode(value, None, 0, reference)
        text = gojson.marshal(value)
        assert text == "".join(reference)
        assert "<" not in text and ">" not in text and "&" not in text  # Go's HTML escaping
        back = orjson.loads(text)
        assert _same(back, value), (value, text)
        indented = gojson.marshal_indent(value, "  ")
        assert _same(orjson.loads(indented), value)
        fast_checked += 1
    assert fast_checked == N


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (math.isclose(a, b, rel_tol=1e-15))
    return a == b


def test_router_refuses_events_nested_deeper_than_the_bridge_allows() -> None:
    """An event a producer wrote to Kafka directly, nested deeper than herald.max-json-depth, is an
    EventError (a dead letter with its reason), as the bridge's 400; it used to reach the Rego
    engine and the Go JSON encoder, which failed with RuntimeError (400 levels) or RecursionError
    (1000 levels): a dead letter typed InternalError without the event id."""
    from actions import parse_config
    from app.ingest.bridge import json_depth
    from app.routing.router import EventMeta, Router

    router = Router(parse_config({"routes": [{"name": "r", "template": "raw"}],
                                  "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}]}))
    limit = router.config.herald.max_json_depth
    gen = Gen(SEED)
    seen = {True: 0, False: 0}
    for _ in range(300):
        body = gen.deep()
        deeper = json_depth(body, limit) > limit  # the bridge's measure
        seen[deeper] += 1
        if deeper:
            with pytest.raises(EventError, match=f"nested deeper than {limit} levels"):
                router.route(body, EventMeta("e"))
        else:
            assert router.route(body, EventMeta("e")).decision("h", {})["routes"]["r"]["matched"]
    assert seen[True] > 50 and seen[False] > 50, seen
