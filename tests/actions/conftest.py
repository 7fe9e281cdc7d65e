"""Fixtures for action tests: every action built through support.build_action is closed after
the test, on the test's own event loop (so no HTTP session outlives its test)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from tests.actions import support


@pytest_asyncio.fixture(autouse=True)
async def _close_built_actions() -> AsyncIterator[None]:
    support.BUILT.clear()
    yield
    while support.BUILT:
        await support.BUILT.pop().close()


# --- a real container engine for the docker action (Podman's Docker API) ----------------------

_PODMAN = Path(__file__).resolve().parents[2] / "scripts" / "podman-service.sh"
_PODMAN_PID = Path(__file__).resolve().parents[2] / ".cache" / "podman" / "service.pid"


def _podman_running() -> bool:
    try:
        os.kill(int(_PODMAN_PID.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """``unix://.../podman.sock``: Podman's Docker API, started by scripts/podman-service.sh.

    It FAILS (never skips) the tests that need it when it cannot start. A service that was
    already running (started by hand) is used and left running."""
    started_here = not _podman_running()
    proc = subprocess.run(["sh", str(_PODMAN), "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"the Podman Docker API service could not start:\n{proc.stderr[-3000:]}", pytrace=False)
    env = subprocess.run(["sh", str(_PODMAN), "env"], capture_output=True, text=True, check=True)
    try:
        yield env.stdout.strip().split("=", 1)[1]
    finally:
        if started_here:
            subprocess.run(["sh", str(_PODMAN), "stop"], capture_output=True, timeout=60)
