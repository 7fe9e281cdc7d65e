"""The bridge serves HTTPS with Postee's AQUAALERT_CERT_PEM / AQUAALERT_KEY_PEM, and explains what is missing."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from app.ingest.bridge import serve, tls_context
from actions import parse_config
from app.errors import ConfigError
from tests.harness import free_port


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_tls_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="AQUAALERT_CERT_PEM"):
        tls_context({})
    with pytest.raises(ConfigError, match="cannot load the TLS certificate"):
        tls_context({"AQUAALERT_CERT_PEM": "/nonexistent.pem", "AQUAALERT_KEY_PEM": "/nonexistent.key"})


async def test_bridge_answers_on_http_and_https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka: object) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("AQUAALERT_CERT_PEM", str(cert))
    monkeypatch.setenv("AQUAALERT_KEY_PEM", str(key))
    http_port, https_port = free_port(), free_port()
    config = parse_config({"herald": {"kafka-bootstrap-servers": kafka.bootstrap, "topic-prefix": "tls.",  # type: ignore[attr-defined]
                                      "http-listen": f"127.0.0.1:{http_port}",
                                      "https-listen": f"127.0.0.1:{https_port}",
                                      "spool": {"dir": str(tmp_path / "spool")}}}, environ={})
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))
    ctx = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"https://127.0.0.1:{https_port}/ping", ssl=ctx) as resp:
                        assert resp.status == 200 and await resp.json() == "Postee alive!"
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("HTTPS listener did not come up")
            async with session.get(f"http://127.0.0.1:{http_port}/ping") as resp:
                assert resp.status == 200
    finally:
        stop.set()
        await task
