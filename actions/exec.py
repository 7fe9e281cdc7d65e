"""exec: run a shell script with the event in ``POSTEE_EVENT`` (Postee's exec action).

As Postee: ``/bin/sh <input-file>``, or ``/bin/sh`` reading ``exec-script`` on stdin, with
``POSTEE_EVENT=<description>`` and the ``env`` entries in the environment. Event data reaches the
script only through that environment variable, never the command line.

Unlike Postee, the script does not inherit Herald's whole environment (which holds Kafka and
action credentials): only ``PATH``, ``HOME``, ``LANG``, ``LC_ALL`` and ``TZ`` are passed through
from Herald's environment, plus the variables named in ``env-allow``; ``env`` entries and
``POSTEE_EVENT`` are set on top.

Beyond Postee: ``event.input``/``event.raw`` placeholders in ``env`` values (still only in the
environment, never in the command line); a ``timeout`` (default 60 s) after which the script's
whole process group is killed and the attempt fails as retryable; a non-zero exit is a permanent failure carrying the
exit code and the tail of the output (Postee only logged it); output is captured up to 64 KB
(the last bytes are kept). The script runs in its own session, and whatever it left running in
its process group is killed when it exits, so no child outlives an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from actions._common import timeout_default
from actions._placeholders import EventView, substitute
from actions.base import Action, ActionConfig
from app.config.model import PStr, PStrList
from app.errors import PermanentActionError, RetryableActionError
from app.messages import ActionMessage
from app.redact import redact

log = logging.getLogger("herald.actions.exec")

SHELL = "/bin/sh"
OUTPUT_LIMIT = 64 * 1024  # bytes of combined output kept
TAIL_IN_ERROR = 2 * 1024  # bytes of output quoted in an error
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GRACE_AFTER_EXIT = 1.0  # seconds to drain the pipe once the shell has exited
# the only variables of Herald's environment a script sees unless ``env-allow`` names more
DEFAULT_PASS_ENV: tuple[str, ...] = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


def parse_env_entries(entries: list[str], key: str) -> list[tuple[str, str]]:
    """``["K=V", ...]`` -> pairs; raises ``ValueError`` naming the bad entry."""
    pairs = []
    for i, entry in enumerate(entries):
        name, sep, value = entry.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise ValueError(
                f"{key}[{i}] must be NAME=VALUE with NAME made of letters, digits and '_' "
                f"(not starting with a digit), got {entry!r}"
            )
        pairs.append((name, value))
    return pairs


class ExecConfig(ActionConfig):
    input_file: PStr = Field(
        "", description="Path of a shell script run as `/bin/sh <input-file>`. Exactly one of "
        "`input-file` and `exec-script` is required."
    )
    exec_script: PStr = Field(
        "", description="Inline shell script, fed to `/bin/sh` on stdin. Exactly one of "
        "`input-file` and `exec-script` is required."
    )
    env: PStrList = Field(
        default_factory=list,
        description="Extra environment entries `NAME=VALUE` (values may hold `event.input.<path>` / "
        "`event.raw.<path>` placeholders); `POSTEE_EVENT` (the rendered content) is always set.",
    )
    env_allow: PStrList = Field(
        default_factory=list,
        description="Names of variables of Herald's environment passed through to the script. By "
        "default the script sees only `PATH`, `HOME`, `LANG`, `LC_ALL` and `TZ` from it (plus `env` "
        "and `POSTEE_EVENT`), never Herald's credentials.",
    )
    timeout: Annotated[float, timeout_default(60.0)] = Field(
        60.0, description="Kill the script's process group after this long (duration; default 60s)."
    )

    @field_validator("env")
    @classmethod
    def _env(cls, value: list[str]) -> list[str]:
        parse_env_entries(value, "env")
        return value

    @field_validator("env_allow")
    @classmethod
    def _env_allow(cls, value: list[str]) -> list[str]:
        for i, name in enumerate(value):
            if not _ENV_NAME.match(name):
                raise ValueError(
                    f"env-allow[{i}] must be a variable name made of letters, digits and '_' "
                    f"(not starting with a digit), got {name!r}"
                )
        return value

    @model_validator(mode="after")
    def _one_script(self) -> ExecConfig:
        given = [k for k, v in (("input-file", self.input_file), ("exec-script", self.exec_script)) if v]
        if len(given) != 1:
            why = "both are set" if given else "neither is set"
            raise ValueError(f"exactly one of 'input-file' and 'exec-script' is required ({why})")
        return self


@dataclass(slots=True)
class ExecRequest:
    argv: list[str]
    stdin: bytes | None
    env: dict[str, str]  # set in the process environment
    timeout: float
    pass_env: tuple[str, ...] = DEFAULT_PASS_ENV  # taken from Herald's environment when set


def process_env(req: ExecRequest, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The script's whole environment: the passed-through variables Herald has, then ``req.env``."""
    environ = os.environ if environ is None else environ
    return {**{k: environ[k] for k in req.pass_env if k in environ}, **req.env}


