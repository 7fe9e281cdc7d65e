"""One input per event: on the embedded engine the router puts the route filters into the template
library's engine and sets each event once (``set_input_json`` of the event's bytes); templates
see ``input.postee`` through Rego's ``with`` (``PackageTemplate.render_loaded``) instead of a
second input. These tests pin that this path gives what the separate engines gave: the golden
contents of every built-in template, the same errors, the same filter answers (filters still do
not see ``input.postee``), and that it is not used where it cannot be (a library package in the
filters' namespace, the OPA engine).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from actions import parse_config
from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, PackageTemplate, TemplateLibrary
from app.routing.router import EventMeta, Router
from tests.templates.goldenfile import check
from tests.templates.test_builtin_goldens import AQUA_SERVER, CASES, _event

META = EventMeta(event_id="e1", received_at=1.0)


def router(templates: dict[str, str], aqua_server: str = "", template_dirs: list[str] | None = None,
           inputs: dict[str, str] | None = None, **kwargs: Any) -> Router:
    """One route per template (``template name -> rego package``) to one webhook."""
    inputs = inputs or {}
    cfg: dict[str, Any] = {
        "routes": [{"name": name, "input": inputs.get(name, ""), "actions": ["hook"], "template": name}
                   for name in templates],
        "templates": [{"name": name, "rego-package": package} for name, package in templates.items()],
        "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/h"}],
        "herald": {"template-dirs": template_dirs or []},
    }
    if aqua_server:
        cfg["aqua-server"] = aqua_server
    return Router(parse_config(cfg, "test"), **kwargs)


@pytest.mark.parametrize(("package", "fixture", "aqua_server"), CASES)
def test_router_renders_the_goldens(package: str, fixture: str, aqua_server: str) -> None:
    r = router({"t": package}, AQUA_SERVER.removesuffix("/#/images/") if aqua_server else "")
    assert r.shared_engine is not None and r.filters.engine is r.library.engine
    assert r.aqua_server == aqua_server
    result = r.route(orjson.dumps(_event(fixture)), META)
    assert result.failures == []
    content = replace(result.rendered["t"], owners="")  # the router's addition, not the template's
    check(f"{package}__{fixture}{'' if aqua_server else '__no-aqua'}", content)


def test_event_with_its_own_postee_key_and_odd_json() -> None:
    """``with input.postee`` replaces the event's own ``postee`` as the dict merge did; escapes,
    duplicate keys and numbers read from the event's bytes render as from the re-encoded event."""
    raw = (b'{"postee": {"AquaServer": "mine", "x": 1}, "a": 1, "a": 2, "s": "\\u00e9 <&> \\u2028 \\"q\\"",'
           b' "n": [0.1, 1E2, 1.50, -0.0, 1e-7, 12345678901234567890, 2.5e-5], "image": "alpine"}')
    packages = {"json": "postee.rawmessage.json", "html": "postee.rawmessage.html", "sn": "postee.servicenow"}
    r = router(packages, "https://aqua.example.com")
    result = r.route(raw, META)
    separate = TemplateLibrary([BUILTIN_TEMPLATE_DIR])
    event_json = r.render_input(r.parse(raw))
    assert orjson.loads(event_json)["postee"] == {"AquaServer": "https://aqua.example.com/#/images/"}
    for name, package in packages.items():
        assert result.rendered[name] == PackageTemplate(name, package, separate).render(event_json), name


def test_filters_do_not_see_postee_and_answer_as_before() -> None:
    r = router({"no-postee": "postee.rawmessage.json", "alpine": "postee.rawmessage.json",
                "debian": "postee.rawmessage.json"}, "https://aqua.example.com",
               inputs={"no-postee": "not input.postee", "alpine": 'contains(input.image, "alpine")',
                       "debian": 'contains(input.image, "debian")'})
    assert r.shared_engine is not None
    verdicts = r.route(b'{"image": "alpine:3"}', META).verdicts
    assert {n: v.matched for n, v in verdicts.items()} == {"no-postee": True, "alpine": True, "debian": False}
    only = r.route(b'{"image": "debian"}', EventMeta(event_id="e2", route="debian")).verdicts
    assert {n: v.matched for n, v in only.items()} == {"debian": True}


