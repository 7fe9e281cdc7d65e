"""Issue 14's acceptance case for templates: a user folder, generated here, that holds Postee-style
copies of every built-in package (templates at the top, ``common/``, ``lib/``), one of them
changed. The change shows in the rendering (through the real pipeline once: bridge -> Kafka ->
worker -> webhook action -> loopback sink), every other copy renders exactly as the built-in
golden, and ``herald check-config`` lists each replaced built-in package on a line of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, PackageTemplate, TemplateLibrary, declared_package
from tests.harness import FIXTURES, ROOT, Herald, Sink
from tests.templates.goldenfile import GOLDENS, KEYS, load
from tests.templates.test_builtin_goldens import AGGREGATES, AQUA_SERVER, CASES, _event_json

CHANGED_FILE = "vuls-html.rego"
CHANGED_PACKAGE = "postee.vuls.html"
OLD, NEW = 'sprintf("Image name: %s"', 'sprintf("Image checked by ACME security: %s"'


def golden(name: str) -> dict[str, str]:
    return load((GOLDENS / f"{name}.golden").read_text())


def expected_changed(name: str) -> dict[str, str]:
    expected = golden(name)
    assert expected["description"].count("<p>Image name: ") == 1
    expected["description"] = expected["description"].replace("<p>Image name: ", "<p>Image checked by ACME security: ")
    return expected


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("acceptance") / "rego-templates"
    shutil.copytree(BUILTIN_TEMPLATE_DIR, folder)
    path = folder / CHANGED_FILE
    source = path.read_text()
    assert source.count(OLD) == 1
    path.write_text(source.replace(OLD, NEW))
    return folder


def builtin_packages() -> set[str]:
    return {declared_package(p.read_text()) or "" for p in BUILTIN_TEMPLATE_DIR.rglob("*.rego")}


def test_every_copy_replaces_its_builtin_and_only_the_changed_one_renders_differently(user_dir: Path) -> None:
    library = TemplateLibrary([BUILTIN_TEMPLATE_DIR, user_dir])
    assert library.errors == [] and library.unavailable == {}
    assert set(library.replaced) == builtin_packages()
    assert all(f.startswith(str(user_dir)) for files in library.files.values() for f in files)
    for case in CASES:
        package, fixture, server = case.values
        name = f"{package}__{fixture}{'' if server else '__no-aqua'}"
        actual = PackageTemplate("t", package, library).render(_event_json(fixture, server)).to_dict()
        expected = expected_changed(name) if package == CHANGED_PACKAGE else golden(name)
        assert {k: actual[k] for k in KEYS} == {k: expected.get(k, "") for k in KEYS}, name
    for package, fixtures in AGGREGATES:  # the aggregation packages are copies too
        template = PackageTemplate("agg", package, library)
        items = [template.render(_event_json(f, AQUA_SERVER)) for f in fixtures]
        if package != CHANGED_PACKAGE:
            aggregate = template.aggregate(items).to_dict()
            expected = golden(f"{template.aggregation_package()}__{package}")
            assert {k: aggregate[k] for k in KEYS} == {k: expected.get(k, "") for k in KEYS}, package


def test_check_config_lists_every_replaced_package(user_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "herald": {"template-dirs": [str(user_dir)]},
        "routes": [{"name": "scans", "actions": ["hook"], "template": "html"}],
        "templates": [{"name": "html", "rego-package": CHANGED_PACKAGE}],
        "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": "https://hooks.example.com/x"}],
    }))
    res = subprocess.run([sys.executable, "-m", "app.cli", "check-config", str(cfg)], cwd=ROOT, check=False,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("template package ")]
    listed = {line.split()[2].rstrip(":") for line in lines}
    assert len(lines) == len(listed) == len(builtin_packages())  # one line each
    assert listed == builtin_packages()
    assert f"template package {CHANGED_PACKAGE}: built-in replaced by {user_dir / CHANGED_FILE}" in lines
    assert f"template package postee: built-in replaced by {user_dir / 'common' / 'common.rego'}" in lines


def test_the_change_arrives_at_the_sink_through_the_pipeline(kafka: Any, user_dir: Path, tmp_path: Path) -> None:
    with Sink() as sink:
        sink.expect("/hook", method="POST", content_type="application/json")
        cfg: dict[str, Any] = {
            "aqua-server": "https://aqua.example.com",
            "herald": {"template-dirs": [str(user_dir)]},
            "routes": [{"name": "scans", "actions": ["hook"], "template": "html"}],
            "templates": [{"name": "html", "rego-package": CHANGED_PACKAGE}],
            "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": f"{sink.url}/hook",
                         "timeout": "5s"}],
        }
        with Herald(kafka, cfg, tmp_path) as herald:
            # the start log names the replaced packages, one line each
            log = herald.log_text("worker")
            assert f"template package {CHANGED_PACKAGE}: the user's {user_dir / CHANGED_FILE} replaces the built-in one" in log
            assert sum(f"template package {p}: the user's " in log for p in builtin_packages()) == len(builtin_packages())
            status, body = herald.post((FIXTURES / "postee" / "aqua-input.json").read_bytes())
            assert status == 200
            herald.wait_deliveries(body["event_id"], "hook")
            received = sink.wait_for("/hook", 1)
        assert received[0].body.decode() == expected_changed("postee.vuls.html__aqua-input")["description"]
        assert "<p>Image checked by ACME security: all-in-one:3.5.19223</p>" in received[0].body.decode()
