"""One size limit end to end (issue 13): herald.body-limit <= producer message.max.bytes <= topic
max.message.bytes, on a real broker with real Herald processes.

- a ~500 KB Aqua scan (its raw-json action message is ~1.05 MB, over Kafka's 1 MB default) is
  delivered, and nothing is dead-lettered;
- a body over the limit is a 413 at the bridge and never reaches Kafka;
- the topics Herald creates take what the limit implies (events: body + 64 KiB, the others
  4x body + 64 KiB); an existing topic that cannot, or a producer property below it, stops the
  bridge and the worker at start with a message naming the setting and both values.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka.admin import ConfigResource, ResourceType

from app.kafka.admin import admin, ensure_topics
from app.kafka.topics import EXPANSION, RECORD_MARGIN, SizeLimits, Topics
from tests.harness import FIXTURES, ROOT, Herald, Sink
from tests.test_resilience_e2e import config

MIB = 1024 * 1024


def aqua_scan(target: int) -> bytes:
    """A real Aqua image scan (the all-in-one fixture) grown to ``target`` bytes with more of its
    own vulnerable resources, as a scanner sends it (compact JSON)."""
    scan = json.loads((FIXTURES / "postee" / "all-in-one-image.json").read_text())
    resources = scan["resources"]
    grown: list[dict[str, Any]] = []
    size = len(json.dumps({**scan, "resources": []}, separators=(",", ":")))
    i = 0
    while size < target:
        item = copy.deepcopy(resources[i % len(resources)])
        item["resource"]["name"] = f"{item['resource'].get('name', 'pkg')}-{i}"
        grown.append(item)
        size += len(json.dumps(item, separators=(",", ":"))) + 1
        i += 1
    scan["resources"] = grown
    return json.dumps(scan, separators=(",", ":")).encode()


def topic_limit(conf: dict[str, Any], topic: str) -> int:
    client = admin(conf)  # held until the answer is in: a client destroyed earlier fails its futures
    futures = client.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    return int(next(iter(futures.values())).result(30)["max.message.bytes"].value)


def test_a_500kb_aqua_scan_is_delivered_and_an_oversized_body_is_413(kafka: Any, tmp_path: Path) -> None:
    """Also through the dead-letter path: an action that refuses the scan once dead-letters it
    (1.1 MB: the action message as its original), and ``herald dlq redrive`` delivers it."""
    scan = aqua_scan(500_000)
    assert 490_000 < len(scan) < 520_000
    sink = Sink()
    sink.expect("/events", content_type=None, json=True)
    sink.script("/refuses", [400], then=200)
    cfg = config(sink)
    cfg["routes"][0]["actions"].append("refuses")
    cfg["actions"].append({"name": "refuses", "type": "webhook", "enable": True, "url": sink.url + "/refuses",
                           "retry-max-attempts": 1})
    with sink, Herald(kafka, cfg, tmp_path) as herald:
        status, body = herald.post(scan)
        assert status == 200, body
        event_id = body["event_id"]
        [request] = sink.wait_for("/events", 1, timeout=60)
        assert json.loads(request.body)["image"] == json.loads(scan)["image"]
        assert len(request.body) > len(scan)  # the whole scan, rendered again
        [delivery] = herald.wait_deliveries(event_id, "sink")
        assert delivery["outcome"] == "delivered"
        [(_, _, dead)] = herald.read_positions("dlq.refuses", 1)
        assert len(dead) > 1_000_000 and json.loads(dead)["event_id"] == event_id  # over Kafka's 1 MB default
        redrive = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "redrive", "refuses", "--config",
                                  str(herald.cfg_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                                 check=False)
        assert redrive.returncode == 0 and json.loads(redrive.stdout) == {"redriven": 1, "skipped": 0}, redrive.stderr
        first, second = sink.wait_for("/refuses", 2, timeout=60)
        assert second.body == first.body and len(second.body) > len(scan)
        action_messages = herald.read_positions("action.sink", 1)
        assert len(action_messages[0][2]) > 1_000_000, "the action message should be over Kafka's 1 MB default"
        # over the limit: 413, and nothing reaches Kafka
        status, body = herald.post(b'{"pad": "' + b"x" * (10 * MIB) + b'"}')
        assert status == 413 and "exceeds the limit of 10485760 bytes" in body["error"], (status, body)
        assert [r["image"] for r in herald.read_topic("events")] == [json.loads(scan)["image"]]
        for dlq in ("dlq.router", "dlq.sink"):  # (dlq.refuses holds the one refusal above)
            assert herald.read_topic(dlq) == [], dlq
        conf = kafka.client_config()
        limits = SizeLimits(10 * MIB)
        assert topic_limit(conf, herald.prefix + "events") == limits.event == 10 * MIB + RECORD_MARGIN
        for suffix in ("action.sink", "dlq.sink", "dlq.router", "decisions", "route.state"):
            assert topic_limit(conf, herald.prefix + suffix) == limits.pipeline == EXPANSION * 10 * MIB + RECORD_MARGIN
    print(f"\n{len(scan)} byte Aqua scan delivered; its action message was {len(action_messages[0][2])} bytes")


def start(kind: str, kafka: Any, tmp_path: Path, herald: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``herald <kind>`` on a config with ``herald``, until it exits (it must, here)."""
    cfg = {"herald": {"kafka-bootstrap-servers": kafka.bootstrap, "partitions": 1,
                      "http-listen": "127.0.0.1:0", "spool": {"dir": str(tmp_path / f"spool-{uuid.uuid4().hex}")},
                      **herald},
           "routes": [{"name": "all", "actions": ["hook"], "template": "raw-json"}],
           "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
           "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/"}]}
    path = tmp_path / f"cfg-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HERALD_ADMIN_LISTEN": "127.0.0.1:0"}
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "POSTEE_HTTP", "HERALD_TOPIC_PREFIX", "POSTEE_CFG"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "app.cli", kind, "--config", str(path)], cwd=ROOT, env=env,
                          capture_output=True, check=False, text=True, timeout=90)


