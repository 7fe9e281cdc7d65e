"""jira, servicenow, nexusiq and dependencytrack end to end: bridge -> Kafka -> router (built-in
templates) -> action agents -> local protocol peers, plus a dead letter for bad Jira credentials."""

from __future__ import annotations

import asyncio
import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any, Self

import pytest
from aiohttp import web

from tests.actions.fake_dependencytrack import API_KEY, FakeDependencyTrack
from tests.actions.fake_jira import FakeJira
from tests.actions.fake_nexusiq import ORG, FakeNexusIq
from tests.actions.fake_nexusiq import PASSWORD as IQ_PASSWORD
from tests.actions.fake_nexusiq import USER as IQ_USER
from tests.actions.fake_servicenow import PASSWORD as SN_PASSWORD
from tests.actions.fake_servicenow import USER as SN_USER
from tests.actions.fake_servicenow import FakeServiceNow
from tests.harness import FIXTURES, Herald, wait_until

BAD_JIRA_PASSWORD = "e2e-wrong-jira-secret"
SBOM_REPORT: dict[str, Any] = {
    "apiVersion": "aquasecurity.github.io/v1alpha1",
    "kind": "SbomReport",
    "metadata": {"name": "replicaset-nginx-6d4cf56db6-nginx", "namespace": "default"},
    "report": {
        "artifact": {"repository": "library/nginx", "tag": "1.25"},
        "registry": {"server": "index.docker.io"},
        "components": {"bomFormat": "CycloneDX", "specVersion": "1.4", "version": 1,
                       "components": [{"type": "library", "name": "openssl", "version": "3.0.11",
                                       "purl": "pkg:deb/debian/openssl@3.0.11"}]},
    },
}


class Peers:
    """aiohttp apps served on 127.0.0.1 from one background event loop (the test itself is sync)."""

    def __init__(self, apps: dict[str, web.Application]) -> None:
        self.apps = apps
        self.urls: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []

    async def _start(self) -> None:
        for name, app in self.apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            port = runner.addresses[0][1]
            self.urls[name] = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class Fakes:
    def __init__(self) -> None:
        self.jira = FakeJira()
        self.servicenow = FakeServiceNow()
        self.nexusiq = FakeNexusIq()
        self.dtrack = FakeDependencyTrack()


def e2e_config(fakes: Fakes, urls: dict[str, str]) -> dict[str, Any]:
    fast = {"enable": True, "retry-initial-backoff": "0.05s", "retry-max-backoff": "0.2s"}
    jira = {"type": "jira", "url": urls["jira"], "user": fakes.jira.user, "project-key": "abc", **fast}
    return {
        "routes": [
            {"name": "r-jira", "input": "input.SchemaVersion == 2", "template": "trivy-jira",
             "actions": ["e2e-jira", "e2e-jira-badauth"]},
            {"name": "r-servicenow", "input": "input.vulnerability_summary", "template": "servicenow",
             "actions": ["e2e-servicenow"]},
            {"name": "r-nexusiq", "input": "input.vulnerability_summary", "template": "cyclonedx",
             "actions": ["e2e-nexusiq"]},
            {"name": "r-dtrack", "input": 'input.kind == "SbomReport"', "template": "sbom",
             "actions": ["e2e-dtrack"]},
        ],
        "templates": [
            {"name": "trivy-jira", "rego-package": "postee.trivy.jira"},
            {"name": "servicenow", "rego-package": "postee.servicenow"},
            {"name": "cyclonedx", "rego-package": "postee.vuls.cyclondx"},
            {"name": "sbom", "rego-package": "postee.trivyoperator.dependencytrack"},
        ],
        "actions": [
            {"name": "e2e-jira", "password": fakes.jira.password, "labels": ["trivy"], **jira},
            {"name": "e2e-jira-badauth", "password": BAD_JIRA_PASSWORD, **jira},
            {"name": "e2e-servicenow", "type": "serviceNow", "url": urls["servicenow"], "user": SN_USER,
             "password": SN_PASSWORD, "instance": "unused", **fast},
            {"name": "e2e-nexusiq", "type": "nexusIq", "url": urls["nexusiq"], "user": IQ_USER,
             "password": IQ_PASSWORD, "organization-id": ORG, **fast},
            {"name": "e2e-dtrack", "type": "dependencytrack", "url": urls["dtrack"],
             "dependency-track-api-key": API_KEY, **fast},
        ],
    }


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield Fakes()


