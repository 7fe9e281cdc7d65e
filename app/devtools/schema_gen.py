"""JSON Schemas of the config and of Herald's messages, generated from the models.

``python -m app.devtools.schema_gen`` rewrites ``schemas/*.json``; a test checks they are current.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter
from pydantic.json_schema import PydanticJsonSchemaWarning

from actions import action_class, available
from app.config.loader import RouteConfig, RuleConfig, TemplateConfig
from app.content import Content
from app.messages import DeadLetter
from app.config.settings import HeraldSettings

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    with warnings.catch_warnings():  # secret defaults (empty) are left out of the schema, on purpose
        warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
        return model.model_json_schema(by_alias=True, mode="validation")


def config_schema() -> dict[str, Any]:
    actions = []
    for name in available():
        cls = action_class(name)
        schema = _schema(cls.config_model)
        schema["title"] = f"{cls.type_name} action"
        schema["properties"]["type"] = {"type": "string", "pattern": f"(?i)^{cls.type_name}$"}
        actions.append(schema)
    defs: dict[str, Any] = {}

    def lift(schema: dict[str, Any]) -> dict[str, Any]:
        defs.update(schema.pop("$defs", {}))
        return schema

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://herald.dev/schemas/config.schema.json",
        "title": "Herald config (Postee cfg.yaml format)",
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "aqua-server": {"type": ["string", "null"]},
            "max-db-size": {"type": ["string", "null"]},
            "db-verify-interval": {"type": "integer"},
            "delete-old-data": {"type": "integer"},
            "herald": lift(_schema(HeraldSettings)),
            "routes": {"type": "array", "items": lift(_schema(RouteConfig))},
            "templates": {"type": "array", "items": lift(_schema(TemplateConfig))},
            "rules": {"type": "array", "items": lift(_schema(RuleConfig))},
            "actions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "type"],
                    "if": {"properties": {"enable": {"const": True}}, "required": ["enable"]},
                    "then": {"anyOf": [lift(a) for a in actions]},
                },
            },
        },
        "$defs": defs,
    }


class ActionMessageSchema(BaseModel):
    """A message on ``<prefix>action.<name>``."""

    event_id: str = Field(description="Bridge event id, or topic-partition-offset for direct producers; agg-… for aggregates.")
    route: str
    action: str
    idempotency_key: str = Field(description="event_id:route:action; the delivered-keys table is keyed by it.")
    content: Content
    event: dict[str, Any] | None = Field(description="The raw event (null for aggregates).")
    received_at: float
    routed_at: float
    redrive: int = Field(description="How many times this message was redriven from the dead-letter topic.")
    aggregated: int = Field(description="Number of events in an aggregate, 0 for a single event.")
    part: str = Field("", description="Set only on a dead-lettered part of a partial delivery (e.g. a Security Hub "
                                      "finding id); the idempotency key then ends with :part:<part>.")


def dead_letter_schema() -> dict[str, Any]:
    """A record on ``<prefix>dlq.<name>`` or ``<prefix>dlq.router`` (from the dataclass itself)."""
    return TypeAdapter(DeadLetter).json_schema(mode="validation")


def write_all() -> list[Path]:
    SCHEMAS.mkdir(exist_ok=True)
    out = {
        "config.schema.json": config_schema(),
        "action-message.schema.json": _schema(ActionMessageSchema),
        "dead-letter.schema.json": dead_letter_schema(),
    }
    paths = []
    for name, schema in out.items():
        path = SCHEMAS / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_all():
        print(p)