def test_an_events_topic_too_small_for_the_body_limit_stops_the_bridge_and_the_worker(kafka: Any,
                                                                                         tmp_path: Path) -> None:
    prefix = f"small{uuid.uuid4().hex[:6]}."
    topics = Topics(prefix)
    conf = kafka.client_config()
    ensure_topics(conf, [topics.events, topics.action("hook")], 1, 1,
                  configs={topics.events: {"max.message.bytes": "1048588"},
                           topics.action("hook"): {"max.message.bytes": "1048588"}})
    for kind in ("bridge", "worker"):
        done = start(kind, kafka, tmp_path, {"topic-prefix": prefix, "body-limit": "2MiB"})
        assert done.returncode == 2, (kind, done.returncode, done.stderr[-2000:])
        topic = topics.events if kind == "bridge" else topics.action("hook")
        need = SizeLimits(2 * MIB).of(topics, topic)
        assert (f"topic {topic} has max.message.bytes 1048588, below the {need} bytes that herald.body-limit "
                f"{2 * MIB} bytes needs") in done.stderr, (kind, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
    # a body limit the topics can take (512 KiB + 64 KiB < 1 MiB): the same events topic is fine
    cfg = {"herald": {"topic-prefix": prefix, "body-limit": "512KiB"}}
    with Herald(kafka, cfg, tmp_path, workers=0) as herald:
        assert herald.post({"small": True})[0] == 200


def test_a_producer_property_below_the_limit_is_refused_at_start(kafka: Any, tmp_path: Path) -> None:
    for kind, need in (("bridge", SizeLimits(MIB).event), ("worker", SizeLimits(MIB).pipeline)):
        done = start(kind, kafka, tmp_path, {"topic-prefix": f"prop{uuid.uuid4().hex[:6]}.", "body-limit": "1MiB",
                                             "kafka": {"properties": {"message.max.bytes": 1000000}}})
        assert done.returncode == 2, (kind, done.stderr[-2000:])
        assert (f"herald.kafka.properties.message.max.bytes: 1000000 is below the {need} bytes") in done.stderr, (
            kind, done.stderr[-2000:])
        assert "herald.body-limit" in done.stderr and "Traceback" not in done.stderr


def test_an_event_just_under_the_body_limit_is_delivered(kafka: Any, tmp_path: Path) -> None:
    """The limit is the pipeline's: an Aqua scan just under ``body-limit`` (2 MiB here) gets
    through every topic (its raw-json action message is 2.2x that) to the destination."""
    scan = aqua_scan(2 * MIB - 20_000)
    assert 2 * MIB - 40_000 < len(scan) <= 2 * MIB
    sink = Sink()
    sink.expect("/events", content_type=None, json=True)
    cfg = {**config(sink), "herald": {"body-limit": "2MiB"}}
    with sink, Herald(kafka, cfg, tmp_path) as herald:
        status, body = herald.post(scan)
        assert status == 200, body
        [request] = sink.wait_for("/events", 1, timeout=120)
        assert json.loads(request.body)["image"] == json.loads(scan)["image"]
        [(_, _, action_message)] = herald.read_positions("action.sink", 1)
        assert len(action_message) > 2 * len(scan)
        assert herald.post(b'{"pad": "' + b"x" * (2 * MIB) + b'"}')[0] == 413
        for dlq in ("dlq.router", "dlq.sink"):
            assert herald.read_topic(dlq) == [], dlq
    print(f"\n{len(scan)} byte scan (limit {2 * MIB}) delivered; action message {len(action_message)} bytes")
