"""Dedup keys (Postee's goldens) and aggregation batches."""

from __future__ import annotations

import json

from app.content import Content
from app.routing.state import Batch, dedup_key
from tests.harness import FIXTURES


def test_dedup_key_matches_postee_goldens() -> None:
    event = json.loads((FIXTURES / "postee" / "all-in-one-image.json").read_text())
    props = ["digest", "image", "registry", "vulnerability_summary.critical", "vulnerability_summary.high",
             "vulnerability_summary.medium", "vulnerability_summary.low"]
    key = dedup_key(event, props)
    assert key.startswith("sha256:") and key.endswith("-all-in-one:3.5.19223-Aqua-0-7-30-6")
    interfaces = json.loads((FIXTURES / "postee" / "collection-of-interfaces.json").read_text())
    assert dedup_key(interfaces, ["arr.foo"]) == "bar"
    assert dedup_key({"items": [{"id": "KLM"}, {"id": "DEF"}]}, ["items.id"]) == "KLM"
    assert dedup_key({"name": "x"}, ["name.id"]) == ""
    assert dedup_key({"a": 1.5, "b": True, "c": 1e21, "d": {"k": 1}}, ["a", "b", "c", "d", "missing"]) == \
        "1.5-true-1e+21-map[k:1]"


def test_batch_is_oldest_first_keeps_owners_and_has_a_stable_id() -> None:
    batch = Batch()
    batch.add("e1", Content(title="t1", description="d1", owners="alice;bob"), now=100.0)
    batch.add("e2", Content(title="t2", description="d2", owners="bob;carol"), now=105.0)
    assert [c.title for c in batch.contents()] == ["t1", "t2"]
    batch.add("e0", Content(title="t0", description="d0"), now=106.0, received_at=99.0)  # arrived late
    assert [c.title for c in batch.contents()] == ["t0", "t1", "t2"] and batch.event_ids[0] == "e0"
    assert batch.owners() == "alice;bob;carol"
    again = Batch.from_dict(json.loads(json.dumps(batch.to_dict())))
    assert again.aggregate_id() == batch.aggregate_id() and again.started_at == 100.0
    assert not batch.due(10, now=109.0) and batch.due(10, now=110.0) and not Batch().due(10, now=1e9)


def test_delivered_keys_are_bounded_oldest_first() -> None:
    from app.kafka.delivered import DeliveredKeys

    keys = DeliveredKeys({"bootstrap.servers": "127.0.0.1:1"}, "unused", max_keys=3)
    for i in range(5):
        keys.mark(0, f"k{i}", now=1000.0 + i)
    assert [keys.seen(0, f"k{i}") for i in range(5)] == [False, False, True, True, True]
    assert not keys.seen(1, "k4")
