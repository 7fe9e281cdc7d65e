"""Postee's legacy scan renderers (``legacy-scan-renderer: html|slack|jira``, Postee §4.3):
goldens for the three dialects, Postee's own expectations from formatting/eval_test.go, and the
details (none fills, control characters, Slack chunking, aggregation)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from app.content import Content
from app.errors import TemplateError
from app.routing.legacy import LegacyTemplate
from tests.harness import FIXTURES
from tests.templates.goldenfile import assert_slack_blocks, assert_well_formed_html, check

AQUA_SERVER = "https://aqua.example.com/#/images/"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "postee" / f"{name}.json").read_text())


def render(kind: str, event: dict[str, Any], aqua_server: str = AQUA_SERVER) -> Content:
    # the router injects postee.AquaServer; the legacy renderer ignores unknown properties
    return LegacyTemplate("legacy", kind, aqua_server).render(json.dumps({**event, "postee": {"AquaServer": aqua_server}}))


def slack_blocks(description: str) -> list[dict[str, object]]:
    """Postee's Slack action: drop the trailing comma, wrap in brackets."""
    assert description.endswith(",")
    return assert_slack_blocks("[" + description.removesuffix(",") + "]")


@pytest.mark.parametrize("kind", ["html", "slack", "jira"])
@pytest.mark.parametrize(("name", "aqua_server"), [("aqua-input", AQUA_SERVER), ("all-in-one-image", "")])
def test_golden(kind: str, name: str, aqua_server: str) -> None:
    content = render(kind, fixture(name), aqua_server)
    check(f"legacy-{kind}__{name}{'' if aqua_server else '__no-aqua'}", content)
    assert content.title == "all-in-one:3.5.19223 vulnerability scan report"
    if aqua_server:
        # registry as is, image query-escaped
        assert content.url == "https://aqua.example.com/#/images/Aqua/all-in-one%3A3.5.19223"
    else:
        assert content.url == "" and "See more" not in content.description
    if kind == "html":
        assert_well_formed_html(content.description)
    if kind == "slack":
        slack_blocks(content.description)


# Postee's formatting/eval_test.go TestEval, with its expected description (Postee also wrote a
# "See more" paragraph with an empty link when no aqua-server was configured; Herald omits it)
POSTEE_SCAN = {
    "image": "Demo mock image1",
    "registry": "registry1",
    "digest": "abc",
    "vulnerability_summary": {"critical": 0, "high": 1, "medium": 3, "low": 4, "negligible": 5},
    "image_assurance_results": {"disallowed": True},
}
POSTEE_EXPECTED = """<p>Image name: Demo mock image1</p>
<p>Registry: registry1</p>
<p>Image is non-compliant</p>
<TABLE border='1' style='width: 100%; border-collapse: collapse;'>
<TR>
<TH style='padding: 5px;'>CRITICAL</TH><TH style='padding: 5px;'>HIGH</TH><TH style='padding: 5px;'>MEDIUM</TH><TH style='padding: 5px;'>LOW</TH><TH style='padding: 5px;'>NEGLIGIBLE</TH>
</TR>
<TR>
<TD style='padding: 5px;'><span style='color:#c00000'>0</span></TD><TD style='padding: 5px;'><span style='color:#e0443d'>1</span></TD><TD style='padding: 5px;'><span style='color:#f79421'>3</span></TD><TD style='padding: 5px;'><span style='color:#e1c930'>4</span></TD><TD style='padding: 5px;'><span style='color:green'>5</span></TD>
</TR>
</TABLE>
"""


def test_postee_eval_expectation() -> None:
    content = render("html", POSTEE_SCAN, "")
    assert content.title == "Demo mock image1 vulnerability scan report"
    assert content.description == POSTEE_EXPECTED
    linked = render("html", POSTEE_SCAN)
    assert linked.description == POSTEE_EXPECTED + (
        "<p>See more: <a href='https://aqua.example.com/#/images/registry1/Demo+mock+image1'>"
        "https://aqua.example.com/#/images/registry1/Demo+mock+image1</a></p>\n"
    )
    assert linked.url == "https://aqua.example.com/#/images/registry1/Demo+mock+image1"


# a scan exercising every section: malware and sensitive data, blanks, control characters,
# an unknown severity, and six high vulnerabilities (seven table rows: Slack cuts them 5 + 2)
DETAILED_SCAN: dict[str, Any] = {
    "Image": "app:1.0",  # Go's decoder matches property names case-insensitively
    "registry": "Docker Hub",
    "scan_options": {"scan_malware": True, "scan_sensitive_data": True},
    "vulnerability_summary": {"high": 6, "malware": 1, "sensitive": 2},
    "image_assurance_results": {"checks_performed": [{"control": "malware", "policy_name": "Default", "failed": True}]},
    "resources": [
        {"resource": {"name": "", "version": ""},
         "vulnerabilities": [{"name": "", "fix_version": "", "aqua_severity": "HIGH"},
                             {"name": "CVE-1", "fix_version": "1.2\r\n\t", "aqua_severity": "high"},
                             {"name": "CVE-odd", "fix_version": "9", "aqua_severity": "weird"}]},
        {"resource": {"name": "openssl", "version": "1.1"},
         "vulnerabilities": [{"name": f"CVE-{i}", "fix_version": "1.2", "aqua_severity": "high"} for i in range(2, 6)]},
    ],
    "malware": [{"malware": "EICAR", "hash": "abc", "path": "/tmp/eicar"}],
    "sensitive_data": [{"filename": "id_rsa", "path": "/root/.ssh", "type": "private key", "hash": "def"},
                       {"filename": "token", "path": "/app", "type": "secret", "hash": "0a1"}],
}


