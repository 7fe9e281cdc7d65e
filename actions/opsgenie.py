"""opsgenie: create an alert with the Alert API (``POST /v2/alerts``, ``Authorization: GenieKey``).

``message`` is the title. When the description is a JSON object (``postee.vuls.opsgenie``
output) its ``description``, ``alias``, ``entity``, ``priority``, ``tags`` and ``details``
are used, falling back to the config; otherwise the description text is the alert
description. ``assignee`` become responders and ``recipients`` become visibleTo (plain names
are users; ``team:``, ``schedule:``, ``escalation:`` and ``user:`` prefixes pick the type).

Where Herald differs from Postee, on purpose:

- ``tags`` in the description may be a comma-separated string *or* a JSON array (Postee ignored
  arrays); config ``tags``, ``assignee`` and ``recipients`` accept a list or a comma string.
- ``alias`` defaults to the message's idempotency key, so OpsGenie itself deduplicates a
  redelivered message instead of opening a second alert.
- ``priority`` is validated (P1-P5, default P3); a bad value in the description is a
  permanent error naming it.
- Values are cut to OpsGenie's field limits (message 130, description 15000, alias and entity
  512, user 100, 20 tags of 50 characters) instead of being refused.
- API host: ``url`` overrides; else ``api-region`` ``us`` (api.opsgenie.com) or ``eu``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from actions._common import Timeout, check_http_url, require_secret, stable_key, truncate
from actions._config import SecretFile
from actions._http import HttpRequest
from actions.base import ActionConfig, HttpClientAction
from app.config.model import PStr, Secret, SecretStr
from app.errors import PermanentActionError
from app.messages import ActionMessage

API_HOSTS = {"us": "https://api.opsgenie.com", "eu": "https://api.eu.opsgenie.com"}
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
RESPONDER_TYPES = ("user", "team", "schedule", "escalation")


def _csv_or_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


CsvList = Annotated[list[PStr], BeforeValidator(_csv_or_list)]


def _priority(value: str, where: str) -> str:
    upper = value.strip().upper()
    if upper not in PRIORITIES:
        raise ValueError(f"{where}must be one of P1, P2, P3, P4, P5, got {value!r}")
    return upper


class OpsGenieConfig(ActionConfig):
    token: SecretStr = Field(
        default_factory=lambda: Secret(""),
        description="API key of an OpsGenie API integration ($NAME reads the environment).",
        json_schema_extra={"herald_required": "yes, or token-file"},
    )
    token_file: SecretFile = Field(None, description="File holding the API key (instead of token).")
    user: PStr = Field("", description="Display name of the request owner.")
    assignee: CsvList = Field(
        default_factory=list, description="Responders (users; 'team:', 'schedule:', 'escalation:' prefixes)."
    )
    recipients: CsvList = Field(default_factory=list, description="Users/teams the alert becomes visible to.")
    tags: CsvList = Field(default_factory=list, description="Alert tags (list or comma-separated).")
    priority: PStr = Field("P3", description="Alert priority P1-P5 (default P3).")
    alias: PStr = Field("", description="Alert alias (dedup key). Default: the message's idempotency key.")
    entity: PStr = Field("", description="Entity the alert is about.")
    url: PStr = Field("", description="API base URL; overrides api-region (e.g. a proxy).")
    api_region: PStr = Field("us", description="us (api.opsgenie.com) or eu (api.eu.opsgenie.com).")
    timeout: Timeout = Field(30.0, description="Request timeout (duration).")

    @model_validator(mode="after")
    def _secrets(self) -> OpsGenieConfig:
        require_secret(self, "token")
        return self

    @field_validator("priority")
    @classmethod
    def _prio(cls, value: str) -> str:
        return _priority(value or "P3", "")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value) if value else value

    @field_validator("api_region")
    @classmethod
    def _region(cls, value: str) -> str:
        value = value.strip().lower() or "us"
        if value not in API_HOSTS:
            raise ValueError(f"must be us or eu, got {value!r}")
        return value


def responders(names: list[str]) -> list[dict[str, str]]:
    out = []
    for name in names:
        kind, sep, rest = name.partition(":")
        if sep and kind.strip().lower() in RESPONDER_TYPES and rest.strip():
            kind, name = kind.strip().lower(), rest.strip()
        else:
            kind = "user"
        out.append({"type": "user", "username": name} if kind == "user" else {"type": kind, "name": name})
    return out


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list):
        return [str(t).strip() for t in value if str(t).strip()]
    return []


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def alerts_url(cfg: OpsGenieConfig) -> str:
    base = (cfg.url or API_HOSTS[cfg.api_region]).rstrip("/")
    return base if base.endswith("/v2/alerts") else base + "/v2/alerts"


class OpsGenieAction(HttpClientAction[OpsGenieConfig, HttpRequest]):
    type_name = "opsgenie"
    config_model = OpsGenieConfig


    def alert(self, message: ActionMessage) -> dict[str, Any]:
        """The alert document (pure)."""
        cfg = self.config
        content = message.content
        if not content.title.strip():
            raise PermanentActionError(f"opsgenie {self.name}: the alert message (the content title) is empty")
        doc: dict[str, Any] = {}
        if content.description.lstrip().startswith("{"):
            try:
                parsed = json.loads(content.description)
            except ValueError:
                parsed = None
            doc = parsed if isinstance(parsed, dict) else {}
        description = _text(doc.get("description")) if doc else content.description
        priority = cfg.priority
        if doc.get("priority"):
            try:
                priority = _priority(_text(doc["priority"]), "priority in the description ")
            except ValueError as exc:
                raise PermanentActionError(f"opsgenie {self.name}: {exc}") from None
        tags: list[str] = []
        for tag in [*cfg.tags, *_tags(doc.get("tags"))]:
            tag = truncate(tag, 50)
            if tag not in tags:
                tags.append(tag)
        alias = _text(doc.get("alias")) or cfg.alias or message.idempotency_key
        alert: dict[str, Any] = {
            "message": truncate(content.title, 130),
            "alias": stable_key(alias, 512),
            "description": truncate(description, 15000),
            "responders": responders(cfg.assignee),
            "visibleTo": responders(cfg.recipients),
            "tags": tags[:20],
            "details": {str(k): _text(v) for k, v in doc["details"].items()}
            if isinstance(doc.get("details"), dict) else {},
            "entity": truncate(_text(doc.get("entity")) or cfg.entity, 512),
            "priority": priority,
            "user": truncate(cfg.user, 100),
        }
        return {k: v for k, v in alert.items() if v}  # OpsGenie treats absent and empty alike

    def build_payload(self, message: ActionMessage) -> HttpRequest:
        return HttpRequest(
            method="POST",
            url=alerts_url(self.config),
            headers=[
                ("Authorization", f"GenieKey {self.config.token.reveal()}"),
                ("Content-Type", "application/json; charset=utf-8"),
            ],
            body=json.dumps(self.alert(message), ensure_ascii=False).encode(),
            timeout=self.config.timeout,
        )

    async def send(self, request: HttpRequest) -> None:
        await self.http.send(f"opsgenie {self.name}", request)
