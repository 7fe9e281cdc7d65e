"""Routing as a plain function: raw event -> action messages, dead letters and a decision record.

Postee semantics (§3.1–3.3): every matching route fires; a route's actions get the content of
its template, rendered once per event and route; ``/tenant/{route}`` events run only that route.
``postee: {AquaServer: ...}`` is injected into the event before templating.

The guard on system-changing actions (issue 13): a route with an action that can change systems
(``exec``, ``docker``, ``kubernetes``, and ``http`` with a method other than GET or HEAD) fires
only for an event that is *trusted*: posted to the bridge with credentials (the bridge set
``herald-authenticated``), or produced to Kafka directly. The bridge marks every event it
writes with ``herald-source`` (the client address), so an event with ``herald-source`` and
without ``herald-authenticated`` came through the bridge unauthenticated; an event without
``herald-source`` came from another producer, which Kafka's own ACLs, TLS and SASL admit. A
guarded route that matches such an event does not fire: the decision record's ``guarded``
lists it with its guarded actions and the reason. ``allow-unauthenticated-actions: true`` on a
route turns its guard off (warned at every start).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.config.loader import Config, RouteConfig
from app.content import Content
from app.errors import EventError, HeraldError, PolicyError, TemplateError
from app.messages import ActionMessage
from app.routing.policy.engine import PolicyEngine, make_engine, opa_options
from app.routing.policy.filters import ROUTES_PACKAGE, RouteFilters, Verdict
from app.routing.policy.templates import (
    BUILTIN_TEMPLATE_DIR,
    ModuleTemplate,
    PackageTemplate,
    Template,
    TemplateLibrary,
    fetch_template,
)
from app.routing.state import dedup_key

log = logging.getLogger("herald.router")

# Kafka headers the bridge sets; producers publishing directly may set any of them or none.
H_EVENT_ID = "herald-event-id"
H_RECEIVED_AT = "herald-received-at"
H_ROUTE = "herald-route"
H_SOURCE = "herald-source"
H_USER_AGENT = "herald-user-agent"
H_AUTHENTICATED = "herald-authenticated"  # bearer | hmac | mtls, set by the bridge on authenticated events

ORIGIN_BRIDGE = "bridge"  # written by the bridge (it sets herald-source on every event)
ORIGIN_KAFKA = "kafka"  # produced to the events topic by another producer

# actions that can change systems, by type; http only with a method that is not read-only
GUARDED_TYPES = frozenset({"exec", "docker", "kubernetes"})
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class EventMeta:
    event_id: str = ""
    received_at: float = 0.0
    route: str | None = None  # /tenant/{route}
    source: str = ""
    origin: str = ORIGIN_KAFKA  # ORIGIN_BRIDGE when the event carries herald-source
    authenticated: str = ""  # how the bridge authenticated it: bearer | hmac | mtls; "" when it did not

    @property
    def trusted(self) -> bool:
        """Whether routes with system-changing actions may fire for this event."""
        return self.origin == ORIGIN_KAFKA or bool(self.authenticated)

    def describe(self) -> str:
        if self.origin == ORIGIN_KAFKA:
            return "produced to Kafka directly"
        return f"posted to the bridge ({self.authenticated})" if self.authenticated else \
            "posted to the bridge without authentication"

    @classmethod
    def from_headers(cls, headers: Any, fallback_id: str, timestamp: float) -> EventMeta:
        h: dict[str, str] = {}
        for key, value in (headers.items() if isinstance(headers, dict) else headers or []):
            if value is not None:
                h[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        received = h.get(H_RECEIVED_AT, "")
        return cls(
            event_id=h.get(H_EVENT_ID) or fallback_id,
            received_at=float(received) / 1000 if received.isdigit() else timestamp,
            route=h.get(H_ROUTE) or None,
            source=h.get(H_SOURCE, ""),
            origin=ORIGIN_BRIDGE if H_SOURCE in h else ORIGIN_KAFKA,
            authenticated=h.get(H_AUTHENTICATED, ""),
        )


def guarded_actions(config: Config, route: RouteConfig) -> dict[str, str]:
    """The route's enabled actions that can change systems (name -> what they are); empty when the
    route opted out with ``allow-unauthenticated-actions: true``."""
    if route.allow_unauthenticated_actions:
        return {}
    return system_changing(config, config.route_actions(route))


def system_changing(config: Config, actions: list[str]) -> dict[str, str]:
    """Of ``actions``, those that can change systems: name -> ``exec``, ``http POST``, ..."""
    out = {}
    for name in actions:
        action = config.actions[name]
        kind = action.type.strip().lower()
        method = str(getattr(action, "method", "")).upper()
        if kind in GUARDED_TYPES:
            out[name] = kind
        elif kind == "http" and method not in READ_ONLY_METHODS:
            out[name] = f"http {method}"
    return out


def _listed(actions: dict[str, str]) -> str:
    return ", ".join(f"{name} ({kind})" for name, kind in actions.items())


def guard_warnings(config: Config) -> list[str]:
    """Start-up warnings, one per route: a guarded route when the bridge has no authentication
    for it (it then fires only for events produced to Kafka directly), and every route that
    turned its guard off."""
    out = []
    auth = config.herald.auth
    for name, route in config.routes.items():
        changing = system_changing(config, config.route_actions(route))
        if not changing:
            continue
        if route.allow_unauthenticated_actions:
            out.append(f"route {name}: allow-unauthenticated-actions is true: its actions {_listed(changing)} "
                       "can change systems and run for UNAUTHENTICATED events posted to the bridge")
            continue
        own = auth.routes.get(name)
        if auth.configured() or (own is not None and (own.bearer_tokens or own.hmac_keys)):
            continue
        out.append(f"route {name}: its actions {_listed(changing)} can change systems, and herald.auth "
                   "configures no authentication: the route fires only for events produced to Kafka "
                   "directly, never for events posted to the bridge")
    return out


def new_event_id() -> str:
    return uuid.uuid4().hex


def owners_of(event: dict[str, Any]) -> str:
    """``application_scope_owners`` joined with ';' (non-string entries ignored; Postee panicked)."""
    owners = event.get("application_scope_owners")
    if not isinstance(owners, list):
        return ""
    return ";".join(o for o in owners if isinstance(o, str))


@dataclass
class RouteFailure:
    route: str
    error: str
    error_type: str


@dataclass
class GuardedRoute:
    """A matching route that did not fire: its actions can change systems and the event is not trusted."""

    route: str
    actions: list[str]
    reason: str


@dataclass
class RoutingResult:
    event_id: str
    event: dict[str, Any] | None
    messages: list[ActionMessage] = field(default_factory=list)
    failures: list[RouteFailure] = field(default_factory=list)  # become router dead letters
    guarded: list[GuardedRoute] = field(default_factory=list)  # matched, not fired (the guard)
    origin: str = ORIGIN_KAFKA
    authenticated: str = ""
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    rendered: dict[str, Content] = field(default_factory=dict)  # route -> content
    stateful: list[dict[str, Any]] = field(default_factory=list)  # for the dedup/aggregation stage

    def decision(self, config_hash: str, templates: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "time": time.time(),
            "config_hash": config_hash,
            "routes": {
                name: {"matched": v.matched, "reason": v.reason, "template": (templates or {}).get(name, "")}
                for name, v in self.verdicts.items()
            },
            "actions": [{"route": m.route, "action": m.action} for m in self.messages],
            "stateful": [{"route": s["route"], "dedup_key": s["dedup_key"]} for s in self.stateful],
            "failures": [f.__dict__ for f in self.failures],
            "origin": self.origin,
            "authenticated": self.authenticated,
            "guarded": [g.__dict__ for g in self.guarded],
        }


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests objects and arrays more than ``limit`` levels (iteratively)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class Router:
    """Compiled once at start (policies are never compiled per event)."""

    def __init__(self, config: Config, engine_factory: Callable[[], PolicyEngine] | None = None) -> None:
        self.config = config
        settings = config.herald
        factory = engine_factory or (lambda: make_engine(settings.engine, settings.opa_url, **opa_options(settings)))
        dirs = [BUILTIN_TEMPLATE_DIR] + [Path(d) for d in settings.template_dirs]
        self.library = TemplateLibrary(dirs, factory)
        # The embedded engine holds the route filters next to the template library when no library
        # package is in the filters' namespace: one set_input_json per event serves both.
        self.shared_engine: Any = self.library.engine if self._can_share(self.library) else None
        filter_factory = factory if self.shared_engine is None else (lambda: self.shared_engine)
        self.filters = RouteFilters(list(config.routes.values()), settings.filters_path, config.rules, filter_factory)
        self.aqua_server = config.aqua_server_url
        self.postee = {"AquaServer": self.aqua_server}
        self.templates: dict[str, Template] = {}
        self.template_errors: dict[str, str] = {}
        used = {r.template for r in config.routes.values()}
        for name, tc in config.templates.items():
            if name not in used:
                continue
            try:
                self.templates[name] = self._build_template(name, tc, factory)
            except HeraldError as exc:
                self.template_errors[name] = str(exc)
                log.error("template %s is unavailable: %s", name, exc)
        # routes whose actions can change systems: they fire only for trusted events
        self.guarded = {name: acts for name, r in config.routes.items() if (acts := guarded_actions(config, r))}
        self.aggregating = {name for name, r in config.routes.items() if self._can_aggregate(r)}
        self.stateful_routes = {
            name: r for name, r in config.routes.items() if r.plugins.unique_message_props or name in self.aggregating
        }
        self.config_hash = hashlib.sha256(
            orjson.dumps({"path": config.path, "routes": sorted(config.routes)}, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()[:12]

    @staticmethod
    def _can_share(library: TemplateLibrary) -> bool:
        engine = library.engine
        root, parent = ROUTES_PACKAGE, ROUTES_PACKAGE.rsplit(".", 1)[0]
        return (getattr(engine, "kind", "") == "embedded" and hasattr(engine, "eval_path_with")
                and not library.has_package(root) and parent not in library.files)

    def _can_aggregate(self, route: Any) -> bool:
        """Aggregation applies when configured and the route's template can aggregate."""
        if not (route.plugins.aggregate_message_number or route.aggregate_timeout):
            return False
        template = self.templates.get(route.template)
        if template is None or not template.supports_aggregation():
            log.warning("route %s: aggregation is configured but template %s cannot aggregate; "
                        "events are sent one by one", route.name, route.template)
            return False
        return True

    def aggregates(self, route: Any) -> bool:
        """Whether ``route`` aggregates (decided once at start)."""
        return route.name in self.aggregating

    def _build_template(self, name: str, tc: Any, factory: Callable[[], PolicyEngine]) -> Template:
        # Postee's precedence: the last successful of legacy -> rego-package -> url -> body wins
        if tc.body:
            return ModuleTemplate(name, tc.body, f"template {name} (body)", self.library, factory)
        if tc.url:
            return ModuleTemplate(name, fetch_template(tc.url), tc.url.rsplit("/", 1)[-1], self.library, factory)
        if tc.rego_package:
            return PackageTemplate(name, tc.rego_package, self.library)
        from app.routing.legacy import LegacyTemplate

        return LegacyTemplate(name, tc.legacy_scan_renderer, self.aqua_server)

    @property
    def errors(self) -> list[str]:
        return self.library.errors + [f"template {n}: {e}" for n, e in self.template_errors.items()]

    def parse(self, raw: bytes) -> dict[str, Any]:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EventError(f"event is not valid JSON: {exc}") from None
        if not isinstance(event, dict):
            raise EventError(f"event must be a JSON object, got {type(event).__name__}")
        limit = self.config.herald.max_json_depth
        if raw.count(b"[") + raw.count(b"{") > limit and _deeper_than(event, limit):
            # the bridge refuses these; a producer writing to Kafka directly is stopped here, before
            # the Rego engine and the template encoders fail on the nesting (RuntimeError, RecursionError)
            raise EventError(f"event is nested deeper than {limit} levels (herald.max-json-depth)")
        return event

    def render_input(self, event: dict[str, Any]) -> str:
        """The template input: the event with ``postee.AquaServer`` injected (Postee §3.3 step 4)."""
        return orjson.dumps({**event, "postee": {"AquaServer": self.aqua_server}}).decode()

    def route(self, raw: bytes, meta: EventMeta) -> RoutingResult:
        """Route one event. Raises ``EventError`` for an event that is not a JSON object."""
        event = self.parse(raw)
        result = RoutingResult(meta.event_id, event, origin=meta.origin, authenticated=meta.authenticated)
        only = meta.route
        if only is not None and only not in self.config.routes:
            result.failures.append(RouteFailure(only, f"unknown route {only!r}", "EventError"))
            return result
        text = raw.decode("utf-8", "replace")
        shared = self.shared_engine
        input_set = False  # the whole event is set on the shared engine once, when first needed
        if shared is not None:
            if self.filters.needs_input(only):
                projected = self.filters.input_of(event)  # just the keys the filters read
                shared.set_input_json(text if projected is None else projected)
                input_set = projected is None
            result.verdicts = self.filters.evaluate_loaded(only=only)
        else:
            result.verdicts = self.filters.evaluate(text, only=only)
        render_input: str | None = None
        owners = owners_of(event)
        # Actions see the event as templates do, with postee.AquaServer (the Slack/Teams "too long"
        # message links to it); without aqua-server there is nothing to add and no copy is made.
        message_event = {**event, "postee": self.postee} if self.aqua_server else event
        for route_name, verdict in result.verdicts.items():
            route = self.config.routes[route_name]
            actions = self.config.route_actions(route)
            if not verdict.matched or not actions:
                continue
            guarded = self.guarded.get(route_name)
            if guarded and not meta.trusted:
                result.guarded.append(GuardedRoute(route_name, list(guarded), (
                    f"not fired: actions {_listed(guarded)} can change systems and the event was "
                    f"{meta.describe()}; send it with credentials (herald.auth) or produce it to Kafka")))
                continue
            template = self.templates.get(route.template)
            if template is None:
                reason = self.template_errors.get(route.template, "template is not defined")
                result.failures.append(RouteFailure(route_name, f"template {route.template}: {reason}", "TemplateError"))
                continue
            try:
                if shared is not None and isinstance(template, PackageTemplate) and template.library is self.library:
                    rendered = template.render_event(event, self.postee) if template.native else None
                    if rendered is None:
                        if not input_set:
                            shared.set_input_json(text)
                            input_set = True
                        rendered = template.render_loaded(self.postee)
                    content = rendered
                else:
                    if render_input is None:
                        render_input = self.render_input(event)
                    content = template.render(render_input)
            except (TemplateError, PolicyError) as exc:
                result.failures.append(RouteFailure(route_name, str(exc), type(exc).__name__))
                continue
            content.owners = owners
            result.rendered[route_name] = content
            if route_name in self.stateful_routes:
                props = route.plugins.unique_message_props
                result.stateful.append({
                    "kind": "event", "route": route_name, "event_id": meta.event_id, "content": content.to_dict(),
                    "event": event, "received_at": meta.received_at,
                    "dedup_key": dedup_key(event, props) if props else "",
                })
                continue
            for action in actions:
                result.messages.append(
                    ActionMessage(
                        event_id=meta.event_id,
                        route=route_name,
                        action=action,
                        content=content,
                        event=message_event,
                        received_at=meta.received_at,
                    )
                )
        return result


