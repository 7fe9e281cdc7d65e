"""awssecurityhub end to end: bridge -> Kafka -> router (raw-json template) -> the action agent ->
moto's Security Hub in server mode on loopback, read back with GetFindings; a finding Security
Hub refuses becomes a dead letter of its own on the action's DLQ topic, and a redrive re-sends it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.actions.moto_securityhub import MotoServer
from tests.harness import FIXTURES, ROOT, Herald, wait_until

ACTION = "e2e-sechub"
TRIVY = json.loads((FIXTURES / "postee" / "trivy-input.json").read_text())
ASFF = json.loads((FIXTURES / "awssecurityhub" / "trivy-asff.json").read_text())


def e2e_config() -> dict[str, Any]:
    return {
        "routes": [
            {"name": "r-trivy", "input": "input.SchemaVersion == 2", "template": "raw-json", "actions": [ACTION]},
            {"name": "r-asff", "input": "input.Findings", "template": "raw-json", "actions": [ACTION]},
        ],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": ACTION, "type": "awssecurityhub", "enable": True, "retry-initial-backoff": "0.05s"}],
    }


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def herald(kafka: Any, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    workdir = tmp_path_factory.mktemp("sechub")
    with Herald(kafka, e2e_config(), workdir, env=moto.aws_env(workdir)) as h:
        yield h


def herald_cli(herald: Herald, *args: str) -> Any:
    res = subprocess.run([sys.executable, "-m", "app.cli", *args, "--config", str(herald.cfg_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_a_trivy_scan_becomes_findings_in_security_hub(herald: Herald, moto: MotoServer) -> None:
    status, body = herald.post(json.dumps(TRIVY).encode())
    assert status == 200
    wanted = {f"trivy/pom.xml/pom.xml/{v['PkgName']}/{v['VulnerabilityID']}"
              for r in TRIVY["Results"] for v in r["Vulnerabilities"]}
    assert len(wanted) == 7

    def all_stored() -> dict[str, Any] | None:
        found = moto.by_id()
        return found if wanted <= set(found) else None

    stored = wait_until(all_stored, 60, "the scan's 7 findings in Security Hub")
    f = stored["trivy/pom.xml/pom.xml/log4j:log4j/CVE-2019-17571"]
    assert (f["Severity"]["Label"], f["Title"]) == ("CRITICAL", "CVE-2019-17571 in log4j:log4j 1.2.17")
    assert f["AwsAccountId"] == "123456789012" and f["Resources"][0]["Id"] == "pom.xml"
    [delivery] = herald.wait_deliveries(body["event_id"], ACTION)
    assert delivery["outcome"] == "delivered" and delivery["attempt"] == 1
    assert [d for d in herald.read_topic(f"dlq.{ACTION}") if d["event_id"] == body["event_id"]] == []


def test_a_refused_finding_is_a_dead_letter_of_its_own_and_redrives_alone(
        herald: Herald, moto: MotoServer, tmp_path: Path) -> None:
    good = copy.deepcopy(ASFF["Findings"][0])
    bad = {**copy.deepcopy(good), "Id": "e2e/bad-finding", "Resources": []}  # Security Hub needs a resource
    status, body = herald.post({"Findings": [bad, good]})
    assert status == 200
    event_id = body["event_id"]
    [dead] = herald.wait_record(f"dlq.{ACTION}", lambda d: d.get("event_id") == event_id, timeout=60,
                                what="the refused finding's dead letter")
    assert dead["stage"] == ACTION and dead["error_type"] == "FailedFinding" and dead["attempts"] == 1
    assert dead["error"].startswith("finding e2e/bad-finding refused by Security Hub: InvalidInput: ")
    assert "at least one resource" in dead["error"]
    original = dead["original"]
    assert original["part"] == "e2e/bad-finding" and original["idempotency_key"].endswith(":part:e2e/bad-finding")
    assert [f["Id"] for f in json.loads(original["content"]["description"])["Findings"]] == ["e2e/bad-finding"]
    # the rest of the message was delivered, once: the good finding is stored, the bad one not
    [delivery] = herald.wait_deliveries(event_id, ACTION)
    assert delivery["outcome"] == "delivered"
    stored = moto.by_id()
    assert good["Id"] in stored and "e2e/bad-finding" not in stored
    # a redrive re-sends that finding alone (its own idempotency key: not suppressed as delivered);
    # Security Hub refuses it again, so it is dead-lettered again, with redrive 1
    assert herald_cli(herald, "dlq", "redrive", ACTION)["redriven"] >= 1
    again = herald.wait_record(f"dlq.{ACTION}", lambda d: d.get("event_id") == event_id
                               and d["original"].get("redrive") == 1, timeout=60, what="the redriven part's dead letter")
    assert [d["original"]["part"] for d in again] == ["e2e/bad-finding"]