USER_TEMPLATES = {
    "conflict.rego": 'package user.conflict\n\ntitle := "t"\n\nresult := "a" { input.x }\n\nresult := "b" { input.x }\n',
    "postee.rego": 'package user.postee\n\ntitle := "t"\n\nresult := sprintf("%v %v", [input.postee, input.x])\n',
    "missing.rego": 'package user.missing\n\ntitle := "t"\n\nresult := input.nothing\n',
    "big.rego": 'package user.big\n\ntitle := "t"\n\nresult := jsonformat(input.n)\n',
}


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    for name, source in USER_TEMPLATES.items():
        (tmp_path / name).write_text(source)
    return tmp_path


@pytest.mark.parametrize("raw", [b'{"x": 1, "n": 1}', b'{"x": true, "n": 1e20}', b'{"n": -3}'])
def test_same_errors_and_results_as_separate_engines(user_dir: Path, raw: bytes) -> None:
    packages = {name.removesuffix(".rego"): "user." + name.removesuffix(".rego") for name in USER_TEMPLATES}
    shared = router(packages, "https://aqua", template_dirs=[str(user_dir)])
    separate = router(packages, "https://aqua", template_dirs=[str(user_dir)])
    separate.shared_engine = None  # the path of engines that cannot be shared (OPA)
    a, b = shared.route(raw, META), separate.route(raw, META)
    assert shared.shared_engine is not None
    assert a.rendered == b.rendered
    assert a.failures == b.failures
    assert a.verdicts == b.verdicts


def test_not_shared_when_a_library_package_is_in_the_filters_namespace(tmp_path: Path) -> None:
    (tmp_path / "odd.rego").write_text('package herald.routes.r0\n\nallow := false\n')
    r = router({"t": "postee.rawmessage.json"}, template_dirs=[str(tmp_path)])
    assert r.shared_engine is None and r.filters.engine is not r.library.engine
    result = r.route(b'{"a": 1}', META)
    assert result.verdicts["t"].matched and result.rendered["t"].description == '{\n "a": 1,\n "postee": {\n  "AquaServer": ""\n }\n}'


def test_not_shared_on_opa(opa_engines: Any) -> None:
    r = router({"t": "postee.rawmessage.json"}, inputs={"t": "input.a == 1"}, engine_factory=opa_engines)
    assert r.shared_engine is None and r.filters.engine is not r.library.engine
    result = r.route(b'{"a": 1}', META)
    assert result.verdicts["t"].matched and result.rendered["t"].description.startswith('{\n "a": 1,')


def test_eval_path_with_beyond_plain_paths() -> None:
    """A path that is not a plain ``data.a.b`` goes through a query (no helper rule)."""
    from app.routing.policy.engine import EmbeddedEngine

    engine = EmbeddedEngine()
    engine.add_module("p.rego", 'package p\n\nx := {"a-b": input.postee, "q": input.q}\n')
    engine.set_input_json('{"q": 1, "postee": "theirs"}')
    assert engine.eval_path_with('data.p.x["a-b"]', "postee", {"A": "é\""}) == {"A": "é\""}
    assert engine.eval_path_with("data.p.x", "postee", None) == {"a-b": None, "q": 1}
    assert engine.eval_path_with('data.p.x["zz"]', "postee", 1) is None
    assert engine.eval_path("data.p.x") == {"a-b": "theirs", "q": 1}  # the input itself is untouched


def test_routes_without_filters_set_the_event_when_a_template_needs_it() -> None:
    """No route has a rule: the event is set on the engine only for a template that is evaluated
    there (the built-in raw-json is rendered without it), and never left over from the last event."""
    r = router({"raw": "postee.rawmessage.json", "html": "postee.rawmessage.html"})
    assert not r.filters.needs_input()
    for image in ("first", "second"):
        result = r.route(orjson.dumps({"image": image}), META)
        assert f'"image": "{image}"' in result.rendered["raw"].description
        assert f'"image": "{image}"' in result.rendered["html"].description
    only_raw = router({"raw": "postee.rawmessage.json"})
    only_raw.shared_engine.set_input_json('{"image": "stale"}')
    assert '"image": "new"' in only_raw.route(b'{"image": "new"}', META).rendered["raw"].description
