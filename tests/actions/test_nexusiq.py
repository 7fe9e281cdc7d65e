"""nexusiq action: config rules, application lookup/creation and SBOM submission on a local peer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.actions.fake_nexusiq import BOM, ORG, PASSWORD, USER, FakeNexusIq
from tests.actions.support import build_action, make_message, serve

from actions.nexusiq import NexusIqRequest, application_id
from app.errors import ConfigError, PermanentActionError, RetryableActionError


def config(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "my-nexus-iq", "type": "nexusIq", "enable": True, "url": "https://iq.example.com",
                            "user": USER, "password": PASSWORD, "organization-id": ORG}
    data.update(extra)
    return data


@pytest.fixture
async def iq() -> AsyncIterator[tuple[FakeNexusIq, str]]:
    fake = FakeNexusIq()
    async with serve(fake.app()) as url:
        yield fake, url


# ---- config and payload ----

@pytest.mark.parametrize("missing", ["url", "user", "organization-id"])
def test_required_keys(missing: str) -> None:
    data = config()
    del data[missing]
    with pytest.raises(ConfigError, match=rf"actions\[0\]\.{missing}: Field required"):
        build_action(data)
    with pytest.raises(ConfigError, match=r"actions\[0\]\.password: is required"):
        build_action(config(password=""))


def test_password_file_and_timeout(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    cfg = build_action(config(password=None, timeout="5s", **{"password-file": str(tmp_path / "pw")})).config
    assert (cfg.password.reveal(), cfg.timeout) == ("from-file", 5.0)
    assert build_action(config()).config.timeout == 120.0


def test_application_id_is_postees() -> None:
    assert application_id("registry.io/team/app:1.2") == "registry_io_team_app_1_2"
    act = build_action(config())
    assert act.build_payload(make_message(title="alpine:3.19", description=BOM)) == \
        NexusIqRequest(public_id="alpine_3_19", bom=BOM.encode())
    with pytest.raises(PermanentActionError, match="title .* is empty"):
        act.build_payload(make_message(title=" ", description=BOM))


# ---- delivery ----

async def test_creates_missing_application_then_reuses_it(iq: tuple[FakeNexusIq, str]) -> None:
    fake, url = iq
    act = build_action(config(url=url))
    for _ in range(2):
        await act.send(act.build_payload(make_message(title="alpine:3.19", description=BOM)))
    created = [a for a in fake.apps if a["publicId"] == "alpine_3_19"]
    assert len(created) == 1 and created[0]["name"] == "alpine_3_19"
    assert fake.scans == [(created[0]["id"], BOM), (created[0]["id"], BOM)]


async def test_existing_application_is_found(iq: tuple[FakeNexusIq, str]) -> None:
    fake, url = iq
    act = build_action(config(url=url))
    await act.send(act.build_payload(make_message(title="existing-app", description=BOM)))
    assert len(fake.apps) == 1 and fake.scans[0][0] == "4537e6fe68c24dd5ac83efd97d4fc2f4"


async def test_wrong_password_is_permanent_without_the_secret(iq: tuple[FakeNexusIq, str]) -> None:
    _, url = iq
    act = build_action(config(url=url, password="not-the-pass-1"))
    with pytest.raises(PermanentActionError) as err:
        await act.send(act.build_payload(make_message(title="a", description=BOM)))
    assert err.value.status == 401 and "not-the-pass-1" not in str(err.value)


async def test_unknown_organization_is_permanent(iq: tuple[FakeNexusIq, str]) -> None:
    _, url = iq
    act = build_action(config(url=url, **{"organization-id": "nope"}))
    with pytest.raises(PermanentActionError, match="listing applications.*HTTP 404"):
        await act.send(act.build_payload(make_message(title="a", description=BOM)))


async def test_non_json_answer_is_permanent(iq: tuple[FakeNexusIq, str]) -> None:
    fake, url = iq
    fake.html_list = True
    act = build_action(config(url=url))
    with pytest.raises(PermanentActionError, match="listing applications: HTTP 200 answer is not JSON"):
        await act.send(act.build_payload(make_message(title="a", description=BOM)))


async def test_bad_sbom_is_permanent_and_outage_retryable(iq: tuple[FakeNexusIq, str]) -> None:
    fake, url = iq
    act = build_action(config(url=url))
    with pytest.raises(PermanentActionError, match="submitting the SBOM.*HTTP 400"):
        await act.send(act.build_payload(make_message(title="a", description="not xml")))
    fake.fail_scan = 503
    with pytest.raises(RetryableActionError) as err:
        await act.send(act.build_payload(make_message(title="a", description=BOM)))
    assert err.value.status == 503


async def test_timeout_is_the_actions_own(iq: tuple[FakeNexusIq, str]) -> None:
    fake, url = iq
    fake.delay = 1.0
    act = build_action(config(url=url, timeout="0.1s"))
    with pytest.raises(RetryableActionError, match="no answer within 0.1s"):
        await act.send(act.build_payload(make_message(title="a", description=BOM)))
