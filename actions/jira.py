"""jira: open an issue (summary = title, description = rendered content) with the `jira` library.

Auth, as Postee: Cloud (``*.atlassian.net``) takes ``user`` + API token in ``password`` (Basic);
Server/Data Center takes ``user`` + ``password`` (Basic) or a Personal Access Token in ``token``
(Bearer; it wins over ``password``). A PAT on Cloud is a config error.

Per send: create-meta of the project (Jira 9+ endpoints on Server/DC >= 8.4, the old expanded
``createmeta`` on Cloud and older servers), issue type (configured -> ``Task`` -> first),
priority (configured -> ``High`` -> first), assignee (first of ``assignee`` after
``<%application_scope_owner%>`` expansion, default ``user``), the sprint of the board when it is
a scrum board, labels, fix/affects versions and ``unknowns`` by field display name, converted by
schema type (see ``actions._jira_fields``). Then ``POST /rest/api/2/issue``.

Differences from Postee, on purpose:
- TLS is verified unless ``tls-verify: false`` (Postee skipped verification by default);
- no network at start: the client, project id and board are looked up at the first send;
- the sprint is the one named by ``sprint`` or else the newest active one (Postee used a list
  index as a sprint id when several were active);
- system fields are set by id, not by their localized display name;
- the ``unknowns`` suffixes of Postee's docs work;
- a field missing from the create screen, a bad issue type or priority is a permanent error naming
  it; HTTP 401/403/4xx are permanent, 408/429/5xx and connection failures retryable. The library's
  own retries are off: the runner owns retries.

The library is synchronous: every call runs in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlparse

import requests
from jira import JIRA, JIRAError
from jira.resources import Resource
from pydantic import BeforeValidator, Field, StrictBool, StrictInt, field_validator, model_validator

from actions import _jira_fields as jf
from actions._common import Timeout, check_http_url
from actions._config import EnvPStr, SecretFile, key_error, merge_secret_file
from actions._http import parse_retry_after
from actions.base import Action, ActionConfig
from app.config.model import PStr, PStrList, Secret, SecretStr, _to_str
from app.errors import ActionError, PermanentActionError, RetryableActionError
from app.messages import ActionMessage
from app.redact import redact

log = logging.getLogger(__name__)

OWNER_TOKEN = "<%application_scope_owner%>"
_TEXT_IN_ERROR = 500


def _unknown_value(value: Any) -> str:
    # YAML turns some date-times into datetime objects; the field wants the text back.
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return str(value.isoformat())
    result: str = _to_str(value)
    return result


UnknownValue = Annotated[str, BeforeValidator(_unknown_value)]


def is_cloud_url(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host == "atlassian.net" or host.endswith(".atlassian.net")


class JiraConfig(ActionConfig):
    # one requests session is shared by the sending threads; keep parallelism modest
    concurrency: StrictInt = Field(2, ge=1, le=16, description="Issues created in parallel per worker.")
    url: PStr = Field(..., description="Jira base URL, e.g. https://acme.atlassian.net or https://jira.acme.com/jira.")
    user: EnvPStr = Field(
        ...,
        description="Jira user: email on Cloud, user name on Server/Data Center ($NAME reads an environment variable).",
    )
    password: SecretStr = Field(
        Secret(""),
        description="Cloud: API token. Server/DC: password. Falls back to the JIRA_PASSWORD environment "
        "variable as in Postee ($NAME reads an environment variable).",
        json_schema_extra={"herald_required": "yes, or token (Server/DC), or a -file key"},
    )
    password_file: SecretFile = Field(None, description="File holding the password (instead of password).")
    token: SecretStr = Field(
        Secret(""),
        description="Server/DC Personal Access Token, sent as Bearer; wins over password. Not for Cloud.",
    )
    token_file: SecretFile = Field(None, description="File holding the token (instead of token).")
    tls_verify: StrictBool = Field(
        True, description="Verify the server's TLS certificate (Postee's default was not to)."
    )
    project_key: PStr = Field(..., description="Project key (uppercased).")
    issuetype: PStr = Field("", description="Issue type; default Task, else the project's first type.")
    priority: PStr = Field("", description="Priority name; default High, else the first one.")
    assignee: PStrList = Field(
        default_factory=list,
        description=f"Users to assign; the first one found is used (default: user). {OWNER_TOKEN} expands "
        "to the event's application scope owners.",
    )
    labels: PStrList = Field(default_factory=list, description="Labels of the issue.")
    fix_versions: PStrList = Field(default_factory=list, description="Fix versions (names).")
    affects_versions: PStrList = Field(default_factory=list, description="Affects versions (names).")
    board: PStr = Field(
        "", description="Board whose sprint gets the issue (scrum boards); default '<PROJECT-KEY> board'."
    )
    sprint: PStr = Field("", description="Sprint name; default: the newest active sprint of the board.")
    summary: PStr = Field("", description="Accepted for Postee compatibility and ignored: the summary is the title.")
    unknowns: dict[str, UnknownValue] = Field(
        default_factory=dict,
        description="Custom fields: display name -> value, converted by the field's type. Name suffixes "
        "-numeric-field, -multiple-value, -multiple-line-text-field, -date-time-picker, -field-url "
        "force a conversion.",
    )
    timeout: Timeout = Field(30.0, description="Timeout of each Jira request (Go duration or seconds).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value).rstrip("/")

    @field_validator("project_key")
    @classmethod
    def _project_key(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is required (it is empty)")
        return value.strip().upper()

    @model_validator(mode="after")
    def _auth(self) -> JiraConfig:
        merge_secret_file(self, "password")
        merge_secret_file(self, "token")
        if not self.user:
            raise key_error(self, "user", "is required (it is empty)")
        if self.token and is_cloud_url(self.url):
            raise key_error(
                self, "token", "Jira Cloud (*.atlassian.net) can't work with a Personal Access Token; "
                "put the API token in password"
            )
        if not self.password and not self.token and os.environ.get("JIRA_PASSWORD"):
            self.password = Secret(os.environ["JIRA_PASSWORD"])
        if not self.password and not self.token:
            raise key_error(self, "password", "password or token is required")
        return self

    def board_name(self) -> str:
        return self.board or f"{self.project_key} board"


@dataclass(slots=True)
class JiraIssue:
    summary: str
    description: str
    assignee: str  # "" when nobody is to be assigned


def assignees(configured: list[str], owners: str, user: str) -> list[str]:
    """``assignee`` with the owner token expanded; ``[user]`` when nothing is left (as Postee)."""
    out: list[str] = []
    for name in configured:
        if name == OWNER_TOKEN:
            out.extend(o.strip() for o in owners.split(";") if o.strip())
        elif name:
            out.append(name)
    return out or [user]


def translate(exc: JIRAError, peer: str) -> ActionError:
    """JIRAError -> Herald's verdict. Never ``str(exc)``: it prints the request headers (auth)."""
    status = exc.status_code
    text = redact(str(exc.text or "")[:_TEXT_IN_ERROR])
    if status is None:
        return PermanentActionError(f"{peer}: {text}")
    path = urlparse(str(exc.url or "")).path
    message = f"{peer}: Jira answered HTTP {status} to {path}: {text}".rstrip(": ")
    if status in (408, 429) or status >= 500:
        headers = getattr(exc.response, "headers", None) or {}
        return RetryableActionError(message, status=status, retry_after=parse_retry_after(headers.get("Retry-After")))
    return PermanentActionError(message, status=status)