@dataclass(slots=True)
class ExecResult:
    returncode: int
    output: bytes  # the last OUTPUT_LIMIT bytes
    total_bytes: int


def tail(output: bytes, limit: int = TAIL_IN_ERROR) -> str:
    text = output[-limit:].decode("utf-8", "replace")
    return redact(text.strip())


class _Sink:
    """Keeps the last ``OUTPUT_LIMIT`` bytes of a stream and counts the rest."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.total = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.total += len(chunk)
            self.buf += chunk
            if len(self.buf) > OUTPUT_LIMIT:
                del self.buf[: len(self.buf) - OUTPUT_LIMIT]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


async def _finish(reader: asyncio.Task[None], kill_after: int | None = None) -> None:
    """Let the reader reach EOF. Leftover processes of the group are killed (``kill_after``);
    one that escaped the group must not block us forever, so the reader is bounded too."""
    try:
        await asyncio.wait_for(asyncio.shield(reader), _GRACE_AFTER_EXIT)
    except TimeoutError:
        if kill_after is not None:
            _kill_group(kill_after)
        try:
            await asyncio.wait_for(reader, _GRACE_AFTER_EXIT)
        except TimeoutError:
            pass  # wait_for cancelled the reader; what was read is kept


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Signals the process's exit by itself: ``Process.wait()`` also waits for every pipe to
    close, which never happens while a background child keeps stdout open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def run_bounded(req: ExecRequest) -> ExecResult:
    """Run ``req``; raise ``TimeoutError(output)`` (after killing the group) past its timeout."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _ExitAwareProtocol(loop),
        *req.argv,
        stdin=subprocess.PIPE if req.stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=process_env(req),
        start_new_session=True,  # the script leads its own group, so the group can be killed
    )
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    sink = _Sink()
    assert proc.stdout is not None
    reader = asyncio.create_task(sink.drain(proc.stdout))

    async def feed() -> None:
        if proc.stdin is None:
            return
        try:
            proc.stdin.write(req.stdin or b"")
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the script stopped reading; its exit code tells the story
        finally:
            proc.stdin.close()

    async def run() -> None:
        await feed()
        await asyncio.shield(protocol.exited)  # a timeout must not cancel the exit future itself

    try:
        await asyncio.wait_for(run(), req.timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        await protocol.exited
        await _finish(reader)
        transport.close()
        raise TimeoutError(bytes(sink.buf)) from None
    except BaseException:
        _kill_group(proc.pid)
        reader.cancel()
        transport.close()
        raise
    # Background children may still hold the pipe open: give them a moment, then end them.
    await _finish(reader, kill_after=proc.pid)
    code = transport.get_returncode()
    transport.close()
    return ExecResult(code if code is not None else -1, bytes(sink.buf), sink.total)


class ExecAction(Action[ExecConfig, ExecRequest]):
    type_name = "exec"
    config_model = ExecConfig

    def build_payload(self, message: ActionMessage) -> ExecRequest:
        view = EventView.of(message)
        # Herald: placeholders in env values; event data still reaches the script only as environment
        env = {k: substitute(v, view).text for k, v in parse_env_entries(self.config.env, "env")}
        env["POSTEE_EVENT"] = message.content.description  # set last: it wins, as in Postee
        pass_env = tuple(dict.fromkeys((*DEFAULT_PASS_ENV, *self.config.env_allow)))
        if self.config.input_file:
            return ExecRequest([SHELL, self.config.input_file], None, env, self.config.timeout, pass_env)
        return ExecRequest([SHELL], self.config.exec_script.encode(), env, self.config.timeout, pass_env)

    async def send(self, request: ExecRequest) -> None:
        peer = f"exec {self.name}"
        if request.stdin is None and not os.path.isfile(request.argv[-1]):
            raise PermanentActionError(f"{peer}: input-file {request.argv[-1]!r} does not exist")
        try:
            result = await run_bounded(request)
        except TimeoutError as exc:
            output = exc.args[0] if exc.args else b""
            raise RetryableActionError(
                f"{peer}: timed out after {request.timeout:g}s (process group killed); "
                f"output tail: {tail(output)}"
            ) from None
        except OSError as exc:
            raise PermanentActionError(f"{peer}: cannot start {SHELL}: {exc.strerror}") from None
        if result.returncode != 0:
            how = (
                f"was killed by signal {-result.returncode}"
                if result.returncode < 0
                else f"exited with code {result.returncode}"
            )
            raise PermanentActionError(
                f"{peer}: script {how}; output (last {TAIL_IN_ERROR // 1024} KB): {tail(result.output)}",
                status=result.returncode,
            )
        log.info(
            "exec %s: script succeeded, %d bytes of output: %s",
            self.name,
            result.total_bytes,
            redact(result.output[-4096:].decode("utf-8", "replace")),
        )
