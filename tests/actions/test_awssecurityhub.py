"""awssecurityhub action against a real Security Hub emulator (moto in server mode on loopback),
findings read back with GetFindings; throttling, 5xx, timeouts and access errors against a
loopback peer that speaks Security Hub's JSON API (moto cannot be made to throttle)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from actions.awssecurityhub import BATCH_LIMIT, VULN_TYPE, AwsSecurityHubAction
from app.errors import ConfigError, PartialDeliveryError, PermanentActionError, RetryableActionError
from app.messages import ActionMessage
from actions.runner import RetryPolicy, deliver
from tests.actions.moto_securityhub import ACCOUNT, REGION, MotoServer
from tests.actions.support import FIXED_TIME, FIXTURES, build_action, free_port, make_message, serve

REQUIRED = ("SchemaVersion", "Id", "ProductArn", "GeneratorId", "AwsAccountId", "Types", "CreatedAt", "UpdatedAt",
            "Severity", "Title", "Description", "Resources")
LABELS = {"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"}
DEFAULT_PRODUCT = f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default"
FAKE_SECRET = "fakehub-secret-access-key-0001"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


TRIVY = fixture("postee/trivy-input.json")
OPERATOR = fixture("postee/trivy-operator-input.json")
ASFF = fixture("awssecurityhub/trivy-asff.json")


def config(**extra: Any) -> dict[str, Any]:
    return {"name": "sechub", "type": "awssecurityhub", "enable": True, **extra}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def hub(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MotoServer:
    """The emulator, emptied, with this process's AWS chain pointing at it."""
    moto.reset()
    for key in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_SECURITYHUB"):
        monkeypatch.delenv(key, raising=False)
    for key, value in moto.aws_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    return moto


def assert_valid_asff(finding: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED if k not in finding]
    assert not missing, f"{finding.get('Id')}: missing {missing}"
    for key in ("SchemaVersion", "Id", "ProductArn", "GeneratorId", "AwsAccountId", "Title", "Description"):
        assert isinstance(finding[key], str) and finding[key].strip(), key
    assert finding["SchemaVersion"] == "2018-10-08"
    assert len(finding["Id"]) <= 512 and len(finding["Title"]) <= 256 and len(finding["Description"]) <= 1024
    assert finding["ProductArn"].startswith("arn:aws:securityhub:")
    assert len(finding["AwsAccountId"]) == 12 and finding["AwsAccountId"].isdigit()
    assert finding["Types"] and all(isinstance(t, str) and t.count("/") <= 2 for t in finding["Types"])
    for key in ("CreatedAt", "UpdatedAt"):
        assert finding[key].endswith("Z")
        datetime.fromisoformat(finding[key])
    assert finding["Severity"]["Label"] in LABELS
    assert finding["Resources"] and all(r["Type"] and r["Id"] for r in finding["Resources"])


def vulns_of_trivy(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for r in report["Results"] for v in r.get("Vulnerabilities") or []]


# ---- config ----

def test_config_keys_are_optional_and_checked() -> None:
    action = build_action(config())
    assert isinstance(action, AwsSecurityHubAction)
    assert (action.config.aws_account_id, action.config.product_arn, action.config.timeout) == ("", "", 30.0)
    with pytest.raises(ConfigError, match=r"actions\[0\]\.aws-account-id: .*12-digit AWS account id, got '1234'"):
        build_action(config(**{"aws-account-id": "1234"}))
    with pytest.raises(ConfigError, match=r"actions\[0\]\.product-arn: .*got 'my-product'"):
        build_action(config(**{"product-arn": "my-product"}))
    with pytest.raises(ConfigError, match=r"actions\[0\]\.timeout:"):
        build_action(config(timeout="soon"))


# ---- mapping, read back from the emulator ----

