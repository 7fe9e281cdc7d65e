"""Templates written for Postee work unchanged (Postee §3.5, §4.1, §6.2): a directory of
Postee-format user templates (Rego v0, the common helpers, jsonformat, multi-level packages,
object results, aggregation packages, ServiceNow extras) rendered through TemplateLibrary as a
user template directory, with the outputs Postee defines. Each case also runs as an inline
(``body``) template, as Postee's golden tests do.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.content import Content
from app.errors import TemplateError
from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, ModuleTemplate, PackageTemplate, TemplateLibrary

USER_TEMPLATES = {
    # Postee's html.rego / html-with-complex-pkg.rego test templates
    "html.rego": """package rego1.html

import data.postee.with_default

title := "Audit event received"
result := sprintf("Audit event received from %s", [with_default(input, "user", "nobody")])
url := "Audit-registry-received/Audit-image-received"
""",
    "teams/platform/html-with-complex-pkg.rego": """package acme.teams.platform.audit.html
title := "Audit event received"
result := sprintf("Audit event received from %s", [input.user])
url := "Audit-registry-received/Audit-image-received"
""",
    # an object result is sent as compact JSON, exactly as Go's json.Marshal writes it
    "json.rego": """package rego1.json
title := "Audit event received"
result := {"assignee": input.user}
url := "Audit-registry-received/Audit-image-received"
""",
    "json-without-url.rego": """package rego1.json.without.url
title := "Audit event received"
result := {"assignee": input.user}
""",
    "escaping.rego": """package rego1.escaping
title := {"what": "a<b> & c", "n": [1, 2.5, 0.000015]}
result := jsonformat({"b": "<x> & y", "a": [1, 2.5, true, null], "c": {}})
""",
    # every common.rego helper with Postee's semantics (with_default treats false as missing,
    # duplicate knows columns 1 and 2 only, clamp caps its first argument at the second)
    "helpers.rego": """package rego1.helpers

import data.postee.by_flag
import data.postee.duplicate
import data.postee.clamp
import data.postee.flat_array
import data.postee.with_default

title := "helpers"

checks := [
    by_flag("yes", "no", true),
    by_flag("yes", "no", false),
    duplicate("odd", "even", 1),
    duplicate("odd", "even", 2),
    sprintf("%v", [clamp(5, 3)]),
    sprintf("%v", [clamp(2, 3)]),
    concat("", flat_array([["p", "q"], ["r"], []])),
    with_default({"f": false}, "f", "default"),
    with_default({"f": "set"}, "f", "default"),
    with_default({}, "f", "default"),
    with_default(input, "user", "default"),
]

duplicate_has_no_third_column {
    not duplicate("odd", "even", 3)
}

result := concat(",", array.concat(checks, [sprintf("%v", [duplicate_has_no_third_column])]))
""",
    # ServiceNow extras (Postee's regoservice/testdata/templates/servicenow.rego)
    "servicenow.rego": """package rego1.servicenow
title:="test title"
result = "test description"

result_date = 1667725398
result_category = "test category"
result_subcategory = "test subcategory"
result_assigned_group = "test assigned group"

result_severity := 1

result_summary := "test summary"
""",
    # a user template aggregating with its own Postee-style aggregation package
    "custom/scan.rego": """package custom.scan
title := sprintf("%s scanned", [input.image])
result := sprintf("<p>%s</p>", [input.image])
url := sprintf("https://console.example.com/%s", [input.image])
aggregation_pkg := "custom.scan.summary"
""",
    "custom/scan-summary.rego": """package custom.scan.summary

import data.postee.flat_array

title := "Scan summary"
result := res {
    scans := [ scan |
            item:=input[i].description
            scan:=[sprintf("<h1>%s</h1>", [input[i].title]), item]
    ]
    res:= concat("\\n", flat_array(scans))
}
url := concat(";", [u | u := input[_].url])
""",
    # a user template using a built-in aggregation package
    "custom/builtin-aggregation.rego": """package custom.uses.builtin.aggregation
title := input.image
result := sprintf("<p>%s</p>", [input.image])
aggregation_pkg := "postee.vuls.html.aggregation"
""",
    "without-result.rego": """package rego1.without.result
title := "no result"
""",
    # does not compile (line 4): only its package is unavailable
    "broken.rego": """package rego1.broken

