"""Small helpers shared by the action tests of issue 5 (messages and fixtures)."""

from __future__ import annotations

import json
from typing import Any

from app.content import Content
from app.messages import ActionMessage
from tests.harness import FIXTURES


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "postee" / name).read_text())


def message(description: str, event: dict[str, Any] | None = None, action: str = "a") -> ActionMessage:
    return ActionMessage(
        event_id="ev-1",
        route="r",
        action=action,
        content=Content(title="t", description=description),
        event=event,
    )
