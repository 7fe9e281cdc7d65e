"""servicenow action: config rules, golden record, and the Table API on a local peer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.actions.fake_servicenow import PASSWORD, USER, FakeServiceNow
from tests.actions.support import assert_golden, build_action, make_message, request_as_json, serve

from actions.servicenow import ServiceNowAction, impact, opened_at
from app.errors import ConfigError, PermanentActionError, RetryableActionError


def config(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "my-servicenow", "type": "serviceNow", "enable": True,
                            "user": USER, "password": PASSWORD, "instance": "dev12345"}
    data.update(extra)
    return data


def golden_message() -> Any:
    return make_message(
        title="Image alpine:3.19 has 2 critical vulnerabilities",
        description="<h1>alpine:3.19</h1><p>CVE-2024-0001 & CVE-2024-0002</p>",
        date="1767225600",
        severity="2",
        summary="2 critical, 5 high",
        category="Security",
        subcategory="Vulnerability",
        assignedTo="sec.oncall",
        assignedGroup="Security Operations",
    )


@pytest.fixture
async def servicenow() -> AsyncIterator[tuple[FakeServiceNow, str]]:
    fake = FakeServiceNow()
    async with serve(fake.app()) as url:
        yield fake, url


# ---- config ----

@pytest.mark.parametrize("spelling", ["serviceNow", "servicenow", "ServiceNow"])
def test_user_and_password_required_whatever_the_spelling(spelling: str) -> None:
    with pytest.raises(ConfigError, match=r"actions\[0\]\.password: is required"):
        build_action(config(type=spelling, password=""))
    data = config(type=spelling)
    del data["user"]
    with pytest.raises(ConfigError, match=r"actions\[0\]\.user: Field required"):
        build_action(data)


def test_instance_or_url_required_and_checked() -> None:
    with pytest.raises(ConfigError, match=r"actions\[0\]\.instance: is required unless url is set"):
        build_action(config(instance=""))
    with pytest.raises(ConfigError, match=r"actions\[0\]\.instance: must be the instance name only"):
        build_action(config(instance="dev1.service-now.com"))
    with pytest.raises(ConfigError, match=r"actions\[0\]\.board: must be a ServiceNow table name"):
        build_action(config(board="incident; drop"))


def test_urls_default_table_and_override() -> None:
    act = build_action(config())
    assert act.config.board == "incident"
    assert act.config.table_url() == "https://dev12345.service-now.com/api/now/table/incident"
    act = build_action(config(board="sn_si_incident", url="https://sn.example.com/"))
    assert act.config.table_url() == "https://sn.example.com/api/now/table/sn_si_incident"


def test_secrets_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_T_SN_USER", "env.user")
    monkeypatch.setenv("HERALD_T_SN_PASS", "env-pass-1")
    cfg = build_action(config(user="$HERALD_T_SN_USER", password="$HERALD_T_SN_PASS")).config
    assert (cfg.user, cfg.password.reveal()) == ("env.user", "env-pass-1")
    (tmp_path / "pw").write_text("file-pass-2\n")
    cfg = build_action(config(password=None, **{"password-file": str(tmp_path / "pw")})).config
    assert cfg.password.reveal() == "file-pass-2"


# ---- payload ----

def test_golden_record() -> None:
    act = build_action(config())
    document = request_as_json(act.build_payload(golden_message()))
    headers = dict(document.pop("headers"))
    assert headers.pop("Authorization") == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert_golden("servicenow", dict(document, headers=headers))


def test_opened_at_is_utc_and_impact_defaults_to_3() -> None:
    assert opened_at("0") == "1970-01-01 00:00:00"
    assert opened_at("") == opened_at("yesterday") == opened_at("1.5") == ""
    assert (impact("1"), impact(""), impact("High"), impact("2.0")) == (1, 3, 3, 3)


def test_auth_header_is_redacted_in_request_repr() -> None:
    act = build_action(config())
    request = act.build_payload(golden_message())
    from app.redact import redact

    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert encoded not in redact(repr(request)) and PASSWORD not in redact(repr(request))


# ---- delivery ----

async def test_inserts_record(servicenow: tuple[FakeServiceNow, str]) -> None:
    fake, url = servicenow
    act: ServiceNowAction = build_action(config(url=url, board="sn_si_incident"))
    await act.send(act.build_payload(golden_message()))
    [(table, record)] = fake.records
    assert table == "sn_si_incident"
    assert record["short_description"] == "Image alpine:3.19 has 2 critical vulnerabilities"
    assert record["work_notes"] == "[code]<h1>alpine:3.19</h1><p>CVE-2024-0001 & CVE-2024-0002</p>[/code]"
    assert (record["impact"], record["urgency"], record["state"]) == (2, 2, 0)
    assert record["opened_at"] == "2026-01-01 00:00:00"
    assert record["caller_id"] == USER


async def test_any_2xx_is_success(servicenow: tuple[FakeServiceNow, str]) -> None:
    fake, url = servicenow
    fake.status = 200
    act = build_action(config(url=url))
    await act.send(act.build_payload(make_message(title="t")))
    assert len(fake.records) == 1


async def test_wrong_password_is_permanent_without_the_secret(servicenow: tuple[FakeServiceNow, str]) -> None:
    _, url = servicenow
    act = build_action(config(url=url, password="wrong-pass-77"))
    with pytest.raises(PermanentActionError) as err:
        await act.send(act.build_payload(make_message()))
    assert err.value.status == 401 and "User Not Authenticated" in str(err.value)
    assert "wrong-pass-77" not in str(err.value)


async def test_unknown_table_is_permanent(servicenow: tuple[FakeServiceNow, str]) -> None:
    _, url = servicenow
    act = build_action(config(url=url, board="no_such_table"))
    with pytest.raises(PermanentActionError, match="Invalid table no_such_table"):
        await act.send(act.build_payload(make_message()))


async def test_outage_is_retryable(servicenow: tuple[FakeServiceNow, str]) -> None:
    fake, url = servicenow
    fake.fail_with = 503
    act = build_action(config(url=url))
    with pytest.raises(RetryableActionError) as err:
        await act.send(act.build_payload(make_message()))
    assert err.value.status == 503
    assert fake.records == []
