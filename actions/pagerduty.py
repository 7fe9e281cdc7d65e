"""pagerduty: trigger an incident with the Events API v2 (``POST <url>/v2/enqueue``).

The event: ``routing_key`` (``pagerduty-routing-key``), ``event_action: trigger``, a
``dedup_key`` and ``payload`` {summary: title (cut to 1024), source (config ``source``, default
``herald``), severity, timestamp (when Herald received the event, RFC 3339), custom_details:
the description as a JSON object when it is one, else ``{"description": text}``}. Each line
of the content ``url`` that is a link becomes a ``links`` entry.

Severity, first match wins (documented in the actions table):

1. config ``severity`` if set (critical, error, warning, info);
2. the content's ``severity`` (template ``result_severity``): 1 critical, 2 error, 3 warning,
   any other number info; words critical / high / medium / low map to critical / error /
   warning / info;
3. the event: Aqua ``vulnerability_summary`` counts, Trivy Operator ``report.summary``
   counts, Trivy ``Results[].Vulnerabilities[].Severity``, Tracee
   ``SigMetadata.Properties.Severity`` (4 critical, 3 error, 2 warning, else info), Falco
   ``priority``: the most severe finding decides; a scan with no findings is info;
4. otherwise ``critical`` (Postee's fixed value).

Where Herald differs from Postee, on purpose: a ``dedup_key`` derived from the event id and
the route (not the action), so a redelivered message, or the same event through two
PagerDuty actions of one route, updates one incident instead of opening another; severity
is derived as above (Postee always sent critical); ``pagerduty-auth-token`` is optional (Events
v2 does not use it); any 2xx is success and requests time out (default 30 s).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from actions._common import Timeout, check_http_url, require_secret, stable_key, truncate
from actions._config import SecretFile
from actions._http import HttpRequest
from actions.base import ActionConfig, HttpClientAction
from app.config.model import PStr, Secret, SecretStr
from app.content import Content
from app.messages import ActionMessage

SEVERITIES = ("critical", "error", "warning", "info")
DEFAULT_URL = "https://events.pagerduty.com"
_WORDS = {"critical": "critical", "high": "error", "error": "error", "medium": "warning", "warning": "warning",
          "low": "info", "negligible": "info", "info": "info", "unknown": "info"}
_FALCO = {"emergency": "critical", "alert": "critical", "critical": "critical", "error": "error",
          "warning": "warning", "notice": "info", "informational": "info", "debug": "info"}


class PagerDutyConfig(ActionConfig):
    pagerduty_routing_key: SecretStr = Field(
        default_factory=lambda: Secret(""), description="Events API v2 integration (routing) key.",
        json_schema_extra={"herald_required": "yes, or pagerduty-routing-key-file"},
    )
    pagerduty_routing_key_file: SecretFile = Field(
        None, description="File holding the routing key (instead of pagerduty-routing-key)."
    )
    pagerduty_auth_token: SecretStr = Field(
        default_factory=lambda: Secret(""),
        description="REST API token; accepted for Postee compatibility, not used by Events v2.",
    )
    url: PStr = Field(DEFAULT_URL, description="Events API base URL (default https://events.pagerduty.com).")
    source: PStr = Field("herald", description="payload.source: where the problem is (default herald).")
    severity: PStr = Field("", description="Fixed severity (critical, error, warning, info); empty derives it.")
    timeout: Timeout = Field(30.0, description="Request timeout (duration).")

    @model_validator(mode="after")
    def _secrets(self) -> PagerDutyConfig:
        require_secret(self, "pagerduty-routing-key")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value or DEFAULT_URL)

    @field_validator("severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        value = value.strip().lower()
        if value and value not in SEVERITIES:
            raise ValueError(f"must be one of {', '.join(SEVERITIES)}, got {value!r}")
        return value


def _worst(found: list[str]) -> str | None:
    for level in SEVERITIES:
        if level in found:
            return level
    return None


def _from_counts(counts: dict[str, Any], names: tuple[str, str, str]) -> str:
    def n(key: str) -> float:
        value = counts.get(key)
        return value if isinstance(value, (int, float)) else 0

    critical, high, medium = (n(k) for k in names)
    return "critical" if critical else "error" if high else "warning" if medium else "info"


def _content_severity(value: str) -> str | None:
    text = value.strip().lower()
    if not text:
        return None
    if text.lstrip("-").isdigit():
        return {1: "critical", 2: "error", 3: "warning"}.get(int(text), "info")
    return _WORDS.get(text)


def event_severity(event: dict[str, Any] | None) -> str | None:
    """Severity from the well-known scanner/runtime event shapes, or None if unknown."""
    if not isinstance(event, dict):
        return None
    if isinstance(event.get("vulnerability_summary"), dict):  # Aqua scan
        return _from_counts(event["vulnerability_summary"], ("critical", "high", "medium"))
    report = event.get("report")
    if isinstance(report, dict) and isinstance(report.get("summary"), dict):  # Trivy Operator
        return _from_counts(report["summary"], ("criticalCount", "highCount", "mediumCount"))
    if isinstance(event.get("Results"), list):  # Trivy
        found = [_WORDS.get(str(v.get("Severity", "")).lower(), "info")
                 for r in event["Results"] if isinstance(r, dict)
                 for v in (r.get("Vulnerabilities") or []) if isinstance(v, dict)]
        return _worst(found) or "info"
    sig = event.get("SigMetadata")
    if isinstance(sig, dict):  # Tracee
        level = (sig.get("Properties") or {}).get("Severity")
        if isinstance(level, int) and not isinstance(level, bool):
            return "critical" if level >= 4 else "error" if level == 3 else "warning" if level == 2 else "info"
    priority = event.get("priority")
    if isinstance(priority, str) and priority.lower() in _FALCO:  # Falco
        return _FALCO[priority.lower()]
    return None


def severity_for(fixed: str, content: Content, event: dict[str, Any] | None) -> str:
    return fixed or _content_severity(content.severity) or event_severity(event) or "critical"


def _details(description: str) -> dict[str, Any]:
    if description.lstrip().startswith("{"):
        try:
            doc = json.loads(description)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            return doc
    return {"description": description}


def dedup_key(message: ActionMessage) -> str:
    """Stable per event and route: every delivery of the event through this route is one incident."""
    return stable_key(f"herald:{message.event_id}:{message.route}", 255)


class PagerDutyAction(HttpClientAction[PagerDutyConfig, HttpRequest]):
    type_name = "pagerduty"
    config_model = PagerDutyConfig


    def event(self, message: ActionMessage) -> dict[str, Any]:
        """The Events v2 document (pure)."""
        content = message.content
        when = datetime.fromtimestamp(message.received_at or message.routed_at, UTC)
        payload: dict[str, Any] = {
            "summary": truncate(content.title or "Herald alert", 1024),
            "source": self.config.source or "herald",
            "severity": severity_for(self.config.severity, content, message.event),
            "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "custom_details": _details(content.description),
        }
        doc: dict[str, Any] = {
            "routing_key": self.config.pagerduty_routing_key.reveal(),
            "event_action": "trigger",
            "dedup_key": dedup_key(message),
            "payload": payload,
        }
        links = [{"href": u.strip()} for u in content.url.split("\n") if u.strip().startswith(("http://", "https://"))]
        if links:
            doc["links"] = links
        return doc

    def build_payload(self, message: ActionMessage) -> HttpRequest:
        return HttpRequest(
            method="POST",
            url=self.config.url.rstrip("/") + "/v2/enqueue",
            headers=[("Content-Type", "application/json")],
            body=json.dumps(self.event(message), ensure_ascii=False).encode(),
            timeout=self.config.timeout,
        )

    async def send(self, request: HttpRequest) -> None:
        await self.http.send(f"pagerduty {self.name}", request)
