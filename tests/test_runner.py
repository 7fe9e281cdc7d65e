"""The action runner: retries with backoff and Retry-After, bounded by attempts and deadline."""

from __future__ import annotations

import random

import pytest

from actions.base import Action, ActionConfig
from app.content import Content
from app.errors import PermanentActionError, RetryableActionError
from app.messages import ActionMessage
from actions.runner import RetryPolicy, deliver


class Scripted(Action[ActionConfig, str]):
    type_name = "scripted"

    def __init__(self, outcomes: list[Exception | None]) -> None:
        super().__init__(ActionConfig(name="scripted", type="scripted"))
        self.outcomes = outcomes
        self.calls = 0

    def build_payload(self, message: ActionMessage) -> str:
        return message.content.description

    async def send(self, request: str) -> None:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


MSG = ActionMessage("e1", "r", "scripted", Content(title="t", description="d"))


async def run(action: Scripted, policy: RetryPolicy, clock: Clock):  # type: ignore[no-untyped-def]
    return await deliver(action, MSG, policy, sleep=clock.sleep, clock=clock, rng=random.Random(1))


async def test_retryable_then_success() -> None:
    clock = Clock()
    action = Scripted([RetryableActionError("503", status=503), RetryableActionError("503", status=503), None])
    outcome = await run(action, RetryPolicy(5, 300, 1.0, 30), clock)
    assert outcome.delivered and outcome.attempts == 3 and action.calls == 3
    assert 0.5 <= clock.sleeps[0] <= 1.0 and 1.0 <= clock.sleeps[1] <= 2.0  # exponential, jittered


async def test_retry_after_is_honoured() -> None:
    clock = Clock()
    action = Scripted([RetryableActionError("429", status=429, retry_after=7.0), None])
    outcome = await run(action, RetryPolicy(5, 300, 0.1, 30), clock)
    assert outcome.delivered and clock.sleeps == [7.0]


async def test_permanent_error_is_not_retried() -> None:
    clock = Clock()
    action = Scripted([PermanentActionError("bad request", status=400)])
    outcome = await run(action, RetryPolicy(5, 300, 0.1, 30), clock)
    assert not outcome.delivered and outcome.attempts == 1 and outcome.status == 400
    assert outcome.error_type == "PermanentActionError" and clock.sleeps == []


async def test_attempts_are_bounded() -> None:
    clock = Clock()
    action = Scripted([RetryableActionError("down")] * 10)
    outcome = await run(action, RetryPolicy(4, 300, 0.1, 30), clock)
    assert not outcome.delivered and outcome.attempts == 4 and action.calls == 4


async def test_deadline_is_bounded() -> None:
    clock = Clock()
    action = Scripted([RetryableActionError("down", retry_after=50.0)] * 10)
    outcome = await run(action, RetryPolicy(100, 120, 0.1, 30), clock)
    assert not outcome.delivered and action.calls == 3  # 0, 50, 100; the next (150) passes 120
    assert "deadline" in outcome.error


@pytest.mark.parametrize("exc", [ValueError("boom"), KeyError("k")])
async def test_an_action_bug_becomes_a_permanent_failure(exc: Exception) -> None:
    clock = Clock()
    outcome = await run(Scripted([exc]), RetryPolicy(5, 300, 0.1, 30), clock)
    assert not outcome.delivered and outcome.attempts == 1 and type(exc).__name__ in outcome.error
