"""slack action against a local webhook peer that validates blocks the way Slack does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from tests.actions.support import assert_golden, build_action, make_message, request_as_json, serve

from actions.slack import SlackAction
from app.errors import ConfigError, PermanentActionError, RetryableActionError

HOOK_PATH = "/services/T0HERALD/B0HERALD/xoxSecretHookToken123"
BLOCK_TYPES = {"section", "context", "divider", "header", "image", "actions", "input", "rich_text", "file", "video"}


def slack_error(body: Any) -> str | None:
    """The error code Slack's webhook answers for a payload, or None if it is accepted."""
    if not isinstance(body, dict):
        return "invalid_payload"
    blocks = body.get("blocks")
    if blocks is None:
        return None if isinstance(body.get("text"), str) and body["text"] else "no_text"
    if not isinstance(blocks, list) or not blocks or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            return "invalid_blocks"
        if block["type"] == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and fields is None:
                return "invalid_blocks"
            if text is not None and (
                not isinstance(text, dict) or text.get("type") not in ("mrkdwn", "plain_text")
                or not isinstance(text.get("text"), str) or not 1 <= len(text["text"]) <= 3000
            ):
                return "invalid_blocks"
            if fields is not None and (
                not isinstance(fields, list) or len(fields) > 10
                or any(not isinstance(f, dict) or len(str(f.get("text", ""))) > 2000 for f in fields)
            ):
                return "invalid_blocks"
        if block["type"] == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                return "invalid_blocks"
    return None


class FakeSlack:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.replies: list[tuple[int, str, dict[str, str]]] = []  # queued failures, then "ok"

    async def handle(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405, text="invalid_method")
        if request.path != HOOK_PATH:
            return web.Response(status=404, text="no_service")
        if self.replies:
            status, text, headers = self.replies.pop(0)
            return web.Response(status=status, text=text, headers=headers)
        if request.content_type != "application/json":
            return web.Response(status=400, text="invalid_payload")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        error = slack_error(body)
        if error:
            return web.Response(status=400, text=error)
        self.received.append(body)
        return web.Response(text="ok")


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, str]]:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    async with serve(app) as base:
        yield fake, base + HOOK_PATH


def slack_action(url: str) -> SlackAction:
    action = build_action({"name": "slack-main", "type": "slack", "enable": True, "url": url})
    assert isinstance(action, SlackAction)
    return action


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


# What Postee's vuls-slack style templates produce: sections, fields, context, with a trailing ','.
AQUA_BLOCKS = (
    json.dumps(section("*Image name:* ubuntu:22.04\n*Registry:* Docker Hub")) + ","
    + json.dumps({"type": "section", "fields": [
        {"type": "mrkdwn", "text": "*Critical*"}, {"type": "mrkdwn", "text": "1"},
        {"type": "mrkdwn", "text": "*High*"}, {"type": "mrkdwn", "text": "2"}]}) + ","
    + json.dumps({"type": "context", "elements": [{"type": "mrkdwn", "text": "Scanned by Aqua"}]}) + ","
    + json.dumps({"type": "section", "text": {"type": "mrkdwn", "text": "CVE-2024-0001 in openssl"},
                  "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Open"},
                                "url": "https://avd.aquasec.com/nvd/cve-2024-0001"}}) + ","
    + json.dumps({"type": "divider"}) + ","
)


def test_golden_payload() -> None:
    action = slack_action("https://hooks.slack.com" + HOOK_PATH)
    request = action.build_payload(make_message(description=AQUA_BLOCKS))
    assert_golden("slack", [request_as_json(p) for p in request.parts])


@pytest.mark.asyncio
async def test_posts_title_and_every_block_property(slack: tuple[FakeSlack, str]) -> None:
    fake, url = slack
    await slack_action(url).deliver(make_message(title="Image ubuntu:22.04", description=AQUA_BLOCKS))
    [body] = fake.received
    blocks = body["blocks"]
    assert blocks[0] == section("*Image ubuntu:22.04*")
    assert [b["type"] for b in blocks] == ["section", "section", "section", "context", "section", "divider"]
    assert blocks[3]["elements"] == [{"type": "mrkdwn", "text": "Scanned by Aqua"}]  # Postee dropped these
    assert blocks[4]["accessory"]["url"] == "https://avd.aquasec.com/nvd/cve-2024-0001"


