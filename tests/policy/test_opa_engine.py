"""What only the OPA engine has: stable module ids, the server's Rego version, a managed server
process, and clear errors when OPA is misconfigured or gone."""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil
import pytest

from app.errors import PolicyError
from app.routing.policy.engine import make_engine
from app.devtools.opa_local import OpaServer, opa_binary
from app.routing.policy.opa import OpaEngine

FILTER = "package herald_test.restart\n\ndefault allow = false\n\nallow {\n\tinput.x == 1\n}\n"


def test_reloading_the_same_files_replaces_them(opa_engines: Callable[[], OpaEngine]) -> None:
    # a Herald restarting against a long-running OPA: the second load must not add a second
    # `default allow` (which OPA rejects) but replace the first
    first = opa_engines()
    first.add_module("/filters/restart.rego", FILTER)
    second = opa_engines()
    second.add_module("/filters/restart.rego", FILTER.replace("input.x == 1", "input.x == 2"))
    assert second.policy_ids() == first.policy_ids()
    second.set_input_json('{"x": 2}')
    assert second.eval_path("data.herald_test.restart.allow") is True

    # another file with the same package is another module, and conflicts like it would in OPA
    with pytest.raises(PolicyError) as err:
        second.add_module("/filters/other.rego", FILTER)
    assert "multiple default rules" in str(err.value)
    assert "/filters/restart.rego" in str(err.value) and "/filters/other.rego" in str(err.value)


def test_make_engine_builds_an_opa_engine(opa_server: OpaServer, opa_engines: Callable[[], OpaEngine]) -> None:
    engine = make_engine("opa", opa_server.url)
    try:
        assert isinstance(engine, OpaEngine) and engine.kind == "opa" and engine.v0
        assert engine.add_module("/t/m.rego", "package herald_test.m\n\nv := input.a\n") == "data.herald_test.m"
        engine.set_input_json('{"a": [1, {"b": null}]}')
        assert engine.eval_path("data.herald_test.m.v") == [1, {"b": None}]
        assert engine.packages() == ["data.herald_test.m"]
    finally:
        assert engine.remove_all() == []
        engine.close()


@pytest.mark.parametrize("url", ["127.0.0.1:8181", "ftp://127.0.0.1:8181", "http://127.0.0.1:8181/v1/data", ""])
def test_a_bad_url_is_rejected_with_the_key(url: str) -> None:
    with pytest.raises(PolicyError) as err:
        OpaEngine(url)
    assert str(err.value).startswith("herald.opa-url: ")
    assert repr(url) in str(err.value)


def test_an_unreachable_server_is_a_policy_error(opa_server: OpaServer) -> None:
    with OpaServer(opa_server.binary) as server:
        url = server.url
    engine = OpaEngine(url, timeout=2)
    try:
        with pytest.raises(PolicyError, match=f"cannot upload the module to OPA at {url}"):
            engine.add_module("/t/x.rego", "package x\n\ny := 1\n")
        engine.set_input_json("{}")
        with pytest.raises(PolicyError, match=f"cannot query OPA at {url}"):
            engine.eval_path("data.x.y")
    finally:
        engine.close()


def test_a_v1_server_runs_v1_modules_and_explains_v0_ones(opa_server: OpaServer) -> None:
    with OpaServer(opa_server.binary, v0=False) as server:
        pid = server.pid
        assert pid is not None and psutil.pid_exists(pid)
        assert "--v0-compatible" not in psutil.Process(pid).cmdline()
        assert "127.0.0.1:" + str(server.port) in psutil.Process(pid).cmdline()

        v1 = OpaEngine(server.url, v0=False)
        v1.add_module("/t/v1.rego", "package t\n\nallow if {\n\tinput.x == 1\n}\n\nnames contains n if {\n\tsome n in input.names\n}\n")
        v1.set_input_json('{"x": 1, "names": ["b", "a"]}')
        assert v1.eval_path("data.t.allow") is True
        assert v1.eval_path("data.t.names") == ["a", "b"]

        postee = OpaEngine(server.url, v0=True)
        with pytest.raises(PolicyError) as err:
            postee.add_module("/templates/old.rego", "package old\n\nallow {\n\tinput.x == 1\n}\n")
        assert "/templates/old.rego:3:" in str(err.value)
        assert "start it with --v0-compatible" in str(err.value)
        v1.close()
        postee.close()
    # stopped by its PID: the process is gone
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_herald_opa_bin_must_be_executable(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setenv("HERALD_OPA_BIN", str(tmp_path))
    with pytest.raises(PolicyError, match="HERALD_OPA_BIN=.* is not an executable file"):
        opa_binary()
