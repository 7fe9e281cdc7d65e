"""Config reload on the real pipeline (real broker, real bridge and worker processes, loopback sinks).

SIGHUP and ``POST /reload`` re-read the config, templates and filters; the new config routes from
the next event, every decision record names the config that routed it (``config_hash``), and no
event is lost or delivered twice across the switch, also while events flow. A broken config is
refused with the field at fault, and the running one keeps routing."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Producer

from tests.accounting import assert_counts, wait_all_delivered, wait_records
from tests.harness import Herald, Sink, wait_until
from tests.test_admin_e2e import TOKEN, as_json, request

TEMPLATE = """package herald.reloadtest

title := "-"

result := jsonformat({{"n": input.n, "v": {version}}})
"""


def write_template(tdir: Path, version: int) -> None:
    (tdir / "reloadtest.rego").write_text(TEMPLATE.format(version=version))


def config_a(sink: Sink, tdir: Path) -> dict[str, Any]:
    return {
        "routes": [{"name": "r", "input": "input.n >= 0", "actions": ["a"], "template": "mine"}],
        "templates": [{"name": "mine", "rego-package": "herald.reloadtest"}],
        "actions": [{"name": "a", "type": "webhook", "enable": True, "url": sink.url + "/a", "concurrency": 4}],
        "herald": {"template-dirs": [str(tdir)]},
    }


def rewrite(herald: Herald, change: Any) -> dict[str, Any]:
    """Change the running config file with ``change(cfg)`` (the harness's herald settings stay)."""
    cfg = yaml.safe_load(herald.cfg_path.read_text())
    change(cfg)
    herald.cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg


def start_hash(herald: Herald) -> str:
    m = wait_until(lambda: re.search(r"actions \(hash ([0-9a-f]{12})\)", herald.log_text("worker")), 30,
                   "the worker's start line with its config hash")
    return m.group(1)


def wait_reloaded(herald: Herald, how: str, count: int = 1) -> tuple[str, str]:
    """(old, new) hash of the ``count``-th successful reload by ``how`` (SIGHUP, POST /reload)."""
    pattern = re.compile(rf"config reloaded \({re.escape(how)}[^)]*\): hash ([0-9a-f]+) -> ([0-9a-f]+)")
    found = wait_until(lambda: len(pattern.findall(herald.log_text("worker"))) >= count and
                       pattern.findall(herald.log_text("worker")), 60, f"reload #{count} by {how}")
    return found[count - 1]


def test_sighup_switches_filter_template_and_actions_while_events_flow(kafka: Any, tmp_path: Path) -> None:
    """Config A: every event -> action a, template v1. Config B (same file, rewritten while events
    are posted): only even events, action b (new: its topics are created), template v2; action a
    removed while it still has messages in flight (one held at the sink). Every event is routed by
    exactly one config (its decision says which, and per partition all of A's come before B's);
    A's events reach /a once each with v1, B's even events reach /b once each with v2."""
    tdir = tmp_path / "templates"
    tdir.mkdir()
    write_template(tdir, 1)
    n = 400
    with Sink() as sink, Herald(kafka, config_a(sink, tdir), tmp_path) as herald:
        hash_a = start_hash(herald)
        sink.hold_next("/a")  # a delivery of a stays in flight across the reload
        acked: dict[int, str] = {}
        errors: list[str] = []

        def post_all() -> None:
            for i in range(n):
                status, body = herald.post({"n": i})
                if status != 200:
                    errors.append(f"event {i}: {status} {body}")
                    continue
                acked[i] = body["event_id"]
                time.sleep(0.003)

        poster = threading.Thread(target=post_all)
        poster.start()
        wait_until(lambda: len(acked) >= 120 and sink.count("/a") >= 1, 60, "events flowing under config A")

        def to_b(cfg: dict[str, Any]) -> None:
            cfg["routes"][0]["input"] = "input.n % 2 == 0"
            cfg["routes"][0]["actions"] = ["b"]
            cfg["actions"] = [{"name": "b", "type": "webhook", "enable": True, "url": sink.url + "/b",
                               "concurrency": 4}]

        rewrite(herald, to_b)
        write_template(tdir, 2)
        os.kill(herald.procs["worker"].pid, signal.SIGHUP)
        old, hash_b = wait_reloaded(herald, "SIGHUP")
        sink.release("/a")
        poster.join(120)
        assert not poster.is_alive() and not errors, errors[:5]
        assert old == hash_a and hash_b != hash_a

        # every event has exactly one decision, by A or by B
        decisions = wait_records(herald, "decisions", lambda recs: (
            [d for d in recs if "routes" in d] if len({d["event_id"] for d in recs if "routes" in d}) >= n
            else None), f"{n} decisions")
        by_event: dict[str, list[dict[str, Any]]] = {}
        for d in decisions:
            by_event.setdefault(d["event_id"], []).append(d)
        assert all(len(v) == 1 for v in by_event.values()), "an event was routed twice"
        number = {eid: i for i, eid in acked.items()}
        routed_a = sorted(number[e] for e, (d,) in by_event.items() if d["config_hash"] == hash_a)
        routed_b = sorted(number[e] for e, (d,) in by_event.items() if d["config_hash"] == hash_b)
        assert len(routed_a) + len(routed_b) == n, {d[0]["config_hash"] for d in by_event.values()}
        assert routed_a and routed_b, (len(routed_a), len(routed_b))
        for partition in {d[0]["partition"] for d in by_event.values()}:
            offs_a = [d[0]["offset"] for d in by_event.values() if d[0]["partition"] == partition
                      and d[0]["config_hash"] == hash_a]
            offs_b = [d[0]["offset"] for d in by_event.values() if d[0]["partition"] == partition
                      and d[0]["config_hash"] == hash_b]
            assert not offs_a or not offs_b or max(offs_a) < min(offs_b), f"partition {partition}: A after B"
        for i in routed_b:  # B's filter: odd events match no route
            (d,) = by_event[acked[i]]
            assert d["routes"]["r"]["matched"] == (i % 2 == 0), d
            assert d["actions"] == ([{"route": "r", "action": "b"}] if i % 2 == 0 else []), d

        want_b = [i for i in routed_b if i % 2 == 0]
        got_a = wait_all_delivered(sink, "/a", routed_a, 120)
        got_b = wait_all_delivered(sink, "/b", want_b, 120)
        assert_counts(got_a, routed_a, 0, "a reload loses and repeats nothing", context=" (action a)")
        assert_counts(got_b, want_b, 0, "a reload loses and repeats nothing", context=" (action b)")
        assert {orjson.loads(r.body)["v"] for r in sink.requests["/a"]} == {1}  # rendered by A's template
        assert {orjson.loads(r.body)["v"] for r in sink.requests["/b"]} == {2}  # rendered by B's template
        # the removed action delivered what was on its topic, then its stage stopped
        wait_until(lambda: "action a (removed by a reload" in herald.log_text("worker"), 60,
                   "the removed action's stage to stop once drained")
        print(f"\nreload while posting: {len(routed_a)} events routed by {hash_a}, {len(routed_b)} by {hash_b}; "
              f"{len(got_a)} deliveries to a, {len(got_b)} to b; 0 lost, 0 duplicated")


def produce(herald: Herald, events: list[dict[str, Any]]) -> None:
    """Events straight onto the events topic (the worker's input), as any producer would."""
    producer = Producer(herald.kafka.client_config())
    for e in events:
        producer.produce(herald.prefix + "events", orjson.dumps(e), key=str(e["n"]).encode(),
                         headers=[("herald-event-id", f"ev-{e['n']}".encode())])
    assert producer.flush(30) == 0
    del producer


def test_reload_endpoint_refuses_broken_configs_and_keeps_routing(kafka: Any, tmp_path: Path) -> None:
    cfg = {
        "routes": [{"name": "r", "input": "input.n < 100", "actions": ["a"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "a", "type": "webhook", "enable": True, "url": "http://127.0.0.1:1/unused"}],
        "herald": {"auth": {"bearer-tokens": [TOKEN]}},
    }
    with Sink() as sink:
        cfg["actions"][0]["url"] = sink.url + "/a"
        with Herald(kafka, cfg, tmp_path, bridge=False) as herald:
            admin = herald.admin_url()
            hash_a = start_hash(herald)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert request(admin + "/reload", "POST")[0] == 401
            assert request(admin + "/reload", "POST", headers={"Authorization": "Bearer nope"})[0] == 403
            good = herald.cfg_path.read_text()

            def reload_refused(change: Any, *expected: str) -> dict[str, Any]:
                rewrite(herald, change)
                status, raw, _ = request(admin + "/reload", "POST", headers=auth)
                body = as_json(raw)
                assert status == 422, (status, body)
                assert body["config_hash"] == hash_a, body
                for text in expected:
                    assert text in body["detail"], (text, body["detail"])
                herald.cfg_path.write_text(good)
                return body

            # Rego that does not compile: a route filter, a template file
            reload_refused(lambda c: c["routes"][0].update(input="input.n <"), "route 'r'")
            broken = tmp_path / "broken-templates"
            broken.mkdir()
            (broken / "broken.rego").write_text("package herald.broken\n\nresult := {\n")
            reload_refused(lambda c: c["herald"].update({"template-dirs": [str(broken)]}), "broken.rego")
            # a wrong type: the field path and the value
            reload_refused(lambda c: c["routes"][0].update(plugins={"aggregate-message-number": "ten"}),
                           "routes[0].plugins.aggregate-message-number", "ten")
            reload_refused(lambda c: c["actions"][0].update(concurrency="many"), "actions[0].concurrency", "many")
            # a route naming an action that does not exist
            reload_refused(lambda c: c["routes"][0].update(actions=["ghost"]), "ghost")
            # a setting that needs a restart
            reload_refused(lambda c: c["herald"].update({"consumer-group": "other"}),
                           "herald.consumer-group", "'other'", "restart")
            # not YAML at all
            herald.cfg_path.write_text("routes: [\n")
            status, raw, _ = request(admin + "/reload", "POST", headers=auth)
            assert status == 422 and "invalid YAML" in as_json(raw)["detail"], raw
            # and by SIGHUP: refused, logged, nothing else happens
            os.kill(herald.procs["worker"].pid, signal.SIGHUP)
            wait_until(lambda: "config reload (SIGHUP) refused" in herald.log_text("worker"), 30,
                       "the SIGHUP reload to be refused")
            herald.cfg_path.write_text(good)
            log = herald.log_text("worker")
            assert log.count("refused, config " + hash_a + " stays") >= 7, log[-3000:]
            assert "Traceback" not in log

            # the old config still routes: n < 100 matches, n = 150 does not
            produce(herald, [{"n": 5}, {"n": 150}])
            d5, d150 = herald.wait_decision("ev-5"), herald.wait_decision("ev-150")
            assert d5["config_hash"] == d150["config_hash"] == hash_a
            assert d5["routes"]["r"]["matched"] and not d150["routes"]["r"]["matched"]
            sink.wait_for("/a", 1)

            # a good change is taken, from the next event on
            rewrite(herald, lambda c: c["routes"][0].update(input="input.n >= 100"))
            status, raw, _ = request(admin + "/reload", "POST", headers=auth)
            body = as_json(raw)
            assert status == 200 and body["previous_hash"] == hash_a and body["config_hash"] != hash_a, body
            produce(herald, [{"n": 6}, {"n": 160}])
            d6, d160 = herald.wait_decision("ev-6"), herald.wait_decision("ev-160")
            assert d6["config_hash"] == d160["config_hash"] == body["config_hash"]
            assert not d6["routes"]["r"]["matched"] and d160["routes"]["r"]["matched"]
            requests = sink.wait_for("/a", 2)
            assert sorted(orjson.loads(r.body)["n"] for r in requests) == [5, 160]


def test_herald_run_reloads_bridge_and_worker_on_sighup(kafka: Any, tmp_path: Path) -> None:
    """``herald run`` forwards SIGHUP to its bridge and worker: the bridge takes the new bearer token
    and the new tenant route, the worker the new route; a bridge setting that needs a restart is
    refused by the bridge alone."""
    new_token = "rotated-token-2"
    cfg = {
        "routes": [{"name": "r", "actions": ["a"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "a", "type": "webhook", "enable": True, "url": "http://127.0.0.1:1/unused"}],
        "herald": {"auth": {"bearer-tokens": [TOKEN]}},
    }
    with Sink() as sink:
        cfg["actions"][0]["url"] = sink.url + "/a"
        with Herald(kafka, cfg, tmp_path, bridge=False, workers=0) as herald:
            herald._spawn("run", "run")
            wait_until(lambda: "herald worker ready" in herald.log_text("run") and request(
                herald.url + "/readyz")[0] == 200, 90, "herald run to be ready")

            def post(body: dict[str, Any], token: str, path: str = "/") -> int:
                return request(herald.url + path, "POST", orjson.dumps(body),
                               {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})[0]

            assert post({"n": 1}, TOKEN) == 200
            assert post({"n": 2}, TOKEN, "/tenant/r2") == 404  # no such route yet
            sink.wait_for("/a", 1)

            def change(c: dict[str, Any]) -> None:
                c["herald"]["auth"]["bearer-tokens"] = [new_token]
                c["routes"].append({"name": "r2", "input": "input.n == 5", "actions": ["a"], "template": "raw-json"})

            rewrite(herald, change)
            os.kill(herald.procs["run"].pid, signal.SIGHUP)
            wait_until(lambda: "bridge config reloaded (SIGHUP): 2 routes" in herald.log_text("run")
                       and "config reloaded (SIGHUP): hash" in herald.log_text("run"), 60,
                       "the bridge and the worker to reload")
            assert post({"n": 3}, TOKEN) == 403  # the old token no longer opens the bridge
            assert post({"n": 4}, new_token) == 200
            assert post({"n": 5}, new_token, "/tenant/r2") == 200
            got = sink.wait_for("/a", 3)
            assert sorted(orjson.loads(r.body)["n"] for r in got) == [1, 4, 5]

            rewrite(herald, lambda c: c["herald"].update({"body-limit": 1024}))
            os.kill(herald.procs["run"].pid, signal.SIGHUP)
            wait_until(lambda: "bridge config reload (SIGHUP) refused" in herald.log_text("run"), 30,
                       "the bridge to refuse a restart-only change")
            assert "herald.body-limit: changed from 10485760 to 1024" in herald.log_text("run")
            assert post({"n": 6}, new_token) == 200  # the bridge still serves with the running config
            assert TOKEN not in herald.log_text("run") and new_token not in herald.log_text("run")


AGG_TEMPLATE = """package herald.reloadtest.agg
title := sprintf("item %v", [input.n])
result := sprintf("event %v", [input.n])
aggregation_pkg := "herald.reloadtest.agg.aggregation"
"""
AGG_AGGREGATION = """package herald.reloadtest.agg.aggregation
title := sprintf("%d events", [count(input)])
result := concat("|", [d | d := input[_].description])
"""


def test_reload_flushes_pending_aggregation_batches(kafka: Any, tmp_path: Path) -> None:
    """Batches pending when a reload turns aggregation off are not forgotten: a route that still
    exists sends their events one by one to its actions; a route that is gone dead-letters them
    with the reason."""
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "agg.rego").write_text(AGG_TEMPLATE)
    (tdir / "agg-aggregation.rego").write_text(AGG_AGGREGATION)
    plugins = {"aggregate-message-number": 3}
    cfg = {
        "herald": {"template-dirs": [str(tdir)]},
        "routes": [{"name": "agg", "input": "input.n < 100", "actions": ["b"], "template": "agg", "plugins": plugins},
                   {"name": "gone", "input": "input.n >= 100", "actions": ["b"], "template": "agg",
                    "plugins": plugins}],
        "templates": [{"name": "agg", "rego-package": "herald.reloadtest.agg"}],
        "actions": [{"name": "b", "type": "webhook", "enable": True, "url": "http://127.0.0.1:1/unused"}],
    }
    with Sink() as sink:
        cfg["actions"][0]["url"] = sink.url + "/b"
        with Herald(kafka, cfg, tmp_path) as herald:
            ids = {}
            for n in (0, 1, 100):
                status, body = herald.post({"n": n})
                assert status == 200, body
                ids[n] = body["event_id"]
            wait_records(herald, "decisions", lambda ds: len([d for d in ds if d.get("outcome") == "aggregated"]) == 3,
                         "three 'aggregated' records")
            assert sink.count("/b") == 0  # batches of 3: nothing sent yet

            def no_aggregation(c: dict[str, Any]) -> None:
                c["routes"] = [{"name": "agg", "input": "input.n < 100", "actions": ["b"], "template": "agg"}]

            rewrite(herald, no_aggregation)
            os.kill(herald.procs["worker"].pid, signal.SIGHUP)
            wait_reloaded(herald, "SIGHUP")
            got = sink.wait_for("/b", 2)
            assert sorted(r.body.decode() for r in got) == ["event 0", "event 1"]
            dead = herald.wait_record("dlq.router", lambda d: d.get("event_id") == ids[100], what="the dead letter of "
                                      "the event whose route the reload removed")[0]
            assert dead["error"] == "route gone was removed by a config reload before its pending aggregation batch " \
                "was sent", dead
            assert dead["error_type"] == "ConfigReload"
            status, body = herald.post({"n": 2})  # the route now sends each event as it comes
            assert status == 200, body
            got = sink.wait_for("/b", 3)
            assert sorted(r.body.decode() for r in got) == ["event 0", "event 1", "event 2"]
            passed = wait_records(herald, "decisions", lambda ds: [d for d in ds if d.get("outcome") == "passed-on"],
                                  "'passed-on' records")
            assert {d["event_id"] for d in passed} == {ids[0], ids[1]}


def test_messages_of_a_removed_action_left_by_a_restart_are_named_and_delivered_when_it_returns(
        kafka: Any, tmp_path: Path) -> None:
    """A worker restarted with a config that no longer has action a, while a's topic still holds
    messages, says so at start; a reload that adds a back delivers them (its topic exists: the
    new stage starts from the group's committed offsets)."""
    cfg = {
        "routes": [{"name": "r", "actions": ["a"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "a", "type": "webhook", "enable": True, "url": "http://127.0.0.1:1/unused"}],
    }
    with Sink() as sink:
        cfg["actions"][0]["url"] = sink.url + "/a"
        with Herald(kafka, cfg, tmp_path, bridge=True) as herald:
            status, body = herald.post({"n": 0})
            assert status == 200, body
            sink.wait_for("/a", 1)
            wait_until(lambda: max(herald.committed("action.a", 3)) >= 0, 30, "a committed offset on action.a")
            assert herald.stop("worker") == 0
            original = rewrite(herald, lambda c: None)
            rewrite(herald, lambda c: (c.update(actions=[{**c["actions"][0], "name": "b"}]),
                                       c["routes"][0].update(actions=["b"])))
            # two messages for a that no worker delivered yet (as a crash between routing and delivery leaves them)
            (message,) = herald.read_topic("action.a")
            producer = Producer(herald.kafka.client_config())
            for i in (1, 2):
                producer.produce(herald.prefix + "action.a", orjson.dumps({**message, "event_id": f"left-{i}"}),
                                 key=f"left-{i}".encode())
            assert producer.flush(30) == 0
            del producer
            herald.start_worker()
            wait_until(lambda: f"{herald.prefix}action.a holds 2 undelivered message(s) of an action that is not "
                       "in the config" in herald.log_text("worker"), 60, "the warning about action.a")
            assert sink.count("/a") == 1
            herald.cfg_path.write_text(yaml.safe_dump(original))  # a is back
            os.kill(herald.procs["worker"].pid, signal.SIGHUP)
            wait_reloaded(herald, "SIGHUP")
            got = sink.wait_for("/a", 3)
            assert sorted(r.headers["Idempotency-Key"].split(":")[0] for r in got[1:]) == ["left-1", "left-2"]
            status, body = herald.post({"n": 3})
            assert status == 200, body
            got = sink.wait_for("/a", 4)
            assert orjson.loads(got[-1].body)["n"] == 3


def test_a_changed_action_delivers_from_the_next_message_with_its_new_settings(kafka: Any, tmp_path: Path) -> None:
    """Action a's URL and concurrency change by POST /reload while one of its deliveries is held
    at the old URL: that delivery completes there (once), every later message goes to the new URL,
    and the count is exact."""
    cfg = {
        "routes": [{"name": "r", "actions": ["a"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "a", "type": "webhook", "enable": True, "url": "http://127.0.0.1:1/unused",
                     "concurrency": 4}],
    }
    with Sink() as sink:
        cfg["actions"][0]["url"] = sink.url + "/old"
        with Herald(kafka, cfg, tmp_path) as herald:
            admin = herald.admin_url()
            sink.hold_next("/old")
            acked = []
            for n in range(20):
                status, body = herald.post({"n": n})
                assert status == 200, body
                acked.append(n)
            wait_until(lambda: sink.count("/old") >= 20, 60, "the first 20 events at the old URL")
            rewrite(herald, lambda c: c["actions"][0].update(url=sink.url + "/new", concurrency=1))
            status, raw, _ = request(admin + "/reload", "POST")
            assert status == 200 and as_json(raw)["changes"]["actions_changed"] == ["a"], raw
            sink.release("/old")
            for n in range(20, 40):
                status, body = herald.post({"n": n})
                assert status == 200, body
                acked.append(n)
            got_old = wait_all_delivered(sink, "/old", range(20), 60)
            got_new = wait_all_delivered(sink, "/new", range(20, 40), 60)
            assert_counts(got_old + got_new, acked, 0, "a changed action loses and repeats nothing")
            assert sorted(got_old) == list(range(20)) and sorted(got_new) == list(range(20, 40))
