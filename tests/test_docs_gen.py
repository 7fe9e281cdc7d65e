"""The generated actions reference covers every key Postee's documentation lists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import actions
from app.devtools.docs_gen import actions_table_markdown

# The text of Postee's documentation page "Actions" (Postee is Apache-2.0), kept as test data.
SEED_DOC = Path(__file__).resolve().parent / "fixtures" / "seed" / "postee-actions-doc.txt"

# Keys per action, as listed in the seed doc's tables; test_seed_keys_match_the_doc checks them.
SEED_KEYS: dict[str, list[str]] = {
    "jira": ["url", "project-key", "user", "password", "token", "board", "priority", "assignee", "issuetype",
             "labels", "sprint"],
    "email": ["use-mx", "user", "password", "host", "port", "sender", "recipients"],
    "slack": ["url"],
    "teams": ["url"],
    "splunk": ["token", "url", "size-limit"],
    "servicenow": ["user", "password", "instance", "board"],
    "nexusiq": ["user", "password", "url", "organization-id"],
    "opsgenie": ["token", "user", "assignee", "recipients", "priority", "tags", "alias", "entity"],
    "exec": ["env", "input-file", "exec-script"],
    "http": ["url", "method", "headers", "timeout", "body-file"],
    "kubernetes": ["kube-namespace", "kube-config-file", "kube-label-selector", "kube-actions"],
    "docker": ["docker-image-name", "docker-cmd", "docker-env", "docker-network", "docker-volume-mounts"],
    "webhook": ["url", "timeout"],
}
# Keys the seed doc names outside its tables, and Postee keys of types the doc has no section for
# (reference §2.5): they must be documented too.
EXTRA_KEYS: dict[str, list[str]] = {
    "jira": ["unknowns", "tls-verify", "fix-versions", "affects-versions"],
    "dependencytrack": ["url", "dependency-track-api-key"],
    "splunk": ["tls-verify"],
}
COMMON_KEYS = ["name", "type", "enable", "runs-on"]

_SECTIONS = {"Jira": "jira", "Email": "email", "Slack": "slack", "MS Teams": "teams", "Splunk": "splunk",
             "ServiceNow": "servicenow", "Nexus IQ": "nexusiq", "OpsGenie": "opsgenie", "Exec": "exec",
             "HTTP": "http", "Kubernetes": "kubernetes", "Docker": "docker", "Generic Webhook": "webhook"}
_DOC_TYPOS = {"bodyfile": "body-file"}  # the HTTP table says "Bodyfile"; Postee's key is body-file
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")


def parse_seed(text: str) -> dict[str, list[str]]:
    """Key names of each action section's table in the seed doc.

    A table starts at a "Key Description ..." / "Option Usage ..." header and ends at a blank
    line. A row's key is its first word; wrapped description lines are told apart by case: the
    first row fixes whether keys are lowercase (``kube-actions``) or capitalized (``URL``).
    """
    out: dict[str, list[str]] = {}
    section: str | None = None
    in_table = False
    lowercase_keys = True
    for raw in text.splitlines():
        line = raw.strip()
        if line in _SECTIONS:
            section, in_table = _SECTIONS[line], False
            continue
        if section and line.startswith(("Key Description", "Option Usage")):
            in_table, out[section] = True, []
            continue
        if not in_table or section is None:
            continue
        if not line:
            in_table = False
            continue
        first, _, rest = line.partition(" ")
        if not rest or not _KEY.match(first):
            continue
        if not out[section]:
            lowercase_keys = first.islower()
        elif lowercase_keys and not first.islower():
            continue
        key = first.lower()
        out[section].append(_DOC_TYPOS.get(key, key))
    return out


def documented_keys(markdown: str) -> dict[str, set[str]]:
    """``### `type` `` section -> the keys in its table (``"*"`` is the common-keys table)."""
    out: dict[str, set[str]] = {}
    current = ""
    for line in markdown.splitlines():
        heading = re.match(r"^### (?:`(?P<type>[^`]+)`|Keys every action has)$", line)
        if heading:
            current = heading.group("type") or "*"
            out[current] = set()
        elif current and (row := re.match(r"^\| `([^`]+)` \|", line)):
            out[current].add(row.group(1))
    return out


def test_seed_keys_match_the_doc() -> None:
    assert parse_seed(SEED_DOC.read_text()) == SEED_KEYS


@pytest.fixture(scope="module")
def documented() -> dict[str, set[str]]:
    return documented_keys(actions_table_markdown())


def test_common_keys_are_documented(documented: dict[str, set[str]]) -> None:
    assert set(COMMON_KEYS) <= documented["*"]


def test_ticketing_and_sbom_actions_are_in_the_table(documented: dict[str, set[str]]) -> None:
    assert {"jira", "servicenow", "nexusiq", "dependencytrack"} <= documented.keys()


def test_every_type_with_postee_keys_is_registered() -> None:
    assert not (SEED_KEYS.keys() | EXTRA_KEYS.keys()) - actions.REGISTRY.keys()


@pytest.mark.parametrize("type_name", sorted(actions.REGISTRY))
def test_every_postee_key_is_documented(documented: dict[str, set[str]], type_name: str) -> None:
    actions.action_class(type_name)  # the module imports (a type that does not is not quietly left out)
    assert type_name in documented, f"{type_name} has no section in the generated table"
    wanted = set(SEED_KEYS.get(type_name, [])) | set(EXTRA_KEYS.get(type_name, []))
    missing = wanted - documented[type_name]
    assert not missing, f"{type_name}: keys missing from the generated table: {sorted(missing)}"


def test_secrets_are_marked_and_required_shown() -> None:
    markdown = actions_table_markdown()
    row = next(line for line in markdown.splitlines() if line.startswith("| `dependency-track-api-key` |"))
    assert "**Secret.**" in row and "| yes, or dependency-track-api-key-file |" in row
    row = next(line for line in markdown.splitlines() if line.startswith("| `project-key` |"))
    assert row.startswith("| `project-key` | yes |")


def test_module_entry_point_prints_the_table() -> None:
    result = subprocess.run([sys.executable, "-m", "app.devtools.docs_gen"], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout == actions_table_markdown()
