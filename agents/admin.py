"""The worker's admin listener (``herald.admin-listen``, default ``127.0.0.1:8083``).

    GET  /healthz   200 while the process serves requests
    GET  /readyz    200 when the worker consumes (joined its group, Kafka thread running) and Kafka
                    answers a metadata request; else 503 with the reason
    GET  /metrics   Prometheus text (``app.telemetry.metrics.metrics_handler``; 404 while that module is absent)
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
from typing import Protocol

from aiohttp import web

from app.ingest.bridge import Authenticator, _split, is_loopback
from app.config.loader import Config
from app.config.reload import ReloadResult
from app.errors import ConfigError

log = logging.getLogger("herald.admin")


class AdminTarget(Protocol):
    """What the admin listener needs from the process it serves (the worker)."""

    config: Config

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason when not)."""

    async def reload(self, source: str) -> ReloadResult:
        """Re-read and apply the config; never raises for a bad config."""


# the process served, for handlers mounted from other modules (``app.telemetry.metrics``)
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
            from app.telemetry.metrics import metrics_handler
        except ImportError:
            return web.json_response({"error": "metrics are not available in this build"}, status=404)
        return await metrics_handler(request)

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
