"""The worker's admin listener (``herald.admin-listen``, default ``127.0.0.1:8083``).

    GET  /healthz   200 while the process serves requests
    GET  /readyz    200 when the worker consumes (joined its group, Kafka thread running) and Kafka
                    answers a metadata request; else 503 with the reason
    GET  /metrics   Prometheus text (``app.metrics.metrics_handler``; 404 while that module is absent)
    POST /reload    re-read config, templates and filters; 200 with the new config hash, or 4xx
                    naming the field and value of the problem (the running config stays)

``POST /reload`` sits behind the bridge's authentication (``herald.auth``: a global bearer token
or an HMAC-SHA256 signature of the request body; 401 without credentials, 403 with wrong ones).
The listener is plain HTTP, so ``client-ca`` (mTLS) cannot open it. GET routes carry no secret
and stay unauthenticated (probes and Prometheus scrape them). Like the bridge, the listener
refuses a non-loopback address unless ``herald.auth`` is set or ``allow-unauthenticated`` is true.

The worker is reached through the ``AdminTarget`` protocol only (core does not import agents).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from app.bridge import Authenticator, _split, exposure_problem, is_loopback
from app.config import Config
from app.errors import ConfigError, HeraldError

log = logging.getLogger("herald.admin")


@dataclass
class ReloadResult:
    """What a reload did: ``ok`` with the new ``config_hash``, or ``error`` (the running config stays)."""

    ok: bool
    config_hash: str = ""
    previous_hash: str = ""
    error: str = ""
    changes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        if self.ok:
            return {"status": "reloaded", "config_hash": self.config_hash, "previous_hash": self.previous_hash,
                    "changes": self.changes}
        return {"error": "reload refused; the running config stays", "detail": self.error,
                "config_hash": self.previous_hash}


class AdminTarget(Protocol):
    """What the admin listener needs from the process it serves (the worker)."""

    config: Config

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason when not)."""

    async def reload(self, source: str) -> ReloadResult:
        """Re-read and apply the config; never raises for a bad config."""


# the process served, for handlers mounted from other modules (``app.metrics``)
TARGET = web.AppKey("herald_admin_target", object)


def admin_exposure_problem(config: Config) -> str | None:
    """Why the admin listener must not start: a non-loopback address without ``herald.auth``."""
    s = config.herald
    address = s.admin_listen
    if not address or s.auth.configured() or s.allow_unauthenticated:
        return None
    if not is_loopback(address.rpartition(":")[0] or "0.0.0.0"):
        return (f"herald.admin-listen {address} is not a loopback address and herald.auth configures no "
                "authentication (bearer-tokens or hmac-keys), so POST /reload would be open to the network; "
                "set herald.auth, or herald.allow-unauthenticated: true")
    return None


