"""Test support for action tests: fixed messages, loopback HTTP peers, certificates, goldens."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from actions import action_class
from actions._http import HttpRequest
from app.config.model import validate_model
from app.content import Content
from app.messages import ActionMessage
from tests.harness import FIXTURES

__all__ = ["FIXTURES"]  # test modules import it from here
GOLDENS = Path(__file__).parent / "goldens"
FIXED_TIME = 1767225600.0  # 2026-01-01T00:00:00Z


def make_message(
    title: str = "Image ubuntu:22.04 scan results",
    description: str = "",
    event: dict[str, Any] | None = None,
    **content: str,
) -> ActionMessage:
    """A deterministic action message (fixed ids and times) for payload and golden tests."""
    return ActionMessage(
        event_id="evt-0001",
        route="route-a",
        action="action-a",
        content=Content(title=title, description=description, **content),
        event=event,
        received_at=FIXED_TIME,
        routed_at=FIXED_TIME + 1,
    )


BUILT: list[Any] = []  # closed after each test by conftest.py


def build_action(data: dict[str, Any]) -> Any:
    """Validate a config dict the way the config loader does and build the action."""
    cls = action_class(str(data["type"]))
    cfg, _ = validate_model(cls.config_model, data, "actions[0]")
    action = cls(cfg)
    BUILT.append(action)
    return action


@asynccontextmanager
async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 (random port); yields the base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1; ``cryptography`` if installed, else openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _cert_with_cryptography(cert, key)
    except ImportError:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )
    return cert, key


def _cert_with_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def request_as_json(req: HttpRequest) -> dict[str, Any]:
    """A built HTTP request as a JSON-able document (body parsed when it is JSON)."""
    body: Any = None
    if req.body is not None:
        try:
            body = json.loads(req.body)
        except ValueError:
            body = req.body.decode()
    return {"method": req.method, "url": req.url, "headers": [list(h) for h in req.headers], "body": body}


def assert_golden(name: str, document: Any) -> None:
    """Compare ``document`` with goldens/<name>.json. With HERALD_UPDATE_GOLDENS=1 a golden that
    differs (or is missing) is rewritten and the test fails with "golden updated: <path>, re-run"."""
    path = GOLDENS / f"{name}.json"
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("HERALD_UPDATE_GOLDENS") == "1" and (
            not path.exists() or json.loads(path.read_text()) != json.loads(text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        raise AssertionError(f"golden updated: {path}, re-run")
    assert path.exists(), f"golden {path} is missing; run with HERALD_UPDATE_GOLDENS=1 to create it"
    assert json.loads(path.read_text()) == json.loads(text), f"payload differs from golden {path}"
