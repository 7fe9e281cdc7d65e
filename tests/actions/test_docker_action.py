"""docker action against a real container engine: Podman's Docker API (scripts/podman-service.sh)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from actions.docker import DockerAction, DockerConfig
from app.config.model import validate_model
from app.errors import ConfigError, PermanentActionError, RetryableActionError
from tests.actions._msg import message

BUSYBOX = "localhost/busybox:latest"
TRICKY = '{"image": "library/nginx:1.16", "note": "say \\"hi\\" $(id) `id` \'q\'"}'


def config(**cfg: Any) -> DockerConfig:
    data = {"name": "run-box", "type": "docker", "docker-image-name": BUSYBOX, **cfg}
    obj, _ = validate_model(DockerConfig, data, "actions[7]")
    return obj


async def deliver(docker_host: str, desc: str, **cfg: Any) -> None:
    act = DockerAction(config(**{"docker-host": docker_host, "docker-network": "none", **cfg}))
    await act.start()
    try:
        await act.deliver(message(desc))
    finally:
        await act.close()


async def leftover_containers(docker_host: str) -> list[str]:
    async with aiodocker.Docker(url=docker_host) as docker:
        containers = await docker.containers.list(all=True)
        names = [n for c in containers for n in c["Names"]]
    return [n for n in names if "herald-run-box-" in n]


# --- config and payload ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"docker-image-name": None}, "actions[7].docker-image-name"),
        ({"docker-image-name": "two words"}, "image reference"),
        ({"docker-env": ["NOVALUE"]}, "docker-env[0] must be NAME=VALUE"),
        ({"docker-volume-mounts": {"/host": "relative"}}, "container path must be absolute"),
        ({"docker-timeout": "0s"}, "positive"),
        ({"docker-cmd": "echo hi"}, "actions[7].docker-cmd"),
    ],
)
def test_config_errors(cfg: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(**cfg)
    assert needle in str(err.value)


def test_payload_env_exact_and_cmd_placeholders() -> None:
    act = DockerAction(config(**{
        "docker-cmd": ["scan", "event.input.image", "--tag=event.input.tag", "event.input.missing"],
        "docker-env": ["A=1"],
        "docker-volume-mounts": {"/srv/data": "/data"},
        "docker-network": "none",
    }))
    run = act.build_payload(message('{"image": "nginx", "tag": "1.16"}'))
    assert run.cmd == ["scan", "nginx", "--tag=1.16", ""]
    assert run.env == ["A=1", 'POSTEE_EVENT={"image": "nginx", "tag": "1.16"}']
    cfg = run.create_config()
    assert cfg["HostConfig"] == {
        "Binds": ["/srv/data:/data"], "NetworkMode": "none", "SecurityOpt": ["no-new-privileges"],
        "CapDrop": ["ALL"], "Memory": 512 * 1024**2, "PidsLimit": 256,
    }
    assert cfg["Image"] == BUSYBOX and run.timeout == 60.0


def test_payload_hardening_is_configurable() -> None:
    act = DockerAction(config(**{
        "docker-no-new-privileges": False, "docker-cap-drop": ["net_raw", "CAP_SYS_ADMIN"],
        "docker-cap-add": ["NET_BIND_SERVICE"], "docker-memory": "64MiB", "docker-pids-limit": 32,
    }))
    host = act.build_payload(message("x")).create_config()["HostConfig"]
    assert host == {"Binds": [], "CapDrop": ["NET_RAW", "CAP_SYS_ADMIN"], "CapAdd": ["NET_BIND_SERVICE"],
                    "Memory": 64 * 1024**2, "PidsLimit": 32}
    act = DockerAction(config(**{"docker-cap-drop": [], "docker-memory": 0, "docker-pids-limit": "0"}))
    assert act.build_payload(message("x")).create_config()["HostConfig"] == {
        "Binds": [], "SecurityOpt": ["no-new-privileges"]}


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"docker-memory": "lots"}, "actions[7].docker-memory"),
        ({"docker-pids-limit": "-1"}, "actions[7].docker-pids-limit"),
        ({"docker-cap-drop": ["not a cap"]}, "actions[7].docker-cap-drop"),
        ({"docker-no-new-privileges": "maybe"}, "actions[7].docker-no-new-privileges"),
    ],
)
def test_hardening_config_errors(cfg: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(**cfg)
    assert needle in str(err.value)


# --- against the engine ----------------------------------------------------------------------


async def test_container_reads_postee_event_and_logs_are_captured(
    docker_host: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="herald.actions.docker")
    script = 'printf "%s" "$POSTEE_EVENT" > /data/event; echo "image=$0 greeting=$GREETING"'
    await deliver(docker_host, TRICKY, **{
        "docker-cmd": ["sh", "-c", script, "event.input.image"],
        "docker-env": ["GREETING=hello there"],
        "docker-volume-mounts": {str(tmp_path): "/data"},
    })
    assert (tmp_path / "event").read_text() == TRICKY  # exactly: no added quotes
    assert json.loads((tmp_path / "event").read_text())["image"] == "library/nginx:1.16"
    assert "image=library/nginx:1.16 greeting=hello there" in caplog.text
    assert await leftover_containers(docker_host) == []


async def test_non_zero_exit_is_permanent_with_code_and_log_tail(docker_host: str) -> None:
    with pytest.raises(PermanentActionError) as err:
        await deliver(docker_host, "x", **{"docker-cmd": ["sh", "-c", "echo working; echo bad thing >&2; exit 3"]})
    assert err.value.status == 3
    assert "exited with code 3" in str(err.value)
    assert "working" in str(err.value) and "bad thing" in str(err.value)
    assert await leftover_containers(docker_host) == []


async def test_missing_image_is_a_clear_permanent_error(docker_host: str) -> None:
    with pytest.raises(PermanentActionError, match=r"image 'localhost/herald-no-such-image:1' not found and could "
                                                   r"not be pulled: \S"):
        await deliver(docker_host, "x", **{"docker-image-name": "localhost/herald-no-such-image:1"})


async def test_hanging_container_is_killed_removed_and_retryable(docker_host: str) -> None:
    with pytest.raises(RetryableActionError, match="timed out after 2s and was killed; log tail: going to sleep"):
        await deliver(docker_host, "x", **{"docker-cmd": ["sh", "-c", "echo going to sleep; sleep 30"],
                                           "docker-timeout": "2s"})
    assert await leftover_containers(docker_host) == []


async def test_unreachable_engine_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(RetryableActionError, match="cannot reach the container engine"):
        await deliver(f"unix://{tmp_path}/no-engine.sock", "x", **{"docker-cmd": ["true"]})
