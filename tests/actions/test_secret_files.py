"""``<key>-file`` companions of the secrets of email, slack, teams, splunk, opsgenie and pagerduty:
the secret can come from a mounted file; one of the two is required; both is ambiguous."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.actions.support import build_action

from app.errors import ConfigError

# type -> (secret key, other required config, an example secret, is the secret required)
SECRETS: dict[str, tuple[str, dict[str, Any], str, bool]] = {
    "email": ("password", {"host": "smtp", "port": 587, "user": "u@corp.test", "recipients": ["a@corp.test"]},
              "file-smtp-password", False),
    "slack": ("url", {}, "https://hooks.slack.com/services/T0FILE/B0FILE/fileHookSecret", True),
    "teams": ("url", {}, ("https://prod-1.westus.logic.azure.com/workflows/x/triggers/manual/paths/invoke"
                         "?sig=FileSignature0123456789"), True),
    "splunk": ("token", {"url": "https://splunk:8088"}, "file-hec-token-0001", True),
    "opsgenie": ("token", {}, "file-genie-key-0001", True),
    "pagerduty": ("pagerduty-routing-key", {}, "FILEROUTINGKEY000000000000000001", True),
}


def config(type_name: str, **extra: Any) -> dict[str, Any]:
    return {"name": "s", "type": type_name, **SECRETS[type_name][1], **extra}


@pytest.mark.parametrize("type_name", list(SECRETS))
def test_secret_from_file(type_name: str, tmp_path: Path) -> None:
    key, _, value, _ = SECRETS[type_name]
    path = tmp_path / "secret"
    path.write_text(value + "\n")
    action = build_action(config(type_name, **{f"{key}-file": str(path)}))
    assert getattr(action.config, key.replace("-", "_")).reveal() == value


@pytest.mark.parametrize("type_name", list(SECRETS))
def test_secret_and_file_together_is_an_error(type_name: str, tmp_path: Path) -> None:
    key, _, value, _ = SECRETS[type_name]
    path = tmp_path / "secret"
    path.write_text(value)
    with pytest.raises(ConfigError, match=rf"actions\[0\]\.{key}-file: both {key} and {key}-file are set") as info:
        build_action(config(type_name, **{key: value, f"{key}-file": str(path)}))
    assert value not in str(info.value)


@pytest.mark.parametrize("type_name", [t for t, (_, _, _, required) in SECRETS.items() if required])
def test_missing_secret_names_both_keys(type_name: str) -> None:
    key = SECRETS[type_name][0]
    with pytest.raises(ConfigError, match=rf"actions\[0\]\.{key}: is required \(give {key} or {key}-file\)"):
        build_action(config(type_name))


@pytest.mark.parametrize("type_name", list(SECRETS))
def test_unreadable_file_is_named(type_name: str, tmp_path: Path) -> None:
    key = SECRETS[type_name][0]
    with pytest.raises(ConfigError, match=rf"actions\[0\]\.{key}-file: .*cannot read secret file"):
        build_action(config(type_name, **{f"{key}-file": str(tmp_path / "missing")}))


def test_a_webhook_url_from_a_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "url"
    path.write_text("hooks.slack.com/services/T/B/fromFileSecret")
    with pytest.raises(ConfigError, match=r"actions\[0\]\.url: must be an http:// or https:// URL") as info:
        build_action(config("slack", **{"url-file": str(path)}))
    assert "fromFileSecret" not in str(info.value)
