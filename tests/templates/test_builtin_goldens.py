"""Every built-in template package rendered on every fixture it is written for, pinned by
golden files (title, description, url and the ServiceNow extras, byte for byte), plus structural
checks: Slack outputs are Block Kit arrays, HTML is balanced and escaped, CycloneDX is XML in the
1.1 namespace, and the aggregation packages combine 2-3 renders.

Regenerate with HERALD_UPDATE_GOLDENS=1 and review the diff.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from app.content import Content
from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, PackageTemplate, TemplateLibrary
from tests.harness import FIXTURES
from tests.templates.goldenfile import assert_slack_blocks, assert_well_formed_html, check

POSTEE = FIXTURES / "postee"
LOCAL = Path(__file__).parent / "fixtures"
AQUA_SERVER = "https://aqua.example.com/#/images/"


def _event(name: str) -> dict[str, Any]:
    """A fixture by short name; "+function" / "+vm" derive ServiceNow's other Aqua scan kinds."""
    base, _, variant = name.partition("+")
    paths = {"finding-single": FIXTURES / "tracee" / "finding-single.json",
             "falco-event-single": FIXTURES / "falco" / "event-single.json",
             "trivy-operator-sbom": LOCAL / "trivy-operator-sbom.json"}
    event: dict[str, Any] = json.loads(paths.get(base, POSTEE / f"{base}.json").read_text())
    if variant:
        event["entity_type"] = {"function": 1, "vm": 2}[variant]
    return event


def _event_json(fixture: str, aqua_server: str) -> str:
    # the router injects this before templating (Postee §3.3 step 4)
    return json.dumps({**_event(fixture), "postee": {"AquaServer": aqua_server}})


AQUA_SCANS = ["aqua-input", "all-in-one-image"]

# package -> the fixtures it is written for
TARGETS: dict[str, list[str]] = {
    "postee.rawmessage.json": ["simple-input", "aqua-incident-input"],
    "postee.rawmessage.html": ["simple-input", "aqua-incident-input"],
    "postee.vuls.html": AQUA_SCANS,
    "postee.vuls.slack": AQUA_SCANS,
    "postee.vuls.cyclondx": AQUA_SCANS,
    "postee.vuls.opsgenie": ["aqua-input"],
    "postee.servicenow": [*AQUA_SCANS, "aqua-input+function", "aqua-input+vm"],
    "postee.servicenow.incident": ["aqua-incident-input"],
    "postee.servicenow.insight": ["aqua-insight-input"],
    "postee.tracee.html": ["finding-single"],
    "postee.tracee.slack": ["finding-single"],
    "postee.trivy.jira": ["trivy-input"],
    "postee.vuls.trivy.slack": ["trivy-input"],
    "postee.trivyoperator.jira": ["trivy-operator-input"],
    "postee.trivyoperator.slack": ["trivy-operator-input"],
    "postee.trivyoperator.dependencytrack": ["trivy-operator-sbom"],
    # Herald's own (Postee had no Falco templates)
    "herald.falco.html": ["falco-event-single"],
    "herald.falco.slack": ["falco-event-single"],
}
# templates that link to the Aqua console render once with and once without aqua-server
LINKING = {"postee.vuls.html", "postee.vuls.slack", "postee.servicenow", "postee.servicenow.insight"}

CASES = [
    pytest.param(package, fixture, server, id=f"{package}__{fixture}{'' if server else '__no-aqua'}")
    for package, fixtures in TARGETS.items()
    for fixture in fixtures
    for server in ([AQUA_SERVER, ""] if package in LINKING else [AQUA_SERVER])
]

SLACK = {"postee.vuls.slack", "postee.tracee.slack", "postee.vuls.trivy.slack", "postee.trivyoperator.slack",
         "herald.falco.slack"}
HTML = {"postee.rawmessage.html", "postee.vuls.html", "postee.servicenow", "postee.servicenow.incident",
        "postee.servicenow.insight", "postee.tracee.html", "herald.falco.html"}


@pytest.fixture(scope="module")
def library() -> TemplateLibrary:
    lib = TemplateLibrary([BUILTIN_TEMPLATE_DIR])
    assert lib.errors == []
    return lib


def render(library: TemplateLibrary, package: str, fixture: str, aqua_server: str = AQUA_SERVER) -> Content:
    return PackageTemplate("golden", package, library).render(_event_json(fixture, aqua_server))


def test_every_builtin_package_has_cases(library: TemplateLibrary) -> None:
    templates = {p for p in library.files if p.startswith(("postee.", "herald.falco.")) and not p.endswith("aggregation")}
    assert templates == set(TARGETS)


@pytest.mark.parametrize(("package", "fixture", "aqua_server"), CASES)
def test_golden(library: TemplateLibrary, package: str, fixture: str, aqua_server: str) -> None:
    content = render(library, package, fixture, aqua_server)
    check(f"{package}__{fixture}{'' if aqua_server else '__no-aqua'}", content)
    assert content.title and content.description
    if package in SLACK:
        assert_slack_blocks(content.description)
    if package in HTML:
        assert_well_formed_html(content.description)
    if package in LINKING:
        assert (content.url != "") == bool(aqua_server)
        if aqua_server:
            assert content.url.startswith("https://aqua.example.com/")


