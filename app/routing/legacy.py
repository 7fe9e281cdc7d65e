"""Postee's legacy scan renderers: ``legacy-scan-renderer: html|slack|jira`` (Postee §4.3).

They render an Aqua image-scan webhook, read into Postee's fixed scan structure (unknown
properties are ignored, property names match case-insensitively as Go's decoder does, a wrong
type is an error naming the property), in one of three markup dialects:

- ``html``: ``<p>``, ``<h1>``-``<h3>``, coloured ``<span>``, bordered ``<TABLE>``, ``<a href>``;
- ``jira``: wiki markup (``h2.``, ``{color:X}``, ``||header||`` and ``|cell|`` rows, ``[title|url]``);
- ``slack``: each element is a Block Kit section in JSON followed by a comma (Postee's Slack action
  trims the last comma and wraps the list in ``[]``); tables become ``fields`` sections.

The layout, the "none" fills and the stripping of control characters from fix versions follow
Postee byte for byte, with two deliberate differences: event text is HTML-escaped in the html
dialect (Postee let an image name inject markup into mail), and without an aqua-server there is
no url and no "See more" link (Postee produced a relative ``<registry>/<image>`` link).
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from app import gojson
from app.content import Content
from app.errors import TemplateError

KINDS = ("html", "slack", "jira")
SEVERITIES = ("critical", "high", "medium", "low", "negligible")
COLOURS = ("#c00000", "#e0443d", "#f79421", "#e1c930", "green")  # critical ... negligible
NONE = "none"
# Go's [[:cntrl:]] plus the replacement character that invalid UTF-8 decodes to
_CONTROL = re.compile("[\x00-\x1f\x7f\ufffd]")


# --- the scan, decoded as Go decodes it into Postee's ScanImageInfo ---------------------------------

class _BadProperty(ValueError):
    """A scan property of the wrong JSON type (becomes a TemplateError naming the template)."""


def _lookup(obj: dict[str, Any], key: str) -> Any:
    """Go matches JSON keys to fields case-insensitively; of several matches the last one wins."""
    found = None
    for k, v in obj.items():
        if k.lower() == key:
            found = v
    return found


def _typed(obj: dict[str, Any], key: str, kind: type, what: str, where: str) -> Any:
    value = _lookup(obj, key)
    if value is None:  # missing or null: Go leaves the zero value
        return kind()
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise _BadProperty(f"property {where}{key} must be {what}, got {gojson.marshal(value)[:80]}")
    return value


def _str(obj: dict[str, Any], key: str, where: str = "") -> str:
    return str(_typed(obj, key, str, "a string", where))


def _int(obj: dict[str, Any], key: str, where: str = "") -> int:
    return int(_typed(obj, key, int, "an integer", where))


def _bool(obj: dict[str, Any], key: str, where: str = "") -> bool:
    return bool(_typed(obj, key, bool, "a boolean", where))


def _obj(obj: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    return dict(_typed(obj, key, dict, "an object", where))


def _objs(obj: dict[str, Any], key: str, where: str = "") -> list[dict[str, Any]]:
    items = _typed(obj, key, list, "an array", where)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _BadProperty(f"property {where}{key}[{i}] must be an object, got {gojson.marshal(item)[:80]}")
    return list(items)


@dataclass
class Scan:
    image: str = ""
    registry: str = ""
    disallowed: bool = False
    checks: list[tuple[str, str, bool]] = field(default_factory=list)  # control, policy name, failed
    summary: dict[str, int] = field(default_factory=dict)
    scan_malware: bool = False
    scan_sensitive_data: bool = False
    # (resource name, resource version, [(vulnerability name, fix version, severity)])
    resources: list[tuple[str, str, list[tuple[str, str, str]]]] = field(default_factory=list)
    malware: list[tuple[str, str, str]] = field(default_factory=list)  # malware, hash, path
    sensitive: list[tuple[str, str, str, str]] = field(default_factory=list)  # filename, path, type, hash

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Scan:
        assurance = _obj(event, "image_assurance_results")
        summary = _obj(event, "vulnerability_summary")
        options = _obj(event, "scan_options")
        resources = []
        for i, r in enumerate(_objs(event, "resources")):
            where = f"resources[{i}]."
            details = _obj(r, "resource", where)
            vulns = [
                (_str(v, "name", f"{where}vulnerabilities[{j}]."), _str(v, "fix_version", f"{where}vulnerabilities[{j}]."),
                 _str(v, "aqua_severity", f"{where}vulnerabilities[{j}]."))
                for j, v in enumerate(_objs(r, "vulnerabilities", where))
            ]
            resources.append((_str(details, "name", f"{where}resource."), _str(details, "version", f"{where}resource."), vulns))
        checks = [
            (_str(c, "control", f"image_assurance_results.checks_performed[{i}]."),
             _str(c, "policy_name", f"image_assurance_results.checks_performed[{i}]."),
             _bool(c, "failed", f"image_assurance_results.checks_performed[{i}]."))
            for i, c in enumerate(_objs(assurance, "checks_performed", "image_assurance_results."))
        ]
        return cls(
            image=_str(event, "image"),
            registry=_str(event, "registry"),
            disallowed=_bool(assurance, "disallowed", "image_assurance_results."),
            checks=checks,
            summary={k: _int(summary, k, "vulnerability_summary.") for k in (*SEVERITIES, "malware", "sensitive")},
            scan_malware=_bool(options, "scan_malware", "scan_options."),
            scan_sensitive_data=_bool(options, "scan_sensitive_data", "scan_options."),
            resources=resources,
            malware=[(_str(m, "malware", f"malware[{i}]."), _str(m, "hash", f"malware[{i}]."), _str(m, "path", f"malware[{i}]."))
                     for i, m in enumerate(_objs(event, "malware"))],
            sensitive=[(_str(s, "filename", f"sensitive_data[{i}]."), _str(s, "path", f"sensitive_data[{i}]."),
                        _str(s, "type", f"sensitive_data[{i}]."), _str(s, "hash", f"sensitive_data[{i}]."))
                       for i, s in enumerate(_objs(event, "sensitive_data"))],
        )


# --- the three dialects ------------------------------------------------------------------------------

class Layout(Protocol):
    def p(self, text: str) -> str: ...
    def h1(self, text: str) -> str: ...
    def h2(self, text: str) -> str: ...
    def h3(self, text: str) -> str: ...
    def colour(self, text: str, colour: str) -> str: ...
    def table(self, rows: list[list[str]]) -> str: ...
    def link(self, url: str, title: str) -> str: ...
    def text(self, value: str) -> str: ...


class HtmlLayout:
    def text(self, value: str) -> str:
        return html.escape(value, quote=False)

    def p(self, text: str) -> str:
        return f"<p>{text}</p>\n"

    def h1(self, text: str) -> str:
        return f"<h1>{text}</h1>\n"

    def h2(self, text: str) -> str:
        return f"<h2>{text}</h2>\n"

    def h3(self, text: str) -> str:
        return f"<h3>{text}</h3>\n"

    def colour(self, text: str, colour: str) -> str:
        return f"<span style='color:{colour}'>{text}</span>"

    def table(self, rows: list[list[str]]) -> str:
        lines = ["<TABLE border='1' style='width: 100%; border-collapse: collapse;'>"]
        for i, row in enumerate(rows):
            tag = "TH" if i == 0 else "TD"
            lines += ["<TR>", "".join(f"<{tag} style='padding: 5px;'>{cell}</{tag}>" for cell in row), "</TR>"]
        lines.append("</TABLE>\n")
        return "\n".join(lines)

    def link(self, url: str, title: str) -> str:
        return f"<a href='{html.escape(url)}'>{title}</a>"


class JiraLayout:
    def text(self, value: str) -> str:
        return value

    def p(self, text: str) -> str:
        return f"{text}\n"

    def h1(self, text: str) -> str:
        return f"h1. {text}\n"

    def h2(self, text: str) -> str:
        return f"h2. {text}\n"

    def h3(self, text: str) -> str:
        return f"h3. {text}\n"

    def colour(self, text: str, colour: str) -> str:
        return f"{{color:{colour}}}{text}{{color}}"

    def table(self, rows: list[list[str]]) -> str:
        if not rows:
            return ""
        out = [f"||{'||'.join(rows[0])}||\n"] + [f"|{'|'.join(row)}|\n" for row in rows[1:]]
        return "".join(out) + "\n"

    def link(self, url: str, title: str) -> str:
        return f"[{title}|{url}]"


def _mrkdwn(text: str) -> str:
    # field order of Postee's Go structs (type, then text), Go's escaping of <, > and &
    return '{"type":"mrkdwn","text":' + gojson.marshal(text) + "}"


def _fields_section(fields: list[str]) -> str:
    return '{"type":"section","fields":[' + ",".join(_mrkdwn(f) for f in fields) + "]},"


class SlackLayout:
    def text(self, value: str) -> str:
        return value

    def p(self, text: str) -> str:
        return '{"type":"section","text":' + _mrkdwn(text) + "},"

    def h1(self, text: str) -> str:
        return self.p(f"*{text}*")

    h2 = h1
    h3 = h1

    def colour(self, text: str, colour: str) -> str:
        return f"*{text}*"

    def table(self, rows: list[list[str]]) -> str:
        if not rows:
            return ""
        if len(rows) == 2 and len(rows[0]) == 5:  # the severity summary: header/value pairs
            return _fields_section([f for pair in zip((f"*{h}*" for h in rows[0]), rows[1]) for f in pair])
        numbered = rows[0][0] == "#"
        sections = []
        for start in range(0, len(rows), 5):  # five rows (ten fields) per section
            fields = []
            for line, row in enumerate(rows[start:start + 5], start):
                bold = "*" if line == 0 else ""
                cells = [f"{bold}{c}{bold}" for c in row]
                if numbered:  # "# Name" in the first field, the rest in the second
                    first, rest = " ".join(cells[:2]), cells[2:]
                else:
                    first, rest = (cells[0] if cells else ""), cells[1:]
                fields += [first, " / ".join(rest)]
            sections.append(_fields_section(fields))
        return "".join(sections)

    def link(self, url: str, title: str) -> str:
        return f"<{url}|{title}>"


LAYOUTS: dict[str, Callable[[], Layout]] = {"html": HtmlLayout, "slack": SlackLayout, "jira": JiraLayout}


def describe(layout: Layout, scan: Scan, link: str) -> str:
    """Postee's scan report layout (GenTicketDescription)."""
    t = layout.text
    out = [layout.p(t(f"Image name: {scan.image}")), layout.p(t(f"Registry: {scan.registry}")),
           layout.p("Image is non-compliant" if scan.disallowed else "Image is compliant")]
    if scan.scan_malware:
        out.append(layout.p(f"Malware found: {'Yes' if scan.summary['malware'] > 0 else 'No'}"))
    if scan.scan_sensitive_data:
        out.append(layout.p(f"Sensitive data found: {'Yes' if scan.summary['sensitive'] > 0 else 'No'}"))
    out.append(layout.table([[s.upper() for s in SEVERITIES],
                             [layout.colour(str(scan.summary[s]), c) for s, c in zip(SEVERITIES, COLOURS)]]))
    if scan.checks:
        out.append(layout.h2("Assurance controls"))
        rows = [["#", "Control", "Policy Name", "Status"]]
        rows += [[str(i), t(control), t(policy), "FAIL" if failed else "PASS"]
                 for i, (control, policy, failed) in enumerate(scan.checks, 1)]
        out.append(layout.table(rows))
    if scan.resources:
        out.append(layout.h2("Found vulnerabilities"))
        out.append(_vulnerabilities(layout, scan))
    if scan.malware:
        out += ["\n", layout.h2("Malware"),
                layout.table([["#", "Malware", "Hash", "Path"]] + [[str(i), *map(t, m)] for i, m in enumerate(scan.malware)])]
    if scan.sensitive:
        out += ["\n", layout.h2("Sensitive Data"),
                layout.table([["File name", "Path", "Type", "Hash"]] + [list(map(t, s)) for s in scan.sensitive])]
    if link:
        out.append(layout.p("See more: " + layout.link(link, t(link))))
    return "".join(out)