title := "broken"
result := sprintf("%s", [input.user)
""",
}

# package -> (event, expected title, description, url)
EXPECTED = {
    "rego1.html": ({"user": "demo"}, "Audit event received", "Audit event received from demo",
                   "Audit-registry-received/Audit-image-received"),
    "acme.teams.platform.audit.html": ({"user": "demo"}, "Audit event received", "Audit event received from demo",
                                       "Audit-registry-received/Audit-image-received"),
    "rego1.json": ({"user": "demo"}, "Audit event received", '{"assignee":"demo"}',
                   "Audit-registry-received/Audit-image-received"),
    "rego1.json.without.url": ({"user": "demo"}, "Audit event received", '{"assignee":"demo"}', ""),
    "rego1.escaping": (
        {},
        '{"n":[1,2.5,0.000015],"what":"a\\u003cb\\u003e \\u0026 c"}',
        '{\n "a": [\n  1,\n  2.5,\n  true,\n  null\n ],\n "b": "\\u003cx\\u003e \\u0026 y",\n "c": {}\n}',
        "",
    ),
    "rego1.helpers": ({"user": "demo"}, "helpers", "yes,no,odd,even,3,2,pqr,default,set,default,demo,true", ""),
}


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("postee-templates")
    for name, source in USER_TEMPLATES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


@pytest.fixture(scope="module")
def library(user_dir: Path) -> TemplateLibrary:
    return TemplateLibrary([BUILTIN_TEMPLATE_DIR, user_dir])


def event_json(event: dict[str, object]) -> str:
    # as the router does before templating, with no aqua-server configured
    return json.dumps({**event, "postee": {"AquaServer": ""}})


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_user_package_renders_as_postee_does(library: TemplateLibrary, package: str) -> None:
    event, title, description, url = EXPECTED[package]
    content = PackageTemplate("user", package, library).render(event_json(event))
    assert (content.title, content.description, content.url) == (title, description, url)


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_same_template_inline(user_dir: Path, package: str) -> None:
    """Postee runs each golden case as an inline module too (the ``body`` template)."""
    event, title, description, url = EXPECTED[package]
    source_file = next(p for p in user_dir.rglob("*.rego") if re.match(rf"package {re.escape(package)}\s", p.read_text()))
    template = ModuleTemplate("inline", source_file.read_text(), "inline", library=None)
    content = template.render(event_json(event))
    assert (content.title, content.description, content.url) == (title, description, url)


def test_servicenow_extras(library: TemplateLibrary) -> None:
    content = PackageTemplate("sn", "rego1.servicenow", library).render(event_json({}))
    assert content == Content(
        title="test title", description="test description", url="", date="1667725398", severity="1",
        summary="test summary", category="test category", subcategory="test subcategory", assignedTo="",
        assignedGroup="test assigned group",
    )


def test_user_aggregation_package(library: TemplateLibrary) -> None:
    template = PackageTemplate("scan", "custom.scan", library)
    items = [template.render(event_json({"image": image})) for image in ("alpine:3.18", "nginx:1.25", "redis:7")]
    assert template.supports_aggregation()
    aggregate = template.aggregate(items)
    assert aggregate.title == "Scan summary"
    assert aggregate.description == (
        "<h1>alpine:3.18 scanned</h1>\n<p>alpine:3.18</p>\n<h1>nginx:1.25 scanned</h1>\n<p>nginx:1.25</p>\n"
        "<h1>redis:7 scanned</h1>\n<p>redis:7</p>"
    )
    assert aggregate.url == ";".join(f"https://console.example.com/{i}" for i in ("alpine:3.18", "nginx:1.25", "redis:7"))


def test_postee_aggregation_golden(library: TemplateLibrary) -> None:
    """regoservice/aggregation_test: the built-in html aggregation over two plain items."""
    template = PackageTemplate("agg", "custom.uses.builtin.aggregation", library)
    assert template.aggregation_package() == "postee.vuls.html.aggregation"
    aggregate = template.aggregate([Content(title="title1", description="description1"),
                                    Content(title="title2", description="description2")])
    assert aggregate.title == "Vulnerability scan report"
    assert aggregate.description == "<h1>title1</h1>\ndescription1\n<h1>title2</h1>\ndescription2"


def test_broken_file_is_reported_and_only_its_package_is_unavailable(library: TemplateLibrary, user_dir: Path) -> None:
    broken = str(user_dir / "broken.rego")
    reported = [e for e in library.errors if broken in e]
    assert len(reported) == 1, library.errors
    assert re.search(r"broken\.rego:4:\d+", reported[0]), reported[0]  # the line of the error
    assert len(library.errors) == 1  # nothing else failed
    assert not library.has_package("rego1.broken")
    with pytest.raises(TemplateError, match="rego1.broken"):
        PackageTemplate("broken", "rego1.broken", library)
    # the other user templates and the built-in ones keep working
    assert PackageTemplate("html", "rego1.html", library).render(event_json({"user": "x"})).description == \
        "Audit event received from x"
    assert PackageTemplate("raw", "postee.rawmessage.json", library).render(event_json({"user": "x"})).title == "-"


def test_missing_result_is_an_error(library: TemplateLibrary) -> None:
    with pytest.raises(TemplateError, match="property result is not found"):
        PackageTemplate("t", "rego1.without.result", library).render(event_json({}))


def test_unknown_package_fails_at_prepare(library: TemplateLibrary) -> None:
    with pytest.raises(TemplateError, match="rego1.nothing"):
        PackageTemplate("t", "rego1.nothing", library)


def test_user_directory_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    library = TemplateLibrary([BUILTIN_TEMPLATE_DIR, missing])
    assert any(str(missing) in e for e in library.errors)
    assert library.has_package("postee.vuls.html")


def test_herald_render_with_template_dir(user_dir: Path, tmp_path: Path) -> None:
    """The same directory through ``herald render --template-dir`` (a real process)."""
    import subprocess
    import sys

    event = tmp_path / "event.json"
    event.write_text('{"user": "demo"}')
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "render", "--template-dir", str(user_dir), "--package", "rego1.json",
         "--input", str(event)],
        cwd=root, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["title"], out["description"], out["url"]) == (
        "Audit event received", '{"assignee":"demo"}', "Audit-registry-received/Audit-image-received")
    assert "broken.rego:4:" in done.stderr  # the file that does not compile is reported at start
