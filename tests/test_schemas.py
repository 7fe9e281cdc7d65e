"""The JSON Schemas in schemas/ are current and describe real configs and messages."""

from __future__ import annotations

import json

import jsonschema
import yaml

from app.content import Content
from app.messages import ActionMessage, DeadLetter
from app.devtools.schema_gen import SCHEMAS, ActionMessageSchema, _schema, config_schema, dead_letter_schema
from tests.harness import ROOT


def test_committed_schemas_are_current() -> None:
    assert json.loads((SCHEMAS / "config.schema.json").read_text()) == json.loads(json.dumps(config_schema()))
    assert json.loads((SCHEMAS / "action-message.schema.json").read_text()) == _schema(ActionMessageSchema)
    assert json.loads((SCHEMAS / "dead-letter.schema.json").read_text()) == dead_letter_schema()


def test_example_config_validates_and_a_wrong_type_does_not() -> None:
    schema = json.loads((SCHEMAS / "config.schema.json").read_text())
    cfg = yaml.safe_load((ROOT / "examples" / "cfg.yaml").read_text())
    jsonschema.validate(cfg, schema)
    cfg["routes"][0]["actions"] = "stdout"
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    assert errors and list(errors[0].absolute_path) == ["routes", 0, "actions"]


def test_messages_match_their_schemas() -> None:
    msg = ActionMessage("e1", "r", "a", Content(title="t", description="d"), {"x": 1})
    jsonschema.validate(json.loads(msg.to_json()), json.loads((SCHEMAS / "action-message.schema.json").read_text()))
    dl = DeadLetter("a", "boom", "PermanentActionError", 1, 1.0, 2.0, "t", 0, 5, "e1", 400, json.loads(msg.to_json()))
    jsonschema.validate(json.loads(dl.to_json()), json.loads((SCHEMAS / "dead-letter.schema.json").read_text()))
