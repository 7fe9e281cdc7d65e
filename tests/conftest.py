"""Session fixtures: a real Apache Kafka broker (KRaft, 127.0.0.1) started from the project's jars.

A broker that cannot start FAILS the tests that need it; nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.devtools.kafka_local import LocalKafka
from tests.harness import FIXTURES, private_broker

__all__ = ["FIXTURES"]


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka]:
    yield from private_broker("test Kafka broker", secured=False)


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[LocalKafka]:
    """A second broker whose client listener is SASL_SSL with SCRAM-SHA-512 (``client_settings()``
    is its ``herald.kafka`` block, ``client_config()`` a librdkafka config)."""
    yield from private_broker("secured test Kafka broker", secured=True)


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