# How an event came in, for trying a route without sending it (``herald test-route --origin``, the
# console's "try a route"): the headers the bridge would have set, or none for an event produced to
# the events topic directly.
TRY_ORIGINS: dict[str, dict[str, str]] = {
    "unauthenticated": {"herald-source": "127.0.0.1"},  # posted to the bridge without credentials
    "bearer": {"herald-source": "127.0.0.1", "herald-authenticated": "bearer"},
    "hmac": {"herald-source": "127.0.0.1", "herald-authenticated": "hmac"},
    "mtls": {"herald-source": "127.0.0.1", "herald-authenticated": "mtls"},
    "kafka": {},  # produced to the events topic directly
}


def route_report(config: Config, meta: EventMeta, result: RoutingResult) -> dict[str, Any]:
    """What routing did with one event, for people: every route matched or not and why, the guard's
    reasons, the content each action would get, and the failures."""
    guarded = {g.route: g for g in result.guarded}
    return {
        "origin": meta.describe(),
        "routes": {
            name: {
                "matched": v.matched,
                "reason": v.reason,
                "template": config.routes[name].template,
                "actions": config.route_actions(config.routes[name]) if v.matched else [],
                **({"fired": False, "guarded": guarded[name].actions, "guard": guarded[name].reason}
                   if name in guarded else {}),
            }
            for name, v in result.verdicts.items()
        },
        "deliveries": [
            {"route": m.route, "action": m.action, "content": {k: v for k, v in m.content.to_dict().items() if v}}
            for m in result.messages
        ],
        "failures": [dict(f.__dict__) for f in result.failures],
    }
