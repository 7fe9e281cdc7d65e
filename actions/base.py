"""The action contract.

An action is one module in ``actions/``: a strict config model and an ``Action`` subclass with a
pure ``build_payload(message) -> request`` and an ``async send(request)`` that returns on success
and raises ``RetryableActionError`` or ``PermanentActionError`` otherwise. The runner
(``app/runner.py``) alone retries, logs and dead-letters.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from pydantic import Field, StrictBool, StrictInt, field_validator

from app.configmodel import PosteeModel, PStr, parse_duration
from app.messages import ActionMessage


class ActionConfig(PosteeModel):
    """Keys every action has. Herald adds the retry policy keys (all optional)."""

    name: PStr = Field(..., description="Unique action name, used by routes, topics and logs.")
    type: PStr = Field(..., description="Action type (case-insensitive).")
    enable: StrictBool = Field(False, description="Only enabled actions exist (Postee's default: false).")
    runs_on: PStr = Field("", description="Postee runner name; accepted and ignored (every worker runs every action).")
    retry_max_attempts: StrictInt = Field(5, ge=1, description="Attempts before dead-lettering.")
    retry_deadline: float = Field(
        300.0, description="Give up and dead-letter after this long (duration, e.g. '5m')."
    )
    retry_initial_backoff: float = Field(0.5, description="First backoff (duration).")
    retry_max_backoff: float = Field(30.0, description="Longest backoff between attempts.")
    concurrency: StrictInt = Field(
        8, ge=1, le=256, description="Messages of this action delivered in parallel per worker."
    )

    @field_validator("retry_deadline", "retry_initial_backoff", "retry_max_backoff", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value, "duration")


C = TypeVar("C", bound=ActionConfig)
R = TypeVar("R")


class Action(Generic[C, R]):
    """Base class of every action. Subclasses set ``type_name`` and ``config_model``."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[ActionConfig]] = ActionConfig

    def __init__(self, config: C) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    async def start(self) -> None:
        """Open clients (HTTP sessions, ...). Called once on the worker's event loop."""

    async def close(self) -> None:
        """Release what ``start`` opened."""

    def build_payload(self, message: ActionMessage) -> R:
        """Pure: the request to send for this message. Raise ``PermanentActionError`` if impossible."""
        raise NotImplementedError

    async def send(self, request: R) -> None:
        """Deliver; raise ``RetryableActionError`` or ``PermanentActionError`` on failure."""
        raise NotImplementedError

    async def deliver(self, message: ActionMessage) -> None:
        await self.send(self.build_payload(message))


class HttpClientAction(Action[C, R]):
    """Base of actions that talk HTTP: one aiohttp session per action, opened on the worker's loop."""

    def __init__(self, config: C) -> None:
        super().__init__(config)
        from actions._http import HttpClient

        self.http = HttpClient()

    async def start(self) -> None:
        await self.http.start()

    async def close(self) -> None:
        await self.http.close()
