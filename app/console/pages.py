"""Server-rendered HTML of the console. Every value from an event, a record or the config goes
through ``esc`` (or is a number we computed); the one script is ``/static/console.js``."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from app.console.auth import Session

NAV = (("/", "Live"), ("/dlq", "Dead letters"), ("/try", "Try a route"), ("/timeline", "Timeline"),
       ("/stats", "Stats"), ("/config", "Config"))
OUTCOMES = ("delivered", "failed", "pending", "dead-lettered", "duplicate-suppressed", "no route", "routing")
WINDOWS = (("", "any time"), ("300", "5 min"), ("3600", "1 hour"), ("86400", "24 hours"))


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def layout(title: str, body: str, session: Session | None, page: str, csrf: str = "",
           data: Mapping[str, str] | None = None) -> str:
    nav = "".join(f'<a href="{href}"{" class=on" if href == page else ""}>{esc(text)}</a>' for href, text in NAV)
    who = ""
    if session is not None:
        who = (f'<span class="who">{esc(session.user)} <b class="role">{esc(session.role)}</b></span>'
               f'<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" '
               f'value="{esc(session.csrf)}"><button type="submit">Log out</button></form>')
    attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in (data or {}).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{esc(csrf)}">
<title>{esc(title)} · Herald console</title><link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script></head>
<body data-page="{esc(page)}"{attrs}>
<header><b class="brand">Herald</b><nav>{nav}</nav><div class="session">{who}</div></header>
<main><h1>{esc(title)}</h1>
{body}
</main></body></html>
"""


def select(name: str, options: Iterable[tuple[str, str]], chosen: str) -> str:
    opts = "".join(f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(t)}</option>'
                   for v, t in options)
    return f'<select name="{esc(name)}" id="f-{esc(name)}">{opts}</select>'


def event_row(s: Mapping[str, Any]) -> str:
    outcomes = "".join(f'<span class="o o-{esc(o.replace(" ", "-"))}" data-action="{esc(a)}">{esc(a)}: {esc(o)}</span>'
                       for a, o in sorted(s["outcomes"].items()))
    routes = "".join(f'<span class="r">{esc(r)}</span>' for r in s["routes"])
    return (f'<tr data-id="{esc(s["event_id"])}" class="ev">'
            f'<td class="time">{esc(s["time"])}</td><td class="source">{esc(s["source"])}</td>'
            f'<td class="entity">{esc(s["entity"])}</td><td class="sev sev-{esc(s["severity"])}">{esc(s["severity"])}</td>'
            f'<td class="title"><a href="/events/{quote(str(s["event_id"]), safe="")}">{esc(s["title"] or s["event_id"])}</a></td>'
            f'<td class="routes">{routes}</td><td class="outcomes">{outcomes}</td>'
            f'<td class="outcome o-{esc(s["outcome"].replace(" ", "-"))}">{esc(s["outcome"])}</td></tr>')


def live(rows: list[dict[str, Any]], routes: list[str], actions: list[str], f: Mapping[str, str]) -> str:
    form = (f'<form method="get" action="/" class="filters" id="filters">'
            f'<label>Route {select("route", [("", "any")] + [(r, r) for r in routes], f.get("route", ""))}</label>'
            f'<label>Action {select("action", [("", "any")] + [(a, a) for a in actions], f.get("action", ""))}</label>'
            f'<label>Outcome {select("outcome", [("", "any")] + [(o, o) for o in OUTCOMES], f.get("outcome", ""))}</label>'
            f'<label>Window {select("window", WINDOWS, f.get("window", ""))}</label>'
            f'<button type="submit">Filter</button> <span id="live-status" class="hint">live</span></form>')
    table = ('<table class="events"><thead><tr><th>time (Kafka)</th><th>source</th><th>entity</th><th>severity</th>'
             '<th>event</th><th>routes matched</th><th>actions</th><th>outcome</th></tr></thead>'
             f'<tbody id="events">{"".join(event_row(r) for r in rows)}</tbody></table>')
    empty = '' if rows else '<p id="empty" class="hint">No events yet: new ones appear here as they arrive.</p>'
    return form + table + empty