class JiraAction(Action[JiraConfig, JiraIssue]):
    type_name = "jira"
    config_model = JiraConfig

    def __init__(self, config: JiraConfig) -> None:
        super().__init__(config)
        self._peer = f"jira {config.name}"
        self._client: JIRA | None = None
        self._lock = threading.Lock()  # the client and lookups are made in worker threads
        self._project_id: str | None = None
        self._board: tuple[int, str] | None = None
        self._board_known = False

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    def build_payload(self, message: ActionMessage) -> JiraIssue:
        content = message.content
        if OWNER_TOKEN in self.config.assignee and not content.owners:
            log.warning("%s: %s in assignee but the event has no owners", self._peer, OWNER_TOKEN)
        first = assignees(self.config.assignee, content.owners, self.config.user)[0]
        return JiraIssue(summary=content.title, description=content.description, assignee=first)

    async def send(self, request: JiraIssue) -> None:
        try:
            key = await asyncio.to_thread(self._create, request)
        except JIRAError as exc:
            raise translate(exc, self._peer) from None
        except requests.exceptions.JSONDecodeError:
            raise PermanentActionError(f"{self._peer}: Jira answered with something that is not JSON") from None
        except requests.RequestException as exc:
            raise RetryableActionError(f"{self._peer}: {redact(str(exc)) or type(exc).__name__}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # The library indexes answers without checking them (serverInfo without
            # versionNumbers, an issue without "key", ...): the peer is not the Jira we expect.
            raise PermanentActionError(
                f"{self._peer}: unexpected answer from Jira ({type(exc).__name__}: {redact(str(exc))[:200]})"
            ) from None
        log.info("%s: created issue %s", self._peer, key)

    # ---- everything below runs in a worker thread ----

    def _jira(self) -> JIRA:
        with self._lock:
            if self._client is None:
                cfg = self.config
                auth: dict[str, Any] = (
                    {"token_auth": cfg.token.reveal()}
                    if cfg.token
                    else {"basic_auth": (cfg.user, cfg.password.reveal())}
                )
                self._client = JIRA(
                    server=cfg.url,
                    options={"verify": cfg.tls_verify},
                    max_retries=0,  # the runner owns retries
                    timeout=cfg.timeout,
                    # None: pages as large as the server allows, and no log line per short page
                    default_batch_sizes={Resource: None},
                    **auth,
                )
            return self._client

    def _is_cloud(self, client: JIRA) -> bool:
        return client.deploymentType == "Cloud" or is_cloud_url(self.config.url)

    def _create(self, issue: JiraIssue) -> str:
        client = self._jira()
        cfg = self.config
        project_id = self._project(client)
        issuetype, metas = self._create_meta(client)
        on_screen = {m.id: m for m in metas}
        fields: dict[str, Any] = {
            "project": {"id": project_id},
            "issuetype": {"id": str(issuetype["id"])},
            "summary": issue.summary,
            "description": issue.description,
        }
        if "priority" in on_screen:
            names = [str(a["name"]) for a in on_screen["priority"].allowed if a.get("name")]
            if not names:
                names = [p.name for p in client.priorities()]
            chosen = jf.pick_priority(names, cfg.priority)
            if chosen:
                fields["priority"] = {"name": chosen}
        elif cfg.priority:
            raise self._not_on_screen("priority", "priority")
        if issue.assignee and "assignee" in on_screen:
            user = self._lookup_user(client, issue.assignee)
            if user is not None:
                fields["assignee"] = user
        for key, field_id, values in (
            ("labels", "labels", list(cfg.labels)),
            ("fix-versions", "fixVersions", [{"name": v} for v in cfg.fix_versions]),
            ("affects-versions", "versions", [{"name": v} for v in cfg.affects_versions]),
        ):
            if values:
                if field_id not in on_screen:
                    raise self._not_on_screen(key, field_id)
                fields[field_id] = values
        sprint_field = next((m for m in metas if m.custom == jf.SPRINT_SCHEMA), None)
        if sprint_field is not None:
            sprint_id = self._sprint_id(client)
            if sprint_id is not None:
                fields[sprint_field.id] = sprint_id
        for name, value in cfg.unknowns.items():
            meta, suffix = jf.resolve(metas, name)
            converted = jf.convert(meta, value, suffix, project_id, lambda v: self._lookup_user(client, v))
            if converted is not None:
                fields[meta.id] = converted
        created = client.create_issue(fields=fields, prefetch=False)
        return str(created.key)

    def _not_on_screen(self, key: str, field_id: str) -> PermanentActionError:
        return PermanentActionError(
            f"{self._peer}: {key} is set but the field {field_id!r} is not on the create screen of "
            f"project {self.config.project_key}"
        )

    def _project(self, client: JIRA) -> str:
        if self._project_id is None:
            self._project_id = str(client.project(self.config.project_key).id)
        return self._project_id

    def _create_meta(self, client: JIRA) -> tuple[dict[str, Any], list[jf.FieldMeta]]:
        key = self.config.project_key
        # The library stores the version it read from serverInfo; 8.4 introduced the paged
        # endpoints and 9.0 removed the old one (Cloud keeps the old one).
        version = tuple(getattr(client, "_version", (0, 0, 0)))
        if not self._is_cloud(client) and version >= (8, 4, 0):
            types = [t.raw for t in client.project_issue_types(key, maxResults=0)]
            chosen = jf.pick_issuetype(types, self.config.issuetype, key)
            raw_fields = [f.raw for f in client.project_issue_fields(key, str(chosen["id"]), maxResults=0)]
            return chosen, jf.fields_from_paged(raw_fields)
        meta = client.createmeta(projectKeys=key, expand="projects.issuetypes.fields")
        project = next((p for p in meta.get("projects", []) if p.get("key") == key), None)
        if project is None:
            raise PermanentActionError(
                f"{self._peer}: project {key} is not in create-meta (missing, or no create permission)"
            )
        chosen = jf.pick_issuetype(project.get("issuetypes") or [], self.config.issuetype, key)
        return chosen, jf.fields_from_legacy(chosen)

    def _lookup_user(self, client: JIRA, name: str) -> dict[str, str] | None:
        cloud = self._is_cloud(client)
        found = client.search_users(query=name) if cloud else client.search_users(user=name)
        raws = [u.raw for u in found]
        exact = [u for u in raws if name in (u.get("name"), u.get("emailAddress"), u.get("displayName"))]
        candidates = exact or raws
        if not candidates:
            log.warning("%s: no Jira user matches %r; the field is left empty", self._peer, name)
            return None
        pick = candidates[0]
        if cloud:
            return {"accountId": str(pick["accountId"])}
        return {"name": str(pick["name"])}

    def _sprint_id(self, client: JIRA) -> int | None:
        board = self._find_board(client)
        if board is None or board[1] != "scrum":
            return None
        sprints = [s.raw for s in client.sprints(board[0], state="active,future", maxResults=0)]
        chosen = jf.pick_sprint(sprints, self.config.sprint)
        if self.config.sprint and (chosen is None or chosen.get("name") != self.config.sprint):
            log.warning("%s: sprint %r not found on board %s", self._peer, self.config.sprint, board[0])
        return int(chosen["id"]) if chosen is not None else None

    def _find_board(self, client: JIRA) -> tuple[int, str] | None:
        if self._board_known:
            return self._board
        name = self.config.board_name()
        explicit = bool(self.config.board)
        try:
            boards = client.boards(projectKeyOrID=self.config.project_key, name=name, maxResults=0)
        except JIRAError as exc:
            if explicit:
                raise
            # The default board is a guess (Jira without Software has no boards): no sprint.
            log.info("%s: no board lookup (%s); issues go to no sprint", self._peer, exc.status_code)
            return None
        matches = [b.raw for b in boards if b.raw.get("name") == name]
        if not matches and explicit:
            raise PermanentActionError(
                f"{self._peer}: board {name!r} (board) not found in project {self.config.project_key}"
            )
        self._board = (int(matches[0]["id"]), str(matches[0].get("type", ""))) if matches else None
        self._board_known = True
        return self._board