@pytest.mark.asyncio
async def test_single_block_object_and_html_escaping(slack: tuple[FakeSlack, str]) -> None:
    fake, url = slack
    desc = json.dumps(section("a < b & c > d"))
    await slack_action(url).deliver(make_message(title="T <1> & 2", description=desc))
    blocks = fake.received[0]["blocks"]
    assert blocks[0]["text"]["text"] == "*T &lt;1&gt; &amp; 2*"
    assert blocks[1]["text"]["text"] == "a &lt; b &amp; c &gt; d"


@pytest.mark.parametrize("desc", ["<p>html, not blocks</p>", "[1, 2]", '{"text": "no type"}', "[[{}]]"])
def test_not_blocks_is_wrong_template(desc: str) -> None:
    with pytest.raises(PermanentActionError, match="wrong template selected"):
        slack_action("https://hooks.slack.com/x").build_payload(make_message(description=desc))


def many_blocks(n: int) -> str:
    return ",".join(json.dumps(section(f"block {i}")) for i in range(n))


@pytest.mark.asyncio
@pytest.mark.parametrize(("count", "sizes"), [(0, [1]), (49, [50]), (50, [50, 2]), (120, [50, 50, 23])])
async def test_splits_past_fifty_blocks(slack: tuple[FakeSlack, str], count: int, sizes: list[int]) -> None:
    fake, url = slack
    await slack_action(url).deliver(make_message(title="Big", description=many_blocks(count)))
    assert [len(b["blocks"]) for b in fake.received] == sizes
    titles = [b["blocks"][0]["text"]["text"] for b in fake.received]
    if len(sizes) == 1:
        assert titles == ["*Big*"]
    else:
        assert titles == [f"*Big* ({i}/{len(sizes)})" for i in range(1, len(sizes) + 1)]
    content = [blk["text"]["text"] for b in fake.received for blk in b["blocks"][1:]]
    assert content == [f"block {i}" for i in range(count)]


@pytest.mark.asyncio
async def test_retry_resumes_at_the_failed_part(slack: tuple[FakeSlack, str]) -> None:
    fake, url = slack
    action = slack_action(url)
    message = make_message(title="Big", description=many_blocks(120))
    fake.replies = [(200, "ok", {})]  # part 1 is accepted (not recorded), then part 2 fails
    fake.replies.append((500, "rollup_error", {}))
    with pytest.raises(RetryableActionError, match="part 2/3"):
        await action.deliver(message)
    await action.deliver(message)  # the runner's next attempt
    titles = [b["blocks"][0]["text"]["text"] for b in fake.received]
    assert titles == ["*Big* (2/3)", "*Big* (3/3)"]


@pytest.mark.asyncio
async def test_rate_limit_honours_retry_after(slack: tuple[FakeSlack, str]) -> None:
    fake, url = slack
    fake.replies = [(429, "rate_limited", {"Retry-After": "7"})]
    with pytest.raises(RetryableActionError) as info:
        await slack_action(url).deliver(make_message(description=many_blocks(1)))
    assert info.value.status == 429 and info.value.retry_after == 7


@pytest.mark.asyncio
async def test_invalid_blocks_is_permanent_and_hides_the_url(slack: tuple[FakeSlack, str]) -> None:
    _, url = slack
    with pytest.raises(PermanentActionError, match="invalid_blocks") as info:
        await slack_action(url).deliver(make_message(description='{"type": "bogus"}'))
    assert info.value.status == 400
    assert "xoxSecretHookToken123" not in str(info.value)


@pytest.mark.asyncio
async def test_long_section_text_is_truncated_to_slack_limits(slack: tuple[FakeSlack, str]) -> None:
    fake, url = slack
    desc = json.dumps({"type": "section", "text": {"type": "mrkdwn", "text": "x" * 5000},
                       "fields": [{"type": "mrkdwn", "text": "y" * 2500}]})
    await slack_action(url).deliver(make_message(title="t" * 4000, description=desc))
    blocks = fake.received[0]["blocks"]
    assert len(blocks[0]["text"]["text"]) == 3000
    assert len(blocks[1]["text"]["text"]) == 3000 and blocks[1]["text"]["text"].endswith("…")
    assert len(blocks[1]["fields"][0]["text"]) == 2000


def test_url_is_validated_and_hidden() -> None:
    with pytest.raises(ConfigError, match=r"actions\[0\]\.url: must be an http"):
        slack_action("hooks.slack.com/services/T/B/secretish")
    action = slack_action("https://hooks.slack.com" + HOOK_PATH)
    assert "xoxSecretHookToken123" not in repr(action.config)
