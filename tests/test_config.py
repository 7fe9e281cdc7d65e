"""Config loading: Postee's cfg.yaml format, strict types with key paths, env overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from actions import load_config, parse_config
from app.config.loader import config_path, parse_plugin_timeout
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
    from actions.base import ActionConfig
    from app.config.model import Secret, SecretStr, validate_model

    class WithSecret(ActionConfig):
        password: SecretStr = Secret("")

    monkeypatch.setenv("SMTP_PW", "hunter2-secret")
    obj, _ = validate_model(WithSecret, {"name": "a", "type": "t", "password": "$SMTP_PW"}, "actions[0]")
    assert obj.password.reveal() == "hunter2-secret"
    assert "hunter2" not in repr(obj) and "hunter2" not in str(obj)


# -- disabled actions are type-checked (issue 14) ---------------------------------------------

POSTEE_ROOT_CFG = Path(__file__).parent / "fixtures" / "postee-cfg.yaml"  # Postee's cfg.yaml, last commit
NESTED = ("actions[9].organization-id: expected a string, got a list (value: [{'name': 'my-dependencytrack', "
          "'type': 'dependencytrack', 'enable': False, 'url': 'http://localhost:8080/', "
          "'dependency-track-api-key': '***'}]) -- it holds the action 'my-dependencytrack', indented under "
          "'organization-id': move it out to be an item of actions")


def test_postees_own_misindented_cfg_is_refused_naming_the_key_path() -> None:
    # the dependencytrack action sits inside the disabled nexusIq action's organization-id
    with pytest.raises(ConfigError) as err:
        load_config(str(POSTEE_ROOT_CFG), environ={})
    assert str(err.value) == f"{POSTEE_ROOT_CFG}: 1 problem(s):\n  {NESTED}"


def test_postees_cfg_indented_right_loads_with_the_placeholders_of_its_disabled_actions() -> None:
    data = yaml.safe_load(POSTEE_ROOT_CFG.read_text())
    nexus = data["actions"][9]
    data["actions"].insert(10, nexus["organization-id"][0])  # where Postee meant it to be
    nexus["organization-id"] = None
    cfg = parse_config(data, environ={})
    assert [a["type"] for a in data["actions"]][9:11] == ["nexusIq", "dependencytrack"]
    # disabled actions keep placeholders (empty required keys, '<API Key>'): not errors
    assert set(cfg.actions) == {"stdout"}
    assert not any("actions[" in w for w in cfg.warnings)


def run_herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=Path(__file__).parent.parent, check=False,
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in ("POSTEE_CFG", "AQUAALERT_CFG")})


@pytest.mark.parametrize("command", [["check-config", str(POSTEE_ROOT_CFG)], ["worker", "-c", str(POSTEE_ROOT_CFG)],
                                     ["run", "-c", str(POSTEE_ROOT_CFG)]], ids=["check-config", "worker", "run"])
def test_check_config_and_start_exit_non_zero(command: list[str]) -> None:
    res = run_herald(*command)  # the config is refused before any Kafka connection is tried
    assert res.returncode == 2, res.stdout + res.stderr
    assert NESTED in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ({"type": "email", "port": [587]}, "actions[0].port: Input should be a valid integer (value: [587])"),
        ({"type": "email", "port": "five"}, "actions[0].port: Input should be a valid integer (value: 'five')"),
        ({"type": "email", "recipients": "a@b.c"}, "actions[0].recipients: expected a list, got a string"),
        ({"type": "email", "recipients": [{"a": 1}]}, "actions[0].recipients[0]: expected a string, got a mapping"),
        ({"type": "webhook", "url": {"https": "x"}}, "actions[0].url: expected a string, got a mapping"),
        ({"type": "slack", "url": ["https://hooks"]}, "actions[0].url: expected a string, got a list"),
        ({"type": "jira", "password": {"p": "hunter22"}},
         "actions[0].password: expected a string, got a mapping (value: ***)"),
        ({"type": "exec", "env": "A=1"}, "actions[0].env: expected a list, got a string"),
        ({"type": "http", "headers": ["X-A: b"]}, "actions[0].headers"),
        ({"type": "nexusIq", "password-file": ["/x"]}, "actions[0].password-file: expected a file path, got a list"),
    ],
)
def test_a_disabled_action_of_the_wrong_type_is_an_error(action: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"actions": [{"name": "off", "enable": False, **action}]}, environ={})
    assert message in str(err.value)
    assert "hunter22" not in str(err.value)


def test_a_disabled_action_is_not_held_to_what_only_a_running_action_needs() -> None:
    cfg = parse_config({"actions": [
        {"name": "mail", "type": "email", "enable": False, "recipients": [""], "port": None},  # placeholders
        {"name": "hook", "type": "webhook", "enable": False, "url": "<your url>"},
        {"name": "jira", "type": "jira", "enable": False, "url": "", "project-key": ""},
        {"name": "pigeon", "type": "carrier-pigeon", "enable": False},
        {"name": "chat", "type": "slack", "enable": False, "url": "https://h", "colour": "red"},
    ]}, environ={})
    assert cfg.actions == {}
    assert "actions[3].type: unknown action type 'carrier-pigeon'" in "\n".join(cfg.warnings)
    assert "actions[4].colour: unknown key, ignored" in cfg.warnings
    # the same placeholders in an enabled action are errors
    with pytest.raises(ConfigError, match=r"actions\[0\].url"):
        parse_config({"actions": [{"name": "hook", "type": "webhook", "enable": True, "url": "<your url>"}]}, environ={})
