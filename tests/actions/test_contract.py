"""The contract every action type must pass (Alertmanager-style shared notifier suite).

Data-driven by tests/actions/minimal_configs.py: config strictness (unknown keys warn, wrong
types name the key path), documented config fields, the shared retry verdicts of HTTP actions
against a local peer, and no secret in any error message.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from tests.actions.minimal_configs import CASES, ContractCase
from tests.actions.support import BUILT, free_port, make_message, serve

from actions import REGISTRY, action_class
from actions.base import ActionConfig
from app.config.model import validate_model
from app.errors import ActionError, ConfigError, PermanentActionError, RetryableActionError

# Every registered type, whether or not its module imports: a module that is missing or broken
# fails its cases instead of dropping them from the parametrization.
TYPES = sorted(REGISTRY)
HTTP_TYPES = [t for t in TYPES if t in CASES and CASES[t].http]
# Postee's action types (its config parser's `type` values, lowercased; type names are
# case-insensitive), each of which Herald must accept.
POSTEE_TYPES = ["stdout", "email", "jira", "slack", "teams", "webhook", "splunk", "servicenow", "nexusiq",
                "dependencytrack", "opsgenie", "pagerduty", "exec", "http", "kubernetes", "docker",
                "awssecurityhub"]
NOT_YET: dict[str, str] = {}
ERROR_VERDICTS: list[tuple[int, type[ActionError]]] = [
    (400, PermanentActionError), (429, RetryableActionError), (500, RetryableActionError),
    (503, RetryableActionError),
]


def with_base(value: Any, base: str) -> Any:
    if isinstance(value, str):
        return value.replace("{base}", base)
    if isinstance(value, list):
        return [with_base(v, base) for v in value]
    if isinstance(value, dict):
        return {k: with_base(v, base) for k, v in value.items()}
    return value


def build(type_name: str, base: str = "http://127.0.0.1:9") -> Any:
    cls = action_class(type_name)
    config, warnings = validate_model(cls.config_model, with_base(CASES[type_name].config, base), "actions[0]")
    assert warnings == []
    action = cls(config)
    BUILT.append(action)  # closed after the test (conftest.py)
    return action


def assert_no_secret(case: ContractCase, text: str) -> None:
    for secret in case.secrets:
        assert secret not in text, f"secret {secret[:4]}... appears in: {text}"


def test_every_registered_action_type_is_in_the_contract_table() -> None:
    missing = [t for t in REGISTRY if t not in CASES]
    assert not missing, f"add a ContractCase for {missing} to tests/actions/minimal_configs.py"
    stale = sorted(set(CASES) - set(REGISTRY))
    assert not stale, f"contract cases for types that are not registered: {stale}"


@pytest.mark.parametrize("type_name", TYPES)
def test_registered_module_imports_and_holds_its_class(type_name: str) -> None:
    module_name, _, class_name = REGISTRY[type_name].partition(":")
    assert module_name == f"actions.{type_name}", "the type name is also the module name"
    module = importlib.import_module(module_name)  # a module that is missing or does not import fails here
    cls = getattr(module, class_name)
    assert action_class(type_name) is cls and action_class(type_name.upper()) is cls
    assert cls.type_name == type_name


@pytest.mark.parametrize("type_name", [
    pytest.param(t, marks=pytest.mark.xfail(reason=NOT_YET[t], strict=True)) if t in NOT_YET else t
    for t in POSTEE_TYPES
])
def test_every_postee_action_type_is_registered(type_name: str) -> None:
    assert type_name in REGISTRY, f"Postee's action type {type_name!r} is not in actions.REGISTRY"


def test_postee_types_are_all_there_is_to_cover() -> None:
    assert len(POSTEE_TYPES) == len(set(POSTEE_TYPES)) == 17
    assert set(REGISTRY) <= set(POSTEE_TYPES), "a Herald-only type? add it to this test's list on purpose"


@pytest.mark.parametrize("type_name", TYPES)
def test_minimal_config_builds_the_registered_class(type_name: str) -> None:
    action = build(type_name)
    assert action.type_name == type_name
    assert action.name == "c"


@pytest.mark.parametrize("type_name", TYPES)
def test_unknown_keys_are_warned_not_fatal(type_name: str) -> None:
    cls = action_class(type_name)
    data = {**with_base(CASES[type_name].config, "http://x"), "AquaServer": "x", "no-such-key": [1, 2]}
    _, warnings = validate_model(cls.config_model, data, "actions[3]")
    assert warnings == ["actions[3].AquaServer: unknown key, ignored", "actions[3].no-such-key: unknown key, ignored"]


@pytest.mark.parametrize("type_name", TYPES)
def test_wrong_type_names_the_key_path(type_name: str) -> None:
    case = CASES[type_name]
    cls = action_class(type_name)
    data = {**with_base(case.config, "http://x"), case.wrong_type_key: ["a", "b"]}
    with pytest.raises(ConfigError) as info:
        validate_model(cls.config_model, data, "actions[3]")
    assert f"actions[3].{case.wrong_type_key}:" in str(info.value)
    assert_no_secret(case, str(info.value))


@pytest.mark.parametrize("type_name", TYPES)
def test_config_fields_are_documented(type_name: str) -> None:
    model = action_class(type_name).config_model
    own = [name for name in model.model_fields if name not in ActionConfig.model_fields]
    undocumented = [n for n in own if not (model.model_fields[n].description or "").strip()]
    assert not undocumented, f"{type_name}: fields without description (the README table needs them): {undocumented}"


class Peer:
    """Answers every request with ``status``; error bodies quote the request (path, auth header,
    body) as careless servers do, so a leak of a secret into an error message is caught."""

    def __init__(self) -> None:
        self.status = 200
        self.ok_body = b"{}"
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if 200 <= self.status < 300:
            return web.Response(status=self.status, body=self.ok_body, content_type="application/json")
        echo = (f"error for {request.method} {request.path_qs} auth={request.headers.get('Authorization', '')} "
                f"key={request.headers.get('X-Api-Key', '')} body={body[:300].decode(errors='replace')}")
        headers = {"Retry-After": "1"} if self.status == 429 else {}
        return web.Response(status=self.status, text=echo, headers=headers)


@pytest_asyncio.fixture
async def peer() -> AsyncIterator[tuple[Peer, str]]:
    fake = Peer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    async with serve(app) as base:
        yield fake, base


def verdict_rows() -> list[tuple[str, int, type[ActionError] | None]]:
    rows: list[tuple[str, int, type[ActionError] | None]] = []
    for type_name in HTTP_TYPES:
        rows += [(type_name, status, None) for status in CASES[type_name].ok_statuses]
        rows += [(type_name, status, verdict) for status, verdict in ERROR_VERDICTS]
    return rows


def contract_message(case: ContractCase) -> Any:
    return make_message(title=case.title, description=case.description, event=case.event or None)


@pytest.mark.asyncio
@pytest.mark.parametrize(("type_name", "status", "verdict"), verdict_rows())
async def test_http_verdicts(peer: tuple[Peer, str], type_name: str, status: int,
                             verdict: type[ActionError] | None) -> None:
    fake, base = peer
    case = CASES[type_name]
    fake.status, fake.ok_body = status, case.ok_body
    action = build(type_name, base)
    if verdict is None:
        await action.deliver(contract_message(case))
        assert fake.requests >= 1
        return
    with pytest.raises(ActionError) as info:
        await action.deliver(contract_message(case))
    assert fake.requests >= 1
    assert type(info.value) is verdict, f"HTTP {status} gave {type(info.value).__name__}: {info.value}"
    assert info.value.status == status
    if status == 429:
        assert isinstance(info.value, RetryableActionError) and info.value.retry_after == 1
    assert_no_secret(case, str(info.value))


@pytest.mark.asyncio
@pytest.mark.parametrize("type_name", HTTP_TYPES)
async def test_connection_refused_is_retryable(type_name: str) -> None:
    case = CASES[type_name]
    action = build(type_name, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetryableActionError) as info:
        await action.deliver(contract_message(case))
    assert_no_secret(case, str(info.value))
