"""awssecurityhub: import findings into AWS Security Hub with ``BatchImportFindings`` (ASFF).

Where the findings come from, first match wins:

1. the rendered description, when it is JSON ``{"Findings": [...]}`` (Trivy's ASFF output, what
   Postee accepted, e.g. through the ``raw-json`` template);
2. the event itself, when it is such a document;
3. the event as a Trivy JSON report (``Results[].Vulnerabilities[]``) or a trivy-operator
   ``VulnerabilityReport`` (``report.vulnerabilities[]``): one ASFF finding per vulnerability
   (see ``trivy_findings`` and ``operator_findings``).

Anything else is a permanent error (a dead letter); a report with no vulnerabilities imports
nothing and counts as delivered.

Findings are sent in calls of at most 100 (the API's limit). Ids are stable (scanner, artifact,
target, package, vulnerability), so a redelivered or repeated scan updates its findings instead
of adding new ones. A call that fails with throttling, a 5xx or a connection error is retried by
the runner, resuming at the first call not yet accepted. ``FailedFindings`` are not retried:
the message counts as delivered and each refused finding becomes its own dead letter
(``PartialDeliveryError``), naming the finding id and Security Hub's error code and message; the
dead letter's message carries that finding alone, so a redrive re-sends only it.

Region, credentials and endpoint come from boto3's default chain: ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``,
``AWS_PROFILE`` and the shared ``~/.aws`` files, web identity (EKS IRSA), container and instance
roles; ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_SECURITYHUB``) points it elsewhere. boto3
is synchronous: its calls run in a thread (``asyncio.to_thread``) with connect and read
timeouts, and boto3's own retries are off (the runner is the one place that retries).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from actions._common import PendingRequests, Timeout, deliver_resumable, stable_key, truncate
from actions.base import Action, ActionConfig
from app.config.model import PStr
from app.content import Content
from app.errors import (
    ActionError,
    PartialDeliveryError,
    PermanentActionError,
    RejectedPart,
    RetryableActionError,
)
from app.messages import ActionMessage

log = logging.getLogger("herald.actions.awssecurityhub")

BATCH_LIMIT = 100  # BatchImportFindings takes 1 to 100 findings per call
SCHEMA_VERSION = "2018-10-08"
VULN_TYPE = "Software and Configuration Checks/Vulnerabilities/CVE"
SEVERITIES = {"CRITICAL": "CRITICAL", "HIGH": "HIGH", "MEDIUM": "MEDIUM", "LOW": "LOW", "UNKNOWN": "INFORMATIONAL",
              "NEGLIGIBLE": "INFORMATIONAL", "INFORMATIONAL": "INFORMATIONAL", "NONE": "INFORMATIONAL"}
# error codes of a call (not of a finding) that mean "try again later"
RETRYABLE_CODES = {
    "Throttling", "ThrottlingException", "TooManyRequestsException", "LimitExceededException",
    "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "SlowDown",
    "InternalException", "InternalFailure", "InternalServerError", "InternalServerException",
    "ServiceUnavailable", "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
}
_ACCOUNT = re.compile(r"^\d{12}$")


class AwsSecurityHubConfig(ActionConfig):
    """Imports findings into AWS Security Hub (BatchImportFindings, ASFF), like Postee: from a
    description that is Trivy's ASFF output `{"Findings": [...]}`, or (Herald) mapped from a Trivy
    JSON report or a trivy-operator VulnerabilityReport event, one finding per vulnerability with
    a stable Id (a redelivery updates, never duplicates). Region, credentials and endpoint come
    from the standard AWS chain (AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE
    and ~/.aws files, IRSA, container and instance roles; AWS_ENDPOINT_URL). At most 100 findings
    per call; throttling, 5xx and connection errors are retried; each finding Security Hub refuses
    (FailedFindings) becomes its own dead letter naming the finding id and error, and the others
    are not sent again."""

    aws_account_id: PStr = Field(
        "", description="AwsAccountId of mapped findings (12 digits). Default: the caller's account (STS "
                        "GetCallerIdentity). Also fills an empty AwsAccountId of ASFF input.")
    product_arn: PStr = Field(
        "", description="ProductArn of mapped findings. Default: the account's own product, "
                        "arn:aws:securityhub:<region>:<account>:product/<account>/default.")
    timeout: Timeout = Field(30.0, description="Connect and read timeout of each AWS call (duration).")

    @field_validator("aws_account_id")
    @classmethod
    def _account(cls, value: str) -> str:
        value = value.strip()
        if value and not _ACCOUNT.match(value):
            raise ValueError(f"must be a 12-digit AWS account id, got {value!r}")
        return value

    @field_validator("product_arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        value = value.strip()
        if value and not (value.startswith("arn:") and ":securityhub:" in value and ":product/" in value):
            raise ValueError(f"must be a Security Hub product ARN (arn:aws:securityhub:...:product/...), got {value!r}")
        return value


@dataclass
class Identity:
    """Where findings go: resolved once per action from the AWS chain."""

    region: str
    partition: str
    account: str

    def product_arn(self, configured: str) -> str:
        return configured or f"arn:{self.partition}:securityhub:{self.region}:{self.account}:product/{self.account}/default"


@dataclass
class ImportRequest:
    """The findings of one message, in calls of at most 100; ``calls`` shrinks as they are accepted,
    so that a retry resumes where the last attempt stopped."""

    message: ActionMessage
    calls: list[list[dict[str, Any]]]
    rejected: list[RejectedPart] = field(default_factory=list)
    imported: int = 0


# -- mapping ----------------------------------------------------------------------------------

def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> str | None:
    """An RFC 3339 time as Security Hub takes it (UTC, milliseconds), or None if unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # nanoseconds (Go) -> microseconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _iso(when.timestamp())


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _severity(value: Any) -> dict[str, str]:
    raw = _text(value).upper() or "UNKNOWN"
    return {"Label": SEVERITIES.get(raw, "INFORMATIONAL"), "Original": raw}


