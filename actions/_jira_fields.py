"""Jira create-meta and field values: pure functions used by ``actions.jira``.

Jira describes the create screen of a project and issue type ("create-meta") in two shapes:
- Jira Server/DC >= 8.4 (and the only one left in 9+): ``GET issue/createmeta/{project}/issuetypes``
  then ``.../issuetypes/{id}``, paged ``values`` of ``{fieldId, name, schema, allowedValues}``;
- older servers and Cloud: ``GET issue/createmeta?projectKeys=..&expand=projects.issuetypes.fields``
  with ``fields`` as a map from field id to ``{name, schema, allowedValues}``.
Both become a list of ``FieldMeta``.

``unknowns`` values are converted by the field's schema type as Postee v2 does, and names may
carry the suffixes its documentation promises (``-numeric-field``, ``-multiple-value``,
``-multiple-line-text-field``, ``-date-time-picker``, ``-field-url``; never implemented in
Postee v2): the suffix is stripped to find the field and chooses the conversion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from app.errors import PermanentActionError

SPRINT_SCHEMA = "com.pyxis.greenhopper.jira:gh-sprint"
SUFFIXES = (
    "-numeric-field",
    "-multiple-value",
    "-multiple-line-text-field",
    "-date-time-picker",
    "-field-url",
)

# Looks a user up by name or email; returns the JSON Jira expects for the user, or None.
UserLookup = Callable[[str], dict[str, str] | None]


@dataclass(frozen=True, slots=True)
class FieldMeta:
    id: str
    name: str
    type: str = ""
    items: str = ""
    custom: str = ""
    allowed: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_raw(cls, field_id: str, raw: dict[str, Any]) -> FieldMeta:
        schema = raw.get("schema") or {}
        allowed = raw.get("allowedValues") or ()
        return cls(
            id=field_id,
            name=str(raw.get("name", field_id)),
            type=str(schema.get("type", "")),
            items=str(schema.get("items", "")),
            custom=str(schema.get("custom", "")),
            allowed=tuple(a for a in allowed if isinstance(a, dict)),
        )


def fields_from_paged(values: Iterable[dict[str, Any]]) -> list[FieldMeta]:
    """Fields from the Jira 9+ ``createmeta/{project}/issuetypes/{id}`` pages."""
    return [FieldMeta.from_raw(str(v.get("fieldId") or v.get("key") or ""), v) for v in values]


def fields_from_legacy(issuetype: dict[str, Any]) -> list[FieldMeta]:
    """Fields of one issue type from the old ``createmeta?expand=projects.issuetypes.fields``."""
    fields = issuetype.get("fields") or {}
    return [FieldMeta.from_raw(str(fid), raw) for fid, raw in fields.items() if isinstance(raw, dict)]


def pick_issuetype(types: list[dict[str, Any]], wanted: str, project: str) -> dict[str, Any]:
    """The configured type (it must exist), else ``Task``, else the first one (as Postee)."""
    if not types:
        raise PermanentActionError(f"jira: project {project} has no issue types you can create")
    names = [str(t.get("name", "")) for t in types]
    if wanted:
        for t in types:
            if t.get("name") == wanted:
                return t
        for t in types:
            if str(t.get("name", "")).lower() == wanted.lower():
                return t
        raise PermanentActionError(
            f"jira: project {project} has no issue type {wanted!r} (issuetype); available: {', '.join(names)}"
        )
    for t in types:
        if t.get("name") == "Task":
            return t
    return types[0]


def pick_priority(names: list[str], wanted: str) -> str | None:
    """The configured priority (it must exist), else ``High``, else the first one (as Postee)."""
    if wanted:
        if wanted in names:
            return wanted
        folded = {n.lower(): n for n in names}
        if wanted.lower() in folded:
            return folded[wanted.lower()]
        raise PermanentActionError(
            f"jira: priority {wanted!r} (priority) does not exist; available: {', '.join(names) or 'none'}"
        )
    if "High" in names:
        return "High"
    return names[0] if names else None


def pick_sprint(sprints: list[dict[str, Any]], wanted: str) -> dict[str, Any] | None:
    """The sprint named ``wanted``, else the newest active one.

    Postee stored the *index* of the last active sprint as its id when several were active.
    """
    if wanted:
        for s in sprints:
            if s.get("name") == wanted:
                return s
    active = [s for s in sprints if str(s.get("state", "")).lower() == "active"]
    if not active:
        return None
    # ISO-8601 start dates sort as text; the id breaks ties and covers sprints without a date.
    return max(active, key=lambda s: (str(s.get("startDate") or ""), int(s.get("id") or 0)))


def resolve(fields: list[FieldMeta], key: str) -> tuple[FieldMeta, str]:
    """Find the field an ``unknowns`` key names; returns it and the suffix in use ("" if none).

    The exact display name wins, then the field id, then a case-insensitive name, and only then
    is a suffix stripped, so a field really called ``x-field-url`` is still found.
    """
    found = _by_name(fields, key)
    if found is not None:
        return found, ""
    for suffix in SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            found = _by_name(fields, key[: -len(suffix)])
            if found is not None:
                return found, suffix
    on_screen = ", ".join(sorted(f.name for f in fields))
    raise PermanentActionError(
        f"jira: field {key!r} (unknowns) is not on the create screen of this project and issue type; "
        f"fields there: {on_screen}"
    )


def _by_name(fields: list[FieldMeta], name: str) -> FieldMeta | None:
    for f in fields:
        if f.name == name:
            return f
    for f in fields:
        if f.id == name:
            return f
    matches = [f for f in fields if f.name.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def convert(meta: FieldMeta, value: str, suffix: str, project_id: str, lookup_user: UserLookup) -> Any:
    """The JSON value for ``meta``; ``None`` means "leave the field out" (unknown user)."""
    if suffix == "-numeric-field":
        return _number(meta, value)
    if suffix == "-multiple-value":
        return [_item(meta.items, v) for v in _split(value)]
    if suffix == "-multiple-line-text-field":
        return value
    if suffix == "-date-time-picker":
        return _datetime(meta, value)
    if suffix == "-field-url":
        return _url(meta, value)
    return _by_schema(meta, value, project_id, lookup_user)


def _by_schema(meta: FieldMeta, value: str, project_id: str, lookup_user: UserLookup) -> Any:
    kind = meta.type.lower()
    if meta.custom == SPRINT_SCHEMA:
        return _integer(meta, value)
    if kind == "array":
        if meta.items == "option":
            return [{"value": v} for v in _split(value)]
        if meta.items in ("component", "version"):
            return [{"name": value}]
        return [value]
    if kind == "number":
        return _number(meta, value)
    if kind in ("string", "date", "datetime", "any"):
        return value
    if kind == "project":
        return {"id": project_id}
    if kind in ("priority", "issuetype"):
        return {"name": value}
    if kind == "option":
        return {"value": value}
    if kind == "user":
        return lookup_user(value)
    raise PermanentActionError(
        f"jira: field {meta.name!r} (unknowns) has type {meta.type or 'unknown'!r}, which cannot be "
        "filled from a string"
    )


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _item(items: str, value: str) -> Any:
    if items in ("component", "version"):
        return {"name": value}
    if items == "string":
        return value
    return {"value": value}


def _integer(meta: FieldMeta, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise PermanentActionError(f"jira: field {meta.name!r} needs an integer, got {value!r}") from None


def _number(meta: FieldMeta, value: str) -> int | float:
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise PermanentActionError(f"jira: field {meta.name!r} needs a number, got {value!r}") from None
    if not math.isfinite(number):
        raise PermanentActionError(f"jira: field {meta.name!r} needs a finite number, got {value!r}")
    return number


def _datetime(meta: FieldMeta, value: str) -> str:
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise PermanentActionError(
            f"jira: field {meta.name!r} needs an ISO-8601 date-time such as "
            f"2014-04-11T12:14:26.880+0400, got {value!r}"
        ) from None
    if meta.type == "date":
        return when.strftime("%Y-%m-%d")
    if when.tzinfo is None:  # Jira needs an offset; a bare time is taken as UTC
        when = when.replace(tzinfo=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}" + when.strftime("%z")


def _url(meta: FieldMeta, value: str) -> str:
    parsed = urlparse(value.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise PermanentActionError(f"jira: field {meta.name!r} needs an http(s) URL, got {value!r}")
    return value.strip()