@pytest.mark.parametrize("kind", ["html", "slack", "jira"])
def test_every_section(kind: str) -> None:
    content = render(kind, DETAILED_SCAN)
    check(f"legacy-{kind}__every-section", content)
    assert content.title == "app:1.0 vulnerability scan report"
    assert content.url == "https://aqua.example.com/#/images/Docker Hub/app%3A1.0"
    text = content.description
    assert "Malware found: Yes" in text and "Sensitive data found: Yes" in text and "Image is compliant" in text
    assert "CVE-odd" not in text  # severities outside critical..negligible are not listed
    if kind == "html":
        assert_well_formed_html(text)
        assert "<TD style='padding: 5px;'>none</TD><TD style='padding: 5px;'>none</TD><TD style='padding: 5px;'>none</TD>" \
               "<TD style='padding: 5px;'>none</TD>" in text
        assert "<TD style='padding: 5px;'>1.2</TD>" in text  # control characters stripped
        assert "<TD style='padding: 5px;'>0</TD><TD style='padding: 5px;'>EICAR</TD>" in text  # numbered from 0
        assert "<h2>Sensitive Data</h2>" in text and "<h2>Malware</h2>" in text
    if kind == "jira":
        assert "|none|none|none|none|\n" in text and "|CVE-1|none|none|1.2|\n" in text
        assert "||#||Control||Policy Name||Status||\n|1|malware|Default|FAIL|\n" in text
        assert "||File name||Path||Type||Hash||\n|id_rsa|/root/.ssh|private key|def|\n" in text
    if kind == "slack":
        blocks = slack_blocks(text)
        high = blocks.index({"type": "section", "text": {"type": "mrkdwn", "text": "*High severity vulnerabilities*"}})
        first, second = blocks[high + 1], blocks[high + 2]
        assert [len(first["fields"]), len(second["fields"])] == [10, 4]  # type: ignore[arg-type]
        assert first["fields"][:4] == [  # type: ignore[index]
            {"type": "mrkdwn", "text": "*Vulnerability ID*"},
            {"type": "mrkdwn", "text": "*Resource name* / *Installed version* / *Fix version*"},
            {"type": "mrkdwn", "text": "none"},
            {"type": "mrkdwn", "text": "none / none / none"},
        ]
        assert {"type": "mrkdwn", "text": "0 EICAR"} in blocks[-4]["fields"]  # type: ignore[operator,index]
        # Postee's Go structs: "type" before "text"/"fields"
        assert re.match(r'\{"type":"section","text":\{"type":"mrkdwn","text":"Image name: app:1.0"\}\},', text)


def test_html_escapes_event_text() -> None:
    content = render("html", {**POSTEE_SCAN, "image": "<img src=x onerror=alert(1)>", "registry": "a&b"})
    assert_well_formed_html(content.description)
    assert "<p>Image name: &lt;img src=x onerror=alert(1)&gt;</p>" in content.description
    assert "<p>Registry: a&amp;b</p>" in content.description


# Postee's formatting/eval_test.go TestBuildAggregatedContent, in the three dialects
ITEMS = [Content(title="title1", description="description1", url="url1", owners="admin"),
         Content(title="title2", description="description2", url="url2", owners="user")]


@pytest.mark.parametrize(("kind", "description"), [
    ("html", "<h1>title1</h1>\ndescription1<h1>title2</h1>\ndescription2"),
    ("jira", "h1. title1\ndescription1h1. title2\ndescription2"),
    ("slack", '{"type":"section","text":{"type":"mrkdwn","text":"*title1*"}},description1'
              '{"type":"section","text":{"type":"mrkdwn","text":"*title2*"}},description2'),
])
def test_aggregation(kind: str, description: str) -> None:
    template = LegacyTemplate("legacy", kind, AQUA_SERVER)
    assert template.supports_aggregation()
    aggregate = template.aggregate(ITEMS)
    assert aggregate == Content(title="Vulnerability scan report", description=description, url="url1\nurl2",
                                owners="admin;user")


def test_aggregation_of_real_scans_and_url_joining() -> None:
    template = LegacyTemplate("legacy", "slack", AQUA_SERVER)
    items = [render("slack", fixture("aqua-input")), render("slack", DETAILED_SCAN), render("slack", POSTEE_SCAN, "")]
    aggregate = template.aggregate(items)
    blocks = slack_blocks(aggregate.description)
    assert len(blocks) == sum(len(slack_blocks(i.description)) + 1 for i in items)
    assert aggregate.url == f"{items[0].url}\n{items[1].url}\n"  # Go's buffer: an empty url still gets its newline
    assert template.aggregate([Content(url=""), Content(url="b")]).url == "b"  # ...but not a leading one
    assert template.aggregate([Content(), Content()]).owners == ""


def test_wrong_types_are_errors_naming_the_property() -> None:
    template = LegacyTemplate("legacy", "html", "")
    with pytest.raises(TemplateError, match=r"legacy: .*property image must be a string, got 5"):
        template.render(json.dumps({"image": 5}))
    with pytest.raises(TemplateError, match=r"property vulnerability_summary\.high must be an integer, got \"1\""):
        template.render(json.dumps({"vulnerability_summary": {"high": "1"}}))
    with pytest.raises(TemplateError, match=r"resources\[0\]\.vulnerabilities\[1\] must be an object"):
        template.render(json.dumps({"resources": [{"vulnerabilities": [{}, "x"]}]}))
    with pytest.raises(TemplateError, match="not a JSON object"):
        template.render("[1]")
    # nulls are Go's zero values, not errors
    assert template.render(json.dumps({"image": None, "resources": None})).title == " vulnerability scan report"


def test_unknown_kind() -> None:
    with pytest.raises(TemplateError, match="must be html, slack or jira, not 'xml'"):
        LegacyTemplate("legacy", "xml", "")
