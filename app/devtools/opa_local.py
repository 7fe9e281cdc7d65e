"""A managed local OPA for tests, benchmarks and ``make``: Herald's OPA build (with the
``jsonformat`` built-in, scripts/build-opa.sh, pinned in opa/go.mod) and an OPA server process on
127.0.0.1. Reads the checkout; the runtime never imports it (the engine takes a URL)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import requests

from app.errors import PolicyError

log = logging.getLogger("herald.opa")

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-opa.sh"

def pinned_opa_version() -> str:
    """The OPA version opa/go.mod pins."""
    for line in (REPO_ROOT / "opa" / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "require" and parts[1] == "github.com/open-policy-agent/opa":
            return parts[2]
    raise PolicyError("no OPA version pinned in opa/go.mod", str(REPO_ROOT / "opa" / "go.mod"))


def opa_binary(build: bool = True) -> Path:
    """Herald's OPA (with ``jsonformat``): ``$HERALD_OPA_BIN``, else the pinned build in
    ``.cache/opa``, building it with scripts/build-opa.sh when ``build`` is true."""
    configured = os.environ.get("HERALD_OPA_BIN")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise PolicyError(f"HERALD_OPA_BIN={configured!r} is not an executable file", "HERALD_OPA_BIN")
        return path
    if BUILD_SCRIPT.is_file() and build:
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PolicyError(f"building OPA failed:\n{done.stderr[-4000:]}", str(BUILD_SCRIPT))
        return Path(done.stdout.strip().splitlines()[-1])
    if BUILD_SCRIPT.is_file():
        cache = Path(os.environ.get("HERALD_CACHE_DIR") or REPO_ROOT / ".cache")
        cached = cache / "opa" / pinned_opa_version() / "opa"
        if cached.is_file():
            return cached
    raise PolicyError("no OPA binary: run scripts/build-opa.sh or set HERALD_OPA_BIN", "opa")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpaServer:
    """An OPA server process on 127.0.0.1 and a free port, started and stopped by PID.

    ``args``: more ``opa run`` arguments, e.g. ``--tls-cert-file``/``--tls-private-key-file`` (the
    server is then https://), ``--authentication``/``--authorization`` and the authorization
    policy file; ``probe``: ``requests`` options of the /health probe (``verify``, ``cert``,
    ``headers``) that such a server needs."""

    def __init__(self, binary: Path | str | None = None, v0: bool = True, *, args: tuple[str, ...] = (),
                 probe: dict[str, Any] | None = None) -> None:
        self.binary = Path(binary) if binary else opa_binary()
        self.v0 = v0
        self.args = tuple(args)
        self.probe = dict(probe or {})
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        scheme = "https" if "--tls-cert-file" in self.args else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 30.0, attempts: int = 3) -> Self:
        for _ in range(attempts):  # another process may take the free port before OPA binds it
            if self._start_once(timeout):
                return self
        raise PolicyError(f"OPA did not start: {self._log_tail()}", str(self.binary))

    def _start_once(self, timeout: float) -> bool:
        if self._log is not None:
            self._log.close()
        self.port = _free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="herald-opa-", suffix=".log")  # noqa: SIM115
        args = [str(self.binary), "run", "--server", "--addr", f"127.0.0.1:{self.port}",
                "--skip-version-check", "--log-level", "error", "--shutdown-grace-period", "1"]
        if self.v0:
            args.append("--v0-compatible")
        args += self.args
        self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log.warning("OPA exited with %s: %s", self._proc.returncode, self._log_tail())
                return False
            try:
                if requests.get(f"{self.url}/health", timeout=1, **self.probe).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise PolicyError(f"OPA did not answer /health within {timeout}s: {self._log_tail()}", str(self.binary))

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

