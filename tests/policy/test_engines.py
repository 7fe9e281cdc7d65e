"""The same policy and template behaviour on both engines: regorus in process and a real OPA
server (``engine_factory`` is parametrised over both, see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from app import gojson
from app.config.loader import RouteConfig
from app.errors import PolicyError, TemplateError
from app.routing.policy.filters import RouteFilters
from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, ModuleTemplate, PackageTemplate, TemplateLibrary
from tests.harness import FIXTURES
from tests.policy.conftest import EngineFactory

AQUA = FIXTURES / "postee" / "aqua-input.json"
TRIVY = FIXTURES / "postee" / "trivy-input.json"


def route(name: str, rule: str = "", files: list[str] | None = None) -> RouteConfig:
    return RouteConfig(name=name, input=rule, input_files=files or [])


# -- route filters --------------------------------------------------------------------------


def test_route_filters_match_like_postee(engine_factory: EngineFactory, tmp_path: Path) -> None:
    (tmp_path / "registry.rego").write_text(
        'package postee\n\ndefault allow = false\n\nallow {\n\tinput.registry == "Docker Hub"\n}\n'
    )
    # a second file of the same package with its own default and a constant it reads through
    # data.postee: each file gets its own sub-package, and the route ORs their `allow`
    (tmp_path / "image.rego").write_text(
        "package postee\n\ndefault allow = false\n\nwanted := \"all-in-one:3.5.19223\"\n\n"
        "allow {\n\tinput.image == data.postee.wanted\n}\n"
    )
    routes = [
        route("all-in-one", 'contains(input.image, "all-in-one")'),
        route("nginx", 'contains(input.image, "nginx")'),
        route("files", files=["registry.rego", "image.rego"]),
        route("registry-only", files=["registry.rego"]),
        route("everything"),
    ]
    filters = RouteFilters(routes, str(tmp_path), engine_factory=engine_factory)

    aqua = filters.evaluate(AQUA.read_text())
    assert {name: v.matched for name, v in aqua.items()} == {
        "all-in-one": True, "nginx": False, "files": True, "registry-only": False, "everything": True,
    }
    assert aqua["files"].reason == f"{tmp_path / 'image.rego'} allowed"
    assert aqua["nginx"].reason == "input rule did not allow"

    trivy = filters.evaluate(TRIVY.read_text())
    assert {name: v.matched for name, v in trivy.items()} == {
        "all-in-one": False, "nginx": False, "files": False, "registry-only": False, "everything": True,
    }
    # the same engine answers the next event with the new input, not the previous one
    assert filters.evaluate(AQUA.read_text(), only="all-in-one")["all-in-one"].matched is True


def test_a_failing_route_rule_is_isolated(engine_factory: EngineFactory, tmp_path: Path) -> None:
    # two complete definitions of allow with different values: an evaluation error on both engines
    (tmp_path / "conflict.rego").write_text("package postee\n\nallow = true { true }\n\nallow = false { true }\n")
    filters = RouteFilters(
        [route("good", 'input.registry == "Aqua"'), route("bad", files=["conflict.rego"])],
        str(tmp_path), engine_factory=engine_factory,
    )
    verdicts = filters.evaluate(AQUA.read_text())
    assert verdicts["good"].matched is True
    assert verdicts["bad"].matched is False
    assert verdicts["bad"].reason.startswith("error: ")


def test_a_filter_file_that_does_not_compile_names_file_and_line(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.rego"
    bad.write_text('package postee\n\ndefault allow = false\n\nallow := sprintf("%s", [input.a)\n')
    with pytest.raises(PolicyError) as err:
        RouteFilters([route("r", files=["broken.rego"])], str(tmp_path), engine_factory=engine_factory)
    assert f"{bad}:5:" in str(err.value)
    assert "route 'r'" in str(err.value)


# -- templates -------------------------------------------------------------------------------


def test_raw_message_templates(engine_factory: EngineFactory) -> None:
    library = TemplateLibrary(dirs=[BUILTIN_TEMPLATE_DIR], engine_factory=engine_factory)
    event_json = AQUA.read_text()
    pretty = gojson.marshal_indent(orjson.loads(event_json), " ")

    as_json = PackageTemplate("raw-json", "postee.rawmessage.json", library).render(event_json)
    assert (as_json.title, as_json.description) == ("-", pretty)

    as_html = PackageTemplate("raw-html", "postee.rawmessage.html", library).render(event_json)
    assert as_html.title == "Raw Message Received"
    assert as_html.description == f"<pre><code>{pretty}</code></pre>"


TRICKY = r"""{
 "html": "<script>alert('x') && 1 > 0</script>",
 "unicode": "é 漢字 😀 \u2028 \u2029",
 "control": "\u0001\t\n\r\"\\/",
 "floats": [1.5, 0.1, 1e15, 1e-7, 0.000001, 123456789.123, 100.0, 2.5e-8, 3.14159265358979, 1.0E+2,
            0.30000000000000004],
 "ints": [0, -1, 9007199254740993],
 "nested": {"z": {"y": [[], {}], "a": null}, "A": true, "_": false, "aa": [{"b": 1, "a": 2}]}
}"""


def test_jsonformat_matches_go_encoder_byte_for_byte(engine_factory: EngineFactory) -> None:
    engine = engine_factory()
    engine.add_module("/t/jsonformat.rego", (
        "package herald_test.jf\n\n"
        "whole := jsonformat(input)\n\nnested := jsonformat(input.nested)\n\n"
        "floats := jsonformat(input.floats)\n\ntext := jsonformat(\"<&>\")\n"
    ))
    engine.set_input_json(TRICKY)
    got = engine.eval_path("data.herald_test.jf")
    event = orjson.loads(TRICKY)
    assert got == {
        "whole": gojson.marshal_indent(event, " "),
        "nested": gojson.marshal_indent(event["nested"], " "),
        "floats": gojson.marshal_indent(event["floats"], " "),
        "text": '"\\u003c\\u0026\\u003e"',
    }
    assert '   "y": [\n    [],\n    {}\n   ]' in got["whole"]  # one-space indent per level
    assert "1000000000000000,\n" in got["floats"] and "1e-7" in got["floats"]


COMMON_USER = """package user.common_helpers

