"""The content a template produces for actions: Postee's content map (§3.5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app import gojson
from app.errors import TemplateError

# template property -> content key (Postee's mapping)
EXTRA_PROPERTIES = {
    "result_date": "date",
    "result_severity": "severity",
    "result_category": "category",
    "result_subcategory": "subcategory",
    "result_assigned_to": "assignedTo",
    "result_assigned_group": "assignedGroup",
    "result_summary": "summary",
}


@dataclass(slots=True)
class Content:
    title: str = ""
    description: str = ""
    url: str = ""
    date: str = ""
    severity: str = ""
    summary: str = ""
    category: str = ""
    subcategory: str = ""
    assignedTo: str = ""
    assignedGroup: str = ""
    owners: str = ""

    def to_dict(self) -> dict[str, str]:
        # every field is a str: no deep copy needed (dataclasses.asdict deep-copies each value,
        # ~80 us per action message)
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Content:
        return cls(**{k: str(v) for k, v in data.items() if k in cls.__dataclass_fields__})


_FIELDS = tuple(Content.__dataclass_fields__)


def _as_text(value: Any) -> str:
    """A non-string title/result becomes compact JSON exactly as Go's json.Marshal writes it."""
    return value if isinstance(value, str) else gojson.marshal(value)


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else gojson.format_float(value)
    return ""


def content_from_result(result: Any, source: str) -> Content:
    """Apply the template contract to the document a template evaluated to."""
    if not isinstance(result, dict):
        raise TemplateError("template did not evaluate to an object", source)
    for required in ("title", "result"):
        if required not in result:
            raise TemplateError(f"property {required} is not found", source)
    url = result.get("url", "")
    content = Content(
        title=_as_text(result["title"]),
        description=_as_text(result["result"]),
        url=url if isinstance(url, str) else "",
    )
    for prop, key in EXTRA_PROPERTIES.items():
        if prop in result:
            setattr(content, key, _scalar_text(result[prop]))
    return content
