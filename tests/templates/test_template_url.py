"""Template ``url:``: https only (http only to a loopback host), optional ``#sha256=`` pin."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from actions import parse_config
from app.errors import ConfigError, TemplateError
from app.config.templateurl import check_template_url
from app.routing.policy.templates import fetch_template

MODULE = b'package postee.fetched\ntitle := "t"\nresult := "r"\n'
DIGEST = hashlib.sha256(MODULE).hexdigest()


def load(url: str) -> object:
    return parse_config(yaml.safe_load(f"templates:\n- {{name: t, url: '{url}'}}\n"), environ={})


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/t.rego",
        "file:///etc/passwd",
        "ftp://example.com/t.rego",
        "https://",
        "http://10.0.0.1/t.rego",
        "https://example.com/t.rego#sha256=abc",
        "https://example.com/t.rego#top",
    ],
)
def test_config_load_refuses_non_https_and_bad_pins(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(url)
    text = str(err.value)
    assert "templates[0].url" in text and url in text


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/t.rego",
        f"https://example.com/t.rego#sha256={DIGEST}",
        "http://127.0.0.1:8080/t.rego",
        "http://localhost/t.rego",
        "http://[::1]:9/t.rego",
    ],
)
def test_config_load_accepts_https_and_loopback_http(url: str) -> None:
    cfg = load(url)
    assert cfg.templates["t"].url == url  # type: ignore[attr-defined]


def test_pin_is_split_off() -> None:
    assert check_template_url(f"https://h/x.rego#sha256={DIGEST.upper()}") == ("https://h/x.rego", DIGEST)
    assert check_template_url("https://h/x.rego?a=1") == ("https://h/x.rego?a=1", None)


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/away":
                self.send_response(302)
                self.send_header("Location", "http://example.invalid/t.rego")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(MODULE)))
            self.end_headers()
            self.wfile.write(MODULE)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_from_loopback_with_and_without_pin(server: str) -> None:
    assert fetch_template(f"{server}/t.rego").encode() == MODULE
    assert fetch_template(f"{server}/t.rego#sha256={DIGEST}").encode() == MODULE


def test_fetch_refuses_a_wrong_pin(server: str) -> None:
    wrong = "0" * 64
    with pytest.raises(TemplateError, match=f"has SHA-256 {DIGEST}, but the url pins {wrong}"):
        fetch_template(f"{server}/t.rego#sha256={wrong}")


def test_fetch_refuses_a_redirect_to_plain_http(server: str) -> None:
    with pytest.raises(TemplateError, match="redirects to http://example.invalid/t.rego, which is not https"):
        fetch_template(f"{server}/away")


def test_fetch_refuses_non_https_even_without_config_validation() -> None:
    with pytest.raises(TemplateError, match="must be an https:// URL"):
        fetch_template("file:///etc/passwd")
