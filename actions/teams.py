"""teams: post the rendered content to Microsoft Teams.

Two kinds of webhook exist, and the URL says which (``teams-format: auto``):

- legacy Office 365 connector (``*.webhook.office.com/webhookb2/...``,
  ``outlook.office.com/webhook...``): Postee's ``{"text": "<h2>TITLE</h2>\\n" + desc}``;
- Microsoft Workflows / Power Automate (``*.logic.azure.com``, ``*.powerplatform.com``, or a
  ``/workflows/`` path): a message with one Adaptive Card 1.4 attachment holding a bold
  TextBlock title and the description as a TextBlock (HTML turned into the Markdown subset
  cards render). A description that is itself an Adaptive Card JSON object is sent as the card.

Any other URL is treated as a connector (Postee's format); ``teams-format: connector|workflow``
forces one. A description over 18000 characters is replaced by Postee's short "too long"
message with links.

Where Herald differs from Postee, on purpose: the payload is built with a JSON encoder (Postee
wrote the title raw, giving invalid JSON for titles with quotes), the title is HTML-escaped in
connector messages, any 2xx is success (Workflows answer 202; Postee required a ``1`` body),
and requests time out (default 30 s).
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from actions._common import Timeout, aqua_server, html_to_text, require_secret_url, short_html_message
from actions._config import SecretFile
from actions._http import HttpRequest
from actions.base import ActionConfig, HttpClientAction
from app.config.model import PStr, Secret, SecretStr
from app.messages import ActionMessage

SIZE_LIMIT = 18000  # Postee's limit; Teams refuses messages over about 28 KB
FORMATS = ("auto", "connector", "workflow")
DEFAULT_TITLE = "Herald notification"


class TeamsConfig(ActionConfig):
    url: SecretStr = Field(
        default_factory=lambda: Secret(""),
        json_schema_extra={"herald_required": "yes, or url-file"},
        description="Teams incoming webhook or Workflows URL (a credential: never logged).",
    )
    url_file: SecretFile = Field(None, description="File holding the webhook URL (instead of url).")
    teams_format: PStr = Field(
        "auto", description="Payload kind: auto (from the URL), connector (O365 MessageCard text) or workflow "
        "(Adaptive Card)."
    )
    timeout: Timeout = Field(30.0, description="Request timeout (duration).")


    @model_validator(mode="after")
    def _secrets(self) -> TeamsConfig:
        require_secret_url(self, "url")
        return self

    @field_validator("teams_format")
    @classmethod
    def _format(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in FORMATS:
            raise ValueError(f"must be one of {', '.join(FORMATS)}, got {value!r}")
        return value


def detect_format(url: str) -> str:
    """``workflow`` for Workflows/Power Automate URLs, ``connector`` otherwise."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host.endswith((".logic.azure.com", ".powerplatform.com")) or "/workflows/" in parts.path:
        return "workflow"
    return "connector"


def connector_payload(title: str, body: str) -> dict[str, Any]:
    return {"text": f"<h2>{html.escape(title, quote=False)}</h2>\n{body}"}


def _card_from_description(description: str) -> dict[str, Any] | None:
    if not description.lstrip().startswith("{"):
        return None
    try:
        doc = json.loads(description)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc.get("type") == "AdaptiveCard" else None


def workflow_payload(title: str, body: str, card: dict[str, Any] | None = None) -> dict[str, Any]:
    if card is None:
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "msteams": {"width": "Full"},
            "body": [
                {"type": "TextBlock", "text": title or DEFAULT_TITLE, "weight": "Bolder", "size": "Medium",
                 "wrap": True},
                {"type": "TextBlock", "text": html_to_text(body, markdown=True) or " ", "wrap": True},
            ],
        }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


class TeamsAction(HttpClientAction[TeamsConfig, HttpRequest]):
    type_name = "teams"
    config_model = TeamsConfig

    def __init__(self, config: TeamsConfig) -> None:
        super().__init__(config)
        url = config.url.reveal()
        self.format = detect_format(url) if config.teams_format == "auto" else config.teams_format

    def build_payload(self, message: ActionMessage) -> HttpRequest:
        content = message.content
        description = content.description
        if len(description) > SIZE_LIMIT:
            description = short_html_message(aqua_server(message), content.url)
        if self.format == "workflow":
            payload = workflow_payload(content.title, description, _card_from_description(description))
        else:
            payload = connector_payload(content.title, description)
        return HttpRequest(
            method="POST",
            url=self.config.url.reveal(),
            headers=[("Content-Type", "application/json; charset=utf-8")],
            body=json.dumps(payload, ensure_ascii=False).encode(),
            timeout=self.config.timeout,
        )

    async def send(self, request: HttpRequest) -> None:
        await self.http.send(f"teams {self.name}", request)
