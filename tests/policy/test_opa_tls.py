"""The OPA engine's token and TLS settings (issue 13) against Herald's real OPA build, started over
HTTPS with a CA made here: one server with ``--authentication=token --authorization=basic``
and an authz policy that admits one token, one with ``--authentication=tls`` that admits one
client certificate. A correct token and CA route events; a wrong or missing token, an untrusted
CA or a refused client certificate stop Herald at start with one line naming the setting
(non-zero exit, no traceback), and the token never shows in any output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from actions import parse_config
from app.errors import ConfigError
from app.devtools.kafka_local import LocalKafka, make_ca, make_server_cert
from app.routing.policy.engine import make_engine, opa_options
from app.devtools.opa_local import OpaServer, opa_binary
from app.routing.policy.opa import OpaEngine
from app.routing.router import EventMeta, Router
from tests.harness import ROOT, TRACEBACK, make_client_cert

TOKEN = "opa-tls-test-token-3f9a1c"
WRONG = "opa-tls-test-token-wrong0"
CLIENT = "herald-worker"
EVENT = b'{"image": "alpine:3.20", "severity": "critical"}'

TOKEN_AUTHZ = """package system.authz

default allow = false

allow {
\tinput.path == ["health"]
}

allow {
\tinput.identity == "%s"
}
"""
CERT_AUTHZ = """package system.authz

default allow = false

