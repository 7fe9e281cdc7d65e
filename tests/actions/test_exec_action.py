"""exec action: real /bin/sh processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from actions.exec import OUTPUT_LIMIT, ExecAction, ExecConfig, process_env, run_bounded
from app.config.model import validate_model
from app.errors import ConfigError, PermanentActionError, RetryableActionError
from tests.actions._msg import message

TRICKY = 'line1 "quoted" \'single\' $(touch INJECTED) `touch INJECTED2` ; $HOME \\ end\nline2 ü'


def action(**cfg: object) -> ExecAction:
    config, _ = validate_model(ExecConfig, {"name": "x", "type": "exec", **cfg}, "actions[0]")
    return ExecAction(config)


def alive(pid: int) -> bool:
    """A zombie (no reaper in some containers) counts as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_dead(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [{}, {"input-file": "/a.sh", "exec-script": "echo"}])
def test_input_file_xor_exec_script(cfg: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        action(**cfg)
    assert "'input-file'" in str(err.value) and "'exec-script'" in str(err.value)
    assert str(err.value).startswith("actions[0]")


def test_env_entries_must_be_name_equals_value() -> None:
    with pytest.raises(ConfigError, match=r"actions\[0\]\.env.*env\[1\] must be NAME=VALUE.*'NOEQUALS'"):
        action(**{"exec-script": "true", "env": ["A=1", "NOEQUALS"]})
    with pytest.raises(ConfigError, match="'1BAD=x'"):
        action(**{"exec-script": "true", "env": ["1BAD=x"]})


def test_timeout_default_and_parsing() -> None:
    assert action(**{"exec-script": "true"}).config.timeout == 60.0
    assert action(**{"exec-script": "true", "timeout": "2m"}).config.timeout == 120.0
    with pytest.raises(ConfigError, match=r"timeout.*positive"):
        action(**{"exec-script": "true", "timeout": "0s"})


def test_build_payload_is_pure_and_event_only_in_env() -> None:
    act = action(**{"input-file": "/opt/run.sh", "env": ["A=1", "POSTEE_EVENT=overridden"]})
    req = act.build_payload(message(TRICKY))
    assert req.argv == ["/bin/sh", "/opt/run.sh"]
    assert req.stdin is None
    assert req.env == {"A": "1", "POSTEE_EVENT": TRICKY}


def test_env_values_resolve_placeholders() -> None:
    act = action(**{"exec-script": "true", "env": ["IMAGE=event.input.image:event.input.tag", "KIND=event.raw.kind"]})
    req = act.build_payload(message('{"image": "nginx", "tag": "1.16"}', {"kind": "VulnerabilityReport"}))
    assert (req.env["IMAGE"], req.env["KIND"]) == ("nginx:1.16", "VulnerabilityReport")


# --- running --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_inline_script_gets_event_and_env_without_interpolation(tmp_path: Path) -> None:
    out = tmp_path / "out"
    act = action(
        **{
            "exec-script": f'cd {tmp_path}\nprintf %s "$POSTEE_EVENT" > {out}\necho "$GREETING" >> {out}.env',
            "env": ["GREETING=hello world=1"],
        }
    )
    await act.deliver(message(TRICKY))
    assert out.read_text() == TRICKY
    assert Path(f"{out}.env").read_text() == "hello world=1\n"
    assert not (tmp_path / "INJECTED").exists() and not (tmp_path / "INJECTED2").exists()


@pytest.mark.asyncio
async def test_input_file_is_run_with_sh(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    out = tmp_path / "out"
    script.write_text(f'printf "%s|%s" "$0" "$POSTEE_EVENT" > {out}\n')  # not executable: sh runs it
    await action(**{"input-file": str(script)}).deliver(message("{}"))
    assert out.read_text() == f"{script}|{{}}"


@pytest.mark.asyncio
async def test_missing_input_file_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentActionError, match="does-not-exist.sh.*does not exist"):
        await action(**{"input-file": str(tmp_path / "does-not-exist.sh")}).deliver(message("x"))


@pytest.mark.asyncio
async def test_non_zero_exit_is_permanent_with_code_and_tail() -> None:
    script = "i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done\n" \
             "echo to-stderr >&2\nexit 3\n"
    with pytest.raises(PermanentActionError) as err:
        await action(**{"exec-script": script}).deliver(message("x"))
    text = str(err.value)
    assert err.value.status == 3
    assert "exited with code 3" in text
    assert "to-stderr" in text and "line-199-" in text  # the tail, stdout and stderr combined
    assert "line-0-" not in text  # only the last 2 KB
    assert len(text) < 2048 + 200


@pytest.mark.asyncio
async def test_timeout_kills_the_process_group_and_is_retryable(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"echo started\nsleep 300 &\necho $! > {pidfile}\nwait\n"
    with pytest.raises(RetryableActionError) as err:
        await action(**{"exec-script": script, "timeout": "1s"}).deliver(message("x"))
    assert "timed out after 1s" in str(err.value)
    assert "started" in str(err.value)
    assert wait_dead(int(pidfile.read_text()))


@pytest.mark.asyncio
async def test_children_left_running_are_ended_when_the_script_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    await action(**{"exec-script": f"sleep 300 &\necho $! > {pidfile}\nexit 0\n"}).deliver(message("x"))
    assert wait_dead(int(pidfile.read_text()))


@pytest.mark.asyncio
async def test_output_is_bounded() -> None:
    act = action(**{"exec-script": "head -c 200000 /dev/zero | tr '\\0' a; echo END"})
    result = await run_bounded(act.build_payload(message("x")))
    assert result.returncode == 0
    assert result.total_bytes == 200004
    assert len(result.output) == OUTPUT_LIMIT
    assert result.output.endswith(b"aEND\n")


@pytest.mark.asyncio
async def test_herald_environment_is_not_inherited(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_TEST_SECRET", "x")
    monkeypatch.setenv("TZ", "UTC")
    out = tmp_path / "o"
    script = f'echo "secret=${{HERALD_TEST_SECRET-unset}} tz=$TZ path=${{PATH:+set}} ev=$POSTEE_EVENT" > {out}'
    await action(**{"exec-script": script}).deliver(message("x"))
    assert out.read_text() == "secret=unset tz=UTC path=set ev=x\n"
    assert os.environ["HERALD_TEST_SECRET"] == "x"


@pytest.mark.asyncio
async def test_env_allow_passes_named_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HERALD_TEST_SECRET", "x")
    monkeypatch.setenv("HERALD_TEST_OTHER", "y")
    monkeypatch.delenv("HERALD_TEST_ABSENT", raising=False)
    out = tmp_path / "o"
    script = (f'echo "$HERALD_TEST_SECRET ${{HERALD_TEST_OTHER-unset}} '
              f'${{HERALD_TEST_ABSENT-unset}} $EXTRA" > {out}')
    act = action(**{"exec-script": script, "env-allow": ["HERALD_TEST_SECRET", "HERALD_TEST_ABSENT"],
                    "env": ["EXTRA=e"]})
    await act.deliver(message("x"))
    assert out.read_text() == "x unset unset e\n"


def test_env_allow_defaults_and_env_wins() -> None:
    act = action(**{"exec-script": "true", "env-allow": ["FOO", "PATH"], "env": ["PATH=/opt/bin"]})
    req = act.build_payload(message("ev"))
    assert req.pass_env == ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "FOO")
    env = process_env(req, {"PATH": "/usr/bin", "FOO": "1", "BAR": "2", "POSTEE_EVENT": "old"})
    assert env == {"PATH": "/opt/bin", "FOO": "1", "POSTEE_EVENT": "ev"}
    assert process_env(action(**{"exec-script": "true"}).build_payload(message("ev")),
                       {"BAR": "2", "HOME": "/h"}) == {"HOME": "/h", "POSTEE_EVENT": "ev"}


def test_env_allow_rejects_bad_names() -> None:
    with pytest.raises(ConfigError, match=r"env-allow\[1\] must be a variable name.*'A=B'"):
        action(**{"exec-script": "true", "env-allow": ["OK", "A=B"]})
