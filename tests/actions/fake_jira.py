"""A local Jira REST peer for the jira action's tests.

It answers the endpoints the `jira` library calls, checks auth the way Jira does (Basic
user:password or API token, Bearer PAT; 401 otherwise), validates ``POST /rest/api/2/issue``
against its create screen (unknown or off-screen fields, value shapes, allowed values, required
fields -> 400 with Jira's ``{"errorMessages", "errors"}`` body) and records created issues.

Modes: ``deployment="Server"`` with ``version`` (>= 8.4 serves the paged create-meta endpoints,
>= 9.0 no longer serves the old ``createmeta``) or ``deployment="Cloud"`` (old create-meta,
user search by ``query`` and accountId users).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SPRINT = "com.pyxis.greenhopper.jira:gh-sprint"


def _field(fid: str, name: str, type_: str, required: bool = False, items: str = "", custom: str = "",
           allowed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": type_}
    if items:
        schema["items"] = items
    if custom:
        schema["custom"] = custom
        schema["customId"] = int(fid.split("_")[-1])
    else:
        schema["system"] = fid
    out: dict[str, Any] = {"fieldId": fid, "key": fid, "name": name, "required": required, "schema": schema,
                           "hasDefaultValue": False, "operations": ["set"]}
    if allowed is not None:
        out["allowedValues"] = allowed
    return out


PRIORITIES = [{"id": str(i), "name": n} for i, n in enumerate(["Highest", "High", "Medium", "Low"], 1)]


def default_screen() -> list[dict[str, Any]]:
    """The create screen of issue type Task in project ABC."""
    return [
        _field("summary", "Summary", "string", required=True),
        _field("issuetype", "Issue Type", "issuetype", required=True),
        _field("project", "Project", "project", required=True),
        _field("description", "Description", "string"),
        _field("priority", "Priority", "priority", allowed=PRIORITIES),
        _field("assignee", "Assignee", "user"),
        _field("labels", "Labels", "array", items="string"),
        _field("fixVersions", "Fix Version/s", "array", items="version",
               allowed=[{"id": "100", "name": "1.0"}, {"id": "101", "name": "2.0"}]),
        _field("versions", "Affects Version/s", "array", items="version",
               allowed=[{"id": "100", "name": "1.0"}, {"id": "101", "name": "2.0"}]),
        _field("components", "Component/s", "array", items="component",
               allowed=[{"id": "200", "name": "backend"}]),
        _field("customfield_10020", "Sprint", "array", items="json", custom=SPRINT),
        _field("customfield_10014", "Epic Link", "any", custom="com.pyxis.greenhopper.jira:gh-epic-link"),
        _field("customfield_10100", "Risk Score", "number",
               custom="com.atlassian.jira.plugin.system.customfieldtypes:float"),
        _field("customfield_10101", "Environments", "array", items="option",
               custom="com.atlassian.jira.plugin.system.customfieldtypes:multiselect",
               allowed=[{"id": "1", "value": "dev"}, {"id": "2", "value": "prod"}, {"id": "3", "value": "qa"}]),
        _field("customfield_10102", "Notes", "string",
               custom="com.atlassian.jira.plugin.system.customfieldtypes:textarea"),
        _field("customfield_10103", "Found At", "datetime",
               custom="com.atlassian.jira.plugin.system.customfieldtypes:datetime"),
        _field("customfield_10104", "Advisory", "string",
               custom="com.atlassian.jira.plugin.system.customfieldtypes:url"),
        _field("customfield_10105", "Team", "option",
               custom="com.atlassian.jira.plugin.system.customfieldtypes:select",
               allowed=[{"id": "11", "value": "red"}, {"id": "12", "value": "blue"}]),
        _field("customfield_10106", "Reviewer", "user",
               custom="com.atlassian.jira.plugin.system.customfieldtypes:userpicker"),
        _field("customfield_10107", "Region", "option-with-child",
               custom="com.atlassian.jira.plugin.system.customfieldtypes:cascadingselect"),
    ]


@dataclass
class FakeJira:
    user: str = "bot@example.com"
    password: str = "jira-api-token-123"
    token: str = "jira-pat-456"
    deployment: str = "Server"
    version: tuple[int, int, int] = (9, 12, 0)
    project_key: str = "ABC"
    project_id: str = "10000"
    # issue type name -> create screen (field descriptions as in create-meta)
    screens: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"Task": default_screen(),
                                                                               "Bug": default_screen()[:4]})
    users: list[dict[str, Any]] = field(default_factory=lambda: [
        {"name": "alice", "key": "alice", "accountId": "5b10ac8d82e05b22cc7d4ef5",
         "emailAddress": "alice@example.com", "displayName": "Alice A", "active": True},
        {"name": "bob", "key": "bob", "accountId": "5b10ac8d82e05b22cc7d4ef6",
         "emailAddress": "bob@example.com", "displayName": "Bob B", "active": True},
        {"name": "bot", "key": "bot", "accountId": "5b10ac8d82e05b22cc7d4ef7",
         "emailAddress": "bot@example.com", "displayName": "Herald Bot", "active": True},
    ])
    boards: list[dict[str, Any]] = field(default_factory=lambda: [
        {"id": 7, "name": "ABC board", "type": "scrum"},
        {"id": 8, "name": "ABC kanban", "type": "kanban"},
    ])
    sprints: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: {7: [
        {"id": 31, "name": "ABC Sprint 3", "state": "closed", "startDate": "2025-11-01T09:00:00.000Z"},
        {"id": 32, "name": "ABC Sprint 4", "state": "active", "startDate": "2025-12-01T09:00:00.000Z"},
        {"id": 35, "name": "Hotfix sprint", "state": "active", "startDate": "2025-12-08T09:00:00.000Z"},
        {"id": 33, "name": "ABC Sprint 5", "state": "future"},
    ]})
    agile: bool = True
    page_size: int = 3  # small pages make the library follow pagination
    issue_failures: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    @property
    def cloud(self) -> bool:
        return self.deployment == "Cloud"

    # ---- plumbing ----

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_mw])
        api = "/rest/api/2"
        app.router.add_get(f"{api}/serverInfo", self.server_info)
        app.router.add_get(f"{api}/myself", self.myself)
        app.router.add_get(f"{api}/project/{{key}}", self.project)
        app.router.add_get(f"{api}/issue/createmeta", self.createmeta_legacy)
        app.router.add_get(f"{api}/issue/createmeta/{{project}}/issuetypes", self.createmeta_types)
        app.router.add_get(f"{api}/issue/createmeta/{{project}}/issuetypes/{{tid}}", self.createmeta_fields)
        app.router.add_get(f"{api}/field", self.fields)
        app.router.add_get(f"{api}/priority", self.priorities)
        app.router.add_get(f"{api}/user/search", self.user_search)
        app.router.add_post(f"{api}/issue", self.create_issue)
        app.router.add_get("/rest/agile/1.0/board", self.board_list)
        app.router.add_get("/rest/agile/1.0/board/{bid}/sprint", self.sprint_list)
        return app

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        header = request.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            ok = base64.b64decode(header[6:]).decode() == f"{self.user}:{self.password}"
        elif header.startswith("Bearer "):
            ok = not self.cloud and header[7:] == self.token
        if not ok:
            return web.json_response(
                {"errorMessages": ["You are not authenticated. Authentication required to perform this operation."],
                 "errors": {}}, status=401, headers={"X-Seraph-LoginReason": "AUTHENTICATED_FAILED"})
        if request.path.startswith("/rest/agile/") and not self.agile:
            return web.Response(status=404, text="<html>Not found</html>", content_type="text/html")
        return await handler(request)

    @staticmethod
    def _not_found(message: str) -> web.Response:
        return web.json_response({"errorMessages": [message], "errors": {}}, status=404)

    @staticmethod
    def _with_self(request: web.Request, items: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
        # Jira puts a "self" link in every resource; the library requires it.
        return [dict(i, self=f"{request.url.origin()}{path}/{i.get('id') or i.get('name')}") for i in items]

    def _page(self, request: web.Request, items: list[Any]) -> web.Response:
        start = int(request.query.get("startAt", "0"))
        size = min(int(request.query.get("maxResults", "50")), self.page_size)
        chunk = items[start:start + size]
        return web.json_response({"maxResults": size, "startAt": start, "total": len(items),
                                  "isLast": start + len(chunk) >= len(items), "values": chunk})

    def _types(self) -> list[dict[str, Any]]:
        return [{"id": str(10001 + i), "name": name, "subtask": False, "description": ""}
                for i, name in enumerate(self.screens)]

    def _screen_of(self, type_id: str) -> list[dict[str, Any]] | None:
        for t in self._types():
            if t["id"] == type_id:
                return self.screens[t["name"]]
        return None

    # ---- core API ----

    async def server_info(self, request: web.Request) -> web.Response:
        version = ".".join(map(str, self.version))
        return web.json_response({"baseUrl": str(request.url.origin()), "version": version,
                                  "versionNumbers": list(self.version), "deploymentType": self.deployment,
                                  "buildNumber": 912000, "serverTitle": "Fake Jira"})

    async def myself(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "bot", "emailAddress": self.user, "active": True})

    async def project(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in (self.project_key, self.project_id):
            return self._not_found(f"No project could be found with key '{key}'.")
        return web.json_response({"id": self.project_id, "key": self.project_key, "name": "Alpha Beta",
                                  "self": f"{request.url.origin()}/rest/api/2/project/{self.project_id}"})

    async def createmeta_legacy(self, request: web.Request) -> web.Response:
        if not self.cloud and self.version >= (9, 0, 0):
            return self._not_found("null for uri: /rest/api/2/issue/createmeta")
        assert request.query.get("expand") == "projects.issuetypes.fields", request.query
        projects = []
        if self.project_key in request.query.get("projectKeys", "").split(","):
            types = [dict(t, fields={f["fieldId"]: {k: v for k, v in f.items() if k != "fieldId"}
                                     for f in self.screens[t["name"]]}) for t in self._types()]
            projects.append({"id": self.project_id, "key": self.project_key, "name": "Alpha Beta",
                             "issuetypes": types})
        return web.json_response({"expand": "projects", "projects": projects})

    def _paged_meta_available(self, request: web.Request) -> bool:
        return self.cloud or self.version >= (8, 4, 0)

    async def createmeta_types(self, request: web.Request) -> web.Response:
        if not self._paged_meta_available(request):
            return self._not_found("null for uri")
        if request.match_info["project"] not in (self.project_key, self.project_id):
            return self._not_found("Project not found")
        return self._page(request, self._with_self(request, self._types(), "/rest/api/2/issuetype"))

    async def createmeta_fields(self, request: web.Request) -> web.Response:
        if not self._paged_meta_available(request):
            return self._not_found("null for uri")
        screen = self._screen_of(request.match_info["tid"])
        if request.match_info["project"] not in (self.project_key, self.project_id) or screen is None:
            return self._not_found("Issue type not found")
        return self._page(request, screen)

    async def fields(self, request: web.Request) -> web.Response:
        seen: dict[str, dict[str, Any]] = {}
        for screen in self.screens.values():
            for f in screen:
                seen[f["fieldId"]] = {"id": f["fieldId"], "key": f["fieldId"], "name": f["name"],
                                      "custom": "custom" in f["schema"], "schema": f["schema"],
                                      "clauseNames": [f["name"]]}
        return web.json_response(list(seen.values()))

    async def priorities(self, request: web.Request) -> web.Response:
        return web.json_response(PRIORITIES)

    async def user_search(self, request: web.Request) -> web.Response:
        # Server requires username=, Cloud query= (the username parameter is gone there).
        term = request.query.get("query" if self.cloud else "username")
        if not term:
            return web.json_response({"errorMessages": ["The username query parameter was not provided"],
                                      "errors": {}}, status=400)
        term = term.lower()
        hits = [u for u in self.users if term in (u["name"], u["emailAddress"].lower(), u["displayName"].lower())
                or u["emailAddress"].lower().startswith(term)]
        if self.cloud:
            hits = [{k: v for k, v in u.items() if k not in ("name", "key")} for u in hits]
        return web.json_response(self._with_self(request, hits, "/rest/api/2/user"))

    # ---- agile ----

    async def board_list(self, request: web.Request) -> web.Response:
        boards = self.boards
        project = request.query.get("projectKeyOrId")
        if project and project not in (self.project_key, self.project_id):
            return web.json_response({"errorMessages": [f"No project could be found with key '{project}'."]},
                                     status=400)
        name = request.query.get("name")
        if name:
            boards = [b for b in boards if name.lower() in b["name"].lower()]
        return self._page(request, self._with_self(request, boards, "/rest/agile/1.0/board"))

    async def sprint_list(self, request: web.Request) -> web.Response:
        board = next((b for b in self.boards if str(b["id"]) == request.match_info["bid"]), None)
        if board is None:
            return self._not_found("Board does not exist or you do not have permission to see it.")
        if board["type"] != "scrum":
            return web.json_response({"errorMessages": ["The board does not support sprints"]}, status=400)
        sprints = self.sprints.get(board["id"], [])
        states = request.query.get("state")
        if states:
            sprints = [s for s in sprints if s["state"] in states.split(",")]
        return self._page(request, self._with_self(request, sprints, "/rest/agile/1.0/sprint"))

    # ---- issue creation ----

    async def create_issue(self, request: web.Request) -> web.Response:
        if self.issue_failures:
            status, headers, body = self.issue_failures.pop(0)
            return web.json_response(body, status=status, headers=headers)
        if request.content_type != "application/json":
            return web.json_response({"errorMessages": ["Unsupported media type"]}, status=415)
        data = await request.json()
        fields = data.get("fields") if isinstance(data, dict) else None
        if not isinstance(fields, dict):
            return self._bad({}, ["Can not deserialize instance of fields"])
        project = fields.get("project") or {}
        if project.get("id") != self.project_id and project.get("key") != self.project_key:
            return self._bad({"project": "valid project is required"})
        screen = self._screen_of(str((fields.get("issuetype") or {}).get("id", "")))
        if screen is None:
            return self._bad({"issuetype": "valid issue type is required"})
        by_id = {f["fieldId"]: f for f in screen}
        errors: dict[str, str] = {}
        for fid, value in fields.items():
            meta = by_id.get(fid)
            if meta is None:
                errors[fid] = f"Field '{fid}' cannot be set. It is not on the appropriate screen, or unknown."
            elif (problem := self._check_value(meta, value)) is not None:
                errors[fid] = problem
        for f in screen:
            if f["required"] and f["fieldId"] not in fields:
                errors[f["fieldId"]] = f"{f['name']} is required."
        if errors:
            return self._bad(errors)
        number = len(self.created) + 1
        issue = {"id": str(10100 + number), "key": f"{self.project_key}-{number}",
                 "self": f"{request.url.origin()}/rest/api/2/issue/{10100 + number}"}
        self.created.append({"issue": issue, "fields": fields})
        return web.json_response(issue, status=201)

    @staticmethod
    def _bad(errors: dict[str, str], messages: list[str] | None = None) -> web.Response:
        return web.json_response({"errorMessages": messages or [], "errors": errors}, status=400)

    def _check_value(self, meta: dict[str, Any], value: Any) -> str | None:
        schema = meta["schema"]
        kind, items, custom = schema["type"], schema.get("items"), schema.get("custom", "")
        allowed = meta.get("allowedValues")
        if custom == SPRINT:
            ok = isinstance(value, int) and not isinstance(value, bool)
            return None if ok else "Number value expected as the Sprint id."
        if kind in ("string", "any"):
            return None if isinstance(value, str) else "Operation value must be a string"
        if kind == "datetime":
            ok = isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}", value)
            return None if ok else "Invalid date format. Please enter the date as yyyy-MM-dd'T'HH:mm:ss.SSSZ."
        if kind == "number":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            return None if ok else "Operation value must be a number"
        if kind in ("project", "issuetype"):
            return None
        if kind == "priority":
            names = {p["name"] for p in allowed or PRIORITIES}
            return None if isinstance(value, dict) and value.get("name") in names else "Specify a valid priority"
        if kind == "user":
            key = "accountId" if self.cloud else "name"
            known = {u[key] for u in self.users}
            return None if isinstance(value, dict) and value.get(key) in known else f"User '{value}' does not exist."
        if kind == "option":
            values = {a["value"] for a in allowed or []}
            return None if isinstance(value, dict) and value.get("value") in values else "Option value is not valid"
        if kind == "array":
            if not isinstance(value, list):
                return "data was not an array"
            for item in value:
                if items == "string" and not (isinstance(item, str) and " " not in item):
                    return "The label must be a string without spaces."
                if items in ("version", "component"):
                    names = {a["name"] for a in allowed or []}
                    if not (isinstance(item, dict) and item.get("name") in names):
                        return f"{items.capitalize()} name '{item}' is not valid"
                if items == "option":
                    values = {a["value"] for a in allowed or []}
                    if not (isinstance(item, dict) and item.get("value") in values):
                        return f"Option value '{item}' is not valid"
            return None
        return f"cannot set field of type {kind}"