import data.postee.with_default
import data.postee.by_flag
import data.postee.clamp
import data.postee.duplicate
import data.postee.flat_array

title := with_default(input, "image", "no image")

result := sprintf("%s|%s|%s|%s|%v|%v|%v", [
	with_default(input, "missing", "fallback"),
	by_flag("yes", "no", input.flag),
	by_flag("yes", "no", false),
	duplicate("left", "right", 2),
	clamp(input.n, 10),
	clamp(-4, 10),
	flat_array([[1, 2], [3]]),
])
"""


def test_common_helpers_through_imports(engine_factory: EngineFactory) -> None:
    template = ModuleTemplate("inline", COMMON_USER, "inline body", None, engine_factory=engine_factory)
    content = template.render('{"image": "alpine:3", "flag": true, "n": 42}')
    assert content.title == "alpine:3"
    assert content.description == "fallback|yes|no|right|10|-4|[1, 2, 3]"

    library = TemplateLibrary(dirs=[BUILTIN_TEMPLATE_DIR], engine_factory=engine_factory)
    library.engine.add_module("/user/helpers.rego", COMMON_USER)
    result = library.evaluate("user.common_helpers", '{"flag": false, "n": 3}')
    assert result["title"] == "no image"
    assert result["result"] == "fallback|no|no|right|3|-4|[1, 2, 3]"


BROKEN = 'package user.broken\n\ntitle := "x"\n\nresult := sprintf("%s", [input.a)\n'


def test_compile_error_names_file_and_line(engine_factory: EngineFactory, tmp_path: Path) -> None:
    engine = engine_factory()
    with pytest.raises(PolicyError) as err:
        engine.add_module("/templates/broken.rego", BROKEN)
    assert str(err.value).startswith("/templates/broken.rego: ")
    assert "/templates/broken.rego:5:33" in str(err.value)

    # in a library, only the broken file's package is lost; the others keep rendering
    user = tmp_path / "user"
    user.mkdir()
    (user / "broken.rego").write_text(BROKEN)
    (user / "fine.rego").write_text('package user.fine\n\ntitle := "ok"\n\nresult := input.a\n')
    library = TemplateLibrary(dirs=[BUILTIN_TEMPLATE_DIR, user], engine_factory=engine_factory)
    assert len(library.errors) == 1 and f"{user / 'broken.rego'}:5:33" in library.errors[0]
    assert library.evaluate("user.fine", '{"a": "b"}') == {"title": "ok", "result": "b"}
    with pytest.raises(TemplateError, match="not defined by any template file"):
        PackageTemplate("t", "user.broken", library)


def test_modules_may_reference_modules_loaded_later(engine_factory: EngineFactory) -> None:
    # regorus binds references when it evaluates, OPA when it compiles: a library loads files
    # in name order, so lib/aqua.rego comes before the lib/text.rego it imports
    engine = engine_factory()
    assert engine.add_module("/lib/a.rego", "package lib.a\n\nimport data.lib.b\n\nx := b.double(input.n)\n") == "data.lib.a"
    assert engine.add_module("/lib/b.rego", "package lib.b\n\ndouble(n) = n * 2\n") == "data.lib.b"
    engine.set_input_json('{"n": 21}')
    assert engine.eval_path("data.lib.a.x") == 42

    # a reference that never gets defined fails when it is evaluated, on both engines
    engine.add_module("/lib/c.rego", "package lib.c\n\ny := undefined_helper(1)\n")
    with pytest.raises(PolicyError, match="undefined_helper"):
        engine.eval_path("data.lib.c.y")
    assert engine.eval_path("data.lib.a.x") == 42


def test_undefined_documents_are_none(engine_factory: EngineFactory) -> None:
    engine = engine_factory()
    engine.add_module("/t/u.rego", "package t.u\n\nallow {\n\tinput.x == 1\n}\n")
    engine.set_input_json('{"x": 2}')
    assert engine.eval_path("data.t.u.allow") is None
    assert engine.eval_path("data.t.nothing_here") is None
    engine.set_input_json('{"x": 1}')
    assert engine.eval_path("data.t.u.allow") is True


def test_data_documents_merge(engine_factory: EngineFactory) -> None:
    engine = engine_factory()
    engine.add_module("/t/d.rego", "package t.d\n\nlabel := data.herald_test_data.labels[input.sev]\n")
    engine.add_data({"herald_test_data": {"labels": {"high": "High"}}})
    engine.add_data({"herald_test_data": {"labels": {"low": "Low"}, "version": 2}})
    engine.set_input_json('{"sev": "low"}')
    assert engine.eval_path("data.t.d.label") == "Low"
    assert engine.eval_path("data.herald_test_data") == {"labels": {"high": "High", "low": "Low"}, "version": 2}
