"""dependencytrack: upload a CycloneDX BOM to Dependency-Track (``PUT <url>/api/v1/bom``).

As Postee (client-go ``BOM.Upload``): the title names the project as ``project:version`` (split
on the first ``:``), the description is the JSON BOM, sent base64-encoded with
``autoCreate: true`` and the ``X-Api-Key`` header. Dependency-Track answers 200 with a
processing token.

Differences from Postee, on purpose: a bad title or a non-JSON description is a permanent error
that names the problem (never retried), the BOM is sent as the template produced it (Postee
re-encoded it through Go's JSON encoder, which only compacts it), and a timeout applies.
"""

from __future__ import annotations

import base64

import orjson
from pydantic import Field, field_validator, model_validator

from actions._common import Timeout, check_http_url
from actions._config import SecretFile, key_error, merge_secret_file
from actions._http import HttpRequest
from actions.base import ActionConfig, HttpClientAction
from app.config.model import PStr, Secret, SecretStr
from app.errors import PermanentActionError
from app.messages import ActionMessage
from app.redact import redact

_TITLE_IN_ERROR = 200


class DependencyTrackConfig(ActionConfig):
    url: PStr = Field(..., description="Dependency-Track API server base URL (e.g. https://dtrack.example.com).")
    dependency_track_api_key: SecretStr = Field(
        Secret(""),
        description="API key of a team with BOM_UPLOAD and PROJECT_CREATION_UPLOAD "
        "($NAME reads an environment variable).",
        json_schema_extra={"herald_required": "yes, or dependency-track-api-key-file"},
    )
    dependency_track_api_key_file: SecretFile = Field(
        None, description="File holding the API key (instead of dependency-track-api-key)."
    )
    timeout: Timeout = Field(30.0, description="Request timeout (Go duration or seconds).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value).rstrip("/")

    @model_validator(mode="after")
    def _api_key(self) -> DependencyTrackConfig:
        merge_secret_file(self, "dependency-track-api-key")
        if not self.dependency_track_api_key:
            raise key_error(
                self,
                "dependency-track-api-key",
                "is required (give dependency-track-api-key or dependency-track-api-key-file)",
            )
        return self


def project_and_version(title: str) -> tuple[str, str]:
    """``"name:version"`` -> ``("name", "version")``; the version may itself contain ``:``."""
    name, sep, version = title.partition(":")
    if not sep or not name.strip():
        shown = redact(title[:_TITLE_IN_ERROR])
        raise PermanentActionError(
            f"dependencytrack: the title must be 'project:version', got {shown!r}"
        )
    return name, version


def bom_body(title: str, description: str) -> bytes:
    name, version = project_and_version(title)
    try:
        bom = orjson.loads(description)
    except orjson.JSONDecodeError as exc:
        raise PermanentActionError(
            f"dependencytrack: the description must be a JSON CycloneDX BOM for {title!r}: {exc}"
        ) from None
    if not isinstance(bom, dict):
        raise PermanentActionError(
            f"dependencytrack: the description must be a JSON object (a CycloneDX BOM) "
            f"for {title!r}, got a JSON {type(bom).__name__}"
        )
    return orjson.dumps(
        {
            "projectName": name,
            "projectVersion": version,
            "autoCreate": True,
            "bom": base64.b64encode(description.encode()).decode(),
        }
    )


class DependencyTrackAction(HttpClientAction[DependencyTrackConfig, HttpRequest]):
    type_name = "dependencytrack"
    config_model = DependencyTrackConfig


    def build_payload(self, message: ActionMessage) -> HttpRequest:
        content = message.content
        return HttpRequest(
            method="PUT",
            url=f"{self.config.url}/api/v1/bom",
            headers=[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
                ("X-Api-Key", self.config.dependency_track_api_key.reveal()),
            ],
            body=bom_body(content.title, content.description),
            timeout=self.config.timeout,
        )

    async def send(self, request: HttpRequest) -> None:
        await self.http.send(f"dependencytrack {self.name}", request)
