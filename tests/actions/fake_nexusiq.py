"""A local Nexus IQ peer: the v2 REST endpoints Postee uses, with IQ's status codes and bodies."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

USER, PASSWORD = "admin", "iq-pass-2468"
ORG = "222de33e8005408a844c12eab952c9b0"
CYCLONEDX = "http://cyclonedx.org/schema/bom/1.4"
BOM = f"""<?xml version="1.0" encoding="UTF-8"?>
<bom xmlns="{CYCLONEDX}" version="1">
  <components>
    <component type="library"><name>openssl</name><version>3.1.4</version>
      <purl>pkg:apk/alpine/openssl@3.1.4</purl></component>
  </components>
</bom>
"""


@dataclass
class FakeNexusIq:
    """The Nexus IQ v2 REST endpoints Postee uses, with IQ's status codes and bodies."""

    apps: list[dict[str, Any]] = field(default_factory=lambda: [
        {"id": "4537e6fe68c24dd5ac83efd97d4fc2f4", "publicId": "existing-app", "name": "existing-app",
         "organizationId": ORG, "contactUserName": None, "applicationTags": []}])
    scans: list[tuple[str, str]] = field(default_factory=list)
    html_list: bool = False
    fail_scan: int | None = None
    delay: float = 0.0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/api/v2/applications/organization/{org}", self.list_apps)
        app.router.add_post("/api/v2/applications", self.create_app)
        app.router.add_post("/api/v2/scan/applications/{app}/sources/{source}", self.scan)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, text="Unauthorized")
        if self.delay:
            await asyncio.sleep(self.delay)
        return await handler(request)

    async def list_apps(self, request: web.Request) -> web.Response:
        if self.html_list:  # e.g. a login page of a proxy in front of IQ
            return web.Response(text="<html>Sign in</html>", content_type="text/html")
        if request.match_info["org"] != ORG:
            return web.Response(status=404, text=f"Organization {request.match_info['org']} not found")
        return web.json_response({"applications": [a for a in self.apps if a["organizationId"] == ORG]})

    async def create_app(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.Response(status=415, text="Unsupported Media Type")
        body = await request.json()
        if {"publicId", "name", "organizationId"} - body.keys():
            return web.Response(status=400, text="publicId, name and organizationId are required")
        if any(a["publicId"] == body["publicId"] for a in self.apps):
            return web.Response(status=400, text=f"Application public ID {body['publicId']} is already used")
        app = dict(body, id=uuid.uuid4().hex, contactUserName=None, applicationTags=[])
        self.apps.append(app)
        return web.json_response(app)

    async def scan(self, request: web.Request) -> web.Response:
        if self.fail_scan:
            return web.Response(status=self.fail_scan, text="Service Unavailable")
        app_id = request.match_info["app"]
        if request.match_info["source"] != "cyclone" or not any(a["id"] == app_id for a in self.apps):
            return web.Response(status=404, text="Application not found")
        if request.content_type != "application/xml":
            return web.Response(status=415, text="Unsupported Media Type")
        text = await request.text()
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            return web.Response(status=400, text="Unable to parse the SBOM")
        # IQ reads every CycloneDX XML version (1.0 ... 1.5), each with its own namespace.
        if not re.fullmatch(r"\{http://cyclonedx\.org/schema/bom/1\.[0-9]+\}bom", root.tag):
            return web.Response(status=400, text="Not a CycloneDX SBOM")
        self.scans.append((app_id, text))
        return web.json_response({"statusUrl": f"api/v2/scan/applications/{app_id}/status/{uuid.uuid4().hex}"},
                                 status=202)
