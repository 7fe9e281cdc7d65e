"""``event.input`` / ``event.raw`` placeholders, shared by the http, kubernetes and docker actions.

Postee's syntax is ``event.input.<gjson path>``, looked up in the rendered description. Herald
keeps Postee's results for Postee's forms and lifts its limits:

- **Where**: anywhere in a text, several per line, mid-line (Postee: one per line, at its end).
- **Token boundary**: a placeholder is ``event.input`` or ``event.raw``, optionally followed by
  ``.<path>``. The path is made of ``[A-Za-z0-9_.#-]`` and backslash escapes (``\\.`` is a literal
  dot inside a key, as in gjson: ``metadata.labels.trivy-operator\\.resource\\.name``). It ends
  at whitespace or at any other character, so ``app=event.input.image:event.input.tag`` holds
  two placeholders. A trailing unescaped dot is not part of the path (``... event.input.id.``
  ends a sentence).
- **Paths** (a gjson subset): dotted keys; a number indexes an array (``a.0.b``); ``#`` is an
  array's length (``a.#``) or, mid-path, maps the rest over the array (``a.#.b`` gives a JSON
  array of every ``b``). Wildcards and queries are not supported.
- **Values** are rendered as gjson's ``String()``: strings raw, integers as written, other
  numbers in Go's ``'f'`` format, ``true``/``false``, ``null`` and missing as ``""``, objects
  and arrays as compact JSON.
- ``event.input`` (Postee) resolves against the description when it is JSON. When it is not,
  the ``event.input`` text is replaced by the raw description and any ``.path`` stays literal
  (Postee's result). Bare ``event.input`` with a JSON description gives ``""`` (Postee's result).
- ``event.raw`` (Herald) resolves against the original event; bare ``event.raw`` gives the whole
  event as compact JSON.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

from app.messages import ActionMessage

# The look-behind keeps ``myevent.input`` from matching; the path group takes path characters
# and backslash escapes; the look-ahead makes ``event.inputs`` not a placeholder.
PLACEHOLDER = re.compile(
    r"(?<![A-Za-z0-9_])event\.(?P<root>input|raw)"
    r"(?:\.(?P<path>(?:[A-Za-z0-9_.#-]|\\\S)+))?"
    r"(?![A-Za-z0-9_#-])"
)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class NonJson(Enum):
    """What ``event.input.<path>`` means when the description is not JSON."""

    POSTEE = "postee"  # ``event.input`` -> raw description, ``.path`` kept literally
    WHOLE = "whole"  # the whole placeholder -> raw description (Postee's kubernetes values)
    EMPTY = "empty"  # unresolved: the placeholder gives "" (selectors and names must not guess)


class EventView:
    """The two documents placeholders look into, parsed once per message."""

    __slots__ = ("description", "event", "input_doc")

    def __init__(self, description: str, event: dict[str, Any] | None = None) -> None:
        self.description = description
        self.event = event
        try:
            self.input_doc: Any = orjson.loads(description)
        except orjson.JSONDecodeError:
            self.input_doc = MISSING  # the description is not JSON

    @classmethod
    def of(cls, message: ActionMessage) -> EventView:
        return cls(message.content.description, message.event)

    @property
    def input_is_json(self) -> bool:
        return self.input_doc is not MISSING


def split_path(path: str) -> list[str]:
    """``a\\.b.c`` -> ``["a.b", "c"]``: split on unescaped dots, then drop the escapes."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path):
            cur.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def lookup(doc: Any, segments: list[str]) -> Any:
    """Follow ``segments`` into ``doc``; ``MISSING`` when the path leads nowhere."""
    cur = doc
    for i, seg in enumerate(segments):
        if isinstance(cur, dict):
            cur = cur.get(seg, MISSING)
        elif isinstance(cur, list):
            if seg == "#":
                rest = segments[i + 1 :]
                if not rest:
                    return len(cur)
                found = [lookup(item, rest) for item in cur]
                return [v for v in found if v is not MISSING]
            if not seg.isdigit() or int(seg) >= len(cur):
                return MISSING
            cur = cur[int(seg)]
        else:
            return MISSING
        if cur is MISSING:
            return MISSING
    return cur


def to_text(value: Any) -> str:
    """gjson's ``Result.String()`` for a decoded JSON value."""
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return orjson.dumps(value).decode()


