"""Fixtures for action tests: every action built through support.build_action is closed after
the test, on the test's own event loop (so no HTTP session outlives its test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
import support


@pytest_asyncio.fixture(autouse=True)
async def _close_built_actions() -> AsyncIterator[None]:
    support.BUILT.clear()
    yield
    while support.BUILT:
        await support.BUILT.pop().close()
