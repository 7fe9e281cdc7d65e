"""The action runner: the only place that retries, counts and decides to dead-letter.

Exponential backoff with jitter, honouring ``Retry-After``, bounded by attempts and a deadline.
Any exception an action raises that is not an ``ActionError`` is treated as permanent (a bug in
the action must not loop forever) and reported with its type.

Partial delivery: an action that delivered a message except some parts the peer rejected for
good (Security Hub's ``FailedFindings``) raises ``PartialDeliveryError``. The outcome is then
``delivered`` (the message is not retried, so the accepted parts are not sent again) with the
refused parts in ``rejected``; the worker dead-letters each of them on its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from actions.base import ActionConfig, AnyAction
from app.errors import ActionError, PartialDeliveryError, RejectedPart, RetryableActionError
from app.messages import ActionMessage
from app.redact import redact

log = logging.getLogger("herald.runner")


_DEFAULTS = ActionConfig.model_fields  # the retry keys' defaults are the action config's


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = _DEFAULTS["retry_max_attempts"].default
    deadline: float = _DEFAULTS["retry_deadline"].default
    initial_backoff: float = _DEFAULTS["retry_initial_backoff"].default
    max_backoff: float = _DEFAULTS["retry_max_backoff"].default

    @classmethod
    def of(cls, config: ActionConfig) -> RetryPolicy:
        return cls(config.retry_max_attempts, config.retry_deadline, config.retry_initial_backoff, config.retry_max_backoff)

    def backoff(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Delay before attempt ``attempt + 1``: full exponential step with 50–100 % jitter,
        or the peer's ``Retry-After`` when it is longer."""
        step = min(self.max_backoff, self.initial_backoff * (2.0 ** (attempt - 1)))
        delay = step * rng.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


@dataclass
class Outcome:
    delivered: bool
    attempts: int
    first_attempt_at: float
    last_attempt_at: float
    error: str = ""
    error_type: str = ""
    status: int | None = None
    latency: float = 0.0
    rejected: list[RejectedPart] = field(default_factory=list)  # parts refused in a partial delivery


# one generator for every delivery's jitter: seeding a new Random costs ~60 us (os.urandom)
_JITTER = random.Random()

AttemptHook = Callable[[ActionMessage, int, Outcome], Awaitable[None]]


async def deliver(
    action: AnyAction,
    message: ActionMessage,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    on_attempt: AttemptHook | None = None,
) -> Outcome:
    """Deliver ``message`` with retries. Never raises (except cancellation)."""
    rng = rng or _JITTER
    first = clock()
    attempt = 0
    while True:
        attempt += 1
        started = clock()
        try:
            await action.deliver(message)
        except asyncio.CancelledError:
            raise
        except PartialDeliveryError as exc:
            outcome = Outcome(True, attempt, first, clock(), redact(str(exc)), type(exc).__name__,
                              latency=clock() - started, rejected=exc.rejected)
            if on_attempt:
                await on_attempt(message, attempt, outcome)
            return outcome
        except ActionError as exc:
            outcome = Outcome(False, attempt, first, clock(), redact(str(exc)), type(exc).__name__, exc.status)
            retry_after = exc.retry_after if isinstance(exc, RetryableActionError) else None
            retryable = exc.retryable
        except Exception as exc:  # an action bug becomes a dead letter, not a crash
            outcome = Outcome(False, attempt, first, clock(), redact(f"{type(exc).__name__}: {exc}"), "PermanentActionError")
            retry_after, retryable = None, False
            log.exception("action %s raised an unexpected error", action.name)
        else:
            outcome = Outcome(True, attempt, first, clock(), latency=clock() - started)
            if on_attempt:
                await on_attempt(message, attempt, outcome)
            return outcome
        outcome.latency = outcome.last_attempt_at - started
        if on_attempt:
            await on_attempt(message, attempt, outcome)
        if not retryable or attempt >= policy.max_attempts:
            return outcome
        delay = policy.backoff(attempt, retry_after, rng)
        if clock() + delay - first > policy.deadline:
            outcome.error += f" (gave up: next retry in {delay:.1f}s would pass the {policy.deadline:g}s deadline)"
            return outcome
        log.info("action %s: attempt %d failed (%s); retrying in %.2fs", action.name, attempt, outcome.error, delay)
        await sleep(delay)
