"""nexusiq (Postee type ``nexusIq``): submit a CycloneDX XML SBOM to Sonatype Nexus IQ.

As Postee: the application's public id is the title with ``.``, ``:`` and ``/`` replaced by
``_``; it is looked up in the organization (``GET /api/v2/applications/organization/<id>``) and
created when missing (``POST /api/v2/applications``), then the description is submitted
(``POST /api/v2/scan/applications/<app id>/sources/cyclone``, ``application/xml``). Basic auth;
every answer must be 2xx and JSON.

Differences from Postee, on purpose: the timeout belongs to this action's requests (Postee set
120 s on Go's process-wide default client, changing every other HTTP user), a 2xx answer that
is not JSON is a permanent error naming the step, and an empty title is refused up front.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from pydantic import Field, field_validator, model_validator

from actions._common import check_http_url, timeout_default
from actions._config import EnvPStr, SecretFile, basic_auth_header, key_error, merge_secret_file
from actions._http import HttpRequest, HttpResponse
from actions.base import ActionConfig, HttpClientAction
from app.config.model import PStr, Secret, SecretStr
from app.errors import PermanentActionError
from app.messages import ActionMessage
from app.redact import redact

log = logging.getLogger(__name__)

_NOT_ALLOWED = re.compile(r"[.:/]")
_BODY_IN_ERROR = 300


class NexusIqConfig(ActionConfig):
    url: PStr = Field(..., description="Nexus IQ server base URL (e.g. https://iq.example.com).")
    user: EnvPStr = Field(..., description="Nexus IQ user name ($NAME reads an environment variable).")
    password: SecretStr = Field(
        Secret(""),
        description="Nexus IQ password or user token ($NAME reads an environment variable).",
        json_schema_extra={"herald_required": "yes, or password-file"},
    )
    password_file: SecretFile = Field(None, description="File holding the password (instead of password).")
    organization_id: PStr = Field(
        ..., description='Organization id the applications live in, e.g. "222de33e8005408a844c12eab952c9b0".'
    )
    timeout: Annotated[float, timeout_default(120.0)] = Field(
        120.0, description="Timeout of each request (Go duration or seconds).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value).rstrip("/")

    @model_validator(mode="after")
    def _required(self) -> NexusIqConfig:
        merge_secret_file(self, "password")
        if not self.user:
            raise key_error(self, "user", "is required (it is empty)")
        if not self.password:
            raise key_error(self, "password", "is required (give password or password-file)")
        if not self.organization_id.strip():
            raise key_error(self, "organization-id", "is required (it is empty)")
        return self


def application_id(title: str) -> str:
    """Postee's sanitized application public id."""
    return _NOT_ALLOWED.sub("_", title)


@dataclass(slots=True)
class NexusIqRequest:
    public_id: str
    bom: bytes  # CycloneDX XML, as the template rendered it


class NexusIqAction(HttpClientAction[NexusIqConfig, NexusIqRequest]):
    type_name = "nexusiq"
    config_model = NexusIqConfig

    def __init__(self, config: NexusIqConfig) -> None:
        super().__init__(config)
        self._auth = basic_auth_header(config.user, config.password)
        self._peer = f"nexusiq {config.name}"

    def build_payload(self, message: ActionMessage) -> NexusIqRequest:
        title = message.content.title
        if not title.strip():
            raise PermanentActionError(f"{self._peer}: the title (application name) is empty")
        return NexusIqRequest(public_id=application_id(title), bom=message.content.description.encode())

    async def send(self, request: NexusIqRequest) -> None:
        app_id = await self._find_application(request.public_id)
        if app_id is None:
            app_id = await self._create_application(request.public_id)
        await self._call(
            "submitting the SBOM",
            "POST",
            f"/api/v2/scan/applications/{quote(app_id, safe='')}/sources/cyclone",
            request.bom,
            "application/xml",
        )
        log.info("%s: SBOM submitted for application %s", self._peer, request.public_id)

    async def _find_application(self, public_id: str) -> str | None:
        org = quote(self.config.organization_id, safe="")
        answer = await self._call(
            "listing applications", "GET", f"/api/v2/applications/organization/{org}", None, None
        )
        apps = answer.get("applications") if isinstance(answer, dict) else None
        if not isinstance(apps, list):
            raise PermanentActionError(
                f"{self._peer}: listing applications: the answer has no 'applications' list"
            )
        for app in apps:
            if isinstance(app, dict) and app.get("publicId") == public_id and isinstance(app.get("id"), str):
                return str(app["id"])
        return None

    async def _create_application(self, public_id: str) -> str:
        body = orjson.dumps(
            {"publicId": public_id, "name": public_id, "organizationId": self.config.organization_id}
        )
        answer = await self._call("creating the application", "POST", "/api/v2/applications", body, "application/json")
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise PermanentActionError(f"{self._peer}: creating the application: the answer has no 'id'")
        log.info("%s: created application %s", self._peer, public_id)
        return str(answer["id"])

    async def _call(self, step: str, method: str, path: str, body: bytes | None, content_type: str | None) -> Any:
        headers = [("Authorization", self._auth), ("Accept", "application/json")]
        if content_type:
            headers.append(("Content-Type", content_type))
        req = HttpRequest(
            method=method, url=self.config.url + path, headers=headers, body=body, timeout=self.config.timeout
        )
        resp = await self.http.send(f"{self._peer} ({step})", req)
        return self._json(step, resp)

    def _json(self, step: str, resp: HttpResponse) -> Any:
        try:
            return orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            text = redact(resp.body[:_BODY_IN_ERROR].decode("utf-8", "replace"))
            raise PermanentActionError(
                f"{self._peer}: {step}: HTTP {resp.status} answer is not JSON: {text!r}", status=resp.status
            ) from None