allow {
\tinput.identity == "CN=%s"
}
"""


@dataclass
class Pki:
    ca: Path
    rogue_ca: Path  # a CA that signed nothing OPA uses
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_client_cert: Path  # CN=herald-worker, but signed by the rogue CA
    rogue_client_key: Path
    token_file: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("opa-pki")
    ca_cert, ca_key = make_ca("Herald OPA test CA")
    rogue_cert, rogue_key = make_ca("Someone else's CA")
    files: dict[str, bytes] = {"ca.pem": ca_cert, "rogue-ca.pem": rogue_cert}
    files["server.pem"], files["server.key"] = make_server_cert(ca_cert, ca_key, ("127.0.0.1", "localhost"))
    files["client.pem"], files["client.key"] = make_client_cert(ca_cert, ca_key, CLIENT)
    files["rogue-client.pem"], files["rogue-client.key"] = make_client_cert(rogue_cert, rogue_key, CLIENT)
    files["token"] = (TOKEN + "\n").encode()
    for name, data in files.items():
        (d / name).write_bytes(data)
    return Pki(d / "ca.pem", d / "rogue-ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
               d / "client.key", d / "rogue-client.pem", d / "rogue-client.key", d / "token")


def start_opa(args: tuple[str, ...], probe: dict[str, Any]) -> OpaServer:
    try:
        binary = opa_binary(build=True)
    except Exception as exc:  # noqa: BLE001 - a missing build fails the test, it does not skip it
        pytest.fail(f"cannot build Herald's OPA: {exc}", pytrace=False)
    server = OpaServer(binary, v0=True, args=args, probe=probe)
    server.start(timeout=60)
    return server


def remove_herald_modules(url: str, **options: Any) -> None:
    cleaner = OpaEngine(url, **options)
    try:
        assert cleaner.remove_policies([p for p in cleaner.server_policy_ids() if p.startswith("herald/")]) == []
    finally:
        cleaner.close()


@pytest.fixture(scope="module")
def token_opa(pki: Pki) -> Iterator[OpaServer]:
    authz = pki.token_file.parent / "authz-token.rego"
    authz.write_text(TOKEN_AUTHZ % TOKEN)
    server = start_opa(("--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
                        "--authentication=token", "--authorization=basic", str(authz)), {"verify": str(pki.ca)})
    yield server
    remove_herald_modules(server.url, token=TOKEN, ca_file=str(pki.ca))
    server.stop()


@pytest.fixture(scope="module")
def mtls_opa(pki: Pki) -> Iterator[OpaServer]:
    authz = pki.token_file.parent / "authz-cert.rego"
    authz.write_text(CERT_AUTHZ % CLIENT)
    server = start_opa(("--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
                        "--tls-ca-cert-file", str(pki.ca), "--authentication=tls", "--authorization=basic",
                        str(authz)),
                       {"verify": str(pki.ca), "cert": (str(pki.client_cert), str(pki.client_key))})
    yield server
    remove_herald_modules(server.url, ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                          key_file=str(pki.client_key))
    server.stop()


def opa_config(url: str, **herald: Any) -> dict[str, Any]:
    return {
        "herald": {"engine": "opa", "opa-url": url, **herald},
        "routes": [{"name": "criticals", "input": 'input.severity == "critical"', "actions": ["out"],
                    "template": "raw"},
                   {"name": "debian", "input": 'contains(input.image, "debian")', "actions": ["out"],
                    "template": "raw"}],
        "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "out", "type": "stdout", "enable": True}],
    }


def routes_matched(router: Router) -> set[str]:
    result = router.route(EVENT, EventMeta("tls-1"))
    assert not result.failures, result.failures
    assert [m.route for m in result.messages] == ["criticals"]
    assert '"alpine:3.20"' in result.messages[0].content.description
    return {name for name, v in result.verdicts.items() if v.matched}


def test_a_token_from_a_file_and_the_ca_route_events(token_opa: OpaServer, pki: Pki,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = parse_config(opa_config(token_opa.url, **{"opa-token": f"file:{pki.token_file}",
                                                       "opa-ca-file": str(pki.ca)}), environ={})
    assert config.herald.opa_tls_verify is True and repr(config.herald.opa_token) == "Secret('***')"
    assert routes_matched(Router(config)) == {"criticals"}
    assert TOKEN not in caplog.text


def test_the_token_from_the_environment(token_opa: OpaServer, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_OPA_TOKEN", TOKEN)
    monkeypatch.setenv("HERALD_OPA_CA_FILE", str(pki.ca))
    config = parse_config(opa_config(token_opa.url))
    assert (config.herald.opa_token.reveal(), config.herald.opa_ca_file) == (TOKEN, str(pki.ca))
    engine = make_engine("opa", config.herald.opa_url, **opa_options(config.herald))
    try:
        engine.add_module("/t/tls.rego", "package herald_tls.t\n\nv := input.a\n")
        engine.set_input_json('{"a": [1, 2]}')
        assert engine.eval_path("data.herald_tls.t.v") == [1, 2]
    finally:
        assert engine.remove_all() == []
        engine.close()


@pytest.mark.parametrize(("token", "said"), [
    (WRONG, "refused the token in herald.opa-token"),
    ("", "refused no token (herald.opa-token is not set)"),
])
def test_a_wrong_or_missing_token_is_a_config_error_naming_the_setting(token_opa: OpaServer, pki: Pki, token: str,
                                                                       said: str) -> None:
    config = parse_config(opa_config(token_opa.url, **{"opa-token": token, "opa-ca-file": str(pki.ca)}))
    with pytest.raises(ConfigError) as err:
        Router(config)
    assert str(err.value) == (f"herald.opa-token: OPA at {token_opa.url} {said}: 401 unauthorized: "
                              "request rejected by administrative policy")
    assert WRONG not in str(err.value)


@pytest.mark.parametrize("ca", ["rogue", "system"])
def test_an_untrusted_server_certificate_is_a_config_error_naming_the_ca_setting(token_opa: OpaServer, pki: Pki,
                                                                                 ca: str) -> None:
    herald = {"opa-token": TOKEN, **({"opa-ca-file": str(pki.rogue_ca)} if ca == "rogue" else {})}
    with pytest.raises(ConfigError) as err:
        Router(parse_config(opa_config(token_opa.url, **herald)))
    trusted = f"the CA in herald.opa-ca-file {str(pki.rogue_ca)!r}" if ca == "rogue" else \
        "the system's CAs (herald.opa-ca-file is not set)"
    assert str(err.value).startswith(f"herald.opa-ca-file: the certificate of OPA at {token_opa.url} is not "
                                     f"trusted by {trusted}: certificate verify failed")
    assert TOKEN not in str(err.value)


# urllib3 warns about every unverified request too (once per place, as Python's warnings go)
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_off_accepts_any_certificate_and_says_so(token_opa: OpaServer, pki: Pki,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(opa_config(token_opa.url, **{"opa-token": TOKEN, "opa-tls-verify": False}))
    assert routes_matched(Router(config)) == {"criticals"}
    assert f"herald.opa-tls-verify is false: the certificate of OPA at {token_opa.url} is not verified" in caplog.text


def test_tls_files_need_an_https_url_and_existing_files(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"herald\.opa-ca-file: is set but herald\.opa-url 'http://127\.0\.0\.1:8181' "
                                          r"is http://; use https://"):
        parse_config(opa_config("http://127.0.0.1:8181", **{"opa-ca-file": str(pki.ca)}))
    with pytest.raises(ConfigError, match=r"herald\.opa-cert-file: no such file: '/nonexistent/client\.pem'"):
        parse_config(opa_config("https://127.0.0.1:8181", **{"opa-cert-file": "/nonexistent/client.pem"}))
    with pytest.raises(ConfigError, match=r"herald\.opa-key-file: is set without herald\.opa-cert-file"):
        parse_config(opa_config("https://127.0.0.1:8181", **{"opa-key-file": str(pki.client_key)}))
    with pytest.raises(ConfigError, match=r"herald\.opa-token: environment variable HERALD_NO_SUCH_TOKEN is not set"):
        parse_config(opa_config("https://127.0.0.1:8181", **{"opa-token": "$HERALD_NO_SUCH_TOKEN"}), environ={})
    with pytest.raises(ConfigError, match=r"HERALD_OPA_TLS_VERIFY: expected true or false, got 'maybe'"):
        parse_config(opa_config("https://127.0.0.1:8181"), environ={"HERALD_OPA_TLS_VERIFY": "maybe"})


def test_a_client_certificate_opens_an_mtls_opa(mtls_opa: OpaServer, pki: Pki) -> None:
    config = parse_config(opa_config(mtls_opa.url, **{"opa-ca-file": str(pki.ca), "opa-cert-file": str(pki.client_cert),
                                                      "opa-key-file": str(pki.client_key)}))
    assert routes_matched(Router(config)) == {"criticals"}


@pytest.mark.parametrize("client", ["none", "rogue"])
def test_a_missing_or_untrusted_client_certificate_is_a_config_error(mtls_opa: OpaServer, pki: Pki,
                                                                     client: str) -> None:
    herald: dict[str, Any] = {"opa-ca-file": str(pki.ca)}
    if client == "rogue":
        herald.update({"opa-cert-file": str(pki.rogue_client_cert), "opa-key-file": str(pki.rogue_client_key)})
    with pytest.raises(ConfigError) as err:
        Router(parse_config(opa_config(mtls_opa.url, **herald)))
    given = repr(str(pki.rogue_client_cert)) if client == "rogue" else "none (herald.opa-cert-file is not set)"
    assert str(err.value).startswith(f"herald.opa-cert-file: OPA at {mtls_opa.url} refused the client "
                                     f"certificate {given}: "), str(err.value)


def herald_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def test_check_config_and_test_route_report_the_setting_without_a_traceback(
        token_opa: OpaServer, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(opa_config(token_opa.url, **{"opa-token": WRONG, "opa-ca-file": str(pki.ca)})))
    assert main(["check-config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert f"error: herald.opa-token: OPA at {token_opa.url} refused the token in herald.opa-token: 401" in out
    event = tmp_path / "event.json"
    event.write_bytes(EVENT)
    assert main(["test-route", "--config", str(cfg), str(event)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: herald.opa-token: ") and TRACEBACK not in err and WRONG not in err


def test_a_worker_with_a_wrong_token_exits_non_zero_at_start_naming_the_setting(
        token_opa: OpaServer, pki: Pki, kafka: LocalKafka, tmp_path: Path) -> None:
    cfg = opa_config(token_opa.url, **{"opa-token": "$HERALD_TEST_OPA_TOKEN", "opa-ca-file": str(pki.ca),
                                       "kafka-bootstrap-servers": kafka.bootstrap, "topic-prefix": "opa-tls.",
                                       "admin-listen": ""})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEE_", "KAFKA_", "HERALD_"))}
    done = herald_cli("worker", "--config", str(path), env={**env, "HERALD_TEST_OPA_TOKEN": WRONG})
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert (f"config error: herald.opa-token: OPA at {token_opa.url} refused the token in herald.opa-token: "
            "401 unauthorized: request rejected by administrative policy") in done.stderr
    assert TRACEBACK not in output and WRONG not in output
    # the same worker with the right token starts (and stops on SIGTERM)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--config", str(path)], cwd=ROOT,
                            env={**env, "HERALD_TEST_OPA_TOKEN": TOKEN}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "herald worker ready" in line or len(lines) > 500:
                break
        assert any("herald worker ready" in line for line in lines), "".join(lines)
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert TOKEN not in "".join(lines) + rest and TRACEBACK not in "".join(lines) + rest
