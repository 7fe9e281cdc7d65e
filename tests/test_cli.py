"""The herald command line: check-config, render (Postee's template contract), test-route."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness import FIXTURES, ROOT


def herald(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          input=stdin.decode() if stdin else None, timeout=60)


def test_check_config_accepts_the_example_and_rejects_type_errors(tmp_path: Path) -> None:
    ok = herald("check-config", str(ROOT / "examples" / "cfg.yaml"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok (1 routes" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("actions:\n- name: mail\n  type: email\n  enable: true\n  port: '587'\n  recipients: a@b.c\n")
    res = herald("check-config", str(bad))
    assert res.returncode != 0
    assert "actions[0].port" in res.stderr and "'587'" in res.stderr
    assert "actions[0].recipients" in res.stderr
    missing = herald("check-config", str(tmp_path / "nope.yaml"))
    assert missing.returncode != 0 and "cannot read config file" in missing.stderr


def test_check_config_reports_a_broken_inline_template(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "routes:\n- {name: r, actions: [s], template: t}\n"
        "templates:\n- {name: t, body: \"package x\\nresult { = }\"}\n"
        "actions:\n- {name: s, type: stdout, enable: true}\n"
    )
    res = herald("check-config", str(cfg))
    assert res.returncode == 1
    assert "template t" in res.stdout and "2:" in res.stdout


def test_render_a_postee_user_template_with_common_helpers_and_jsonformat(tmp_path: Path) -> None:
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "mine.rego").write_text(
        "package postee.mine.report\n"
        "import data.postee.with_default\n"
        "title = sprintf(\"%s scanned\", [with_default(input, \"image\", \"unknown\")])\n"
        "url = with_default(input, \"missing\", \"none\")\n"
        "result = jsonformat({\"user\": input.user, \"html\": \"<b>&</b>\", \"n\": 1.5})\n"
        "result_severity = 2\n"
    )
    res = herald("render", "--template-dir", str(tmp_path), "--package", "postee.mine.report",
                 "--input", str(FIXTURES / "postee" / "simple-input.json"))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["title"] == "unknown scanned"
    assert out["url"] == "none"
    assert out["description"] == '{\n "html": "\\u003cb\\u003e\\u0026\\u003c/b\\u003e",\n "n": 1.5,\n "user": "demo"\n}'
    assert out["severity"] == "2"
    assert set(out) == {"title", "description", "url", "date", "severity", "summary", "category",
                        "subcategory", "assignedTo", "assignedGroup"}


def test_render_reports_unknown_package_and_non_object_event(tmp_path: Path) -> None:
    res = herald("render", "--package", "postee.nothing.here", "--input", str(FIXTURES / "postee" / "simple-input.json"))
    assert res.returncode != 0 and "postee.nothing.here" in res.stderr
    arr = tmp_path / "a.json"
    arr.write_text("[1]")
    res = herald("render", "--package", "postee.rawmessage.json", "--input", str(arr))
    assert res.returncode != 0 and "JSON object" in res.stderr


def test_test_route_explains_matches(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "routes:\n"
        "- {name: alpine, input: 'contains(input.image, \"alpine\")', actions: [s], template: t}\n"
        "- {name: aqua, input: 'contains(input.image, \"all-in-one\")', actions: [s], template: t}\n"
        "templates:\n- {name: t, rego-package: postee.rawmessage.html}\n"
        "actions:\n- {name: s, type: stdout, enable: true}\n"
    )
    res = herald("test-route", "-c", str(cfg), str(FIXTURES / "postee" / "aqua-input.json"))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["routes"]["alpine"]["matched"] is False
    assert report["routes"]["aqua"]["matched"] is True
    assert [d["action"] for d in report["deliveries"]] == ["s"]
    assert report["deliveries"][0]["content"]["title"] == "Raw Message Received"


def test_test_route_origins_are_the_routers() -> None:
    # the CLI lists them without importing the router at start; they must be the router's
    from app.cli import build_parser
    from app.routing.router import TRY_ORIGINS

    sub = next(a for a in build_parser()._actions if a.dest == "command" or getattr(a, "choices", None)
               and "test-route" in a.choices)
    origin = next(a for a in sub.choices["test-route"]._actions if a.dest == "origin")
    assert list(origin.choices) == list(TRY_ORIGINS)
