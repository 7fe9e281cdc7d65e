"""Time fidelity: when an event happened, as opposed to when Kafka received it.

Every timeline row keeps both. ``event_time_ns`` reads the time the *sensor* stamped on the
event; Kafka's timestamp (the bridge's produce time) is the fallback. All times are integer
nanoseconds since the epoch, because Tracee and Falco stamp nanoseconds and two syscalls a few
hundred nanoseconds apart must not collapse to the same float.

    source          field(s)                                     unit
    Tracee finding  Context.timestamp                            ns int
    Tracee event    timestamp (v0.20+ top level)                 ns int
    Falco           time (RFC 3339, up to ns), output_fields.evt.time
    Trivy           CreatedAt (RFC 3339)
    trivy-operator  report.updateTimestamp, metadata.creationTimestamp
    Aqua scan       scan_started {seconds, nanos}
    Aqua incident   create_time (s), time
    Aqua insight    resource.last_scanned
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from app.errors import HeraldError

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?\s*(Z|z|[+-]\d{2}:?\d{2})?$",
    re.ASCII,  # ASCII digits only, as Go's time.Parse: "٢٠٢٥-..." is not a time
)
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$", re.ASCII)
_REL_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}

# Plausible sensor clocks: 2000-01-01 .. 2200-01-01. A value outside is a unit mistake or a
# zero ("create_time": 0 in Aqua's test incident), and Kafka's time is the better answer.
_MIN_NS = 946684800 * 10**9
_MAX_NS = 7258118400 * 10**9


def parse_rfc3339_ns(text: str) -> int | None:
    """Nanoseconds from an RFC 3339 time keeping all 9 fractional digits (datetime keeps 6)."""
    m = _RFC3339.match(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    try:
        base = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError:
        return None
    offset_s = 0
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset_s = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    seconds = int(base.timestamp()) - offset_s
    return seconds * 10**9 + int((frac or "0").ljust(9, "0"))


def format_ns(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds: ``2025-11-24T09:21:24.051847156Z``."""
    seconds, frac = divmod(ns, 10**9)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def _plausible(ns: int | None) -> int | None:
    return ns if ns is not None and _MIN_NS <= ns <= _MAX_NS else None


def _number_ns(value: Any) -> int | None:
    """An epoch number of unknown unit (s, ms, us or ns), judged by its magnitude."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    for scale in (10**9, 10**6, 10**3, 1):
        ns = int(value * scale)
        if _MIN_NS <= ns <= _MAX_NS:
            return ns
    return None


def _text_ns(value: Any) -> int | None:
    return _plausible(parse_rfc3339_ns(value)) if isinstance(value, str) else None


def _get(event: dict[str, Any], *path: str) -> Any:
    node: Any = event
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def event_time_ns(event: dict[str, Any]) -> tuple[int | None, str]:
    """(nanoseconds, field it came from) or (None, "") when the event carries no usable time."""
    ctx = event.get("Context")
    if isinstance(ctx, dict):
        ns = _number_ns(ctx.get("timestamp"))
        if ns is not None:
            return ns, "Context.timestamp"
    if "eventName" in event or "processName" in event:  # a Tracee event (not a finding)
        ns = _number_ns(event.get("timestamp"))
        if ns is not None:
            return ns, "timestamp"
    if "rule" in event and "priority" in event:  # Falco
        ns = _text_ns(event.get("time"))
        if ns is not None:
            return ns, "time"
        ns = _number_ns(_get(event, "output_fields", "evt.time"))
        if ns is not None:
            return ns, "output_fields.evt.time"
    candidates: tuple[tuple[tuple[str, ...], str], ...] = (
        (("CreatedAt",), "text"),
        (("report", "updateTimestamp"), "text"),
        (("metadata", "creationTimestamp"), "text"),
        (("create_time",), "number"),
        (("time",), "any"),
        (("resource", "last_scanned"), "text"),
        (("timestamp",), "any"),
    )
    started = event.get("scan_started")
    if isinstance(started, dict):
        seconds = started.get("seconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            nanos = started.get("nanos")
            ns = _plausible(seconds * 10**9 + (nanos if isinstance(nanos, int) else 0))
            if ns is not None:
                return ns, "scan_started"
    for path, kind in candidates:
        value = _get(event, *path)
        ns = _text_ns(value) if kind == "text" else _number_ns(value) if kind == "number" else (
            _text_ns(value) if isinstance(value, str) else _number_ns(value)
        )
        if ns is not None:
            return ns, ".".join(path)
    return None, ""


def parse_when(value: str, what: str, now_ns: int | None = None) -> int:
    """``--since``/``--until``: a relative age (``2h``, ``30m``, ``7d``), RFC 3339, or ``now``.
    Returns epoch nanoseconds; raises HeraldError naming the option and value."""
    now = time.time_ns() if now_ns is None else now_ns
    text = value.strip()
    if text.lower() == "now":
        return now
    m = _RELATIVE.match(text.lower())
    if m:
        return now - int(float(m.group(1)) * _REL_UNIT_NS[m.group(2)])
    ns = parse_rfc3339_ns(text)
    if ns is None:
        raise HeraldError(
            f"{what}: expected a relative age such as '2h', '30m', '7d' or an RFC 3339 time such as "
            f"'2025-11-24T09:00:00Z', got {value!r}"
        )
    return ns
