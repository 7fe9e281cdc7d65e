"""servicenow (Postee type ``serviceNow``): insert a record into a ServiceNow table.

``POST https://<instance>.service-now.com/api/now/table/<board>`` with Basic auth and the fields
Postee sends (its ``ServiceNowData``): the title, the description wrapped in ``[code]``, and the
ServiceNow extras a template may set (``result_date``, ``result_severity``, ...).

Differences from Postee, on purpose:
- ``user`` and ``password`` are required whatever the spelling of the type (Postee only checked
  them for the lowercase ``servicenow`` spelling, so the documented ``serviceNow`` skipped it);
- ``opened_at`` is formatted in UTC (Postee used the server's local time zone, so the same event
  produced different tickets depending on where Postee ran);
- any 2xx is success (Postee wanted exactly 201), and a request timeout applies (Postee had none);
- ``url`` may replace ``instance`` for on-premises or proxied instances (and for tests).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import Field, field_validator, model_validator

from actions._common import Timeout, check_http_url
from actions._config import EnvPStr, SecretFile, basic_auth_header, key_error, merge_secret_file
from actions._http import HttpRequest
from actions.base import ActionConfig, HttpClientAction
from app.config.model import PStr, Secret, SecretStr
from app.messages import ActionMessage

DEFAULT_TABLE = "incident"
DEFAULT_IMPACT = 3
_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_TABLE = re.compile(r"^[A-Za-z0-9_]+$")


class ServiceNowConfig(ActionConfig):
    user: EnvPStr = Field(..., description="ServiceNow user name ($NAME reads an environment variable).")
    password: SecretStr = Field(
        Secret(""),
        description="User API key or password ($NAME reads an environment variable).",
        json_schema_extra={"herald_required": "yes, or password-file"},
    )
    password_file: SecretFile = Field(None, description="File holding the password (instead of password).")
    instance: PStr = Field(
        "",
        description="Instance name: the XXX of XXX.service-now.com.",
        json_schema_extra={"herald_required": "yes, unless url is set"},
    )
    url: PStr = Field(
        "",
        description="Base URL of the instance (e.g. https://sn.example.com); overrides instance.",
    )
    board: PStr = Field(DEFAULT_TABLE, description="Table to open tickets in.")
    timeout: Timeout = Field(30.0, description="Request timeout (Go duration or seconds).")

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        if value and not _INSTANCE.match(value):
            raise ValueError(
                f"must be the instance name only (the XXX of XXX.service-now.com), got {value!r}; "
                "use url for a full address"
            )
        return value

    @field_validator("board")
    @classmethod
    def _board(cls, value: str) -> str:
        value = value or DEFAULT_TABLE
        if not _TABLE.match(value):
            raise ValueError(f"must be a ServiceNow table name (letters, digits, _), got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value.rstrip("/")) if value else value

    @model_validator(mode="after")
    def _credentials(self) -> ServiceNowConfig:
        merge_secret_file(self, "password")
        if not self.user:
            raise key_error(self, "user", "is required (it is empty)")
        if not self.password:
            raise key_error(self, "password", "is required (give password or password-file)")
        if not self.url and not self.instance:
            raise key_error(self, "instance", "is required unless url is set")
        return self

    def table_url(self) -> str:
        base = self.url or f"https://{self.instance}.service-now.com"
        return f"{base}/api/now/table/{self.board}"


def opened_at(date: str) -> str:
    """Unix seconds -> ``2006-01-02 15:04:05`` in UTC; anything else -> "" (as Postee)."""
    try:
        seconds = int(date.strip())
    except ValueError:
        return ""
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return ""


def impact(severity: str) -> int:
    """Postee's ``strconv.Atoi(severity)``, defaulting to 3 when absent or not an integer."""
    text = severity.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return DEFAULT_IMPACT


def record(config: ServiceNowConfig, message: ActionMessage) -> dict[str, Any]:
    """The table record, keys in Postee's order."""
    content = message.content
    level = impact(content.severity)
    return {
        "short_description": content.title,
        "work_notes": f"[code]{content.description}[/code]",
        "opened_at": opened_at(content.date),
        "caller_id": config.user,
        "category": content.category,
        "subcategory": content.subcategory,
        "impact": level,
        "urgency": level,
        "state": 0,
        "description": content.summary,
        "assigned_to": content.assignedTo,
        "assignment_group": content.assignedGroup,
    }


class ServiceNowAction(HttpClientAction[ServiceNowConfig, HttpRequest]):
    type_name = "servicenow"
    config_model = ServiceNowConfig

    def __init__(self, config: ServiceNowConfig) -> None:
        super().__init__(config)
        self._auth = basic_auth_header(config.user, config.password)

    def build_payload(self, message: ActionMessage) -> HttpRequest:
        return HttpRequest(
            method="POST",
            url=self.config.table_url(),
            headers=[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
                ("Authorization", self._auth),
            ],
            body=orjson.dumps(record(self.config, message)),
            timeout=self.config.timeout,
        )

    async def send(self, request: HttpRequest) -> None:
        await self.http.send(f"servicenow {self.name}", request)