def _cvss(cvss: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not isinstance(cvss, dict):
        return out
    for source, scores in sorted(cvss.items()):
        if not isinstance(scores, dict):
            continue
        for version in ("V3", "V2"):
            score, vector = scores.get(f"{version}Score"), scores.get(f"{version}Vector")
            if isinstance(score, (int, float)) and not isinstance(score, bool):
                entry: dict[str, Any] = {"BaseScore": float(score), "Source": str(source)}
                if isinstance(vector, str) and vector:
                    entry["BaseVector"] = vector
                    m = re.match(r"CVSS:(\d+\.\d+)/", vector)
                    entry["Version"] = m.group(1) if m else ("2.0" if version == "V2" else "3.0")
                else:
                    entry["Version"] = "2.0" if version == "V2" else "3.0"
                out.append(entry)
    return out[:10]


@dataclass
class Vuln:
    """One vulnerability of a scanned artifact, whatever the report's spelling."""

    vuln_id: str
    pkg: str
    installed: str
    fixed: str
    severity: Any
    title: str
    description: str
    url: str
    cvss: list[dict[str, Any]]


def _finding(ident: Identity, cfg: AwsSecurityHubConfig, *, finding_id: str, scanner: str, when: str,
             vuln: Vuln, resource: dict[str, Any]) -> dict[str, Any]:
    title = f"{vuln.vuln_id} in {vuln.pkg} {vuln.installed}".strip()
    description = vuln.description or vuln.title or f"{vuln.vuln_id} affects {vuln.pkg} {vuln.installed}".strip()
    if vuln.fixed:
        advice = f"Upgrade {vuln.pkg} from {vuln.installed} to {vuln.fixed} or later."
    else:
        advice = f"No fixed version of {vuln.pkg} is known yet; mitigate or replace the package."
    recommendation: dict[str, str] = {"Text": truncate(advice, 512)}
    if vuln.url.startswith(("http://", "https://")):
        recommendation["Url"] = vuln.url
    package: dict[str, str] = {"Name": vuln.pkg or "unknown", "Version": vuln.installed or "unknown"}
    if vuln.fixed:
        package["FixedInVersion"] = vuln.fixed
    vulnerability: dict[str, Any] = {"Id": vuln.vuln_id, "VulnerablePackages": [package],
                                     "FixAvailable": "YES" if vuln.fixed else "NO"}
    if vuln.url.startswith(("http://", "https://")):
        vulnerability["ReferenceUrls"] = [vuln.url]
    if vuln.cvss:
        vulnerability["Cvss"] = vuln.cvss
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": stable_key(finding_id, 512),
        "ProductArn": ident.product_arn(cfg.product_arn),
        "GeneratorId": truncate(f"{scanner}/{vuln.vuln_id}", 512),
        "AwsAccountId": cfg.aws_account_id or ident.account,
        "Types": [VULN_TYPE],
        "CreatedAt": when,
        "UpdatedAt": when,
        "Severity": _severity(vuln.severity),
        "Title": truncate(title, 256),
        "Description": truncate(description, 1024),
        "Remediation": {"Recommendation": recommendation},
        "ProductFields": {"Product Name": scanner},
        "Resources": [{**resource, "Partition": ident.partition, "Region": ident.region}],
        "Vulnerabilities": [vulnerability],
        "RecordState": "ACTIVE",
    }