async def test_trivy_report_becomes_one_finding_per_vulnerability(hub: MotoServer) -> None:
    action = build_action(config())
    await action.deliver(make_message(title="pom.xml scan", event=TRIVY))
    stored = hub.by_id()
    vulns = vulns_of_trivy(TRIVY)
    assert len(stored) == len(vulns) == 7
    for finding in stored.values():
        assert_valid_asff(finding)
        assert finding["AwsAccountId"] == ACCOUNT and finding["ProductArn"] == DEFAULT_PRODUCT
        assert finding["Types"] == [VULN_TYPE] and finding["RecordState"] == "ACTIVE"
        assert finding["CreatedAt"] == finding["UpdatedAt"] == "2026-01-01T00:00:00.000Z"  # received_at
    f = stored["trivy/pom.xml/pom.xml/log4j:log4j/CVE-2019-17571"]
    assert f["GeneratorId"] == "Trivy/CVE-2019-17571"
    assert f["Title"] == "CVE-2019-17571 in log4j:log4j 1.2.17"
    assert f["Description"].startswith("Included in Log4j 1.2 is a SocketServer class")
    assert f["Severity"] == {"Label": "CRITICAL", "Original": "CRITICAL"}
    assert f["Remediation"]["Recommendation"] == {
        "Text": "Upgrade log4j:log4j from 1.2.17 to 2.0-alpha1 or later.",
        "Url": "https://avd.aquasec.com/nvd/cve-2019-17571"}
    [resource] = f["Resources"]
    assert (resource["Type"], resource["Id"], resource["Partition"], resource["Region"]) == (
        "Other", "pom.xml", "aws", REGION)
    assert resource["Details"]["Other"] == {"Target": "pom.xml", "ArtifactType": "filesystem"}
    [vuln] = f["Vulnerabilities"]
    assert vuln["VulnerablePackages"] == [{"Name": "log4j:log4j", "Version": "1.2.17", "FixedInVersion": "2.0-alpha1"}]
    assert vuln["FixAvailable"] == "YES"
    assert {"Version": "3.1", "BaseScore": 9.8, "Source": "nvd",
            "BaseVector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"} in vuln["Cvss"]
    severities = sorted(f["Severity"]["Label"] for f in stored.values())
    assert severities == sorted({"UNKNOWN": "INFORMATIONAL"}.get(v["Severity"], v["Severity"]) for v in vulns)


async def test_trivy_operator_report_maps_the_image_and_workload(hub: MotoServer) -> None:
    action = build_action(config())
    await action.deliver(make_message(event=OPERATOR))
    stored = hub.by_id()
    assert len(stored) == len(OPERATOR["report"]["vulnerabilities"]) == 5
    image = "index.docker.io/library/nginx:1.16"
    for finding in stored.values():
        assert_valid_asff(finding)
        assert finding["Id"].startswith(f"trivy-operator/default/{image}/")
        [resource] = finding["Resources"]
        assert (resource["Type"], resource["Id"]) == ("Container", image)
        assert resource["Details"]["Container"] == {"ImageName": image}
        assert resource["Details"]["Other"] == {"Namespace": "default", "Report": "replicaset-nginx-6d4cf56db6-nginx",
                                                "Kind": "ReplicaSet", "Workload": "nginx-6d4cf56db6",
                                                "Container": "nginx"}
    f = stored[f"trivy-operator/default/{image}/libbsd0/CVE-2019-20367"]
    assert f["Severity"]["Label"] == "CRITICAL" and f["Title"] == "CVE-2019-20367 in libbsd0 0.9.1-2"
    assert f["Remediation"]["Recommendation"]["Url"] == "https://avd.aquasec.com/nvd/cve-2019-20367"
    assert f["Vulnerabilities"][0]["Cvss"] == [{"BaseScore": 9.1, "Source": "Trivy"}]
    assert f["Vulnerabilities"][0]["VulnerablePackages"][0]["FixedInVersion"] == "0.9.1-2+deb10u1"


async def test_asff_description_is_imported_like_postee(hub: MotoServer) -> None:
    """Postee's input: Trivy's ASFF output as the rendered description (raw-json template)."""
    action = build_action(config())
    await action.deliver(make_message(description=json.dumps(ASFF, indent=1), event={"any": "event"}))
    stored = hub.by_id()
    assert set(stored) == {f["Id"] for f in ASFF["Findings"]}
    first, second = (stored[f["Id"]] for f in ASFF["Findings"])
    for finding in (first, second):
        assert_valid_asff(finding)
        assert finding["AwsAccountId"] == ACCOUNT  # empty in the input (no AWS_ACCOUNT_ID for Trivy's template)
        assert finding["ProductArn"] == f"arn:aws:securityhub:{REGION}::product/aquasecurity/aquasecurity"
        assert finding["CreatedAt"] == "2024-05-02T10:11:12.123Z"
    assert first["Resources"] == ASFF["Findings"][0]["Resources"]  # kept, details included
    assert first["ProductFields"] == {"Product Name": "Trivy"}
    # no Resources: Postee's single resource, the finding's Id and its Types
    assert second["Resources"] == [{"Id": second["Id"], "Type": VULN_TYPE}]
    assert second["Severity"] == {"Label": "HIGH"}


async def test_redelivery_updates_instead_of_duplicating(hub: MotoServer) -> None:
    action = build_action(config())
    await action.deliver(make_message(event=TRIVY))
    await action.deliver(make_message(event=TRIVY))  # the same message again (a redelivery)
    later = make_message(event=TRIVY)
    later.received_at = FIXED_TIME + 3600  # the next scan of the same artifact
    await action.deliver(later)
    stored = hub.findings()
    assert len(stored) == 7
    assert {f["UpdatedAt"] for f in stored} == {"2026-01-01T01:00:00.000Z"}


