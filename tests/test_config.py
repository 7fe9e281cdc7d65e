"""Config loading: Postee's cfg.yaml format, strict types with key paths, env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import config_path, load_config, parse_config, parse_plugin_timeout
from app.errors import ConfigError

POSTEE_CFG = """
name: tenant
aqua-server: https://aqua.example.com
max-db-size: 1000MB
db-verify-interval: 1
delete-old-data: 100
AquaServer: v1-leftover
rules:
  - name: Initial Access
routes:
- name: stdout
  input: contains(input.image, "alpine")
  actions: [stdout, my-webhook, off-one]
  template: raw-json
  serialize-actions: true
  plugins:
    aggregate-message-number: 3
    aggregate-message-timeout: 10m
    unique-message-props: ["digest","image","registry", "vulnerability_summary.high"]
    unique-message-timeout: 1d
  output: v1-key
templates:
- name: raw-json
  rego-package: postee.rawmessage.json
- name: legacy
  legacy-scan-renderer: html
- name: inline
  body: |
    package postee.inline
    title := "t"
    result := "r"
actions:
- name: stdout
  type: stdout
  enable: true
- name: my-webhook
  type: Webhook
  enable: true
  url: https://example.com/hook
  timeout: 10
- name: off-one
  type: slack
  enable: false
  url: 5
"""


def test_postee_config_loads_with_warnings_for_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(POSTEE_CFG)
    cfg = load_config(str(path), environ={})
    route = cfg.routes["stdout"]
    assert route.serialize_actions is True
    assert route.plugins.aggregate_message_number == 3
    assert route.aggregate_timeout == 600 and route.unique_timeout == 86400
    assert route.plugins.unique_message_props[-1] == "vulnerability_summary.high"
    assert cfg.aqua_server_url == "https://aqua.example.com/#/images/"
    assert set(cfg.actions) == {"stdout", "my-webhook"}  # disabled actions are not built
    assert cfg.actions["my-webhook"].timeout == 10.0  # scalar coerced, Postee-style
    assert cfg.route_actions(route) == ["stdout", "my-webhook"]
    assert any("AquaServer: unknown key" in w for w in cfg.warnings)
    assert any("routes[0].output: unknown key" in w for w in cfg.warnings)
    assert any("'off-one' is not enabled" in w for w in cfg.warnings)
    assert set(cfg.templates) == {"raw-json", "legacy", "inline"}


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("actions:\n- {name: m, type: email, enable: true, port: '587'}", "actions[0].port"),
        ("actions:\n- {name: j, type: webhook, enable: true, url: [a, b]}", "actions[0].url"),
        ("actions:\n- {name: j, type: webhook, enable: 'yes', url: http://x}", "actions[0].enable"),
        ("routes:\n- {name: r, actions: stdout}", "routes[0].actions"),
        ("routes:\n- {name: r, plugins: {aggregate-message-number: many}}", "routes[0].plugins.aggregate-message-number"),
        ("routes:\n- {name: r, plugins: {unique-message-timeout: 10 weeks}}", "10 weeks"),
        ("routes: {name: r}", "routes: expected a list"),
        ("actions:\n- {name: x, type: carrier-pigeon, enable: true}", "unknown action type 'carrier-pigeon'"),
        ("routes:\n- {name: r, actions: [ghost], template: t}\ntemplates:\n- {name: t, body: 'package x'}",
         "action 'ghost' is not defined"),
        ("routes:\n- {name: r, actions: [s], template: missing}\nactions:\n- {name: s, type: stdout, enable: true}",
         "template 'missing' is not defined"),
        ("templates:\n- {name: t, legacy-scan-renderer: pdf}", "templates[0].legacy-scan-renderer"),
        ("herald: {partitions: lots}", "herald.partitions"),
    ],
)
def test_type_errors_name_the_key_path_and_value(tmp_path: Path, snippet: str, message: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(snippet)
    with pytest.raises(ConfigError) as err:
        load_config(str(path), environ={})
    assert message in str(err.value)


def test_environment_overrides_file_and_postee_variables_are_honoured() -> None:
    cfg = parse_config(
        {"herald": {"kafka-bootstrap-servers": "file:9092", "topic-prefix": "file."}},
        environ={"KAFKA_BOOTSTRAP_SERVERS": "env:9092", "POSTEE_HTTP": "127.0.0.1:9999",
                 "AQUAALERT_URL": "ignored:1", "REGO_FILTERS_PATH": "/filters", "POSTEE_DEBUG": "not",
                 "HERALD_PARTITIONS": "12"},
    )
    h = cfg.herald
    assert h.kafka_bootstrap_servers == "env:9092" and h.topic_prefix == "file."
    assert h.http_listen == "127.0.0.1:9999" and h.filters_path == "/filters" and h.partitions == 12
    assert h.debug is False  # Postee's Helm default "not" turned debug ON; Herald does not
    assert parse_config({}, environ={"AQUAALERT_URL": "0.0.0.0:1"}).herald.http_listen == "0.0.0.0:1"
    with pytest.raises(ConfigError, match="HERALD_PARTITIONS"):
        parse_config({}, environ={"HERALD_PARTITIONS": "six"})


def test_config_path_precedence() -> None:
    assert config_path("a.yaml", {"POSTEE_CFG": "b.yaml"}) == "a.yaml"
    assert config_path(None, {"POSTEE_CFG": "b.yaml", "AQUAALERT_CFG": "c.yaml"}) == "b.yaml"
    assert config_path(None, {"AQUAALERT_CFG": "c.yaml"}) == "c.yaml"
    assert config_path(None, {}) == "/config/cfg.yaml"


@pytest.mark.parametrize(("text", "seconds"), [("1m", 60), ("600s", 600), ("2h", 7200), ("2d", 172800),
                                               ("2 d", 172800), ("300", 300), ("", 0), ("  ", 0), ("10S", 10)])
def test_plugin_timeout_grammar(text: str, seconds: int) -> None:
    assert parse_plugin_timeout(text, "x") == seconds


def test_secrets_expand_from_environment_and_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.configmodel import Secret, validate_model
    from actions.base import ActionConfig
    from app.configmodel import SecretStr

    class WithSecret(ActionConfig):
        password: SecretStr = Secret("")

    monkeypatch.setenv("SMTP_PW", "hunter2-secret")
    obj, _ = validate_model(WithSecret, {"name": "a", "type": "t", "password": "$SMTP_PW"}, "actions[0]")
    assert obj.password.reveal() == "hunter2-secret"
    assert "hunter2" not in repr(obj) and "hunter2" not in str(obj)
