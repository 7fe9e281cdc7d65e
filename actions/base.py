"""The action contract.

An action is one module in ``actions/``: a strict config model and an ``Action`` subclass with a
pure ``build_payload(message) -> request`` and an ``async send(request)`` that returns on success
and raises ``RetryableActionError`` or ``PermanentActionError`` otherwise. The runner
(``actions/runner.py``) alone retries, logs and dead-letters. ``ActionConfig``, the keys every
action has, is core configuration (``app.config.model``): the config loader types a Config with it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

from app.config.model import ActionConfig as ActionConfig  # re-exported: part of the action contract
from app.messages import ActionMessage


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


# An action of any type, as the worker and the runner hold them (their config and request types vary)
AnyAction: TypeAlias = Action[Any, Any]