class Admin:
    def __init__(self, target: AdminTarget) -> None:
        self.target = target
        self.runner: web.AppRunner | None = None
        self.address = ""

    @property
    def auth(self) -> Authenticator:
        return Authenticator(self.target.config.herald.auth)  # the current config's credentials

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app[TARGET] = self.target
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/reload", self.reload)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reason = await asyncio.get_running_loop().run_in_executor(None, self.target.readiness)
        if ready:
            return web.json_response({"status": "ready"})
        return web.json_response({"error": reason}, status=503)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        try:
            from app.metrics import metrics_handler  # type: ignore[attr-defined]
        except ImportError:
            return web.json_response({"error": "metrics are not available in this build"}, status=404)
        return await metrics_handler(request)  # type: ignore[no-any-return]

    def _authorized(self, request: web.Request, body: bytes) -> web.Response | None:
        """None when the request may reload; else the 401/403 answer (no detail)."""
        auth = self.auth
        s = self.target.config.herald.auth
        if not s.configured():
            return None
        tokens, keys = auth.credentials(None)
        bearer = auth.bearer(request, tokens)
        if bearer:
            return None
        signed = request.headers.get(auth.signature_header) is not None
        if bearer is None and not signed:
            log.warning("admin: 401 %s %s from %s", request.method, request.path, request.remote)
            return web.json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        if bearer is None and keys and auth.signature(request, body, keys):
            return None
        log.warning("admin: 403 %s %s from %s", request.method, request.path, request.remote)
        return web.json_response({"error": "forbidden"}, status=403)

    async def reload(self, request: web.Request) -> web.Response:
        body = await request.read()
        denied = self._authorized(request, body)
        if denied is not None:
            return denied
        result = await self.target.reload(f"POST /reload from {request.remote}")
        return web.json_response(result.to_dict(), status=200 if result.ok else 422)

    async def start(self, address: str) -> None:
        """Listen on ``address`` (host:port; port 0 picks a free one). Raises ConfigError when the
        address is exposed without authentication or cannot be bound."""
        problem = admin_exposure_problem(self.target.config)
        if problem:
            raise ConfigError(problem)
        host, port = _split(address, "herald.admin-listen")
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise ConfigError(f"cannot listen on {address}: {exc.strerror or exc}", "herald.admin-listen",
                              address) from None
        bound = [a[1] for a in self.runner.addresses if isinstance(a, tuple)]  # the port when 0 was asked for
        self.address = f"{host}:{bound[0] if bound else port}"
        auth = self.target.config.herald.auth
        if auth.client_ca and not (auth.bearer_tokens or auth.hmac_keys):
            log.warning("herald.auth sets only client-ca: the admin listener is plain HTTP, so POST /reload "
                        "answers 401 until bearer-tokens or hmac-keys are set")
        log.info("admin listening on http://%s (healthz, readyz, metrics; POST /reload %s)", self.address,
                 "needs herald.auth credentials" if auth.configured() else "is unauthenticated")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def config_hash(config: Config) -> str:
    """What routed an event, in 12 hex digits (every decision record carries it): the routes, templates,
    rules, enabled action names and types, the Rego settings, and the content of every file under
    the template directories and the filters path. Action settings (URLs, credentials) are not in
    it: they decide how a message is delivered, not where an event goes."""
    import hashlib
    from pathlib import Path

    import orjson

    s = config.herald
    doc = {
        "aqua_server": config.aqua_server,
        "routes": {n: r.model_dump(mode="json") for n, r in config.routes.items()},
        "templates": {n: t.model_dump(mode="json") for n, t in config.templates.items()},
        "rules": {n: r.model_dump(mode="json") for n, r in config.rules.items()},
        "actions": {n: a.type for n, a in config.actions.items()},
        "engine": s.engine, "opa_url": s.opa_url, "template_dirs": list(s.template_dirs), "filters_path": s.filters_path,
    }
    h = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
    for directory in [*s.template_dirs, s.filters_path]:
        root = Path(directory)
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:12]


# herald settings a running bridge cannot change (listeners, Kafka, TLS): a SIGHUP that changes one is refused
BRIDGE_RESTART_ONLY = ("kafka_bootstrap_servers", "topic_prefix", "kafka", "http_listen", "https_listen",
                       "body_limit", "partitions", "replication_factor", "spool")


def reload_bridge(bridge: Any, source: Callable[[], Config], why: str) -> ReloadResult:
    """SIGHUP on ``herald bridge`` (and ``herald run``): tenant routes (``/tenant/{route}``), the
    credentials of ``herald.auth`` and the request limits (read-timeout, max-in-flight,
    max-json-depth) from the file again; a bad file, or a change to a setting that needs a restart,
    is refused and logged, and the running config stays."""
    blog = logging.getLogger("herald.bridge")
    old = bridge.config
    try:
        new = source()
        for key in BRIDGE_RESTART_ONLY:
            before, after = getattr(old.herald, key, None), getattr(new.herald, key, None)
            if before != after:
                shown = "" if key in ("kafka", "spool") else f" from {before!r} to {after!r}"
                raise ConfigError(f"changed{shown}; this setting takes effect only when the bridge restarts",
                                  f"herald.{key.replace('_', '-')}")
        if new.herald.auth.client_ca != old.herald.auth.client_ca:
            raise ConfigError("changed; the HTTPS listener takes a new client CA only when the bridge restarts",
                              "herald.auth.client-ca")
        problem = exposure_problem(new)
        if problem:
            raise ConfigError(problem)
    except HeraldError as exc:
        blog.error("bridge config reload (%s) refused, the running config stays: %s", why, exc)
        return ReloadResult(False, error=str(exc))
    s = new.herald
    bridge.config = new
    bridge.auth = Authenticator(s.auth)
    bridge.read_timeout = s.read_timeout
    bridge.max_in_flight = s.max_in_flight
    bridge.max_json_depth = s.max_json_depth
    for warning in new.warnings:
        blog.warning("config: %s", warning)
    blog.info("bridge config reloaded (%s): %d routes, authentication %s", why, len(new.routes),
              "required" if s.auth.configured() else "off")
    return ReloadResult(True)