def _trim_trailing_dots(path: str) -> tuple[str, str]:
    """Split unescaped trailing dots off a path: they end the sentence, not the path."""
    end = len(path)
    while end > 0 and path[end - 1] == "." and (end < 2 or path[end - 2] != "\\"):
        end -= 1
    return path[:end], path[end:]


@dataclass(slots=True)
class Substitution:
    text: str
    empty: list[str] = field(default_factory=list)  # placeholders that resolved to ""
    count: int = 0


def resolve(root: str, path: str | None, view: EventView, non_json: NonJson) -> tuple[str, bool]:
    """One placeholder's text; the flag says it resolved to something (not just "")."""
    if root == "raw":
        if view.event is None:
            return "", False
        value = view.event if path is None else lookup(view.event, split_path(path))
        text = to_text(value)
        return text, text != ""
    if not view.input_is_json:
        if non_json is NonJson.EMPTY:
            return "", False
        if non_json is NonJson.WHOLE or path is None:
            return view.description, view.description != ""
        return f"{view.description}.{path}", True
    if path is None:
        return "", False
    text = to_text(lookup(view.input_doc, split_path(path)))
    return text, text != ""


def substitute(
    text: str,
    view: EventView,
    *,
    non_json: NonJson = NonJson.POSTEE,
    transform: Callable[[str], str] | None = None,
) -> Substitution:
    """Replace every placeholder in ``text``; ``transform`` post-processes each resolved value."""
    result = Substitution(text)

    def _one(match: re.Match[str]) -> str:
        path, trailing = _trim_trailing_dots(match.group("path") or "")
        source = match.group(0)[: len(match.group(0)) - len(trailing)]
        value, ok = resolve(match.group("root"), path or None, view, non_json)
        if transform is not None and ok:
            value = transform(value)
        result.count += 1
        if not ok or value == "":
            result.empty.append(source)
        return value + trailing

    result.text = PLACEHOLDER.sub(_one, text)
    return result


def has_placeholder(text: str) -> bool:
    return PLACEHOLDER.search(text) is not None


# A JSON string literal of a template (placeholders hold no quote, so each one lies wholly inside
# or wholly outside such a literal).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json_segments(text: str) -> list[tuple[str, bool]]:
    """``text`` cut into (segment, inside a JSON string literal) pieces, in order."""
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for m in _JSON_STRING.finditer(text):
        if m.start() > pos:
            pieces.append((text[pos : m.start()], False))
        pieces.append((m.group(0), True))
        pos = m.end()
    if pos < len(text):
        pieces.append((text[pos:], False))
    return pieces


def looks_like_json(text: str) -> bool:
    """Whether ``text`` is a JSON document once its placeholders are filled with plain values
    (``""`` inside string literals, ``0`` elsewhere)."""
    probe = "".join(
        PLACEHOLDER.sub("" if quoted else "0", seg) for seg, quoted in _json_segments(text)
    )
    try:
        orjson.loads(probe)
    except orjson.JSONDecodeError:
        return False
    return True


def _json_inner(value: str) -> str:
    """``value`` escaped for the inside of a JSON string literal."""
    return orjson.dumps(value).decode()[1:-1]


def _json_value(value: str) -> str:
    """``value`` where a JSON value is expected: as is when it is exactly one JSON value (a number,
    ``true``, an object the path selected...), else as a JSON string, so it cannot add keys."""
    if value == "":
        return "null"
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return orjson.dumps(value).decode()
    return value


def substitute_json(text: str, view: EventView, *, non_json: NonJson = NonJson.POSTEE) -> Substitution:
    """``substitute`` for a JSON template: a value inside a string literal is JSON-escaped, a
    value in a value position is kept only when it is a single JSON value (else quoted; missing
    gives ``null``), so an event value cannot inject keys or break the document."""
    result = Substitution("")
    parts = []
    for seg, quoted in _json_segments(text):
        sub = substitute(seg, view, non_json=non_json, transform=_json_inner if quoted else None)
        if not quoted:
            sub.text = _substitute_values(seg, view, non_json)
        parts.append(sub.text)
        result.count += sub.count
        result.empty.extend(sub.empty)
    result.text = "".join(parts)
    return result


def _substitute_values(text: str, view: EventView, non_json: NonJson) -> str:
    def _one(match: re.Match[str]) -> str:
        path, trailing = _trim_trailing_dots(match.group("path") or "")
        value, ok = resolve(match.group("root"), path or None, view, non_json)
        return _json_value(value if ok else "") + trailing

    return PLACEHOLDER.sub(_one, text)
