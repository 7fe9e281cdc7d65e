"""Session fixtures: a real Apache Kafka broker (KRaft, 127.0.0.1) started from the project's jars.

A broker that cannot start FAILS the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.devtools.kafka_local import LocalKafka
from tests.harness import FIXTURES, free_port

__all__ = ["FIXTURES"]


def _broker(what: str, secured: bool) -> Iterator[LocalKafka]:
    state = Path(tempfile.mkdtemp(prefix=f"herald-test-kafka-{'secured-' if secured else ''}"))
    extra = {"secured": True, "internal_port": free_port()} if secured else {}
    broker = LocalKafka(state, port=free_port(), controller_port=free_port(), **extra)
    try:
        broker.start(timeout=120)
    except Exception as exc:  # noqa: BLE001
        log = (state / "kafka.log").read_text(errors="replace")[-3000:] if (state / "kafka.log").exists() else ""
        pytest.fail(f"the {what} could not start: {exc}\n{log}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()
        if not os.environ.get("HERALD_KEEP_TEST_STATE"):
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    yield from _broker("test Kafka broker", secured=False)


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[LocalKafka]:
    """A second broker whose client listener is SASL_SSL with SCRAM-SHA-512 (``client_settings()``
    is its ``herald.kafka`` block, ``client_config()`` a librdkafka config)."""
    yield from _broker("secured test Kafka broker", secured=True)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


# Real-component fixtures: a test that uses one (directly, or through an engine parameter) is an
# end-to-end test. `make test-fast` runs the rest (`-m "not e2e"`), the unit layer.
E2E_FIXTURES = {"kafka", "secure_kafka", "opa_server", "opa_engines", "token_opa", "mtls_opa", "docker_host"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (item.path.name.endswith("_e2e.py") or "browser" in item.path.parts
                or E2E_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                or params.get("engine_kind") == "opa"
                or any(isinstance(v, str) and v in E2E_FIXTURES for v in params.values())):
            item.add_marker(pytest.mark.e2e)
