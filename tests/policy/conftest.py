"""Fixtures for the policy suite: the same tests run on the embedded engine and on a real OPA
server (Herald's build, with ``jsonformat``) started on 127.0.0.1 for the session.

Building or starting OPA FAILS the OPA tests; nothing is skipped. Every OPA engine a test makes
is cleaned up after it (its modules deleted newest first, its data removed), and the teardown
checks that the server holds no module any more, so one test cannot leak rules into the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from app.errors import PolicyError
from app.routing.policy.engine import EmbeddedEngine, PolicyEngine
from app.devtools.opa_local import OpaServer, opa_binary
from app.routing.policy.opa import OpaEngine

EngineFactory = Callable[[], PolicyEngine]


@pytest.fixture(scope="session")
def opa_server() -> Iterator[OpaServer]:
    try:
        binary = opa_binary(build=True)  # scripts/build-opa.sh: cached after the first build
    except PolicyError as exc:
        pytest.fail(f"cannot build Herald's OPA: {exc}", pytrace=False)
    server = OpaServer(binary, v0=True)
    try:
        server.start(timeout=60)
    except PolicyError as exc:
        pytest.fail(f"cannot start OPA: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def opa_engines(request: pytest.FixtureRequest) -> Iterator[Callable[[], OpaEngine]]:
    """A factory of OPA engines on the session server, all cleaned up after the test."""
    server: OpaServer = request.getfixturevalue("opa_server")
    made: list[OpaEngine] = []

    def factory() -> OpaEngine:
        engine = OpaEngine(server.url, v0=True)
        made.append(engine)
        return engine

    yield factory
    if not made:
        return
    ids = [policy_id for engine in made for policy_id in engine.policy_ids()]
    probe = made[0]
    left = probe.remove_policies(ids)  # all engines' modules together: one may use another's
    for engine in made:
        engine.remove_all()
    remaining = probe.server_policy_ids()
    for engine in made:
        engine.close()
    assert not left and not remaining, f"OPA still holds modules after the test: {left or remaining}"


@pytest.fixture(params=["embedded", "opa"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine_factory(engine_kind: str, request: pytest.FixtureRequest) -> EngineFactory:
    """A zero-argument factory of fresh engines of the parametrised kind."""
    if engine_kind == "embedded":
        return lambda: EmbeddedEngine(v0=True)
    factory: EngineFactory = request.getfixturevalue("opa_engines")
    return factory
