"""dependencytrack action: config rules, golden upload, and the BOM API on a local peer."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.actions.fake_dependencytrack import API_KEY, BOM, READ_ONLY_KEY, FakeDependencyTrack
from tests.actions.support import assert_golden, build_action, make_message, request_as_json, serve

from app.errors import ConfigError, PermanentActionError, RetryableActionError


def config(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "my-dependencytrack", "type": "dependencytrack", "enable": True,
                            "url": "https://dtrack.example.com/", "dependency-track-api-key": API_KEY}
    data.update(extra)
    return data


@pytest.fixture
async def dtrack() -> AsyncIterator[tuple[FakeDependencyTrack, str]]:
    fake = FakeDependencyTrack()
    async with serve(fake.app()) as url:
        yield fake, url


# ---- config ----

def test_url_and_key_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"actions\[0\]\.dependency-track-api-key: is required"):
        build_action(config(**{"dependency-track-api-key": ""}))
    data = config()
    del data["url"]
    with pytest.raises(ConfigError, match=r"actions\[0\]\.url: Field required"):
        build_action(data)
    with pytest.raises(ConfigError, match=r"actions\[0\]\.url: must be an http"):
        build_action(config(url="dtrack.example.com"))


def test_key_from_env_or_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_T_DT_KEY", "odt_fromEnv")
    assert build_action(config(**{"dependency-track-api-key": "$HERALD_T_DT_KEY"})).config \
        .dependency_track_api_key.reveal() == "odt_fromEnv"
    (tmp_path / "key").write_text("odt_fromFile\n")
    cfg = build_action(config(**{"dependency-track-api-key": None,
                                 "dependency-track-api-key-file": str(tmp_path / "key")})).config
    assert cfg.dependency_track_api_key.reveal() == "odt_fromFile"
    with pytest.raises(ConfigError, match="both dependency-track-api-key and dependency-track-api-key-file"):
        build_action(config(**{"dependency-track-api-key-file": str(tmp_path / "key")}))


def test_config_error_hides_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        build_action(config(url=5, **{"dependency-track-api-key": ["odt_listed"]}))
    assert "odt_listed" not in str(err.value)


# ---- payload ----

def test_golden_upload() -> None:
    act = build_action(config())
    document = request_as_json(act.build_payload(make_message(title="alpine:3.19", description=BOM)))
    headers = dict(document.pop("headers"))
    assert headers.pop("X-Api-Key") == API_KEY
    assert base64.b64decode(document["body"]["bom"]).decode() == BOM  # the BOM exactly as rendered
    assert_golden("dependencytrack", dict(document, headers=headers))


@pytest.mark.parametrize(("title", "name", "version"), [
    ("alpine:3.19", "alpine", "3.19"),
    ("registry.io/team/app:1.2:rc1", "registry.io/team/app", "1.2:rc1"),
    ("app:", "app", ""),
])
def test_title_splits_on_the_first_colon(title: str, name: str, version: str) -> None:
    body = json.loads(build_action(config()).build_payload(make_message(title=title, description=BOM)).body)
    assert (body["projectName"], body["projectVersion"], body["autoCreate"]) == (name, version, True)


@pytest.mark.parametrize("title", ["alpine", "", ":3.19"])
def test_bad_title_is_permanent_and_named(title: str) -> None:
    with pytest.raises(PermanentActionError, match=f"the title must be 'project:version', got {title!r}"):
        build_action(config()).build_payload(make_message(title=title, description=BOM))


@pytest.mark.parametrize("description", ["<bom/>", "", "[1, 2]"])
def test_description_must_be_a_json_object(description: str) -> None:
    with pytest.raises(PermanentActionError, match="the description must be a JSON"):
        build_action(config()).build_payload(make_message(title="a:1", description=description))


# ---- delivery ----

async def test_uploads_bom(dtrack: tuple[FakeDependencyTrack, str]) -> None:
    fake, url = dtrack
    act = build_action(config(url=url))
    await act.send(act.build_payload(make_message(title="alpine:3.19", description=BOM)))
    [upload] = fake.uploads
    assert (upload["projectName"], upload["projectVersion"]) == ("alpine", "3.19")
    assert upload["bom"] == json.loads(BOM)


@pytest.mark.parametrize(("key", "status"), [("odt_wrong", 401), (READ_ONLY_KEY, 403)])
async def test_auth_failures_are_permanent(dtrack: tuple[FakeDependencyTrack, str], key: str, status: int) -> None:
    fake, url = dtrack
    act = build_action(config(url=url, **{"dependency-track-api-key": key}))
    with pytest.raises(PermanentActionError) as err:
        await act.send(act.build_payload(make_message(title="a:1", description=BOM)))
    assert err.value.status == status and key not in str(err.value)
    assert fake.uploads == []


async def test_outage_is_retryable(dtrack: tuple[FakeDependencyTrack, str]) -> None:
    fake, url = dtrack
    fake.fail_with = 503
    act = build_action(config(url=url))
    with pytest.raises(RetryableActionError):
        await act.send(act.build_payload(make_message(title="a:1", description=BOM)))
