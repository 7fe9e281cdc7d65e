"""EmbeddedEngine.eval_path evaluates a document through a helper rule (planned once) instead of a
query (parsed and planned per call): the answers must be the query's, errors included."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.errors import PolicyError
from app.routing.policy.engine import EmbeddedEngine

MODULE = """package herald.sample

title := "t"
nothing := null
big := 123456789012345678901234567890
items[x] { x := input.items[_] }
obj := {"k": input.k, "nested": {"f": 1.5}}
maybe { input.flag == true }
broken := x { x := 1 }
broken := x { x := 2 }
"""


def by_query(engine: EmbeddedEngine, path: str) -> Any:
    result = orjson.loads(engine._engine.eval_query_as_json(path))
    rows = result.get("result") or []
    return rows[0]["expressions"][0]["value"] if rows else None


@pytest.fixture
def engine() -> EmbeddedEngine:
    e = EmbeddedEngine(v0=True)
    e.add_module("sample.rego", MODULE.replace("broken", "ok", 1).replace("broken := x { x := 2 }", ""))
    e.set_input_json('{"items": [3, 1, 2], "k": "v<&>", "flag": true}')
    return e


@pytest.mark.parametrize("path", ["data.herald.sample.title", "data.herald.sample.nothing", "data.herald.sample.big",
                                  "data.herald.sample.items", "data.herald.sample.obj", "data.herald.sample.maybe",
                                  "data.herald.sample.missing", "data.nowhere.at.all"])
def test_eval_path_answers_as_the_query(engine: EmbeddedEngine, path: str) -> None:
    assert engine.eval_path(path) == by_query(engine, path)
    engine.set_input_json('{"items": [], "k": 1, "flag": false}')  # the rule follows the input
    assert engine.eval_path(path) == by_query(engine, path)


def test_whole_package_and_undefined(engine: EmbeddedEngine) -> None:
    doc = engine.eval_path("data.herald.sample")
    assert doc == by_query(engine, "data.herald.sample")
    assert doc["title"] == "t" and doc["items"] == [1, 2, 3]
    assert engine.eval_path("data.herald.sample.missing") is None


def test_helper_rules_are_not_listed_as_packages(engine: EmbeddedEngine) -> None:
    engine.eval_path("data.herald.sample")
    assert engine.packages() == ["data.herald.sample"]


def test_a_conflict_is_a_policy_error_like_the_query() -> None:
    e = EmbeddedEngine(v0=True)
    e.add_module("broken.rego", MODULE)
    e.set_input_json("{}")
    with pytest.raises(PolicyError):
        e.eval_path("data.herald.sample.broken")
    with pytest.raises(RuntimeError):
        by_query(e, "data.herald.sample.broken")


def test_a_path_that_is_not_a_plain_ref_is_still_a_query(engine: EmbeddedEngine) -> None:
    path = 'data.herald.sample["title"]'
    assert engine.eval_path(path) == "t"
    assert engine._doc_rules[path] is None
