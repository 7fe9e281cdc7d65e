"""http: a configurable HTTP request per event (Postee's http action).

As Postee: ``method`` to ``url``; the header ``Postee-Event: base64(description)`` always, plus
every configured header (each may have several values); the body is ``body-file`` (read at
send time, sent as is) or ``body-content`` with ``event.input`` placeholders resolved, or none;
any 2xx is success.

Beyond Postee: placeholders anywhere in ``body-content`` (several per line, mid-line; see
``actions/_placeholders.py``), ``event.raw.<path>`` against the original event, and an
``Idempotency-Key`` header (unless configured) so receivers can drop a retried delivery.

A JSON body is built safely: when a ``Content-Type`` header names JSON (``application/json``,
``…+json``) or ``body-content`` is a JSON document once its placeholders are filled, a value
substituted inside a string literal is JSON-escaped, and one in a value position is kept only
when it is a single JSON value (else it becomes a JSON string; missing gives ``null``). An event
value such as ``nginx","admin":true`` therefore stays inside its string instead of adding a key
(Postee inserted it raw).
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from actions._common import timeout_default
from actions._http import HttpRequest
from actions._placeholders import EventView, looks_like_json, substitute, substitute_json
from actions.base import ActionConfig, HttpClientAction
from app.config.model import PStr, PStrList
from app.errors import PermanentActionError
from app.messages import ActionMessage

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token: methods, header names
_JSON_TYPE = re.compile(r"^\s*[^;]*[/+]json\s*(;|$)", re.IGNORECASE)  # application/json, …+json


class HttpConfig(ActionConfig):
    url: PStr = Field(..., description="Request URL (http:// or https://).")
    method: PStr = Field(..., description="HTTP method, e.g. GET or POST (uppercased).")
    headers: dict[str, PStrList] = Field(
        default_factory=dict,
        description="Extra headers: name -> list of values (a single value is accepted too).",
    )
    timeout: Annotated[float, timeout_default(5.0, zero_is_default=True)] = Field(
        5.0, description="Request timeout (duration; default 5s; 0 means 5s).")
    body_file: PStr = Field(
        "", description="File whose contents are the body, read at send time (no placeholders)."
    )
    body_content: PStr = Field(
        "", description="Body text; `event.input.<path>` and `event.raw.<path>` placeholders "
        "are resolved anywhere in it. When the body is JSON (a JSON `Content-Type` header, or "
        "the text parses as JSON), substituted values are JSON-escaped so they cannot add keys."
    )

    def json_body(self) -> bool:
        """Whether ``body-content`` is JSON: substituted values are then JSON-escaped."""
        if not self.body_content:
            return False
        for name, values in self.headers.items():
            if name.lower() == "content-type" and any(_JSON_TYPE.search(v) for v in values):
                return True
        return looks_like_json(self.body_content)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc}): {value!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, got {value!r}")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError(f"must be an HTTP method such as GET or POST, got {value!r}")
        return value.upper()

    @field_validator("headers", mode="before")
    @classmethod
    def _header_lists(cls, value: Any) -> Any:
        # Postee wants a list per header; a single value is accepted as a one-item list.
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return {} if value is None else value

    @field_validator("headers")
    @classmethod
    def _header_syntax(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, values in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if any("\r" in v or "\n" in v for v in values):
                raise ValueError(f"header {name!r}: a value contains a line break")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> HttpConfig:
        if self.body_file and self.body_content:
            raise ValueError("'body-file' and 'body-content' are exclusive: set at most one")
        return self


@dataclass(slots=True)
class HttpCall:
    """The request to make; ``body_file`` (if set) is read at send time, as Postee does."""

    request: HttpRequest
    body_file: str = ""


class HttpAction(HttpClientAction[HttpConfig, HttpCall]):
    type_name = "http"
    config_model = HttpConfig
    _json: bool | None = None

    def build_payload(self, message: ActionMessage) -> HttpCall:
        desc = message.content.description
        headers = [("Postee-Event", base64.b64encode(desc.encode()).decode())]
        for name, values in self.config.headers.items():
            headers.extend((name, v) for v in values)
        if not any(n.lower() == "idempotency-key" for n, _ in headers):
            headers.append(("Idempotency-Key", message.idempotency_key))
        body: bytes | None = None
        if self.config.body_content:
            if self._json is None:
                self._json = self.config.json_body()
            fill = substitute_json if self._json else substitute
            body = fill(self.config.body_content, EventView.of(message)).text.encode()
        request = HttpRequest(
            method=self.config.method,
            url=self.config.url,
            headers=headers,
            body=body,
            timeout=self.config.timeout,
        )
        return HttpCall(request, self.config.body_file)

    async def send(self, request: HttpCall) -> None:
        req = request.request
        if request.body_file:
            try:
                req.body = await asyncio.to_thread(Path(request.body_file).read_bytes)
            except OSError as exc:
                raise PermanentActionError(
                    f"http {self.name}: cannot read body-file {request.body_file!r}: {exc.strerror}"
                ) from None
        await self.http.send(f"http {self.name}", req)
