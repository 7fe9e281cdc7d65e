"""A local ServiceNow Table API peer: Basic auth, JSON in and out, 201 with the record under "result"."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

USER, PASSWORD = "herald.bot", "sn-pass-4242"
TABLES = {"incident", "sn_si_incident"}


@dataclass
class FakeServiceNow:
    """The Table API: Basic auth, JSON in and out, 201 with the created record under "result"."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_with: int | None = None
    status: int = 201

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/now/table/{table}", self.insert)
        return app

    async def insert(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": {"message": "User Not Authenticated",
                                                "detail": "Required to provide Auth information"},
                                      "status": "failure"}, status=401)
        if self.fail_with:
            return web.json_response({"error": {"message": "Service unavailable"}, "status": "failure"},
                                     status=self.fail_with)
        table = request.match_info["table"]
        if table not in TABLES:
            return web.json_response({"error": {"message": f"Invalid table {table}", "detail": None},
                                      "status": "failure"}, status=400)
        if request.content_type != "application/json":
            return web.json_response({"error": {"message": "Invalid content type"}}, status=415)
        body = await request.json()
        if not isinstance(body, dict):
            return web.json_response({"error": {"message": "Exception while reading request"}}, status=400)
        self.records.append((table, body))
        result = dict(body, sys_id="9d385017c611228701d22104cc95c371", number=f"INC00100{len(self.records)}")
        return web.json_response({"result": result}, status=self.status)