async def test_no_findings_source_is_a_permanent_error_and_a_clean_scan_imports_nothing(hub: MotoServer) -> None:
    action = build_action(config())
    with pytest.raises(PermanentActionError, match="neither ASFF, a Trivy JSON report"):
        await action.deliver(make_message(description="<p>html</p>", event={"image": "x"}))
    clean = {**TRIVY, "Results": [{"Target": "pom.xml", "Vulnerabilities": None}]}
    await action.deliver(make_message(event=clean))
    await action.deliver(make_message(description='{"Findings": []}'))
    assert hub.findings() == []


async def test_calls_carry_at_most_100_findings(hub: MotoServer) -> None:
    sizes: list[int] = []

    class Counting(AwsSecurityHubAction):
        def _import(self, findings: list[dict[str, Any]]) -> dict[str, Any]:
            sizes.append(len(findings))
            return super()._import(findings)

    action = Counting(build_action(config()).config)
    template = ASFF["Findings"][0]
    many = [{**template, "Id": f"bulk/{i}"} for i in range(250)]
    await action.deliver(make_message(description=json.dumps({"Findings": many})))
    await action.close()
    assert sizes == [BATCH_LIMIT, BATCH_LIMIT, 50]
    assert len(hub.findings()) == 250


# ---- partial failures: moto's FailedFindings ----

def bad_and_good() -> dict[str, Any]:
    good = copy.deepcopy(ASFF["Findings"][0])
    bad = {**copy.deepcopy(good), "Id": "bad/empty-resources", "Resources": []}  # Security Hub needs >= 1
    return {"Findings": [bad, good]}


async def test_failed_findings_are_rejected_parts_and_the_rest_is_stored(hub: MotoServer) -> None:
    action = build_action(config())
    message = make_message(description=json.dumps(bad_and_good()))
    with pytest.raises(PartialDeliveryError) as info:
        await action.deliver(message)
    [part] = info.value.rejected
    assert part.part == "bad/empty-resources"
    assert part.error_type == "FailedFinding"
    assert part.error.startswith("finding bad/empty-resources refused by Security Hub: InvalidInput: ")
    assert "at least one resource" in part.error  # moto's message, as Security Hub would explain it
    assert set(hub.by_id()) == {ASFF["Findings"][0]["Id"]}
    # the part's message carries that finding alone, under its own idempotency key
    part_msg: ActionMessage = part.message
    assert part_msg.part == "bad/empty-resources" and part_msg.event is None
    assert part_msg.idempotency_key == f"{message.idempotency_key}:part:bad/empty-resources"
    assert [f["Id"] for f in json.loads(part_msg.content.description)["Findings"]] == ["bad/empty-resources"]
    assert ActionMessage.from_json(part_msg.to_json()).idempotency_key == part_msg.idempotency_key


async def test_runner_counts_a_partial_delivery_as_delivered_with_its_rejected_parts(hub: MotoServer) -> None:
    action = build_action(config())
    outcome = await deliver(action, make_message(description=json.dumps(bad_and_good())), RetryPolicy())
    assert outcome.delivered and outcome.attempts == 1  # not retried: the good finding is not sent again
    assert [p.part for p in outcome.rejected] == ["bad/empty-resources"]
    assert outcome.error_type == "PartialDeliveryError" and "1 of 2 finding(s) refused" in outcome.error


async def test_a_finding_the_sdk_refuses_is_isolated_and_the_others_are_sent(hub: MotoServer) -> None:
    findings = copy.deepcopy(ASFF["Findings"])
    del findings[0]["GeneratorId"]  # a required member: botocore refuses the whole call before sending it
    findings.append("not an object")
    action = build_action(config())
    with pytest.raises(PartialDeliveryError) as info:
        await action.deliver(make_message(description=json.dumps({"Findings": findings})))
    errors = {p.part: p.error for p in info.value.rejected}
    assert set(errors) == {ASFF["Findings"][0]["Id"], "#2"}
    assert 'not sent: invalid ASFF: Parameter validation failed: Missing required parameter in Findings[0]: ' \
           '"GeneratorId"' in errors[ASFF["Findings"][0]["Id"]]
    assert errors["#2"] == "finding #2 not sent: not a JSON object with a string Id"
    assert set(hub.by_id()) == {ASFF["Findings"][1]["Id"]}


# ---- AWS chain and errors ----

