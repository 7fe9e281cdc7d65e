"""A local Dependency-Track peer: ``PUT /api/v1/bom`` with X-Api-Key, as Dependency-Track 4.x answers it."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_KEY = "odt_k3yWithUploadRights"
READ_ONLY_KEY = "odt_readOnlyKey000"
BOM = json.dumps({
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "version": 1,
    "metadata": {"component": {"type": "container", "name": "alpine", "version": "3.19"}},
    "components": [{"type": "library", "name": "openssl", "version": "3.1.4",
                    "purl": "pkg:apk/alpine/openssl@3.1.4"}],
}, indent=1)


@dataclass
class FakeDependencyTrack:
    """``PUT /api/v1/bom`` as Dependency-Track 4.x answers it."""

    uploads: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/api/v1/bom", self.upload)
        return app

    async def upload(self, request: web.Request) -> web.Response:
        key = request.headers.get("X-Api-Key")
        if key not in (API_KEY, READ_ONLY_KEY):
            return web.Response(status=401)  # DT answers 401 with an empty body
        if key == READ_ONLY_KEY:
            return web.Response(status=403, text="Access to the specified resource is forbidden")
        if self.fail_with:
            return web.Response(status=self.fail_with, text="Service Unavailable")
        if request.content_type != "application/json":
            return web.Response(status=415, text="Unsupported Media Type")
        body = await request.json()
        if not isinstance(body.get("projectName"), str) or body.get("autoCreate") is not True:
            return web.Response(status=400, text="projectName and autoCreate are required")
        try:
            bom = json.loads(base64.b64decode(body["bom"], validate=True))
        except (KeyError, ValueError):
            return web.Response(status=400, text="The uploaded BOM is invalid")
        if bom.get("bomFormat") != "CycloneDX":
            return web.Response(status=400, text="The uploaded BOM is invalid")
        self.uploads.append(dict(body, bom=bom))
        return web.json_response({"token": str(uuid.uuid4())})
