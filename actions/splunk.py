"""splunk: send the rendered content to a Splunk HTTP Event Collector (HEC).

``POST <url>/services/collector`` with ``Authorization: Splunk <token>`` and the body
``{"sourcetype": "_json", "event": <event>}``. The event is the description parsed as JSON when
it is JSON, otherwise the description as a string.

``size-limit`` (bytes, default 10000, Splunk's default line truncation) caps the request body.
Past it, Postee's trimming order for Aqua image scans applies: drop ``resources``, then
``malware``, then ``sensitive_data``; an event that is still too large fails permanently.

Where Herald differs from Postee, on purpose:

- Any JSON document is sent as is (Postee decoded it into its Aqua-scan struct, so Trivy and
  other inputs lost every non-Aqua field); non-JSON text is sent as a string event rather
  than refused.
- ``tls-verify`` means what it says: true (the default) verifies the HEC certificate. Postee's
  was inverted (true skipped verification).
- A URL that already ends in ``/services/collector`` (or ``.../event``) is used as is; otherwise
  the path is appended with exactly one ``/``.
- Any 2xx is success; requests time out (default 30 s).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from actions._common import Timeout, check_http_url, require_secret
from actions._config import SecretFile
from actions._http import HttpRequest
from actions.base import ActionConfig, HttpClientAction
from app.config.model import PStr, Secret, SecretStr
from app.errors import PermanentActionError
from app.messages import ActionMessage

DEFAULT_SIZE_LIMIT = 10000
COLLECTOR_PATH = "/services/collector"
AQUA_TRIM_ORDER = ("resources", "malware", "sensitive_data")


class SplunkConfig(ActionConfig):
    url: PStr = Field(..., description="Splunk HTTP Event Collector base URL, e.g. https://splunk:8088.")
    token: SecretStr = Field(
        default_factory=lambda: Secret(""), description="HEC token ($NAME reads an environment variable).",
        json_schema_extra={"herald_required": "yes, or token-file"},
    )
    token_file: SecretFile = Field(None, description="File holding the token (instead of token).")
    size_limit: StrictInt = Field(
        DEFAULT_SIZE_LIMIT, ge=0, description="Largest request body in bytes (0 means 10000)."
    )
    tls_verify: StrictBool = Field(True, description="Verify the HEC server certificate.")
    timeout: Timeout = Field(30.0, description="Request timeout (duration).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)

    @model_validator(mode="after")
    def _secrets(self) -> SplunkConfig:
        require_secret(self, "token")
        return self

    @field_validator("size_limit")
    @classmethod
    def _size(cls, value: int) -> int:
        return value or DEFAULT_SIZE_LIMIT


def collector_url(base: str) -> str:
    trimmed = base.rstrip("/")
    if trimmed.endswith((COLLECTOR_PATH, COLLECTOR_PATH + "/event")):
        return trimmed
    return trimmed + COLLECTOR_PATH


def parse_event(description: str) -> Any:
    try:
        return json.loads(description)
    except ValueError:
        return description


def _body(event: Any) -> bytes:
    return json.dumps({"sourcetype": "_json", "event": event}, ensure_ascii=False, separators=(",", ":")).encode()


def fit_event(event: Any, limit: int) -> bytes:
    """The request body, trimmed Postee's way for Aqua scans until it fits ``limit`` bytes."""
    body = _body(event)
    if len(body) <= limit:
        return body
    dropped: list[str] = []
    if isinstance(event, dict):
        event = dict(event)
        for key in AQUA_TRIM_ORDER:
            if event.get(key):
                del event[key]
                dropped.append(key)
                body = _body(event)
                if len(body) <= limit:
                    return body
    what = f" for image {event['image']!r}" if isinstance(event, dict) and isinstance(event.get("image"), str) else ""
    after = f" after dropping {', '.join(dropped)}" if dropped else ""
    raise PermanentActionError(
        f"splunk: event{what} is {len(body)} bytes{after}, over size-limit {limit}"
    )


class SplunkAction(HttpClientAction[SplunkConfig, HttpRequest]):
    type_name = "splunk"
    config_model = SplunkConfig


    def build_payload(self, message: ActionMessage) -> HttpRequest:
        cfg = self.config
        return HttpRequest(
            method="POST",
            url=collector_url(cfg.url),
            headers=[
                ("Authorization", f"Splunk {cfg.token.reveal()}"),
                ("Content-Type", "application/json; charset=utf-8"),
            ],
            body=fit_event(parse_event(message.content.description), cfg.size_limit),
            timeout=cfg.timeout,
            verify_tls=cfg.tls_verify,
        )

    async def send(self, request: HttpRequest) -> None:
        await self.http.send(f"splunk {self.name}", request)