def trivy_findings(report: dict[str, Any], ident: Identity, cfg: AwsSecurityHubConfig,
                   received: str) -> list[dict[str, Any]]:
    """A Trivy JSON report: one finding per ``Results[].Vulnerabilities[]`` entry.

    Id ``trivy/<ArtifactName>/<Target>/<PkgName>/<VulnerabilityID>``; a ``container_image``
    artifact is a ``Container`` resource, anything else (filesystem, repository, ...) ``Other``.
    CreatedAt/UpdatedAt: the report's ``CreatedAt``, else when Herald received the event."""
    artifact = _text(report.get("ArtifactName")) or "unknown-artifact"
    kind = _text(report.get("ArtifactType"))
    when = _parse_time(report.get("CreatedAt")) or received
    out: list[dict[str, Any]] = []
    for result in report.get("Results") or []:
        if not isinstance(result, dict):
            continue
        target = _text(result.get("Target")) or artifact
        for v in result.get("Vulnerabilities") or []:
            if not isinstance(v, dict) or not _text(v.get("VulnerabilityID")):
                continue
            vuln = Vuln(_text(v.get("VulnerabilityID")), _text(v.get("PkgName")), _text(v.get("InstalledVersion")),
                        _text(v.get("FixedVersion")), v.get("Severity"), _text(v.get("Title")),
                        _text(v.get("Description")), _text(v.get("PrimaryURL")), _cvss(v.get("CVSS")))
            details: dict[str, Any] = {"Other": {"Target": truncate(target, 1024),
                                                 "ArtifactType": kind or "unknown"}}
            if kind == "container_image":
                details["Container"] = {"ImageName": artifact}
            resource = {"Type": "Container" if kind == "container_image" else "Other", "Id": artifact,
                        "Details": details}
            out.append(_finding(ident, cfg, finding_id=f"trivy/{artifact}/{target}/{vuln.pkg}/{vuln.vuln_id}",
                                scanner="Trivy", when=when, vuln=vuln, resource=resource))
    return out


