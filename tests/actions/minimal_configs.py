"""The contract table: one entry per action type, used by test_contract.py.

To put a new action type under the contract, add one ``ContractCase`` to ``CASES``:

- ``config``: a minimal valid config. ``{base}`` in any string is replaced by the base URL of
  the test's local HTTP peer (``http://127.0.0.1:<port>``), or of a closed port for the
  "connection refused" case.
- ``wrong_type_key``: a key whose value must be a string; the test sets it to a list and
  expects a ``ConfigError`` naming ``actions[0].<key>``.
- ``secrets``: values from ``config`` that must never appear in an error message.
- ``http``: run the verdict table (200/202 ok, 400 permanent, 429 with Retry-After retryable,
  500/503 retryable, connection refused retryable) against a peer that answers every request
  with the status under test. Actions that make several calls per message may set
  ``ok_body`` so their first call's success answer parses, or set ``http=False`` and cover
  verdicts in their own tests.
- ``title``/``description``: the content the contract message carries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SLACK_BLOCKS = json.dumps([{"type": "section", "text": {"type": "mrkdwn", "text": "contract"}}])


@dataclass(frozen=True)
class ContractCase:
    config: dict[str, Any]
    wrong_type_key: str
    secrets: tuple[str, ...] = ()
    http: bool = True
    ok_statuses: tuple[int, ...] = (200, 202)
    ok_body: bytes = b"{}"
    title: str = "Contract test alert"
    description: str = SLACK_BLOCKS
    event: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, ContractCase] = {
    "stdout": ContractCase({"name": "c", "type": "stdout"}, wrong_type_key="runs-on", http=False),
    "webhook": ContractCase({"name": "c", "type": "webhook", "url": "{base}/hook"}, wrong_type_key="url"),
    "email": ContractCase(
        {"name": "c", "type": "email", "host": "127.0.0.1", "port": 2525, "user": "alerts@corp.test",
         "password": "contract-smtp-password", "recipients": ["sec@corp.test"]},
        wrong_type_key="host", secrets=("contract-smtp-password",), http=False,
    ),
    "slack": ContractCase(
        {"name": "c", "type": "slack", "url": "{base}/services/T0CONTRACT/B0CONTRACT/xoxContractHookSecret"},
        wrong_type_key="url", secrets=("xoxContractHookSecret",),
    ),
    "teams": ContractCase(
        {"name": "c", "type": "teams", "teams-format": "workflow",
         "url": "{base}/workflows/c0ffee/triggers/manual/paths/invoke?api-version=2016-06-01"
                "&sig=ContractWorkflowSignature0123"},
        wrong_type_key="teams-format", secrets=("ContractWorkflowSignature0123",),
    ),
    "splunk": ContractCase(
        {"name": "c", "type": "splunk", "url": "{base}", "token": "contract-hec-token-0001"},
        wrong_type_key="url", secrets=("contract-hec-token-0001",),
    ),
    "opsgenie": ContractCase(
        {"name": "c", "type": "opsgenie", "url": "{base}", "token": "contract-genie-key-0001"},
        wrong_type_key="user", secrets=("contract-genie-key-0001",),
    ),
    "pagerduty": ContractCase(
        {"name": "c", "type": "pagerduty", "url": "{base}", "pagerduty-routing-key": "CONTRACTROUTINGKEY00000000000001",
         "pagerduty-auth-token": "contract-rest-token-0001"},
        wrong_type_key="source", secrets=("CONTRACTROUTINGKEY00000000000001", "contract-rest-token-0001"),
    ),
    "jira": ContractCase(
        {"name": "c", "type": "jira", "url": "{base}", "user": "bot@corp.test", "password": "contract-jira-password",
         "project-key": "SEC"},
        wrong_type_key="project-key", secrets=("contract-jira-password",), http=False,  # multi-call: test_jira.py
    ),
    "servicenow": ContractCase(
        {"name": "c", "type": "serviceNow", "url": "{base}", "user": "herald", "password": "contract-sn-password"},
        wrong_type_key="instance", secrets=("contract-sn-password",), ok_statuses=(200, 201),
    ),
    "nexusiq": ContractCase(
        {"name": "c", "type": "nexusIq", "url": "{base}", "user": "herald", "password": "contract-iq-password",
         "organization-id": "222de33e8005408a844c12eab952c9b0"},
        wrong_type_key="organization-id", secrets=("contract-iq-password",),
        ok_body=b'{"applications": [{"id": "app-1", "publicId": "Contract test alert"}]}',
        description='<bom xmlns="http://cyclonedx.org/schema/bom/1.4" version="1"/>',
    ),
    "dependencytrack": ContractCase(
        {"name": "c", "type": "dependencytrack", "url": "{base}", "dependency-track-api-key": "contract-dt-api-key-01"},
        wrong_type_key="url", secrets=("contract-dt-api-key-01",), title="contract-app:1.0",
        description='{"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1}',
    ),
    "exec": ContractCase({"name": "c", "type": "exec", "exec-script": "true"}, wrong_type_key="exec-script",
                         http=False),
    "http": ContractCase({"name": "c", "type": "http", "url": "{base}/hook", "method": "POST"}, wrong_type_key="url"),
    "kubernetes": ContractCase(
        {"name": "c", "type": "kubernetes", "kube-namespace": "default", "kube-config-file": "/nonexistent/kubeconfig",
         "kube-label-selector": "app=x", "kube-actions": {"labels": {"herald": "seen"}}},
        wrong_type_key="kube-namespace", http=False,
    ),
    "docker": ContractCase({"name": "c", "type": "docker", "docker-image-name": "localhost/busybox:latest"},
                           wrong_type_key="docker-image-name", http=False),
    # boto3, not aiohttp: verdicts against a real Security Hub emulator in test_awssecurityhub.py
    "awssecurityhub": ContractCase({"name": "c", "type": "awssecurityhub"}, wrong_type_key="product-arn", http=False),
}
