"""Golden files for rendered content: one section per content key, exact bytes.

A golden reads like this (``title`` and ``description`` always, other keys when non-empty)::

    === title ===
    all-in-one:3.5.19223 vulnerability scan report
    === description ===
    <p>Image name: ...

Each value is followed by one newline that is not part of it. With ``HERALD_UPDATE_GOLDENS=1``
a golden that differs (or is missing) is rewritten and its test fails with "golden updated:
<path>, re-run"; the re-run compares as usual (review the diff by eye before committing).
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

from app.content import Content

GOLDENS = Path(__file__).parent / "goldens"
UPDATE = os.environ.get("HERALD_UPDATE_GOLDENS") == "1"
KEYS = ("title", "description", "url", "date", "severity", "summary", "category", "subcategory",
        "assignedTo", "assignedGroup", "owners")
_HEADER = re.compile(r"^=== (\w+) ===\n", re.M)


def dump(content: Content) -> str:
    values = content.to_dict()
    parts = []
    for key in KEYS:
        value = values[key]
        if key in ("title", "description") or value:
            assert not _HEADER.search(value), f"{key} contains a golden section header"
            parts.append(f"=== {key} ===\n{value}\n")
    return "".join(parts)


def load(text: str) -> dict[str, str]:
    headers = list(_HEADER.finditer(text))
    out = {}
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = text[match.end():end]
        assert body.endswith("\n"), f"section {match.group(1)} does not end with a newline"
        out[match.group(1)] = body[:-1]
    return out


def check(name: str, content: Content) -> None:
    """Compare every content key with the golden (missing keys must be empty). In update mode a
    golden that differs is rewritten, and the test still fails."""
    path = GOLDENS / f"{name}.golden"
    actual = content.to_dict()
    if UPDATE:
        expected = load(path.read_text()) if path.is_file() else None
        if expected is None or any(actual[key] != expected.get(key, "") for key in KEYS):
            path.write_text(dump(content))
            raise AssertionError(f"golden updated: {path}, re-run")
    assert path.is_file(), f"no golden {path.name}; run with HERALD_UPDATE_GOLDENS=1 and review it"
    expected = load(path.read_text())
    for key in KEYS:
        assert actual[key] == expected.get(key, ""), f"{name}: {key} differs from {path.name}"


VOID_TAGS = {"br", "hr", "img", "meta", "link", "input"}


class BalancedHTML(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags += 1
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def assert_well_formed_html(text: str) -> None:
    parser = BalancedHTML()
    parser.feed(text)
    parser.close()
    assert not parser.problems, parser.problems
    assert not parser.stack, f"unclosed elements: {parser.stack}"
    assert parser.tags > 0, "no HTML elements at all"
    # event text must be escaped: a raw '<' only ever starts a tag or a closing tag
    assert not re.search(r"<(?![a-zA-Z/!])", text), "unescaped '<' in HTML text"


SLACK_BLOCK_TYPES = {"section", "header", "divider", "context"}


def assert_slack_blocks(text: str) -> list[dict[str, object]]:
    """A JSON array of Block Kit blocks within Slack's limits."""
    import json

    blocks = json.loads(text)
    assert isinstance(blocks, list) and blocks, "not a non-empty JSON array"
    for block in blocks:
        assert isinstance(block, dict) and block.get("type") in SLACK_BLOCK_TYPES, block
        if block["type"] == "section":
            assert "text" in block or "fields" in block, block
            assert len(block.get("fields", [])) <= 10, "a section holds at most 10 fields"
            for item in [block.get("text"), *block.get("fields", [])]:
                if item is not None:
                    assert item["type"] in ("mrkdwn", "plain_text") and isinstance(item["text"], str), item
                    assert len(item["text"]) <= 3000
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
    return blocks