def operator_findings(doc: dict[str, Any], ident: Identity, cfg: AwsSecurityHubConfig,
                      received: str) -> list[dict[str, Any]]:
    """A trivy-operator VulnerabilityReport: one finding per ``report.vulnerabilities[]`` entry.

    The resource is the image (``registry/repository:tag``, ``Container``) with the namespace,
    workload and container in ``Details.Other``. Id ``trivy-operator/<namespace>/<image>/<resource>/
    <vulnerabilityID>`` (not the report's name, which changes with every ReplicaSet)."""
    report = doc["report"]
    meta = _obj(doc.get("metadata"))
    labels = _obj(meta.get("labels"))
    artifact = _obj(report.get("artifact"))
    registry = _obj(report.get("registry"))
    image = _text(artifact.get("repository")) or "unknown-image"
    if _text(registry.get("server")):
        image = f"{_text(registry.get('server'))}/{image}"
    if _text(artifact.get("tag")):
        image += f":{_text(artifact.get('tag'))}"
    elif _text(artifact.get("digest")):
        image += f"@{_text(artifact.get('digest'))}"
    namespace = _text(meta.get("namespace")) or "default"
    scanner = _obj(report.get("scanner"))
    scanner_name = _text(scanner.get("name")) or "Trivy"
    when = _parse_time(report.get("updateTimestamp")) or _parse_time(meta.get("creationTimestamp")) or received
    other = {"Namespace": namespace, "Report": _text(meta.get("name")),
             "Kind": _text(labels.get("trivy-operator.resource.kind")),
             "Workload": _text(labels.get("trivy-operator.resource.name")),
             "Container": _text(labels.get("trivy-operator.container.name"))}
    other = {k: v for k, v in other.items() if v}
    out: list[dict[str, Any]] = []
    for v in report.get("vulnerabilities") or []:
        if not isinstance(v, dict) or not _text(v.get("vulnerabilityID")):
            continue
        score = v.get("score")
        cvss = ([{"BaseScore": float(score), "Source": scanner_name}]  # the report does not say which CVSS version
                if isinstance(score, (int, float)) and not isinstance(score, bool) else [])
        vuln = Vuln(_text(v.get("vulnerabilityID")), _text(v.get("resource")), _text(v.get("installedVersion")),
                    _text(v.get("fixedVersion")), v.get("severity"), _text(v.get("title")),
                    _text(v.get("description")), _text(v.get("primaryLink")), cvss)
        resource = {"Type": "Container", "Id": image,
                    "Details": {"Container": {"ImageName": image}, "Other": other}}
        out.append(_finding(ident, cfg, finding_id=f"trivy-operator/{namespace}/{image}/{vuln.pkg}/{vuln.vuln_id}",
                            scanner=scanner_name, when=when, vuln=vuln, resource=resource))
    return out


def asff_findings(findings: list[Any], ident: Identity, cfg: AwsSecurityHubConfig) -> list[Any]:
    """ASFF findings as given (Trivy's ASFF template output), with Postee's fallbacks.

    Every key is passed on (Postee copied a subset, dropping e.g. Resources details and
    Vulnerabilities); a finding without ``Resources`` gets Postee's single resource ``{Id: the
    finding's Id, Type: its Types joined by spaces}``; an empty ``SchemaVersion``,
    ``AwsAccountId`` or ``ProductArn`` (Trivy's template leaves them empty when its environment
    lacks AWS_ACCOUNT_ID), and a ProductArn without a region gets the action's region. CreatedAt and
    UpdatedAt are written in UTC with milliseconds when they parse. Anything else wrong with a finding is for the
    SDK's parameter check or Security Hub to refuse, finding by finding."""
    out: list[Any] = []
    for f in findings:
        if not isinstance(f, dict):
            out.append(f)
            continue
        f = dict(f)
        if "Resources" not in f:
            types = f.get("Types")
            if not isinstance(types, list):
                types = []
            f["Resources"] = [{"Id": f.get("Id", ""), "Type": " ".join(str(t) for t in types) or "Other"}]
        for key in ("CreatedAt", "UpdatedAt"):  # Go's nanoseconds and offsets -> UTC milliseconds
            when = _parse_time(f.get(key))
            if when is not None:
                f[key] = when
        if not _text(f.get("SchemaVersion")):
            f["SchemaVersion"] = SCHEMA_VERSION
        if not _text(f.get("AwsAccountId")):
            f["AwsAccountId"] = cfg.aws_account_id or ident.account
        arn = _text(f.get("ProductArn"))
        if not arn:
            f["ProductArn"] = ident.product_arn(cfg.product_arn)
        elif re.match(r"^arn:[^:]+:securityhub::", arn):  # no region: Trivy's template without AWS_REGION
            f["ProductArn"] = arn.replace(":securityhub::", f":securityhub:{ident.region}:", 1)
        out.append(f)
    return out