def test_cyclonedx_is_a_bom_in_the_1_1_namespace(library: TemplateLibrary) -> None:
    for fixture in AQUA_SCANS:
        content = render(library, "postee.vuls.cyclonedx", fixture)  # the correct spelling works too
        root = ET.fromstring(content.description.encode())
        ns = {"bom": "http://cyclonedx.org/schema/bom/1.1", "v": "http://cyclonedx.org/schema/ext/vulnerability/1.0"}
        assert root.tag == "{http://cyclonedx.org/schema/bom/1.1}bom"
        assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            root.attrib["serialNumber"])
        event = _event(fixture)
        components = root.findall("bom:components/bom:component", ns)
        assert len(components) == len(event["resources"])
        vulnerabilities = root.findall(".//v:vulnerability", ns)
        assert len(vulnerabilities) == sum(len(r.get("vulnerabilities") or []) for r in event["resources"])
        refs = {c.attrib["bom-ref"] for c in components}
        assert {v.attrib["ref"] for v in vulnerabilities} <= refs
        severities = {e.text for e in root.iterfind(".//v:severity", ns)}
        assert severities <= {"None", "Low", "Medium", "High", "Critical", "Unknown"}
        assert {e.text for e in root.iterfind(".//v:method", ns)} <= {"CVSSv2", "CVSSv3", "Other"}


def test_slack_sections_are_chunked_to_ten_fields(library: TemplateLibrary) -> None:
    # all-in-one-image has 30 medium vulnerabilities: the header row + 30 rows = 62 fields
    blocks = assert_slack_blocks(render(library, "postee.vuls.slack", "all-in-one-image").description)
    texts = [str(b.get("text", {}).get("text")) for b in blocks]  # type: ignore[union-attr]
    assert texts.count("*Medium severity vulnerabilities*") == 1
    start = texts.index("*Medium severity vulnerabilities*") + 1
    sizes = []
    for block in blocks[start:]:
        if "fields" not in block:
            break
        sizes.append(len(block["fields"]))  # type: ignore[arg-type]
    assert sizes == [10] * 6 + [2]


def test_event_text_is_escaped(library: TemplateLibrary) -> None:
    event = _event("aqua-input")
    event["image"] = "evil<script>&"
    event["resources"][0]["vulnerabilities"][0]["fix_version"] = "1.0\u0007<b>"
    event_json = json.dumps({**event, "postee": {"AquaServer": AQUA_SERVER}})
    html = PackageTemplate("t", "postee.vuls.html", library).render(event_json)
    assert_well_formed_html(html.description)
    assert "evil&lt;script&gt;&amp;" in html.description and "<script>" not in html.description
    assert "1.0&lt;b&gt;" in html.description  # control character stripped, markup escaped
    slack = PackageTemplate("t", "postee.vuls.slack", library).render(event_json)
    texts = json.dumps(assert_slack_blocks(slack.description))
    assert "evil&lt;script&gt;&amp;" in texts
    xml = PackageTemplate("t", "postee.vuls.cyclondx", library).render(event_json)
    assert ET.fromstring(xml.description.encode()).tag.endswith("bom")


AGGREGATES = [
    ("postee.vuls.html", ["aqua-input", "all-in-one-image"]),
    ("postee.servicenow", ["aqua-input", "aqua-input+function", "aqua-input+vm"]),
    ("postee.vuls.slack", ["aqua-input", "all-in-one-image"]),
    ("postee.vuls.trivy.slack", ["trivy-input", "trivy-input"]),
    ("postee.trivy.jira", ["trivy-input", "trivy-input", "trivy-input"]),
]


@pytest.mark.parametrize(("package", "fixtures"), AGGREGATES, ids=[a[0] for a in AGGREGATES])
def test_aggregation(library: TemplateLibrary, package: str, fixtures: list[str]) -> None:
    template = PackageTemplate("agg", package, library)
    items = [template.render(_event_json(f, AQUA_SERVER)) for f in fixtures]
    assert template.supports_aggregation()
    aggregate = template.aggregate(items)
    check(f"{template.aggregation_package()}__{package}", aggregate)
    assert aggregate.title == "Vulnerability scan report"
    assert aggregate.url == "\n".join(i.url for i in items if i.url)
    if "slack" in package:
        blocks = assert_slack_blocks(aggregate.description)
        assert len(blocks) == sum(len(json.loads(i.description)) + 1 for i in items)
        titles = [b for b in blocks if b.get("text", {}).get("text") in {f"*{i.title}*" for i in items}]  # type: ignore[union-attr]
        assert len(titles) == len(items)
    else:
        for item in items:
            assert item.description in aggregate.description
    if package in HTML:
        assert_well_formed_html(aggregate.description)
        assert aggregate.description.count("<h1>") == len(items)
    if package == "postee.trivy.jira":
        assert aggregate.description.count("h1. pom.xml vulnerability scan report\n") == 3


@pytest.mark.parametrize("package", ["postee.tracee.html", "postee.trivyoperator.slack", "postee.vuls.opsgenie",
                                     "herald.falco.slack"])
def test_packages_without_aggregation(library: TemplateLibrary, package: str) -> None:
    assert not PackageTemplate("t", package, library).supports_aggregation()