def _vulnerabilities(layout: Layout, scan: Scan) -> str:
    by_severity: dict[str, list[list[str]]] = {}
    for name, version, vulns in scan.resources:
        for vuln_id, fix, severity in vulns:
            fix_version = _CONTROL.sub("", fix) if fix else NONE  # cleared after the "none" check, as Postee
            row = [vuln_id or NONE, name or NONE, version or NONE, fix_version]
            by_severity.setdefault(severity.lower(), []).append([layout.text(c) for c in row])
    out = []
    for severity in SEVERITIES:
        if severity in by_severity:
            out.append(layout.h3(f"{severity.title()} severity vulnerabilities"))
            out.append(layout.table([["Vulnerability ID", "Resource name", "Installed version", "Fix version"],
                                     *by_severity[severity]]))
    return "".join(out)


class LegacyTemplate:
    """A template backed by a legacy renderer; same interface as PackageTemplate."""

    def __init__(self, name: str, kind: str, aqua_server_url: str) -> None:
        if kind not in LAYOUTS:
            raise TemplateError(f"legacy-scan-renderer must be html, slack or jira, not {kind!r}", name)
        self.name = name
        self.kind = kind
        self.aqua_server_url = aqua_server_url  # <aqua-server>/#/images/, or "" without aqua-server
        self.layout = LAYOUTS[kind]()

    def render(self, event_json: str) -> Content:
        try:
            event = orjson.loads(event_json)
        except orjson.JSONDecodeError as exc:
            raise TemplateError(f"event is not JSON: {exc}", self.name) from None
        if not isinstance(event, dict):
            raise TemplateError("event is not a JSON object", self.name)
        try:
            scan = Scan.from_event(event)
        except _BadProperty as exc:
            raise TemplateError(f"not an Aqua scan event: {exc}", self.name) from None
        url = ""
        if self.aqua_server_url:
            url = f"{self.aqua_server_url}{scan.registry}/{urllib.parse.quote_plus(scan.image, safe='')}"
        return Content(title=f"{scan.image} vulnerability scan report", description=describe(self.layout, scan, url), url=url)

    def supports_aggregation(self) -> bool:
        return True

    def aggregate(self, items: list[Content]) -> Content:
        description = "".join(self.layout.h1(self.layout.text(c.title)) + c.description for c in items)
        urls = ""
        for c in items:  # Go's buffer: a newline only once something was written
            urls += ("\n" if urls else "") + c.url
        owners = ";".join(c.owners for c in items if c.owners)
        return Content(title="Vulnerability scan report", description=description, url=urls, owners=owners)
