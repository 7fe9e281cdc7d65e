"""The rule for a template's ``url:``: https only (http only to a loopback host), with an optional
``#sha256=<hex>`` pin. The config loader checks it; ``app.routing.policy.templates`` fetches by it."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit


_PIN = re.compile(r"^sha256=([0-9a-fA-F]{64})$")


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_scheme(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.hostname) and (
        parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname))
    )


def check_template_url(url: str) -> tuple[str, str | None]:
    """``(URL to fetch, expected SHA-256 hex or None)`` of a template ``url``; ``ValueError``
    for a URL that is not https (http only to a loopback host) or a bad ``#sha256=`` pin."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc}): {url!r}") from None
    if not allowed_scheme(url):
        raise ValueError(
            f"must be an https:// URL (http:// only for localhost/127.0.0.1/::1), got {url!r}"
        )
    pin = None
    if parts.fragment:
        m = _PIN.match(parts.fragment)
        if not m:
            raise ValueError(f"the only fragment allowed is '#sha256=<64 hex digits>', got {url!r}")
        pin = m.group(1).lower()
    return urlunsplit(parts._replace(fragment="")), pin
