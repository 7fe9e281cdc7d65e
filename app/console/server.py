"""The console's aiohttp application: pages, the JSON API, the SSE stream and the access rules.

Every response carries a Content-Security-Policy without 'unsafe-inline' (the timeline report,
which inlines its script, is served sandboxed with hashes of exactly its script and styles).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import io
import logging
import re
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from aiohttp import web

from app.config.loader import Config
from app.config.reload import config_hash
from app.console import pages
from app.console.auth import COOKIE, LOGIN_COOKIE, Access, Session, cookie_flags, exposure_problem
from app.console.ops import ORIGINS, dead_letter_list, redrive, select, try_route
from app.console.store import Store, matches
from app.errors import ConfigError, HeraldError
from app.forensics.dlq import DeadLetters
from app.forensics.eventtime import parse_when
from app.forensics.report_html import write_html
from app.forensics.timeline import Stats, TimelineQuery, timeline_rows
from app.kafka.client import client_config
from app.kafka.topics import Topics
from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR

log = logging.getLogger("herald.console")
STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PUBLIC = ("/login", "/static/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]



class Console:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        s = config.herald
        self.settings = s.console
        self.kafka = client_config(s)
        self.topics = Topics(s.topic_prefix)
        self.access = Access(self.settings)
        self.store = store if store is not None else Store(self.kafka, self.topics, self.settings.recent)
        self.dl = DeadLetters(config)
        self.hash = config_hash(config)
        self.streams: set[asyncio.Queue[dict[str, Any] | None]] = set()

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


CTX = web.AppKey("console", Console)
SESSION = web.RequestKey("session", Session)


def _session(request: web.Request) -> Session:
    return request[SESSION]


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _error(request: web.Request, status: int, text: str) -> web.Response:
    if _wants_json(request):
        return web.json_response({"error": text}, status=status)
    body = pages.layout("Error", f'<p class="error" id="error">{pages.esc(text)}</p>', request.get(SESSION), "")
    return web.Response(status=status, text=body, content_type="text/html")


@web.middleware
async def headers_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        if exc.status >= 400:  # a clear error, as JSON on the API and as a page elsewhere
            response = _error(request, exc.status, exc.text or exc.reason)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException) and not response.prepared:
        raise response
    return response


@web.middleware
async def access_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking (session cookie or bearer token), and CSRF on every state change."""
    console: Console = request.app[CTX]
    access = console.access
    if request.path.startswith(PUBLIC):
        return await handler(request)
    bearer = request.headers.get("Authorization", "")
    session: Session | None = None
    by_bearer = False
    if bearer:
        scheme, _, token = bearer.partition(" ")
        found = access.check_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if found is None:
            return _error(request, 401, "invalid bearer token")
        session = Session(found[0], found[1], "", time.time() + 60)
        by_bearer = True
    else:
        session = access.session(request.cookies.get(COOKIE))
    new_sid = None
    if session is None:
        if not access.open:
            if _wants_json(request) or request.method != "GET":
                return _error(request, 401, "log in first (POST /login) or send Authorization: Bearer <token>")
            raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
        new_sid, session = access.login("local", "operator")  # no users: local operator (loopback only)
    request[SESSION] = session
    if request.method not in ("GET", "HEAD", "OPTIONS") and not by_bearer:
        given = request.headers.get("X-CSRF-Token")
        if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            given = str((await request.post()).get("csrf") or "")
        if new_sid is not None or not access.csrf_ok(session, given):
            return _error(request, 403, "CSRF token missing or wrong: reload the page and try again")
    response = await handler(request)
    if new_sid is not None:
        response.set_cookie(COOKIE, new_sid, **cookie_flags(request.secure))  # type: ignore[arg-type]
    return response


def _operator(request: web.Request) -> None:
    if not _session(request).operator:
        raise web.HTTPForbidden(text="operator role required")


def _page(request: web.Request, title: str, body: str, page: str, data: dict[str, str] | None = None,
          status: int = 200) -> web.Response:
    session = _session(request)
    return web.Response(status=status, text=pages.layout(title, body, session, page, session.csrf, data),
                        content_type="text/html")


def _filters(request: web.Request) -> dict[str, Any]:
    q = request.query
    window = q.get("window", "")
    if window and not window.isdigit():
        raise web.HTTPBadRequest(text=f"window must be seconds, got {window!r}")
    return {"route": q.get("route", ""), "action": q.get("action", ""), "outcome": q.get("outcome", ""),
            "window_s": float(window or 0)}


