"""Every action's timeout key is one field type (``actions._common.timeout_default``): a Go duration
or seconds; empty means the action's own default; a bad value is an error naming the key path."""
from __future__ import annotations

from typing import Any

import pytest

from app.config.model import validate_model
from actions.docker import DockerConfig
from actions.exec import ExecConfig
from actions.http import HttpConfig
from actions.kubernetes import KubernetesConfig
from actions.nexusiq import NexusIqConfig
from app.errors import ConfigError
from tests.actions.minimal_configs import CASES

# (model, contract case, timeout key, attribute, default)
FIELDS = [
    (DockerConfig, "docker", "docker-timeout", "docker_timeout", 60.0),
    (ExecConfig, "exec", "timeout", "timeout", 60.0),
    (HttpConfig, "http", "timeout", "timeout", 5.0),
    (KubernetesConfig, "kubernetes", "kube-timeout", "kube_timeout", 30.0),
    (NexusIqConfig, "nexusiq", "timeout", "timeout", 120.0),
]


def load(model: type, case: str, **extra: Any) -> Any:
    data = {k: (v.replace("{base}", "http://127.0.0.1:1") if isinstance(v, str) else v)
            for k, v in CASES[case].config.items()}
    obj, _ = validate_model(model, {**data, **extra}, "actions[4]")
    return obj


@pytest.mark.parametrize(("model", "case", "key", "attr", "default"), FIELDS, ids=[f[1] for f in FIELDS])
def test_default_empty_and_durations(model: type, case: str, key: str, attr: str, default: float) -> None:
    assert getattr(load(model, case), attr) == default
    assert getattr(load(model, case, **{key: ""}), attr) == default
    assert getattr(load(model, case, **{key: "1m30s"}), attr) == 90.0
    assert getattr(load(model, case, **{key: 7}), attr) == 7.0


@pytest.mark.parametrize(("model", "case", "key", "attr", "default"), FIELDS, ids=[f[1] for f in FIELDS])
@pytest.mark.parametrize("bad", ["-5s", "soon"])
def test_bad_values_name_the_key(model: type, case: str, key: str, attr: str, default: float, bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(model, case, **{key: bad})
    assert f"actions[4].{key}" in str(info.value) and bad in str(info.value)


def test_zero() -> None:
    # http keeps Postee's "0 means the default"; elsewhere a zero timeout is refused.
    assert load(HttpConfig, "http", timeout="0s").timeout == 5.0
    with pytest.raises(ConfigError, match=r"actions\[4\]\.docker-timeout.*positive"):
        load(DockerConfig, "docker", **{"docker-timeout": "0s"})
