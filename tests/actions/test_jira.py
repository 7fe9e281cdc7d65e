"""jira action: config rules, pure payload, and issue creation against a local Jira REST peer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.actions.fake_jira import FakeJira
from tests.actions.support import build_action, free_port, make_message, self_signed_cert, serve, server_tls_context

from actions import _jira_fields as jf
from actions.jira import OWNER_TOKEN, JiraAction, JiraIssue
from app.errors import ConfigError, PermanentActionError, RetryableActionError


def config(url: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "my-jira", "type": "jira", "enable": True, "url": url,
                            "user": "bot@example.com", "password": "jira-api-token-123", "project-key": "abc"}
    data.update(extra)
    return data


def action(url: str, **extra: Any) -> JiraAction:
    act = build_action(config(url, **extra))
    assert isinstance(act, JiraAction)
    return act


async def deliver(act: JiraAction, **content: str) -> None:
    content.setdefault("title", "CVE-2024-0001 in alpine:3.19")
    content.setdefault("description", "h1. Findings\n* openssl 3.1 -> 3.1.5")
    try:
        await act.send(act.build_payload(make_message(**content)))
    finally:
        await act.close()


@pytest.fixture
async def jira() -> AsyncIterator[tuple[FakeJira, str]]:
    fake = FakeJira()
    async with serve(fake.app()) as url:
        yield fake, url


# ---- config ----

def test_config_defaults_and_normalisation() -> None:
    act = action("https://jira.example.com/", assignee=["alice"], labels=["sec"])
    cfg = act.config
    assert cfg.project_key == "ABC"
    assert cfg.url == "https://jira.example.com"
    assert cfg.tls_verify is True
    assert cfg.board_name() == "ABC board"
    assert cfg.unknowns == {}


def test_unknown_values_become_strings() -> None:
    cfg = action("https://j.example.com", unknowns={"Risk Score-numeric-field": 7, "Flag": True}).config
    assert cfg.unknowns == {"Risk Score-numeric-field": "7", "Flag": "true"}


def test_pat_on_cloud_is_a_config_error_that_hides_the_token() -> None:
    with pytest.raises(ConfigError) as err:
        build_action(config("https://acme.atlassian.net", token="pat-value-789", password=None))
    assert "actions[0].token" in str(err.value) and "Personal Access Token" in str(err.value)
    assert "pat-value-789" not in str(err.value)


def test_user_and_a_secret_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JIRA_PASSWORD", raising=False)
    data = config("https://j.example.com")
    del data["password"]
    with pytest.raises(ConfigError, match=r"actions\[0\]\.password: password or token is required"):
        build_action(data)
    del data["user"]
    with pytest.raises(ConfigError, match=r"actions\[0\]\.user"):
        build_action(data)


def test_postee_jira_password_env_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_PASSWORD", "from-env-jira")
    data = config("https://j.example.com")
    del data["password"]
    assert build_action(data).config.password.reveal() == "from-env-jira"


def test_env_and_file_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_T_JIRA_USER", "env-user")
    monkeypatch.setenv("HERALD_T_JIRA_PAT", "env-pat-value")
    cfg = action("https://j.example.com", user="$HERALD_T_JIRA_USER", password=None,
                 token="$HERALD_T_JIRA_PAT").config
    assert (cfg.user, cfg.token.reveal()) == ("env-user", "env-pat-value")
    secret = tmp_path / "token"
    secret.write_text("file-pat-value\n")
    cfg = action("https://j.example.com", password=None, **{"token-file": str(secret)}).config
    assert cfg.token.reveal() == "file-pat-value"
    with pytest.raises(ConfigError, match=r"actions\[0\]\.token-file: both token and token-file"):
        action("https://j.example.com", token="x-inline", **{"token-file": str(secret)})
    with pytest.raises(ConfigError, match=r"actions\[0\]\.password-file: cannot read secret file"):
        action("https://j.example.com", **{"password-file": str(tmp_path / "missing")})


def test_assignee_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match=r"actions\[0\]\.assignee: expected a list"):
        action("https://j.example.com", assignee="alice,bob")


# ---- pure payload ----

def test_build_payload_expands_owners_and_defaults_to_user() -> None:
    act = action("http://127.0.0.1:1", assignee=[OWNER_TOKEN, "bob"])
    issue = act.build_payload(make_message(title="T", description="D", owners="carol@x.io;dave@x.io"))
    assert issue == JiraIssue(summary="T", description="D", assignee="carol@x.io")
    assert act.build_payload(make_message(title="T")).assignee == "bob"
    assert action("http://127.0.0.1:1").build_payload(make_message()).assignee == "bot@example.com"


async def test_no_network_before_the_first_send(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    act = action(url)
    await act.start()
    act.build_payload(make_message())
    await act.close()
    assert fake.requests == []


# ---- delivery against the fake Jira ----

async def test_creates_issue_with_postee_fields(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    act = action(url, assignee=[OWNER_TOKEN], labels=["security", "trivy"], **{"fix-versions": ["2.0"],
                 "affects-versions": ["1.0"]})
    await deliver(act, title="Image alpine:3.19", description="h1. Report", owners="alice@example.com")
    [created] = fake.created
    assert created["issue"]["key"] == "ABC-1"
    assert created["fields"] == {
        "project": {"id": "10000"},
        "issuetype": {"id": "10001"},
        "summary": "Image alpine:3.19",
        "description": "h1. Report",
        "priority": {"name": "High"},
        "assignee": {"name": "alice"},
        "labels": ["security", "trivy"],
        "fixVersions": [{"name": "2.0"}],
        "versions": [{"name": "1.0"}],
        "customfield_10020": 35,  # the newest of the two active sprints
    }
    paths = [p for _, p in fake.requests]
    assert any(p.startswith("/rest/api/2/issue/createmeta/ABC/issuetypes/10001") for p in paths)
    assert not any(p.startswith("/rest/api/2/issue/createmeta?") for p in paths)


async def test_named_sprint_issuetype_and_priority(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    await deliver(action(url, sprint="ABC Sprint 4", priority="low"))
    assert fake.created[0]["fields"]["customfield_10020"] == 32
    assert fake.created[0]["fields"]["priority"] == {"name": "Low"}
    # Bug's screen has no priority, assignee or sprint field: those are left out, not sent.
    await deliver(action(url, issuetype="bug", sprint="ABC Sprint 4"))
    assert fake.created[1]["fields"] == {"project": {"id": "10000"}, "issuetype": {"id": "10002"},
                                         "summary": "CVE-2024-0001 in alpine:3.19",
                                         "description": "h1. Findings\n* openssl 3.1 -> 3.1.5"}


async def test_priorities_come_from_the_priority_list_when_create_meta_has_none(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    for f in fake.screens["Task"]:
        if f["fieldId"] == "priority":
            del f["allowedValues"]
    await deliver(action(url, priority="highest"))
    assert fake.created[0]["fields"]["priority"] == {"name": "Highest"}
    assert ("GET", "/rest/api/2/priority") in fake.requests


async def test_unknowns_by_schema_and_by_suffix(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    unknowns = {
        "Epic Link": "ABC-7",
        "Risk Score-numeric-field": "7.5",
        "Environments-multiple-value": "dev, prod",
        "Notes-multiple-line-text-field": "line one\nline two",
        "Found At-date-time-picker": "2014-04-11T12:14:26.880+0400",
        "Advisory-field-url": "https://avd.aquasec.com/nvd/cve-2024-0001",
        "Team": "red",
        "Reviewer": "bob",
        "Component/s": "backend",
    }
    await deliver(action(url, unknowns=unknowns))
    fields = fake.created[0]["fields"]
    assert fields["customfield_10014"] == "ABC-7"
    assert fields["customfield_10100"] == 7.5
    assert fields["customfield_10101"] == [{"value": "dev"}, {"value": "prod"}]
    assert fields["customfield_10102"] == "line one\nline two"
    assert fields["customfield_10103"] == "2014-04-11T12:14:26.880+0400"
    assert fields["customfield_10104"] == "https://avd.aquasec.com/nvd/cve-2024-0001"
    assert fields["customfield_10105"] == {"value": "red"}
    assert fields["customfield_10106"] == {"name": "bob"}
    assert fields["components"] == [{"name": "backend"}]


async def test_field_not_on_create_screen_is_permanent(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    with pytest.raises(PermanentActionError, match="'Story Points' \\(unknowns\\) is not on the create screen"):
        await deliver(action(url, unknowns={"Story Points": "3"}))
    with pytest.raises(PermanentActionError, match="'Region'.*'option-with-child'"):
        await deliver(action(url, unknowns={"Region": "EU"}))
    with pytest.raises(PermanentActionError, match="'Risk Score' needs a number, got 'high'"):
        await deliver(action(url, unknowns={"Risk Score": "high"}))
    with pytest.raises(PermanentActionError, match="labels is set but the field 'labels' is not on the create"):
        await deliver(action(url, issuetype="Bug", labels=["x"]))
    assert fake.created == []


async def test_missing_issuetype_priority_and_board_are_permanent(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    with pytest.raises(PermanentActionError, match="no issue type 'Epic' \\(issuetype\\); available: Task, Bug"):
        await deliver(action(url, issuetype="Epic"))
    with pytest.raises(PermanentActionError, match="priority 'Blocker' \\(priority\\) does not exist"):
        await deliver(action(url, priority="Blocker"))
    with pytest.raises(PermanentActionError, match="board 'Ops board' \\(board\\) not found"):
        await deliver(action(url, board="Ops board"))
    with pytest.raises(PermanentActionError, match="HTTP 404") as err:
        await deliver(action(url, **{"project-key": "zzz"}))
    assert err.value.status == 404
    assert fake.created == []


async def test_no_sprint_without_agile_or_on_a_kanban_board(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    await deliver(action(url, board="ABC kanban"))
    fake.agile = False
    await deliver(action(url))
    assert [("customfield_10020" in c["fields"]) for c in fake.created] == [False, False]


async def test_personal_access_token_is_sent_as_bearer(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    await deliver(action(url, password=None, token="jira-pat-456"))
    assert len(fake.created) == 1


async def test_one_client_per_action(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    act = action(url)
    await act.send(act.build_payload(make_message(title="one")))
    await act.send(act.build_payload(make_message(title="two")))
    await act.close()
    assert [c["fields"]["summary"] for c in fake.created] == ["one", "two"]
    assert sum(p.endswith("/serverInfo") for _, p in fake.requests) == 1
    assert sum(p.startswith("/rest/agile/1.0/board?") for _, p in fake.requests) == 1


async def test_bad_credentials_are_permanent_and_secret_free(jira: tuple[FakeJira, str],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    _, url = jira
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PermanentActionError) as err:
        await deliver(action(url, password="wrong-secret-999"))
    assert err.value.status == 401
    assert "wrong-secret-999" not in str(err.value) and "wrong-secret-999" not in caplog.text
    assert "d3Jvbmctc2VjcmV0LTk5OQ" not in str(err.value)  # base64 fragment of the password


@pytest.mark.parametrize(("status", "headers", "retry_after"), [(429, {"Retry-After": "7"}, 7.0), (503, {}, None)])
async def test_throttling_and_outages_are_retryable(jira: tuple[FakeJira, str], status: int,
                                                    headers: dict[str, str], retry_after: float | None) -> None:
    fake, url = jira
    fake.issue_failures.append((status, headers, {"errorMessages": ["slow down"], "errors": {}}))
    with pytest.raises(RetryableActionError) as err:
        await deliver(action(url))
    assert (err.value.status, err.value.retry_after) == (status, retry_after)
    posts = [p for m, p in fake.requests if m == "POST"]
    assert posts == ["/rest/api/2/issue"]  # the library did not retry on its own


async def test_jira_validation_error_is_permanent(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    fake.issue_failures.append((400, {}, {"errorMessages": [], "errors": {"summary": "Summary is required."}}))
    with pytest.raises(PermanentActionError, match="HTTP 400 to /rest/api/2/issue: .*Summary is required"):
        await deliver(action(url))


async def test_unreachable_server_is_retryable() -> None:
    with pytest.raises(RetryableActionError):
        await deliver(action(f"http://127.0.0.1:{free_port()}"))


async def test_legacy_createmeta_on_old_server() -> None:
    fake = FakeJira(version=(8, 2, 0))
    async with serve(fake.app()) as url:
        await deliver(action(url, unknowns={"Team": "blue"}))
    assert fake.created[0]["fields"]["customfield_10105"] == {"value": "blue"}
    paths = [p for _, p in fake.requests]
    assert any(p.startswith("/rest/api/2/issue/createmeta?") and "expand=projects.issuetypes.fields" in p
               for p in paths)
    assert not any("/issuetypes" in p for p in paths)


async def test_cloud_uses_query_user_search_and_account_ids() -> None:
    fake = FakeJira(deployment="Cloud", version=(1001, 0, 0))
    async with serve(fake.app()) as url:
        await deliver(action(url, assignee=["alice@example.com"], unknowns={"Reviewer": "bob@example.com"}))
    fields = fake.created[0]["fields"]
    assert fields["assignee"] == {"accountId": "5b10ac8d82e05b22cc7d4ef5"}
    assert fields["customfield_10106"] == {"accountId": "5b10ac8d82e05b22cc7d4ef6"}
    assert any(p.startswith("/rest/api/2/user/search?query=alice") for _, p in fake.requests)


async def test_unknown_assignee_is_left_out(jira: tuple[FakeJira, str]) -> None:
    fake, url = jira
    await deliver(action(url, assignee=["nobody@example.com"]))
    assert "assignee" not in fake.created[0]["fields"]


async def test_tls_is_verified_by_default(tmp_path: Path) -> None:
    fake = FakeJira()
    cert, key = self_signed_cert(tmp_path)
    async with serve(fake.app(), ssl_context=server_tls_context(cert, key)) as url:
        with pytest.raises(RetryableActionError):
            await deliver(action(url))
        assert fake.created == []


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
async def test_tls_verify_false_accepts_a_self_signed_server(tmp_path: Path) -> None:
    fake = FakeJira()
    cert, key = self_signed_cert(tmp_path)
    async with serve(fake.app(), ssl_context=server_tls_context(cert, key)) as url:
        await deliver(action(url, **{"tls-verify": False}))
    assert len(fake.created) == 1


# ---- pure helpers ----

def test_pick_sprint_prefers_name_then_newest_active() -> None:
    sprints = FakeJira().sprints[7]
    assert jf.pick_sprint(sprints, "ABC Sprint 5")["id"] == 33  # type: ignore[index]
    assert jf.pick_sprint(sprints, "")["id"] == 35  # type: ignore[index]
    assert jf.pick_sprint(sprints, "no such sprint")["id"] == 35  # type: ignore[index]
    assert jf.pick_sprint([s for s in sprints if s["state"] != "active"], "") is None


def test_exact_names_win_over_suffix_stripping() -> None:
    metas = [jf.FieldMeta("customfield_1", "Link-field-url", "string"), jf.FieldMeta("customfield_2", "Link", "string")]
    assert jf.resolve(metas, "Link-field-url") == (metas[0], "")
    assert jf.resolve(metas[1:], "Link-field-url") == (metas[1], "-field-url")
    assert jf.resolve(metas, "customfield_2") == (metas[1], "")


def test_date_time_picker_normalises_to_jira_format() -> None:
    meta = jf.FieldMeta("customfield_3", "When", "datetime")
    convert = jf.convert
    utc = convert(meta, "2014-04-11T12:14:26Z", "-date-time-picker", "1", lambda _: None)
    assert utc == "2014-04-11T12:14:26.000+0000"
    day = jf.FieldMeta("customfield_4", "Day", "date")
    assert convert(day, "2014-04-11T12:14:26+0400", "-date-time-picker", "1", lambda _: None) == "2014-04-11"
    with pytest.raises(PermanentActionError, match="'When' needs an ISO-8601 date-time"):
        convert(meta, "last tuesday", "-date-time-picker", "1", lambda _: None)
    with pytest.raises(PermanentActionError, match="'When' needs an http\\(s\\) URL"):
        convert(meta, "ftp://x", "-field-url", "1", lambda _: None)


async def test_a_peer_that_is_not_jira_is_permanent() -> None:
    from aiohttp import web

    async def empty(request: web.Request) -> web.Response:
        return web.json_response({})  # e.g. a proxy that answers 200 {} to everything

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", empty)
    async with serve(app) as url:
        with pytest.raises(PermanentActionError, match="unexpected answer from Jira"):
            await deliver(action(url))