def _asff_document(text: str) -> list[Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    findings = doc.get("Findings") if isinstance(doc, dict) else None
    return findings if isinstance(findings, list) else None


def findings_for(message: ActionMessage, ident: Identity, cfg: AwsSecurityHubConfig) -> list[Any]:
    """The ASFF findings a message stands for (see the module doc); raises PermanentActionError."""
    received = _iso(message.received_at or message.routed_at)
    listed = _asff_document(message.content.description)
    event = message.event if isinstance(message.event, dict) else None
    if listed is None and event is not None and isinstance(event.get("Findings"), list):
        listed = event["Findings"]
    if listed is not None:
        return asff_findings(listed, ident, cfg)
    if event is not None and isinstance(event.get("Results"), list):
        return trivy_findings(event, ident, cfg, received)
    if event is not None and isinstance(event.get("report"), dict) and \
            isinstance(event["report"].get("vulnerabilities"), list):
        return operator_findings(event, ident, cfg, received)
    raise PermanentActionError(
        "no findings: the description is not ASFF JSON {\"Findings\": [...]} and the event is neither ASFF, "
        "a Trivy JSON report (Results) nor a trivy-operator VulnerabilityReport (report.vulnerabilities)")


# -- errors -----------------------------------------------------------------------------------

def classify(exc: BaseException, what: str) -> ActionError:
    """A boto3/botocore exception as the runner's verdict (retryable or permanent)."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "")) or "Unknown"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"{what}: {code}: {err.get('Message', '')}".rstrip(": ")
        if code in RETRYABLE_CODES or (isinstance(status, int) and (status >= 500 or status == 429)):
            return RetryableActionError(text, status)
        return PermanentActionError(text, status)
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, TimeoutError)):
        return RetryableActionError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, bx.NoRegionError):
        return PermanentActionError(f"{what}: no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or region in "
                                    "the AWS config profile")
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return PermanentActionError(f"{what}: {exc} (looked in the environment, the shared credentials and config "
                                    "files, web identity, container and instance roles)")
    return PermanentActionError(f"{what}: {type(exc).__name__}: {exc}")


# -- the action -------------------------------------------------------------------------------

class AwsSecurityHubAction(Action[AwsSecurityHubConfig, ImportRequest]):
    type_name = "awssecurityhub"
    config_model = AwsSecurityHubConfig

    def __init__(self, config: AwsSecurityHubConfig) -> None:
        super().__init__(config)
        self._client: Any = None
        self._session: Any = None
        self.identity: Identity | None = None
        self._identity_lock = asyncio.Lock()
        self.pending: PendingRequests[ImportRequest] = PendingRequests()

    # -- AWS plumbing (blocking; always called through _call) --
    def _botocore_config(self) -> Any:
        from botocore.config import Config

        return Config(connect_timeout=self.config.timeout, read_timeout=self.config.timeout,
                      retries={"total_max_attempts": 1, "mode": "standard"})

    def _open(self) -> Identity:
        import boto3

        session = boto3.session.Session()
        # boto3 reads AWS_DEFAULT_REGION and profiles; the Go SDK Postee used reads AWS_REGION first
        region = os.environ.get("AWS_REGION", "").strip() or session.region_name
        client = session.client("securityhub", region_name=region, config=self._botocore_config())
        region = client.meta.region_name
        account = self.config.aws_account_id
        if not account:
            sts = session.client("sts", region_name=region, config=self._botocore_config())
            account = sts.get_caller_identity()["Account"]
        self._session, self._client = session, client
        return Identity(region, session.get_partition_for_region(region) or "aws", account)

    def _import(self, findings: list[dict[str, Any]]) -> dict[str, Any]:
        response: dict[str, Any] = self._client.batch_import_findings(Findings=findings)
        return response

    async def _call(self, what: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a thread, bounded (botocore's own timeouts apply per request; this
        bounds the whole call, credential lookups included)."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout=2 * self.config.timeout + 5)
        except asyncio.CancelledError:
            raise
        except ActionError:
            raise
        except Exception as exc:  # every boto3/botocore exception is classified below
            from botocore.exceptions import ParamValidationError

            if isinstance(exc, ParamValidationError):
                raise
            raise classify(exc, what) from None

    async def start(self) -> None:
        try:
            await self.ensure_identity()
        except ActionError as exc:  # reported by every delivery until it works
            log.error("awssecurityhub %s: %s", self.name, exc)

    async def close(self) -> None:
        client, self._client, self.identity = self._client, None, None
        if client is not None:
            await asyncio.to_thread(client.close)  # its HTTP connection pool

    async def ensure_identity(self) -> Identity:
        async with self._identity_lock:
            if self.identity is None:
                self.identity = await self._call(f"awssecurityhub {self.name}: AWS setup", self._open)
                log.info("awssecurityhub %s: region %s, account %s", self.name, self.identity.region,
                         self.identity.account)
            return self.identity

    # -- the contract --
    def build_payload(self, message: ActionMessage) -> ImportRequest:
        if self.identity is None:
            raise PermanentActionError("awssecurityhub: build_payload before the AWS identity is known")
        findings = findings_for(message, self.identity, self.config)
        by_id: dict[str, Any] = {}
        rejected: list[RejectedPart] = []
        for i, f in enumerate(findings):
            fid = f.get("Id") if isinstance(f, dict) else None
            if not isinstance(fid, str) or not fid.strip():
                rejected.append(self._rejected(message, f"#{i}", f, "not sent: not a JSON object with a string Id"))
                continue
            if fid in by_id:
                log.info("awssecurityhub %s: finding %s appears twice in event %s; the later one is sent",
                         self.name, fid, message.event_id)
            by_id[fid] = f
        unique = list(by_id.values())
        calls = [unique[i:i + BATCH_LIMIT] for i in range(0, len(unique), BATCH_LIMIT)]
        return ImportRequest(message, calls, rejected)

    async def deliver(self, message: ActionMessage) -> None:
        await self.ensure_identity()
        await deliver_resumable(self.pending, message, self.build_payload, self.send)

    async def send(self, request: ImportRequest) -> None:
        what = f"awssecurityhub {self.name}: BatchImportFindings"
        while request.calls:
            batch = request.calls[0]
            await self._send_batch(what, request, batch)
            request.calls.pop(0)
        total = request.imported + len(request.rejected)
        log.info("awssecurityhub %s: event %s: %d of %d finding(s) imported", self.name, request.message.event_id,
                 request.imported, total)
        if request.rejected:
            ids = ", ".join(p.part for p in request.rejected[:5]) + (" ..." if len(request.rejected) > 5 else "")
            raise PartialDeliveryError(f"{len(request.rejected)} of {total} finding(s) refused: {ids}",
                                       request.rejected)

    async def _send_batch(self, what: str, request: ImportRequest, batch: list[dict[str, Any]]) -> None:
        from botocore.exceptions import ParamValidationError

        try:
            out = await self._call(what, self._import, batch)
        except ParamValidationError as exc:
            # the SDK refused the whole call before sending it: find the finding(s) at fault
            if len(batch) == 1:
                request.rejected.append(self._rejected(request.message, batch[0]["Id"], batch[0],
                                                       "not sent: invalid ASFF: " + " ".join(str(exc).split())))
                return
            for finding in batch:
                await self._send_batch(what, request, [finding])
            return
        request.imported += int(out.get("SuccessCount", 0))
        by_id = {f["Id"]: f for f in batch}
        for failed in out.get("FailedFindings") or []:
            fid = str(failed.get("Id", ""))
            code = str(failed.get("ErrorCode", "") or "Unknown")
            request.rejected.append(self._rejected(
                request.message, fid, by_id.get(fid),
                f"refused by Security Hub: {code}: {failed.get('ErrorMessage', '')}".rstrip(": ")))

    def _rejected(self, message: ActionMessage, fid: str, finding: Any, why: str) -> RejectedPart:
        """The dead letter's part: the finding alone, in the ASFF form this action reads back."""
        description = json.dumps({"Findings": [finding]} if finding is not None else {"Findings": []},
                                  ensure_ascii=False)
        part = dataclasses.replace(message, content=Content(title=message.content.title, description=description),
                                   event=None, part=fid)
        return RejectedPart(part=fid, error=f"finding {fid} {why}", error_type="FailedFinding", message=part)
