"""The guard on system-changing actions (issue 13), without Kafka: which events are trusted, which
routes are guarded, what the decision record and ``herald test-route`` say, and the start
warnings of ``herald check-config``. The same on the real pipeline: test_action_guard_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from actions import parse_config
from app.routing.router import H_AUTHENTICATED, H_SOURCE, ORIGIN_BRIDGE, ORIGIN_KAFKA, EventMeta, Router, guard_warnings

UNAUTHENTICATED = [(H_SOURCE, b"10.1.2.3"), ("herald-event-id", b"e-1")]
EVENT = b'{"image": "nginx:1.16", "kind": "scan"}'


def guard_config(**herald: Any) -> dict[str, Any]:
    on = {"enable": True}
    return {
        "herald": herald,
        "routes": [
            {"name": "r-exec", "actions": ["run-script", "notify"], "template": "raw"},
            {"name": "r-docker", "actions": ["scan-container"], "template": "raw"},
            {"name": "r-kube", "actions": ["label-pods"], "template": "raw"},
            {"name": "r-post", "actions": ["post-ticket"], "template": "raw"},
            {"name": "r-get", "actions": ["get-lookup", "head-lookup"], "template": "raw"},
            {"name": "r-notify", "actions": ["notify", "hook", "chat"], "template": "raw"},
            {"name": "r-dedup", "actions": ["run-script"], "template": "raw",
             "plugins": {"unique-message-props": ["image"]}},
            {"name": "r-optout", "actions": ["run-script"], "template": "raw", "allow-unauthenticated-actions": True},
        ],
        "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}],
        "actions": [
            {"name": "run-script", "type": "exec", "exec-script": "true", **on},
            {"name": "scan-container", "type": "Docker", "docker-image-name": "localhost/busybox:latest", **on},
            {"name": "label-pods", "type": "kubernetes", "kube-namespace": "default",
             "kube-config-file": "/nonexistent/kubeconfig", "kube-label-selector": "app=x",
             "kube-actions": {"labels": {"herald": "seen"}}, **on},
            {"name": "post-ticket", "type": "http", "url": "http://127.0.0.1:9/t", "method": "post", **on},
            {"name": "get-lookup", "type": "http", "url": "http://127.0.0.1:9/g", "method": "get", **on},
            {"name": "head-lookup", "type": "http", "url": "http://127.0.0.1:9/h", "method": "HEAD", **on},
            {"name": "notify", "type": "stdout", **on},
            {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/hook", **on},
            {"name": "chat", "type": "slack", "url": "http://127.0.0.1:9/services/T0/B0/x", **on},
        ],
    }


GUARDED = {"r-exec": ["run-script"], "r-docker": ["scan-container"], "r-kube": ["label-pods"],
           "r-post": ["post-ticket"], "r-dedup": ["run-script"]}


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(parse_config(guard_config()))


def fired(result: Any) -> set[str]:
    return {m.route for m in result.messages} | {s["route"] for s in result.stateful}


def test_the_bridge_marks_its_events_and_a_producer_without_herald_source_is_kafka() -> None:
    bridge = EventMeta.from_headers(UNAUTHENTICATED, "x", 1.0)
    assert (bridge.origin, bridge.authenticated, bridge.trusted) == (ORIGIN_BRIDGE, "", False)
    assert bridge.describe() == "posted to the bridge without authentication"
    # the bridge writes an empty herald-source when aiohttp knows no peer address: still the bridge
    assert not EventMeta.from_headers([(H_SOURCE, b"")], "x", 1.0).trusted
    for method in ("bearer", "hmac", "mtls"):
        meta = EventMeta.from_headers([*UNAUTHENTICATED, (H_AUTHENTICATED, method.encode())], "x", 1.0)
        assert (meta.origin, meta.authenticated, meta.trusted) == (ORIGIN_BRIDGE, method, True)
        assert meta.describe() == f"posted to the bridge ({method})"
    direct = EventMeta.from_headers([("trace-id", b"abc")], "x", 1.0)
    assert (direct.origin, direct.trusted) == (ORIGIN_KAFKA, True)
    assert EventMeta.from_headers(None, "x", 1.0).trusted  # no headers at all
    assert EventMeta("built-in-code").trusted  # replay of a file, benches: no bridge headers


def test_guarded_routes_are_exec_docker_kubernetes_and_http_writes(router: Router) -> None:
    assert {name: list(actions) for name, actions in router.guarded.items()} == GUARDED
    assert router.guarded["r-post"] == {"post-ticket": "http POST"}
    assert router.guarded["r-docker"] == {"scan-container": "docker"}


def test_an_unauthenticated_bridge_event_fires_only_unguarded_and_opted_out_routes(router: Router) -> None:
    result = router.route(EVENT, EventMeta.from_headers(UNAUTHENTICATED, "x", 1.0))
    assert fired(result) == {"r-get", "r-notify", "r-optout"}
    assert {g.route: g.actions for g in result.guarded} == GUARDED
    assert not result.failures and all(result.verdicts[r].matched for r in GUARDED)
    decision = result.decision("cfg")
    assert decision["origin"] == "bridge" and decision["authenticated"] == ""
    by_route = {g["route"]: g for g in decision["guarded"]}
    assert set(by_route) == set(GUARDED)
    assert by_route["r-exec"]["actions"] == ["run-script"]  # notify (stdout) is not system-changing
    assert by_route["r-exec"]["reason"] == (
        "not fired: actions run-script (exec) can change systems and the event was posted to the bridge "
        "without authentication; send it with credentials (herald.auth) or produce it to Kafka")
    assert "post-ticket (http POST)" in by_route["r-post"]["reason"]
    assert {(a["route"], a["action"]) for a in decision["actions"]} == {
        ("r-get", "get-lookup"), ("r-get", "head-lookup"), ("r-notify", "notify"), ("r-notify", "hook"),
        ("r-notify", "chat"), ("r-optout", "run-script")}
    assert "r-dedup" not in {s["route"] for s in decision["stateful"]}  # no dedup key is taken either


@pytest.mark.parametrize("headers", [
    [*UNAUTHENTICATED, (H_AUTHENTICATED, b"bearer")],
    [*UNAUTHENTICATED, (H_AUTHENTICATED, b"hmac")],
    [*UNAUTHENTICATED, (H_AUTHENTICATED, b"mtls")],
    [("herald-event-id", b"e-2")],  # produced to Kafka directly
], ids=["bearer", "hmac", "mtls", "kafka"])
def test_authenticated_and_kafka_events_fire_every_route(router: Router, headers: list[Any]) -> None:
    result = router.route(EVENT, EventMeta.from_headers(headers, "x", 1.0))
    assert fired(result) == {"r-exec", "r-docker", "r-kube", "r-post", "r-get", "r-notify", "r-dedup", "r-optout"}
    assert result.guarded == [] and result.decision("cfg")["guarded"] == []


def test_a_tenant_path_is_guarded_too(router: Router) -> None:
    meta = EventMeta.from_headers([*UNAUTHENTICATED, ("herald-route", b"r-kube")], "x", 1.0)
    result = router.route(EVENT, meta)
    assert result.messages == [] and [g.route for g in result.guarded] == ["r-kube"]


def test_a_route_that_does_not_match_is_not_reported_as_guarded() -> None:
    cfg = guard_config()
    cfg["routes"][0]["input"] = 'input.kind == "other"'
    result = Router(parse_config(cfg)).route(EVENT, EventMeta.from_headers(UNAUTHENTICATED, "x", 1.0))
    assert "r-exec" not in {g.route for g in result.guarded} and not result.verdicts["r-exec"].matched


def test_the_opt_out_must_be_a_boolean() -> None:
    cfg = guard_config()
    cfg["routes"][0]["allow-unauthenticated-actions"] = "yes"
    with pytest.raises(Exception, match=r"routes\[0\]\.allow-unauthenticated-actions"):
        parse_config(cfg)


def test_start_warnings_one_per_guarded_route_without_auth_and_one_per_opt_out() -> None:
    warnings = guard_warnings(parse_config(guard_config()))
    assert len(warnings) == 6
    assert sorted(w.split(":")[0] for w in warnings) == sorted(
        f"route {r}" for r in [*GUARDED, "r-optout"])
    assert ("route r-exec: its actions run-script (exec) can change systems, and herald.auth configures no "
            "authentication: the route fires only for events produced to Kafka directly, never for events "
            "posted to the bridge") in warnings
    assert any(w.startswith("route r-optout: allow-unauthenticated-actions is true: its actions run-script (exec)")
               and "UNAUTHENTICATED" in w for w in warnings)
    # with bridge authentication only the opt-out is left to warn about
    authed = guard_warnings(parse_config(guard_config(auth={"bearer-tokens": ["t0ken-guard-unit"]})))
    assert [w.split(":")[0] for w in authed] == ["route r-optout"]
    # a route with its own credentials is reachable authenticated (/tenant/r-kube)
    own = guard_warnings(parse_config(guard_config(auth={"routes": {"r-kube": {"bearer-tokens": ["t0ken-kube"]}}})))
    assert len(own) == 5 and not any(w.startswith("route r-kube:") for w in own)


def write_config(tmp_path: Path, **herald: Any) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(guard_config(**herald)))
    return path


def test_check_config_prints_the_guard_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(write_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert out.count("warning: route ") == 6
    assert "warning: route r-post: its actions post-ticket (http POST) can change systems" in out
    assert "r-get" not in out and "r-notify" not in out


def run_test_route(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    """``herald test-route`` on the guard config; its JSON report."""
    event = tmp_path / "event.json"
    event.write_bytes(EVENT)
    assert main(["test-route", "--config", str(write_config(tmp_path)), *extra, str(event)]) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_test_route_shows_the_guard_for_a_bridge_event_without_credentials_by_default(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_test_route(tmp_path, capsys)
    assert report["origin"] == "posted to the bridge without authentication"
    exec_route = report["routes"]["r-exec"]
    assert exec_route["matched"] is True and exec_route["fired"] is False
    assert exec_route["guarded"] == ["run-script"]
    assert exec_route["guard"].startswith("not fired: actions run-script (exec) can change systems")
    assert "fired" not in report["routes"]["r-notify"]
    assert {d["route"] for d in report["deliveries"]} == {"r-get", "r-notify", "r-optout"}


@pytest.mark.parametrize("origin", ["bearer", "hmac", "mtls", "kafka"])
def test_test_route_origin_option(tmp_path: Path, capsys: pytest.CaptureFixture[str], origin: str) -> None:
    report = run_test_route(tmp_path, capsys, "--origin", origin)
    assert report["origin"] == ("produced to Kafka directly" if origin == "kafka"
                                else f"posted to the bridge ({origin})")
    assert not any("guard" in r for r in report["routes"].values())
    assert {d["route"] for d in report["deliveries"]} >= {"r-exec", "r-docker", "r-kube", "r-post"}


def test_test_route_rejects_an_unknown_origin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["test-route", "--config", str(write_config(tmp_path)), "--origin", "trusted", "-"])
    assert exit_.value.code == 2
    assert "invalid choice: 'trusted'" in capsys.readouterr().err


def test_replay_keeps_the_origin_of_recorded_events(router: Router) -> None:
    from app.forensics.replay import Recorded, route_one

    unauthenticated = route_one(router, Recorded("e-1", None, EVENT, ORIGIN_BRIDGE, ""))
    assert unauthenticated is not None and {g.route for g in unauthenticated.guarded} == set(GUARDED)
    bearer = route_one(router, Recorded("e-2", None, EVENT, ORIGIN_BRIDGE, "bearer"))
    from_file = route_one(router, Recorded("e-3", None, EVENT))  # --from-file: the operator's own input
    assert bearer is not None and from_file is not None and bearer.guarded == from_file.guarded == []
