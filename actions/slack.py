"""slack: post the rendered blocks to a Slack incoming webhook.

The description must be Slack blocks JSON, as Postee's Slack templates produce: one trailing
``,`` is trimmed, ``&``, ``<`` and ``>`` in the raw text are HTML-escaped (Postee's rule), and
the text is wrapped in ``[...]`` unless it already is a list. Anything else fails with
Postee's "wrong template selected" error. A title section (mrkdwn ``*<title>*``) comes first.

Where Herald differs from Postee, on purpose:

- Every block property is kept (Postee kept only ``type``, ``text`` and ``fields``, so context
  elements, accessories and images were lost).
- Slack accepts at most 50 blocks per message. Postee replaced anything with 49+ blocks by a
  short "too long" notice; Herald sends everything, split into several messages of at most 50
  blocks (title plus 49), each title marked ``(1/3)``, ``(2/3)``... Parts are posted in order;
  if one fails, the runner's retry resumes at that part instead of reposting earlier ones.
- Section text over Slack's 3000 characters (fields: 2000) is truncated with ``…`` instead of
  the whole message being refused; the title is escaped for mrkdwn.
- A request timeout (default 30 s); HTTP 429 honours ``Retry-After``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from actions._common import PendingRequests, Timeout, deliver_resumable, require_secret_url, truncate
from actions._config import SecretFile
from actions._http import HttpRequest
from actions.base import ActionConfig, HttpClientAction
from app.config.model import Secret, SecretStr
from app.errors import PermanentActionError
from app.messages import ActionMessage

MAX_BLOCKS = 50  # Slack's limit per message, the title section included
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000


class SlackConfig(ActionConfig):
    url: SecretStr = Field(
        default_factory=lambda: Secret(""),
        json_schema_extra={"herald_required": "yes, or url-file"},
        description="Slack incoming webhook URL (a credential: it is never logged).",
    )
    url_file: SecretFile = Field(None, description="File holding the webhook URL (instead of url).")
    timeout: Timeout = Field(30.0, description="Request timeout (duration).")


    @model_validator(mode="after")
    def _secrets(self) -> SlackConfig:
        require_secret_url(self, "url")
        return self


@dataclass(slots=True)
class SlackRequest:
    parts: list[HttpRequest]
    sent: int = 0  # parts the webhook already accepted


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def parse_blocks(description: str) -> list[dict[str, Any]]:
    """Postee's rules for turning a description into a list of blocks."""
    body = description.strip()
    body = body.removesuffix(",")
    body = _escape(body)
    if not body.startswith("["):
        body = f"[{body}]"
    try:
        blocks: Any = json.loads(body)
    except ValueError as exc:
        raise PermanentActionError(
            f"wrong template selected, choose a correct template (description is not Slack blocks JSON: {exc})"
        ) from None
    if not isinstance(blocks, list):
        raise PermanentActionError("wrong template selected, choose a correct template (not a list of blocks)")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise PermanentActionError(
                f"wrong template selected, choose a correct template (block {i} is not an object with a type)"
            )
    return [b for b in blocks if isinstance(b, dict)]


def _fit(block: dict[str, Any]) -> dict[str, Any]:
    """Truncate section text/fields to Slack's limits (a copy; other properties untouched)."""
    if block.get("type") != "section":
        return block
    out = dict(block)
    text = out.get("text")
    if isinstance(text, dict) and isinstance(text.get("text"), str):
        out["text"] = {**text, "text": truncate(text["text"], SECTION_TEXT_LIMIT)}
    fields = out.get("fields")
    if isinstance(fields, list):
        out["fields"] = [
            {**f, "text": truncate(f["text"], FIELD_TEXT_LIMIT)}
            if isinstance(f, dict) and isinstance(f.get("text"), str) else f
            for f in fields
        ]
    return out


def title_block(title: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(title, SECTION_TEXT_LIMIT)}}


class SlackAction(HttpClientAction[SlackConfig, SlackRequest]):
    type_name = "slack"
    config_model = SlackConfig

    def __init__(self, config: SlackConfig) -> None:
        super().__init__(config)
        self._pending: PendingRequests[SlackRequest] = PendingRequests()

    def build_payload(self, message: ActionMessage) -> SlackRequest:
        blocks = [_fit(b) for b in parse_blocks(message.content.description)]
        title = f"*{_escape(message.content.title)}*"
        per_part = MAX_BLOCKS - 1
        if len(blocks) <= per_part:
            chunks = [blocks]
        else:
            chunks = [blocks[i:i + per_part] for i in range(0, len(blocks), per_part)]
        parts = []
        for n, chunk in enumerate(chunks, 1):
            heading = title if len(chunks) == 1 else f"{title} ({n}/{len(chunks)})"
            payload = {"blocks": [title_block(heading), *chunk]}
            parts.append(HttpRequest(
                method="POST",
                url=self.config.url.reveal(),
                headers=[("Content-Type", "application/json; charset=utf-8")],
                body=json.dumps(payload, ensure_ascii=False).encode(),
                timeout=self.config.timeout,
            ))
        return SlackRequest(parts)

    async def deliver(self, message: ActionMessage) -> None:
        await deliver_resumable(self._pending, message, self.build_payload, self.send)

    async def send(self, request: SlackRequest) -> None:
        total = len(request.parts)
        while request.sent < total:
            peer = f"slack {self.name}" + (f" (part {request.sent + 1}/{total})" if total > 1 else "")
            await self.http.send(peer, request.parts[request.sent])
            request.sent += 1