async def test_without_a_region_deliveries_fail_permanently_and_start_does_not_raise(
        hub: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION")
    action = build_action(config())
    await action.start()  # logged, not raised: the worker keeps running
    with pytest.raises(PermanentActionError, match="no AWS region: set AWS_REGION"):
        await action.deliver(make_message(event=TRIVY))


async def test_without_credentials_deliveries_fail_permanently(hub: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    action = build_action(config())
    with pytest.raises(PermanentActionError, match="Unable to locate credentials"):
        await action.deliver(make_message(event=TRIVY))


async def test_configured_account_and_product_are_used_without_sts(hub: MotoServer) -> None:
    product = f"arn:aws:securityhub:{REGION}::product/aquasecurity/aquasecurity"
    action = build_action(config(**{"aws-account-id": "210987654321", "product-arn": product}))
    await action.deliver(make_message(event=OPERATOR))
    stored = hub.findings()
    assert {(f["AwsAccountId"], f["ProductArn"]) for f in stored} == {("210987654321", product)}


async def test_connection_refused_is_retryable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    action = build_action(config(**{"aws-account-id": ACCOUNT}))
    with pytest.raises(RetryableActionError, match="EndpointConnectionError"):
        await action.deliver(make_message(event=TRIVY))


# ---- throttling, 5xx, timeouts: a loopback peer speaking Security Hub's JSON API ----

class FakeHub:
    """POST /findings/import like Security Hub: JSON errors with x-amzn-ErrorType; ``script``
    says what call number n (from 0) gets, success otherwise; every call's finding ids recorded."""

    def __init__(self) -> None:
        self.script: dict[int, tuple[int, str] | str] = {}  # call -> (status, error type), or "slow"
        self.calls: list[list[str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=k/")
        step = self.script.get(len(self.calls))
        self.calls.append([f["Id"] for f in body["Findings"]])
        if step == "slow":
            await asyncio.sleep(3)
        elif step is not None:
            status, kind = step
            return web.json_response({"message": f"scripted {kind}"}, status=status,
                                     headers={"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/"})
        return web.json_response({"FailedCount": 0, "SuccessCount": len(body["Findings"]), "FailedFindings": []})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/findings/import", self.handle)
        return app


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[FakeHub]:
    hub = FakeHub()
    async with serve(hub.app()) as url:
        for key, value in {"AWS_ENDPOINT_URL": url, "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "k",
                           "AWS_SECRET_ACCESS_KEY": FAKE_SECRET, "AWS_CONFIG_FILE": str(tmp_path / "none")}.items():
            monkeypatch.setenv(key, value)
        yield hub


@pytest.mark.parametrize(("status", "kind", "verdict"), [
    (429, "TooManyRequestsException", RetryableActionError),
    (429, "LimitExceededException", RetryableActionError),
    (400, "ThrottlingException", RetryableActionError),
    (500, "InternalException", RetryableActionError),
    (503, "ServiceUnavailableException", RetryableActionError),
    (403, "AccessDeniedException", PermanentActionError),
    (401, "InvalidAccessException", PermanentActionError),
    (400, "InvalidInputException", PermanentActionError),
])
async def test_call_errors_are_classified(fake: FakeHub, status: int, kind: str, verdict: type) -> None:
    fake.script = {0: (status, kind)}
    action = build_action(config(**{"aws-account-id": ACCOUNT}))
    with pytest.raises(verdict) as info:
        await action.deliver(make_message(event=OPERATOR))
    assert type(info.value) is verdict and info.value.status == status
    assert f"BatchImportFindings: {kind}: scripted {kind}" in str(info.value)
    assert FAKE_SECRET not in str(info.value) and "AWS4-HMAC" not in str(info.value)


async def test_a_throttled_call_is_retried_from_where_it_stopped(fake: FakeHub) -> None:
    many = [{**ASFF["Findings"][0], "Id": f"bulk/{i}"} for i in range(150)]
    fake.script = {1: (429, "TooManyRequestsException")}  # the first call is accepted, the second throttled once
    action = build_action(config(**{"aws-account-id": ACCOUNT}))
    message = make_message(description=json.dumps({"Findings": many}))
    outcome = await deliver(action, message, RetryPolicy(initial_backoff=0.01, max_backoff=0.02))
    assert outcome.delivered and outcome.attempts == 2 and not outcome.rejected
    assert [len(c) for c in fake.calls] == [100, 50, 50]  # the retry sends only what was not accepted
    assert fake.calls[1] == fake.calls[2] == [f"bulk/{i}" for i in range(100, 150)]


async def test_a_slow_call_times_out_as_retryable(fake: FakeHub) -> None:
    fake.script = {0: "slow"}
    action = build_action(config(**{"aws-account-id": ACCOUNT, "timeout": "1s"}))
    with pytest.raises(RetryableActionError, match="ReadTimeoutError"):
        await action.deliver(make_message(event=OPERATOR))