# -- login -----------------------------------------------------------------------------------
async def login_page(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    error = request.query.get("error", "")
    nxt = request.query.get("next", "/")
    body = (f'{"<p class=error id=error>" + pages.esc(error) + "</p>" if error else ""}'
            '<form method="post" action="/login" class="login" id="login">'
            f'<input type="hidden" name="csrf" value="{pages.esc(nonce)}"><input type="hidden" name="next" value="{pages.esc(nxt)}">'
            '<label>User <input name="user" autocomplete="username"></label>'
            '<label>Password <input name="password" type="password" autocomplete="current-password"></label>'
            '<p class="hint">or</p><label>Token <input name="token" type="password"></label>'
            '<button type="submit">Log in</button></form>')
    if console.access.open:
        body = '<p class="hint">No users are configured: the console is open to local users. <a href="/">Go to it</a>.</p>'
    resp = web.Response(text=pages.layout("Log in", body, None, "/login"), content_type="text/html")
    resp.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, **cookie_flags(request.secure))  # type: ignore[arg-type]
    return resp


async def login(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    form = await request.post()
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not Access.csrf_ok(Session("", "viewer", nonce, 0), str(form.get("csrf") or "")):
        return _error(request, 403, "CSRF token missing or wrong: reload the login page")
    token = str(form.get("token") or "")
    user, password = str(form.get("user") or ""), str(form.get("password") or "")
    who: tuple[str, str] | None = None
    if token:
        who = console.access.check_token(token)
    elif user and password:
        role = console.access.check_password(user, password)
        who = (user, role) if role else None
    if who is None:
        log.warning("console: failed login from %s (user %r)", request.remote, user)
        raise web.HTTPSeeOther("/login?" + urlencode({"error": "wrong user, password or token"}))
    sid, _ = console.access.login(*who)
    nxt = str(form.get("next") or "/")
    if not nxt.startswith("/") or nxt.startswith("//") or urlsplit(nxt).netloc:
        nxt = "/"
    resp = web.HTTPSeeOther(nxt)
    resp.set_cookie(COOKIE, sid, **cookie_flags(request.secure))  # type: ignore[arg-type]
    resp.del_cookie(LOGIN_COOKIE, path="/")
    log.info("console: %s logged in as %s", who[0], who[1])
    raise resp


async def logout(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    console.access.logout(request.cookies.get(COOKIE))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


# -- live ------------------------------------------------------------------------------------
async def live_page(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    f = _filters(request)
    rows = console.store.latest(200, **f)
    stream = "/api/stream?" + urlencode({k: v for k, v in request.query.items() if k in ("route", "action", "outcome", "window")})
    body = pages.live(rows, list(console.config.routes), list(console.config.actions), request.query)
    return _page(request, "Live intake", body, "/", {"stream": stream})


async def api_events(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    limit = request.query.get("limit", "200")
    if not limit.isdigit():
        return _error(request, 400, f"limit must be a number, got {limit!r}")
    return web.json_response(console.store.latest(int(limit), **_filters(request)))


async def api_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``data:`` line (an event's summary) per change that passes the filters."""
    console: Console = request.app[CTX]
    f = _filters(request)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=10000)
    loop = asyncio.get_running_loop()

    def put(summary: dict[str, Any]) -> None:
        if queue.qsize() < 10000:
            queue.put_nowait(summary)

    def listener(summary: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(put, summary)

    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    console.streams.add(queue)
    with console.store.lock:
        console.store.listeners.append(listener)
    try:
        await resp.write(b": herald console\n\n")
        while True:
            try:
                summary = await asyncio.wait_for(queue.get(), 15)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if summary is None:
                break
            if matches(summary, **f):
                await resp.write(b"data: " + orjson.dumps(summary) + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        console.streams.discard(queue)
        with console.store.lock:
            console.store.listeners.remove(listener)
    return resp


# -- story -----------------------------------------------------------------------------------
async def story_page(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    event_id = request.match_info["event_id"]
    st = console.store.story(event_id)
    status = 200 if st is not None and st.row is not None else 404
    return _page(request, f"Event {event_id}", pages.story(event_id, st, "image", _session(request).operator),
                 "/", status=status)


async def api_story(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    st = console.store.story(request.match_info["event_id"])
    if st is None or st.row is None:
        return _error(request, 404, f"no event {request.match_info['event_id']!r} in the console's memory")
    return web.json_response({"summary": st.summary(), "event": st.row["event"], "decision": st.decision,
                              "messages": st.messages, "deliveries": st.deliveries, "dead_letters": st.dead_letters},
                             dumps=lambda v: orjson.dumps(v).decode())


# -- dead letters ----------------------------------------------------------------------------
def _dlq_overview(console: Console) -> dict[str, Any]:
    out: dict[str, Any] = {}
    now = time.time()
    for stage in console.dl.stages():
        reasons: Counter[str] = Counter()
        hours = [0] * 24
        records = []
        for rec in console.dl.read(stage):
            r = rec.record
            status = r.get("status")
            reasons[f"{r.get('error_type', '?')}" + (f" HTTP {status}" if status else "")] += 1
            age = int((now - float(r.get("last_attempt_at") or now)) // 3600)
            if 0 <= age < 24:
                hours[23 - age] += 1
            records.append({"id": rec.id, "event_id": r.get("event_id"), "error": r.get("error"),
                            "error_type": r.get("error_type"), "status": status, "attempts": r.get("attempts")})
        out[stage] = {"total": sum(reasons.values()), "reasons": dict(reasons), "hours": hours, "records": records}
    return out


async def dlq_page(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    overview = await console.blocking(_dlq_overview, console)
    operator = _session(request).operator
    csrf = pages.esc(_session(request).csrf)
    out = ['<table class="dlq-summary" id="dlq-summary"><thead><tr><th>action</th><th>reason</th><th>count</th>'
           '<th>last 24 h</th></tr></thead><tbody>']
    for stage, info in overview.items():
        for reason, n in sorted(info["reasons"].items()) or [("", 0)]:
            out.append(f'<tr data-action="{pages.esc(stage)}"><td>{pages.esc(stage)}</td><td>{pages.esc(reason)}</td>'
                       f'<td class="count">{n}</td><td>{pages.sparkline(info["hours"])}</td></tr>')
    out.append('</tbody></table>')
    for stage, info in overview.items():
        if not info["records"]:
            continue
        out.append(f'<section class="dlq-action" data-action="{pages.esc(stage)}"><h2>{pages.esc(stage)} '
                   f'<span class="hint">{info["total"]} dead letter(s)</span></h2>')
        form_open = (f'<form method="post" action="/dlq/redrive" class="redrive" data-action="{pages.esc(stage)}">'
                     f'<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="action" value="{pages.esc(stage)}">'
                     if operator and stage != "router" else "")
        out.append(form_open)
        out.append('<table class="dead"><thead><tr>' + ('<th><input type="checkbox" class="all" title="select all"></th>'
                                                          if form_open else '') +
                   '<th>id</th><th>event</th><th>error type</th><th>status</th><th>attempts</th><th>error</th></tr></thead><tbody>')
        for r in info["records"]:
            box = f'<td><input type="checkbox" name="id" value="{pages.esc(r["id"])}"></td>' if form_open else ""
            out.append(f'<tr data-id="{pages.esc(r["id"])}">{box}<td><a href="/dlq/show?{urlencode({"id": r["id"]})}">'
                       f'{pages.esc(r["id"])}</a></td><td><a href="/events/{pages.esc(r["event_id"])}">{pages.esc(r["event_id"])}</a></td>'
                       f'<td>{pages.esc(r["error_type"])}</td><td>{pages.esc(r["status"] or "")}</td>'
                       f'<td>{pages.esc(r["attempts"])}</td><td>{pages.esc(r["error"])}</td></tr>')
        out.append('</tbody></table>')
        if form_open:
            out.append('<div class="ops"><button type="submit" name="mode" value="selected" class="redrive-selected">Redrive selected</button> '
                       '<button type="submit" name="mode" value="all" class="redrive-all">Redrive all</button> '
                       '<label>Rego filter <input name="where" class="where" size="50" placeholder="input.status == 500"></label> '
                       '<button type="submit" name="mode" value="filter" class="redrive-filter">Preview and redrive the filter</button> '
                       '<button type="submit" name="mode" value="purge" class="purge danger">Purge</button></div></form>')
        out.append('</section>')
    if not operator:
        out.append('<p class="hint" id="viewer-note">Your role is viewer: redrive and purge need an operator.</p>')
    return _page(request, "Dead letters", "\n".join(out), "/dlq")


async def dlq_show(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    try:
        record = await console.blocking(console.dl.show, request.query.get("id", ""))
    except HeraldError as exc:
        return _error(request, 404, str(exc))
    return _page(request, f"Dead letter {record['id']}",
                 f'<pre class="json" id="dead-letter">{pages.esc(pages.pretty(record))}</pre>', "/dlq")


async def dlq_redrive_form(request: web.Request) -> web.Response:
    """Redrive or purge from the page: a first POST shows what would happen and asks to confirm."""
    _operator(request)
    console: Console = request.app[CTX]
    form = await request.post()
    action, mode, where = str(form.get("action") or ""), str(form.get("mode") or ""), str(form.get("where") or "")
    ids = [str(v) for v in form.getall("id", [])]
    csrf = pages.esc(_session(request).csrf)
    try:
        if mode == "purge":
            if form.get("confirm") == "yes":
                purged = await console.blocking(console.dl.purge, action)
                return _page(request, "Purged", f'<p id="result">Purged {purged.get(action, 0)} dead letter(s) of '
                                                f'{pages.esc(action)}.</p><p><a href="/dlq">Back</a></p>', "/dlq")
            chosen = await console.blocking(select, console.dl, action, None, "")
            verb = "Purge (delete for good)"
        else:
            if mode not in ("selected", "all", "filter"):
                return _error(request, 400, f"mode must be selected, all, filter or purge, got {mode!r}")
            if mode == "selected" and not ids:
                return _error(request, 400, "no dead letter selected")
            chosen = await console.blocking(select, console.dl, action, ids if mode == "selected" else None,
                                            where if mode == "filter" else "")
            if form.get("confirm") == "yes":
                counts = await console.blocking(redrive, console.dl, action, chosen)
                return _page(request, "Redriven", f'<p id="result">Redriven {counts["redriven"]}, skipped '
                             f'{counts["skipped"]}, missing {counts["missing"]} of {pages.esc(action)}.</p>'
                             '<p><a href="/dlq">Back</a></p>', "/dlq")
            verb = "Redrive"
    except HeraldError as exc:
        return _error(request, 400, str(exc))
    hidden = "".join(f'<input type="hidden" name="id" value="{pages.esc(i)}">' for i in chosen)
    body = (f'<p id="preview">{pages.esc(verb)} <b id="preview-count">{len(chosen) if mode != "purge" else len(chosen)}</b> '
            f'dead letter(s) of <b>{pages.esc(action)}</b>?</p>'
            f'<form method="post" action="/dlq/redrive" id="confirm-form"><input type="hidden" name="csrf" value="{csrf}">'
            f'<input type="hidden" name="action" value="{pages.esc(action)}">'
            f'<input type="hidden" name="mode" value="{"purge" if mode == "purge" else "selected"}">{hidden}'
            '<input type="hidden" name="confirm" value="yes">'
            f'<button type="submit" id="confirm">{pages.esc(verb)}</button> <a href="/dlq">Cancel</a></form>')
    return _page(request, "Confirm", body, "/dlq")


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


async def api_dlq(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    action = request.query.get("action")
    try:
        if action:
            return web.json_response(await console.blocking(dead_letter_list, console.dl, action))
        return web.json_response(await console.blocking(console.dl.summary))
    except HeraldError as exc:
        return _error(request, 400, str(exc))


async def api_dlq_op(request: web.Request) -> web.Response:
    """POST /api/dlq/{preview,redrive,purge} with {"action", "ids"?, "where"?} (operator)."""
    _operator(request)
    console: Console = request.app[CTX]
    op = request.match_info["op"]
    body = await _json_body(request)
    action = str(body.get("action") or "")
    ids = body.get("ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        return _error(request, 400, f"ids must be a list of dead-letter ids, got {ids!r}")
    try:
        if op == "purge":
            return web.json_response(await console.blocking(console.dl.purge, action))
        chosen = await console.blocking(select, console.dl, action, ids, str(body.get("where") or ""))
        if op == "preview":
            return web.json_response({"action": action, "count": len(chosen), "ids": chosen})
        return web.json_response(await console.blocking(redrive, console.dl, action, chosen))
    except HeraldError as exc:
        return _error(request, 400, str(exc))


# -- try a route -----------------------------------------------------------------------------
def _try_body(console: Console, event: str, origin: str, route: str, result: dict[str, Any] | None,
              error: str, csrf: str) -> str:
    routes = [("", "(none: /)")] + [(r, r) for r in console.config.routes]
    out = [f'<form method="post" action="/try" id="try-form"><input type="hidden" name="csrf" value="{pages.esc(csrf)}">'
           f'<label class="block">Event (JSON)<textarea name="event" id="event" rows="12">{pages.esc(event)}</textarea></label>'
           f'<label>Posted as {pages.select("origin", [(o, o) for o in ORIGINS], origin)}</label> '
           f'<label>Path route {pages.select("route", routes, route)}</label> '
           '<button type="submit" id="try">Try</button> <span class="hint">Nothing is sent: this runs the routes of '
           'the running config in the console.</span></form>']
    if error:
        out.append(f'<p class="error" id="error">{pages.esc(error)}</p>')
    if result is not None:
        out.append(f'<p class="hint">{pages.esc(result["origin"])}</p>')
        out.append('<table class="routes" id="try-routes"><thead><tr><th>route</th><th>verdict</th><th>why</th>'
                   '<th>actions</th><th>guard</th></tr></thead><tbody>')
        for name, v in result["routes"].items():
            out.append(f'<tr data-route="{pages.esc(name)}"><td>{pages.esc(name)}</td>'
                       f'<td class="verdict">{"matched" if v["matched"] else "not matched"}</td>'
                       f'<td>{pages.esc(v["reason"])}</td><td>{pages.esc(", ".join(v["actions"]))}</td>'
                       f'<td>{pages.esc(v.get("guard", ""))}</td></tr>')
        out.append('</tbody></table><h2>What each action would get</h2>')
        for d in result["deliveries"]:
            out.append(f'<details class="content" data-action="{pages.esc(d["action"])}" open><summary>{pages.esc(d["action"])} '
                       f'(route {pages.esc(d["route"])})</summary><pre class="json">{pages.esc(pages.pretty(d["content"]))}</pre></details>')
        if not result["deliveries"]:
            out.append('<p class="hint" id="no-delivery">No action would get this event.</p>')
        for f in result["failures"]:
            out.append(f'<p class="error">route {pages.esc(f.get("route"))}: {pages.esc(f.get("error"))}</p>')
    return "\n".join(out)


async def try_page(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    if request.method == "GET":
        return _page(request, "Try a route", _try_body(console, "", "bearer", "", None, "", _session(request).csrf), "/try")
    form = await request.post()
    event, origin, route = str(form.get("event") or ""), str(form.get("origin") or "bearer"), str(form.get("route") or "")
    result, error = None, ""
    try:
        result = await console.blocking(try_route, console.config, event.encode(), origin, route or None)
    except HeraldError as exc:
        error = str(exc)
    return _page(request, "Try a route", _try_body(console, event, origin, route, result, error, _session(request).csrf),
                 "/try", status=400 if error else 200)


async def api_try(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    origin = request.query.get("origin", "bearer")
    try:
        result = await console.blocking(try_route, console.config, await request.read(), origin,
                                        request.query.get("route") or None)
    except HeraldError as exc:
        return _error(request, 400, str(exc))
    return web.json_response(result)


# -- config, timeline, stats -----------------------------------------------------------------
_SECRET_KEY = re.compile(r"pass|token|secret|key|auth|credential|webhook|signature", re.IGNORECASE)


def mask(value: Any, key: str = "") -> Any:
    """The config with secrets masked: Secret values, keys that name credentials, URL paths and queries."""
    if isinstance(value, dict):
        return {k: mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, key) for v in value]
    if type(value).__name__ == "Secret" or (_SECRET_KEY.search(key) and value not in (None, "", [], False)
                                            and not isinstance(value, (bool, int, float))):
        return "••••••"
    if isinstance(value, str) and re.match(r"^[a-z][a-z0-9+.-]*://", value):
        parts = urlsplit(value)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}" + ("/••••" if parts.path.strip("/") or parts.query else "")
    return value


def _packages(directory: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(directory.rglob("*.rego")):
        m = re.search(r"^package\s+([\w.]+)", path.read_text(errors="replace"), re.MULTILINE)
        out.append((m.group(1) if m else "?", str(path.relative_to(directory))))
    return out


async def config_page(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    c = console.config
    out = [f'<p>Config <code>{pages.esc(c.path)}</code> · hash <code id="config-hash">{pages.esc(console.hash)}</code></p>']
    out.append('<h2>Warnings</h2>' + ('<ul id="warnings">' + "".join(f"<li>{pages.esc(w)}</li>" for w in c.warnings) + "</ul>"
                                      if c.warnings else '<p class="hint" id="warnings">None.</p>'))
    out.append('<h2>Routes</h2>' + pages._kv_table(
        [(n, r.input or "", r.template, ", ".join(r.actions)) for n, r in c.routes.items()],
        ("route", "input", "template", "actions"), "cfg-routes"))
    out.append('<h2>Actions (enabled)</h2>')
    for name, a in c.actions.items():
        dumped = mask(a.model_dump(by_alias=True, exclude_none=True))
        out.append(f'<details class="cfg-action"><summary>{pages.esc(name)} ({pages.esc(a.type)})</summary>'
                   f'<pre class="json">{pages.esc(pages.pretty(dumped))}</pre></details>')
    out.append('<h2>Templates</h2>' + pages._kv_table(
        [(n, getattr(t, "rego_package", "") or "", getattr(t, "url", "") and mask(getattr(t, "url", "")) or "")
         for n, t in c.templates.items()], ("template", "rego package", "url"), "cfg-templates"))
    builtin = _packages(BUILTIN_TEMPLATE_DIR)
    out.append(f'<h2>Template packages</h2><h3>Built-in ({len(builtin)})</h3>'
               + pages._kv_table(builtin, ("package", "file"), "pkg-builtin"))
    for d in c.herald.template_dirs:
        path = Path(d)
        user = _packages(path) if path.is_dir() else []
        out.append(f'<h3>User: <code>{pages.esc(d)}</code> ({len(user)})</h3>' + pages._kv_table(user, ("package", "file"), "pkg-user"))
    herald = mask(c.herald.model_dump(by_alias=True, exclude={"console"}))
    out.append(f'<h2>herald: settings</h2><details><summary>show</summary><pre class="json" id="herald-settings">'
               f'{pages.esc(pages.pretty(herald))}</pre></details>')
    return _page(request, "Config", "\n".join(out), "/config")


def _timeline_html(console: Console, since: str, by: str, entity: str) -> bytes:
    since_ns = parse_when(since, "since")
    q = TimelineQuery(console.kafka, console.topics, since_ns, None, None, by or None, with_decisions=True)
    rows = timeline_rows(q, Stats())
    if entity:
        rows = (r for r in rows if r["entity"] == entity)
    out = io.BytesIO()
    write_html(rows, out, q, Stats())
    return out.getvalue()


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def report_csp(document: str) -> str:
    """A CSP for the timeline report that allows exactly its inline script, style block and style
    attributes (by hash), in a sandbox without the console's origin (no cookies, no API)."""
    scripts = [_hash(m) for m in re.findall(r"<script>(.*?)</script>", document, re.DOTALL)] or ["'none'"]
    styles = [_hash(m) for m in re.findall(r"<style>(.*?)</style>", document, re.DOTALL)]
    attrs = [_hash(html.unescape(m)) for m in re.findall(r' style="([^"]*)"', document)]
    style_src = " ".join(styles + attrs + (["'unsafe-hashes'"] if attrs else [])) or "'none'"
    return (f"default-src 'none'; script-src {' '.join(scripts)}; style-src {style_src}; img-src data:; "
            "sandbox allow-scripts; frame-ancestors 'self'")


BYS = ("host", "image", "pod", "container", "namespace")


def _timeline_args(request: web.Request) -> tuple[str, str, str]:
    since = request.query.get("since", "24h")
    by = request.query.get("by", "host")
    if by not in BYS:
        raise web.HTTPBadRequest(text=f"by must be one of {', '.join(BYS)}, got {by!r}")
    try:
        parse_when(since, "since")
    except HeraldError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return since, by, request.query.get("entity", "")


async def timeline_page(request: web.Request) -> web.Response:
    since, by, entity = _timeline_args(request)
    windows = [("1h", "last hour"), ("6h", "last 6 hours"), ("24h", "last 24 hours"), ("7d", "last 7 days")]
    if since not in dict(windows):
        windows.append((since, since))
    form = (f'<form method="get" action="/timeline" class="filters" id="timeline-form">'
            f'<label>Window {pages.select("since", windows, since)}</label> '
            f'<label>Lanes by {pages.select("by", [(b, b) for b in BYS], by)}</label> '
            f'<label>Entity <input name="entity" value="{pages.esc(entity)}" placeholder="all"></label> '
            '<button type="submit">Show</button></form>')
    src = "/timeline/report?" + urlencode({"since": since, "by": by, "entity": entity})
    body = form + f'<iframe id="report" src="{pages.esc(src)}" title="timeline report"></iframe>'
    return _page(request, "Timeline", body, "/timeline")


async def timeline_report(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    since, by, entity = _timeline_args(request)
    document = (await console.blocking(_timeline_html, console, since, by, entity)).decode()
    resp = web.Response(text=document, content_type="text/html")
    resp.headers["Content-Security-Policy"] = report_csp(document)
    resp.headers["X-Frame-Options"] = "SAMEORIGIN"
    return resp


async def stats_page(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    r = await console.blocking(console.store.rates)
    rows = [f'<tr data-series="intake"><td>events in</td><td>all</td><td class="total">{sum(r["intake"])}</td>'
            f'<td>{pages.sparkline(r["intake"], 240, 28)}</td></tr>']
    for action, outcomes in sorted(r["deliveries"].items()):
        for outcome, series in sorted(outcomes.items()):
            rows.append(f'<tr data-series="{pages.esc(action)}/{pages.esc(outcome)}"><td>{pages.esc(action)}</td>'
                        f'<td>{pages.esc(outcome)}</td><td class="total">{sum(series)}</td>'
                        f'<td>{pages.sparkline(series, 240, 28)}</td></tr>')
    body = ('<p class="hint">Per minute over the last hour: events in from the events topic\'s offsets, delivery '
            'attempts from the deliveries topic (read from its beginning).</p><table class="stats" id="stats"><thead><tr><th>series</th>'
            '<th>outcome</th><th>last hour</th><th>per minute</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return _page(request, "Stats", body, "/stats")


async def api_stats(request: web.Request) -> web.Response:
    console: Console = request.app[CTX]
    return web.json_response(await console.blocking(console.store.rates))


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ("console.js", "console.css"):
        raise web.HTTPNotFound()
    resp = web.FileResponse(STATIC / name)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def make_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[headers_mw, access_mw], client_max_size=console.config.herald.body_limit)
    app[CTX] = console
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/", live_page)
    app.router.add_get("/events/{event_id}", story_page)
    app.router.add_get("/dlq", dlq_page)
    app.router.add_get("/dlq/show", dlq_show)
    app.router.add_post("/dlq/redrive", dlq_redrive_form)
    app.router.add_get("/try", try_page)
    app.router.add_post("/try", try_page)
    app.router.add_get("/config", config_page)
    app.router.add_get("/timeline", timeline_page)
    app.router.add_get("/timeline/report", timeline_report)
    app.router.add_get("/stats", stats_page)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/api/events/{event_id}", api_story)
    app.router.add_get("/api/stream", api_stream)
    app.router.add_get("/api/dlq", api_dlq)
    app.router.add_post("/api/dlq/{op:preview|redrive|purge}", api_dlq_op)
    app.router.add_post("/api/try", api_try)
    app.router.add_get("/api/stats", api_stats)

    async def on_shutdown(app: web.Application) -> None:
        for queue in list(console.streams):
            queue.put_nowait(None)

    async def on_cleanup(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, console.store.stop)

    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key or None)
    return ctx


def run(config: Config) -> int:
    """``herald console``: serve until SIGTERM/SIGINT."""
    settings = config.herald.console
    problem = exposure_problem(settings)
    if problem:
        raise ConfigError(problem)
    host, _, port = settings.listen.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"expected host:port, got {settings.listen!r}", "herald.console.listen", settings.listen)
    console = Console(config)
    console.store.start()
    ctx = tls_context(settings.cert_file, settings.key_file)
    scheme = "https" if ctx else "http"
    users = ", ".join(f"{u.name} ({u.role})" for u in settings.users) or "none: local operator access"
    log.info("herald console listening on %s://%s:%s (users: %s)", scheme, host or "0.0.0.0", port, users)
    web.run_app(make_app(console), host=host.strip("[]") or None, port=int(port), ssl_context=ctx,
                print=None, access_log=None, shutdown_timeout=5)
    return 0
