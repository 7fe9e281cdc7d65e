"""docker: run a container per event with the event in ``POSTEE_EVENT`` (Postee's docker action).

As Postee: the container runs ``docker-image-name`` with ``docker-cmd`` (``event.input``
placeholders resolved in each element), the environment ``docker-env`` plus
``POSTEE_EVENT=<description>``, bind mounts from ``docker-volume-mounts`` (host -> container) and
``docker-network`` as its network mode. It is created, started, waited for, its logs read, and
force-removed.

Fixed on purpose: the image is pulled only when missing and the pull is awaited to the end (a
failed pull is a permanent error naming the image); ``POSTEE_EVENT`` is the description exactly
(Postee wrapped it in literal quotes); a non-zero exit code is a permanent failure with the
exit code and the tail of the logs (Postee ignored it); a container still running after
``docker-timeout`` (default 60 s) is killed and the attempt fails as retryable; the container
is removed whatever happened. The engine is ``docker-host`` or ``DOCKER_HOST`` (any Docker
Engine API, Podman's included).

Hardened by default (Postee set none of these): the container runs with ``no-new-privileges``
(``docker-no-new-privileges``), every capability dropped (``docker-cap-drop: [ALL]``; give some
back with ``docker-cap-add``), a memory limit (``docker-memory``, 512 MiB) and a process limit
(``docker-pids-limit``, 256). Each is configurable; ``docker-cap-drop: []``, ``docker-memory: 0``
and ``docker-pids-limit: 0`` lift them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError
from pydantic import Field, field_validator

from actions._common import timeout_default
from actions._placeholders import EventView, substitute
from actions.base import Action, ActionConfig
from actions.exec import OUTPUT_LIMIT, TAIL_IN_ERROR, parse_env_entries
from app.config.model import PStr, PStrList
from app.errors import PermanentActionError, RetryableActionError
from app.messages import ActionMessage
from app.errors import ConfigError
from app.redact import redact
from app.config.settings import parse_size

log = logging.getLogger("herald.actions.docker")

_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_.-]")
_NO_CONNECTION = 900  # aiodocker's status for "could not connect to the engine"
_LOG_LINES = 5000  # lines fetched from the engine; bytes are capped at OUTPUT_LIMIT after
_CAPABILITY = re.compile(r"^(ALL|(CAP_)?[A-Z_]+)$")
DEFAULT_MEMORY = 512 * 1024**2
DEFAULT_PIDS_LIMIT = 256


class DockerConfig(ActionConfig):
    docker_image_name: PStr = Field(..., description="Image to run; pulled when not present.")
    docker_cmd: PStrList = Field(
        default_factory=list,
        description="Command and arguments; `event.input.<path>` / `event.raw.<path>` "
        "placeholders are resolved in each element. Empty: the image's default command.",
    )
    docker_env: PStrList = Field(
        default_factory=list,
        description="Environment entries `NAME=VALUE`; `POSTEE_EVENT` (the rendered content) is always set.",
    )
    docker_network: PStr = Field("", description="Network mode of the container (e.g. `none`, `host`, a network name).")
    docker_volume_mounts: dict[str, PStr] = Field(
        default_factory=dict, description="Bind mounts: host path -> container path."
    )
    docker_timeout: Annotated[float, timeout_default(60.0)] = Field(
        60.0, description="Kill the container after this long (duration; default 60s)."
    )
    docker_host: PStr = Field(
        "", description="Engine address (`unix:///path.sock`, `tcp://host:port`); default `DOCKER_HOST`."
    )
    docker_no_new_privileges: bool = Field(
        True, description="Run the container with `no-new-privileges` (setuid binaries cannot gain privileges)."
    )
    docker_cap_drop: PStrList = Field(
        default_factory=lambda: ["ALL"],
        description="Capabilities dropped (default `[ALL]`; `[]` keeps the engine's default set).",
    )
    docker_cap_add: PStrList = Field(
        default_factory=list, description="Capabilities added back, e.g. `[NET_BIND_SERVICE]`."
    )
    docker_memory: int = Field(
        DEFAULT_MEMORY, description="Memory limit (size such as `256MiB`, `1g` or bytes; default 512MiB; 0: no limit)."
    )
    docker_pids_limit: int = Field(
        DEFAULT_PIDS_LIMIT, description="Maximum number of processes in the container (default 256; 0: no limit)."
    )

    @field_validator("docker_image_name")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value):
            raise ValueError(f"must be an image reference such as 'alpine:3.20', got {value!r}")
        return value

    @field_validator("docker_env")
    @classmethod
    def _env(cls, value: list[str]) -> list[str]:
        parse_env_entries(value, "docker-env")
        return value

    @field_validator("docker_volume_mounts", mode="before")
    @classmethod
    def _mounts(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, dict):
            for host, target in value.items():
                if not str(host) or not isinstance(target, str) or not target.startswith("/"):
                    raise ValueError(f"{host!r}: the container path must be absolute, got {target!r}")
        return value

    @field_validator("docker_cap_drop", "docker_cap_add")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        for i, cap in enumerate(value):
            if not _CAPABILITY.match(cap.upper()):
                raise ValueError(f"item {i}: expected a capability such as 'ALL' or 'NET_ADMIN', got {cap!r}")
        return [cap.upper() for cap in value]

    @field_validator("docker_memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int:
        if value in ("", None):
            return DEFAULT_MEMORY
        try:
            size = parse_size(value, "docker-memory")
        except ConfigError:
            raise ValueError(f"expected a size such as '512MiB' or 0 (no limit), got {value!r}") from None
        if size < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return size

    @field_validator("docker_pids_limit", mode="before")
    @classmethod
    def _pids(cls, value: Any) -> int:
        if value in ("", None):
            return DEFAULT_PIDS_LIMIT
        if isinstance(value, bool) or not str(value).strip().lstrip("-").isdigit() or int(value) < 0:
            raise ValueError(f"expected a number of processes (0: no limit), got {value!r}")
        return int(value)


@dataclass(slots=True)
class ContainerRun:
    image: str
    cmd: list[str]
    env: list[str]
    binds: list[str] = field(default_factory=list)
    network: str = ""
    timeout: float = 60.0
    no_new_privileges: bool = True
    cap_drop: list[str] = field(default_factory=lambda: ["ALL"])
    cap_add: list[str] = field(default_factory=list)
    memory: int = DEFAULT_MEMORY  # bytes, 0: no limit
    pids_limit: int = DEFAULT_PIDS_LIMIT  # 0: no limit

    def create_config(self) -> dict[str, Any]:
        host: dict[str, Any] = {"Binds": self.binds}
        if self.network:
            host["NetworkMode"] = self.network
        if self.no_new_privileges:
            host["SecurityOpt"] = ["no-new-privileges"]
        if self.cap_drop:
            host["CapDrop"] = self.cap_drop
        if self.cap_add:
            host["CapAdd"] = self.cap_add
        if self.memory:
            host["Memory"] = self.memory
        if self.pids_limit:
            host["PidsLimit"] = self.pids_limit
        config: dict[str, Any] = {
            "Image": self.image,
            "Env": self.env,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": False,
            "Labels": {"io.herald.action": "docker"},
            "HostConfig": host,
        }
        if self.cmd:
            config["Cmd"] = self.cmd
        return config


def _tail(text: str, limit: int = TAIL_IN_ERROR) -> str:
    return redact(text[-limit:].strip())


class DockerAction(Action[DockerConfig, ContainerRun]):
    type_name = "docker"
    config_model = DockerConfig

    def __init__(self, config: DockerConfig) -> None:
        super().__init__(config)
        self._docker: aiodocker.Docker | None = None

    async def start(self) -> None:
        self._engine()

    async def close(self) -> None:
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()

    def _engine(self) -> aiodocker.Docker:
        if self._docker is None:
            try:
                self._docker = aiodocker.Docker(url=self.config.docker_host or None)
            except (ValueError, DockerError) as exc:
                raise PermanentActionError(f"docker {self.name}: no container engine: {exc}") from None
        return self._docker

    def build_payload(self, message: ActionMessage) -> ContainerRun:
        view = EventView.of(message)
        env = [f"{k}={v}" for k, v in parse_env_entries(self.config.docker_env, "docker-env")]
        env.append(f"POSTEE_EVENT={message.content.description}")  # exactly, no added quotes
        return ContainerRun(
            image=self.config.docker_image_name,
            cmd=[substitute(arg, view).text for arg in self.config.docker_cmd],
            env=env,
            binds=[f"{host}:{target}" for host, target in self.config.docker_volume_mounts.items()],
            network=self.config.docker_network,
            timeout=self.config.docker_timeout,
            no_new_privileges=self.config.docker_no_new_privileges,
            cap_drop=list(self.config.docker_cap_drop),
            cap_add=list(self.config.docker_cap_add),
            memory=self.config.docker_memory,
            pids_limit=self.config.docker_pids_limit,
        )

    async def send(self, request: ContainerRun) -> None:
        docker = self._engine()
        try:
            await self._ensure_image(docker, request.image)
            await self._run(docker, request)
        except DockerError as exc:
            if exc.status == _NO_CONNECTION:
                raise RetryableActionError(
                    f"docker {self.name}: cannot reach the container engine: {redact(exc.message)}"
                ) from None
            msg = f"docker {self.name}: engine answered {exc.status}: {redact(exc.message)}"
            if exc.status >= 500 or exc.status in (408, 429):
                raise RetryableActionError(msg, status=exc.status) from None
            raise PermanentActionError(msg, status=exc.status) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableActionError(
                f"docker {self.name}: cannot reach the container engine: {redact(str(exc)) or type(exc).__name__}"
            ) from None

    async def _ensure_image(self, docker: aiodocker.Docker, image: str) -> None:
        try:
            await docker.images.inspect(image)
            return
        except DockerError as exc:
            if exc.status != 404:
                raise
        reason = "the pull did not make it available"
        try:
            # stream=False reads the pull's progress to the end, so the image is complete after
            for item in await docker.images.pull(image):
                if isinstance(item, dict) and item.get("error"):
                    reason = str(item["error"])
        except DockerError as exc:
            reason = exc.message
        try:
            await docker.images.inspect(image)
        except DockerError as exc:
            if exc.status != 404:
                raise
            raise PermanentActionError(
                f"docker {self.name}: image {image!r} not found and could not be pulled: {redact(reason)}"
            ) from None

    async def _run(self, docker: aiodocker.Docker, run: ContainerRun) -> None:
        base = _NOT_NAME_CHAR.sub("-", self.name).strip("-.") or "action"
        name = f"herald-{base}-{uuid.uuid4().hex[:8]}"
        container = await docker.containers.create(run.create_config(), name=name)
        try:
            await container.start()
            try:
                result = await asyncio.wait_for(container.wait(), run.timeout)
            except TimeoutError:
                await self._kill(container)
                logs = await self._logs(container)
                raise RetryableActionError(
                    f"docker {self.name}: container {name} timed out after {run.timeout:g}s and was "
                    f"killed; log tail: {_tail(logs)}"
                ) from None
            code = int(result.get("StatusCode", -1))
            logs = await self._logs(container)
        finally:
            await self._remove(container, name)
        if code != 0:
            raise PermanentActionError(
                f"docker {self.name}: container {name} ({run.image}) exited with code {code}; "
                f"log tail: {_tail(logs)}",
                status=code,
            )
        log.info("docker %s: container %s exited 0; logs: %s", self.name, name, _tail(logs, 4096))

    async def _logs(self, container: Any) -> str:
        try:
            lines = await container.log(stdout=True, stderr=True, tail=str(_LOG_LINES))
        except DockerError as exc:
            return f"(logs unavailable: {exc.message})"
        return "".join(lines)[-OUTPUT_LIMIT:]

    async def _kill(self, container: Any) -> None:
        try:
            await container.kill()
        except DockerError as exc:
            if exc.status not in (404, 409):  # 409: it stopped by itself meanwhile
                raise

    async def _remove(self, container: Any, name: str) -> None:
        try:
            await container.delete(force=True)
        except DockerError as exc:
            if exc.status != 404:
                log.warning("docker %s: could not remove container %s: %s", self.name, name, exc.message)
