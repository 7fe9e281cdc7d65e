"""Small helpers shared by several actions: config field types, HTML to text, Postee's
"too long" message, and reading Postee's ``AquaServer`` value from the event."""

from __future__ import annotations

import hashlib
import html
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import BeforeValidator

from actions._config import key_error, merge_secret_file
from app import redact
from app.config.model import PosteeModel, parse_duration
from app.errors import ConfigError, RetryableActionError
from app.messages import ActionMessage

R = TypeVar("R")

POSTEE_DOCS_URL = "https://github.com/aquasecurity/postee#general-settings"


def _duration(value: Any, default: float, zero_is_default: bool) -> float:
    # parse_duration raises ConfigError; pydantic only reports ValueError with the key path.
    if value in ("", None):
        return default
    try:
        seconds = parse_duration(value, "timeout")
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("timeout: ")) from None
    if seconds == 0 and zero_is_default:
        return default
    if seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds


def timeout_default(default: float, zero_is_default: bool = False) -> BeforeValidator:
    """The validator of a timeout field, ``Annotated[float, timeout_default(60.0)]``: a Go duration
    ("30s", "2m") or seconds; empty means ``default`` (and so does 0 when ``zero_is_default``);
    other durations must be positive."""
    return BeforeValidator(lambda v: _duration(v, default, zero_is_default))


# A request timeout whose empty value means 30 s (Postee had none).
Timeout = Annotated[float, timeout_default(30.0)]


def check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return value


def require_secret(model: PosteeModel, key: str, required: bool = True) -> None:
    """Take ``<key>`` from ``<key>-file`` when that is given (a mounted Kubernetes Secret), and
    insist on one of them when ``required``. Errors carry the key path, never the value."""
    merge_secret_file(model, key)
    if required and not getattr(model, key.replace("-", "_")):
        raise key_error(model, key, f"is required (give {key} or {key}-file)")


def require_secret_url(model: PosteeModel, key: str) -> None:
    """A webhook URL that is itself the credential (Slack, Teams), inline or from ``<key>-file``.

    Its path and long query values are registered for redaction as well, since servers quote
    them in error pages ("/services/T/B/x was not found")."""
    require_secret(model, key)
    url = getattr(model, key.replace("-", "_")).reveal()
    if not url.startswith(("http://", "https://")):
        raise key_error(model, key, "must be an http:// or https:// URL (value hidden: it is a credential)")
    parts = urlsplit(url)
    if len(parts.path) > 8:
        redact.register(parts.path)
    for _, param in parse_qsl(parts.query):
        if len(param) >= 16:  # signatures, not "api-version=2016-06-01"
            redact.register(param)


def aqua_server(message: ActionMessage) -> str:
    """Postee's ``AquaServer`` value, injected by the router into ``event.postee``."""
    postee = (message.event or {}).get("postee")
    if isinstance(postee, dict):
        value = postee.get("AquaServer")
        if isinstance(value, str):
            return value
    return ""


def short_html_message(server: str, urls: str) -> str:
    """Postee's replacement body when a description is too long for the target (HTML layout)."""
    def para(text: str) -> str:
        return f"<p>{text}</p>\n"

    def link(url: str) -> str:
        safe = html.escape(url, quote=True)
        return f"<a href='{safe}'>{safe}</a>"

    if server:
        out = para("This message is too long to display here. Please visit the link to read the content.")
        return out + "".join(para(link(u)) for u in urls.split("\n"))
    return para("Please configure Aqua server url to see entire message.") + para(link(POSTEE_DOCS_URL))


def stable_key(text: str, limit: int) -> str:
    """``text`` if it fits ``limit`` characters, else a stable hash of it."""
    if len(text) <= limit:
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:limit]


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_BLOCK_TAGS = {"p", "div", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre"}
_SKIP_TAGS = {"script", "style", "head", "title"}


class _TextExtractor(HTMLParser):
    """HTML to readable text; with ``markdown`` it keeps bold, italics, links and bullets in the
    Markdown subset Adaptive Cards render (TextBlock has no headings, so they become bold)."""

    def __init__(self, markdown: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.md = markdown
        self.out: list[str] = []
        self.skip = 0
        self.cells = 0
        self.href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n")
            self.cells = 0
            if self.md and tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.out.append("**")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag == "tr":
            self.out.append("\n")
            self.cells = 0
        elif tag in ("td", "th"):
            if self.cells:
                self.out.append(" | ")
            self.cells += 1
        elif self.md and tag in ("b", "strong"):
            self.out.append("**")
        elif self.md and tag in ("i", "em"):
            self.out.append("_")
        elif tag == "a":
            self.href.append(dict(attrs).get("href"))
            if self.md and self.href[-1]:
                self.out.append("[")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            if self.md and tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.out.append("**")
            self.out.append("\n")
        elif self.md and tag in ("b", "strong"):
            self.out.append("**")
        elif self.md and tag in ("i", "em"):
            self.out.append("_")
        elif tag == "a" and self.href:
            href = self.href.pop()
            if href and self.md:
                self.out.append(f"]({href})")
            elif href:
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(text: str, markdown: bool = False) -> str:
    """Strip tags (keeping line structure); plain text passes through unchanged in substance."""
    parser = _TextExtractor(markdown)
    parser.feed(text)
    parser.close()
    lines = [line.rstrip() for line in "".join(parser.out).split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


class PendingRequests(Generic[R]):
    """Partly delivered requests (multi-part Slack messages, use-mx domains), kept between the
    runner's attempts at the same message so a retry resumes instead of repeating what the
    peer already accepted. In memory and bounded: after a restart or eviction the message is
    rebuilt and sent whole (at-least-once)."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._items: OrderedDict[str, R] = OrderedDict()

    def pop(self, key: str) -> R | None:
        return self._items.pop(key, None)

    def keep(self, key: str, request: R) -> None:
        self._items[key] = request
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


async def deliver_resumable(
    pending: PendingRequests[R], message: ActionMessage, build: Callable[[ActionMessage], R],
    send: Callable[[R], Awaitable[None]],
) -> None:
    """Send the pending request for ``message`` (or a new one); keep it if a retry may follow."""
    key = message.idempotency_key
    request = pending.pop(key)
    if request is None:
        request = build(message)
    try:
        await send(request)
    except RetryableActionError:
        pending.keep(key, request)
        raise