def _kv_table(rows: Iterable[Iterable[Any]], head: Iterable[str], cls: str = "") -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{esc('' if c is None else c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>'


def story(event_id: str, st: Any, timeline_by: str, operator: bool) -> str:
    if st is None or st.row is None:
        return (f'<p class="hint">Event <code>{esc(event_id)}</code> is not among the events the console keeps '
                'in memory (herald.console.recent); <code>herald timeline --with-decisions</code> reads it '
                'from the topics.</p>')
    row = st.row
    s = st.summary()
    meta = [("event id", event_id), ("Kafka time", row["kafka_time"]), ("event time", row["event_time"]),
            ("source", row["source"]), ("entity", row["entity"]), ("severity", row["severity"]),
            ("route path", row.get("route") or ""), ("topic", f'{row["topic"]}[{row["partition"]}]@{row["offset"]}')]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in meta)
    out = [f'<dl class="meta" id="story-meta">{dl}</dl>']
    if row["entity"]:
        out.append(f'<p><a id="entity-timeline" href="/timeline?{urlencode({"by": timeline_by, "entity": row["entity"], "since": "24h"})}">'
                   f'Timeline of {esc(row["entity"])}</a></p>')
    out.append(f'<details id="raw" open><summary>Raw event</summary><pre class="json">{esc(pretty(row["event"]))}</pre></details>')
    decision = st.decision
    out.append('<h2>Routing decision</h2>')
    if decision is None:
        out.append('<p class="hint" id="no-decision">No decision recorded yet.</p>')
    else:
        guarded = {g.get("route"): g for g in decision.get("guarded") or []}
        rows = []
        for name, v in (decision.get("routes") or {}).items():
            g = guarded.get(name)
            rows.append((name, "matched" if v.get("matched") else "not matched", v.get("reason", ""),
                         v.get("template", ""), f'not fired: {g.get("reason")}' if g else ""))
        out.append(_kv_table(rows, ("route", "verdict", "why", "template", "guard"), "routes"))
        out.append(f'<p class="hint">config {esc(decision.get("config_hash", ""))} · origin '
                   f'{esc(decision.get("origin", ""))} {esc(decision.get("authenticated", ""))}'
                   f'{" · decisions: " + str(len(st.decisions)) if len(st.decisions) > 1 else ""}</p>')
        for f in decision.get("failures") or []:
            out.append(f'<p class="error">route {esc(f.get("route"))}: {esc(f.get("error_type"))}: {esc(f.get("error"))}</p>')
    out.append('<h2>What each action received</h2>')
    if not st.messages:
        out.append('<p class="hint">No action message.</p>')
    for m in st.messages:
        redrive = f' · redrive {int(m.get("redrive") or 0)}' if m.get("redrive") else ""
        out.append(f'<details class="content" data-action="{esc(m.get("action"))}"><summary>{esc(m.get("action"))} '
                   f'(route {esc(m.get("route"))}{redrive})</summary><pre class="json">{esc(pretty(m.get("content")))}</pre></details>')
    out.append('<h2>Delivery attempts</h2>')
    out.append(_kv_table(
        [(d.get("action"), d.get("attempt"), d.get("outcome"), d.get("status"), d.get("latency_ms"),
          d.get("error"), d.get("redrive") or 0,
          time.strftime("%H:%M:%S", time.gmtime(float(d.get("time") or 0)))) for d in st.deliveries],
        ("action", "attempt", "outcome", "status", "latency ms", "error", "redrive", "time (UTC)"), "deliveries"))
    out.append('<h2>Dead letters</h2>')
    if st.dead_letters:
        out.append('<table class="dead"><thead><tr><th>id</th><th>stage</th><th>error type</th><th>status</th>'
                   '<th>attempts</th><th>error</th></tr></thead><tbody>')
        for d in st.dead_letters:
            out.append(f'<tr><td><a href="/dlq/show?{urlencode({"id": d["id"]})}">{esc(d["id"])}</a></td>'
                       f'<td>{esc(d.get("stage"))}</td><td>{esc(d.get("error_type"))}</td><td>{esc(d.get("status") or "")}</td>'
                       f'<td>{esc(d.get("attempts"))}</td><td>{esc(d.get("error"))}</td></tr>')
        out.append('</tbody></table>')
    else:
        out.append('<p class="hint">None.</p>')
    out.append(f'<p class="hint">Outcome: <b id="story-outcome">{esc(s["outcome"])}</b></p>')
    return "\n".join(out)


def sparkline(values: list[int], width: int = 120, height: int = 20) -> str:
    top = max(values) if values and max(values) > 0 else 1
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - (v / top) * (height - 2) - 1:.1f}" for i, v in enumerate(values))
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/></svg>')