@pytest.fixture(scope="module")
def herald(kafka: Any, fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    apps = {"jira": fakes.jira.app(), "servicenow": fakes.servicenow.app(), "nexusiq": fakes.nexusiq.app(),
            "dtrack": fakes.dtrack.app()}
    with Peers(apps) as peers, Herald(kafka, e2e_config(fakes, peers.urls), tmp_path_factory.mktemp("ticketing")) as h:
        yield h


def wait_or_explain(herald: Herald, predicate: Any, what: str, actions: list[str]) -> None:
    """wait_until, but a timeout shows the actions' dead letters (usually the reason)."""
    try:
        wait_until(predicate, 60, what)
    except AssertionError as exc:
        dead = {a: [d.get("error") for d in herald.read_topic(f"dlq.{a}")] for a in actions}
        raise AssertionError(f"{exc}; dead letters: {dead}") from None


def test_trivy_scan_opens_a_jira_issue_and_bad_credentials_dead_letter(herald: Herald, fakes: Fakes) -> None:
    status, body = herald.post((FIXTURES / "postee" / "trivy-input.json").read_bytes())
    assert status == 200
    wait_or_explain(herald, lambda: fakes.jira.created, "a Jira issue", ["e2e-jira"])
    fields = fakes.jira.created[0]["fields"]
    assert fields["summary"] == "pom.xml vulnerability scan report"
    assert fields["labels"] == ["trivy"] and fields["project"] == {"id": fakes.jira.project_id}
    assert fields["description"]
    [dead] = herald.wait_record("dlq.e2e-jira-badauth", lambda d: d.get("event_id") == body["event_id"],
                                what="the bad-auth action's dead letter of the scan")
    assert (dead["status"], dead["attempts"], dead["error_type"]) == (401, 1, "PermanentActionError")
    assert dead["event_id"] == body["event_id"]
    assert BAD_JIRA_PASSWORD not in json.dumps(dead)
    herald.wait_deliveries(body["event_id"], "e2e-jira")
    assert herald.read_topic("dlq.e2e-jira") == []


def test_aqua_scan_opens_a_servicenow_incident_and_feeds_nexus_iq(herald: Herald, fakes: Fakes) -> None:
    status, _ = herald.post((FIXTURES / "postee" / "aqua-input.json").read_bytes())
    assert status == 200
    wait_or_explain(herald, lambda: fakes.servicenow.records and fakes.nexusiq.scans, "the incident and the SBOM",
                    ["e2e-servicenow", "e2e-nexusiq"])
    [(table, record)] = fakes.servicenow.records
    assert table == "incident"
    assert record["short_description"] == "Aqua security | image | all-in-one:3.5.19223 | Scan report"
    assert record["work_notes"].startswith("[code]") and record["caller_id"] == SN_USER
    [(app_id, sbom)] = fakes.nexusiq.scans
    assert [a["publicId"] for a in fakes.nexusiq.apps if a["id"] == app_id] == ["all-in-one_3_5_19223"]
    assert ET.fromstring(sbom).tag.endswith("}bom")


def test_sbom_report_is_uploaded_to_dependency_track(herald: Herald, fakes: Fakes) -> None:
    status, _ = herald.post(SBOM_REPORT)
    assert status == 200
    wait_or_explain(herald, lambda: fakes.dtrack.uploads, "the BOM upload", ["e2e-dtrack"])
    [upload] = fakes.dtrack.uploads
    assert (upload["projectName"], upload["projectVersion"]) == ("library/nginx", "1.25")
    assert upload["bom"] == SBOM_REPORT["report"]["components"]
