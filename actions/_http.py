"""HTTP plumbing shared by HTTP-based actions: one request type, one client, one classifier.

Classification (Alertmanager's rule): 2xx ok; 408, 429 and 5xx retry (honouring
``Retry-After``); any other status is permanent; connection errors and timeouts retry.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from app.errors import PermanentActionError, RetryableActionError
from app.redact import redact

_BODY_IN_ERROR = 500


@dataclass(slots=True)
class HttpRequest:
    method: str
    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    timeout: float = 30.0
    verify_tls: bool = True

    def json_body(self) -> Any:
        import orjson

        return orjson.loads(self.body) if self.body else None


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.body)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(peer: str, resp: HttpResponse, ok: tuple[int, ...] | None = None) -> None:
    """Return if ``resp`` is a success, else raise the right ``ActionError``."""
    if (ok is not None and resp.status in ok) or (ok is None and 200 <= resp.status < 300):
        return
    text = redact(resp.body[:_BODY_IN_ERROR].decode("utf-8", "replace"))
    message = f"{peer} answered HTTP {resp.status}: {text}".rstrip(": ")
    if resp.status in (408, 429) or resp.status >= 500:
        raise RetryableActionError(
            message, status=resp.status, retry_after=parse_retry_after(resp.headers.get("Retry-After"))
        )
    raise PermanentActionError(message, status=resp.status)


class HttpClient:
    """One aiohttp session per action, opened on the worker's loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), auto_decompress=True
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, peer: str, req: HttpRequest) -> HttpResponse:
        """Perform ``req``; connection problems become ``RetryableActionError``."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            async with self._session.request(
                req.method,
                req.url,
                data=req.body,
                headers=req.headers or None,  # repeated names are kept, as in a CIMultiDict
                timeout=aiohttp.ClientTimeout(total=req.timeout),
                ssl=True if req.verify_tls else self._insecure,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                return HttpResponse(resp.status, dict(resp.headers), body)
        except TimeoutError:
            raise RetryableActionError(f"{peer}: no answer within {req.timeout:g}s") from None
        except aiohttp.InvalidURL as exc:
            raise PermanentActionError(f"{peer}: invalid URL {redact(str(exc))}") from None
        except aiohttp.ClientSSLError as exc:
            raise RetryableActionError(f"{peer}: TLS error: {redact(str(exc))}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableActionError(
                f"{peer}: connection failed: {redact(str(exc)) or type(exc).__name__}"
            ) from None

    async def send(self, peer: str, req: HttpRequest, ok: tuple[int, ...] | None = None) -> HttpResponse:
        resp = await self.request(peer, req)
        classify(peer, resp, ok)
        return resp
