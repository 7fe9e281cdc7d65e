"""webhook: POST the rendered description to a URL (Postee's wire format).

Differences from Postee, on purpose: any 2xx is success (Postee wanted exactly 200), and the
timeout is honoured for the whole request.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from actions._http import HttpRequest
from actions.base import ActionConfig, HttpClientAction
from app.config.model import PStr, parse_duration
from app.messages import ActionMessage


class WebhookConfig(ActionConfig):
    url: PStr = Field(..., description="Endpoint that receives a POST with the rendered content.")
    timeout: float = Field(120.0, description="Request timeout (Go duration or seconds; 0 means 120s).")

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float:
        seconds = parse_duration(value, "timeout") if value not in ("", None) else 0.0
        return seconds or 120.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value


class WebhookAction(HttpClientAction[WebhookConfig, HttpRequest]):
    type_name = "webhook"
    config_model = WebhookConfig


    def build_payload(self, message: ActionMessage) -> HttpRequest:
        return HttpRequest(
            method="POST",
            url=self.config.url,
            headers=[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", message.idempotency_key),
            ],
            body=message.content.description.encode(),
            timeout=self.config.timeout,
        )

    async def send(self, request: HttpRequest) -> None:
        await self.http.send(f"webhook {self.name}", request)
