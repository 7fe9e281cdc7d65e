"""The route filters get only the event keys they read: ``input_keys`` finds them in the filter
modules (every ``input`` is ``input.<key>``, no ``data`` outside the filters, no ``with``), and
the router sets just those keys as the engine's input for the filters (setting a 7.8 KB Aqua scan
costs ~48 us; its resources and vulnerabilities are what no filter reads). The verdicts are the
same as on the whole event, for the built-in filter files on every fixture and for rules that
read anything (those get the whole event).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from actions import parse_config
from app.config.loader import RouteConfig
from app.routing.policy.engine import EmbeddedEngine
from app.routing.policy.filters import BUILTIN_FILTER_DIR, RouteFilters, input_keys
from app.routing.router import EventMeta, Router
from tests.harness import FIXTURES

META = EventMeta(event_id="e1", received_at=1.0)


@pytest.mark.parametrize(("source", "keys"), [
    ("package herald.routes.r0\n\nallow { input.bench.seq >= 0 }", {"bench"}),
    ("allow { input . image; input.registry == \"x\" }", {"image", "registry"}),
    ('allow { "input" == input.b  # input\n}', {"b"}),
    ("allow { x := `data input`; input.c }", {"c"}),
    ("allow { data.herald.routes.r0.f1.x; input.a }", {"a"}),
    ("allow { obj.input; obj.data.x; input_x; my_input.z; input.Data }", {"Data"}),
    ("allow { true }", set()),
    ("allow { x := input }", None),
    ('allow { input["a"] }', None),
    ("allow { count(input) > 1 }", None),
    ("allow { walk(input, [p, v]) }", None),
    ("allow { data.postee.x }", None),
    ("allow { data.herald.lib.aqua.image == \"x\" }", None),
    ("allow { input.a with input as {} }", None),
    ("import input.a\nallow { a }", None),
    ('allow { x := $"{input.a}"; input.b }', None),
    ('allow { x := `{input.a}$`; regex.match("^TRC-[0-9]+$", input.b) }', {"b"}),
])
def test_input_keys(source: str, keys: set[str] | None) -> None:
    assert input_keys(source) == keys


EVENTS = {
    **{p.name: p.read_bytes() for d in ("postee", "tracee", "falco") for p in sorted((FIXTURES / d).glob("*.json"))},
    "trivy-asff": orjson.dumps({"Findings": [{"ProductFields": {"Product Name": "Trivy"}}]}),
    "other": b'{"user": "demo", "image": null, "SigMetadata": "odd"}',
    "empty": b"{}",
}
FILES = sorted(p.name for p in BUILTIN_FILTER_DIR.glob("*.rego"))
INPUTS = {
    "critical": "input.vulnerability_summary.critical > 0",
    "image": 'contains(input.image, "all-in-one")',
    "tracee": 'contains(input.SigMetadata.ID, "TRC-")',
    "negated": "not input.image",
}


def routes(inputs: dict[str, str], files: list[str]) -> list[dict[str, Any]]:
    out = [{"name": f"i-{n}", "input": rule, "actions": ["hook"], "template": "raw"} for n, rule in inputs.items()]
    out += [{"name": f"f-{f}", "input-files": [f], "actions": ["hook"], "template": "raw"} for f in files]
    return out


def make_router(inputs: dict[str, str], files: list[str]) -> Router:
    return Router(parse_config({
        "routes": routes(inputs, files),
        "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/h"}],
    }, "test"))


def whole_event_verdicts(inputs: dict[str, str], files: list[str], raw: bytes) -> dict[str, Any]:
    configs = [RouteConfig(name=f"i-{n}", input=rule) for n, rule in inputs.items()]
    configs += [RouteConfig(name=f"f-{f}", input_files=[f]) for f in files]
    return RouteFilters(configs, "", engine_factory=EmbeddedEngine).evaluate(raw.decode())


@pytest.mark.parametrize("name", list(EVENTS))
def test_builtin_filters_and_rules_decide_as_on_the_whole_event(name: str) -> None:
    r = make_router(INPUTS, FILES)
    assert r.shared_engine is not None
    assert r.filters.input_keys is not None  # (Policy-* files read resources, the others a key or two)
    raw = EVENTS[name]
    expected = whole_event_verdicts(INPUTS, FILES, raw)
    result = r.route(raw, META)
    assert result.verdicts == expected
    assert any(v.matched for v in expected.values())
    # the templates still render the whole event (the filters' input is not left for them)
    for route_name, verdict in result.verdicts.items():
        if verdict.matched:
            assert orjson.loads(result.rendered[route_name].description) == {
                **orjson.loads(raw), "postee": {"AquaServer": ""}}


def test_a_rule_that_reads_any_of_the_input_gets_the_whole_event(tmp_path: Path) -> None:
    inputs = {**INPUTS, "any": 'input[k] == "demo"'}
    r = make_router(inputs, [])
    assert r.filters.input_keys is None
    for raw in EVENTS.values():
        assert r.route(raw, META).verdicts == whole_event_verdicts(inputs, [], raw)
    assert r.route(EVENTS["other"], META).verdicts["i-any"].matched


def test_html_template_after_projected_filters_sees_the_whole_event() -> None:
    r = Router(parse_config({
        "aqua-server": "https://aqua.example.com",
        "routes": [{"name": "html", "input": 'contains(input.image, "all-in-one")', "actions": ["hook"],
                    "template": "html"}],
        "templates": [{"name": "html", "rego-package": "postee.vuls.html"}],
        "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/h"}],
    }, "test"))
    assert r.filters.input_keys == {"image"}
    raw = EVENTS["aqua-input.json"]
    content = r.route(raw, META).rendered["html"]
    from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, PackageTemplate, TemplateLibrary

    expected = PackageTemplate("html", "postee.vuls.html", TemplateLibrary([BUILTIN_TEMPLATE_DIR])).render(
        r.render_input(r.parse(raw)))
    assert content.description == expected.description and "CVE-" in content.description
