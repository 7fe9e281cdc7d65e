"""The README's actions reference, generated from the action config models.

``actions_table_markdown()`` imports every available action and writes one Markdown table per
type (key, required, default, description) from its pydantic fields, after one table of the keys
every action has. Keys are the YAML spellings (aliases); secrets are marked. Run
``python -m app.devtools.docs_gen`` to print it.
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic.fields import FieldInfo

import actions
from actions.base import ActionConfig
from app.config.model import Secret

# actions/base.py declares these without a description; the table should still explain them.
_COMMON_FALLBACK = {
    "name": "Unique name of the action; routes refer to it.",
    "type": "Action type (case-insensitive), e.g. jira, serviceNow, webhook.",
    "enable": "Only enabled actions are built; routes skip disabled ones.",
    "runs-on": "Runner name (Postee controller/runner mode).",
}


def _key(name: str, info: FieldInfo) -> str:
    return info.alias or name.replace("_", "-")


def _is_secret(annotation: Any) -> bool:
    if annotation is Secret:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_secret(arg) for arg in get_args(annotation))
    return False


def _required(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "herald_required" in extra:
        return str(extra["herald_required"])
    return "yes" if info.is_required() else "no"


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return ""
    value = info.get_default(call_default_factory=True)
    if value is None or isinstance(value, Secret) or value == "":
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, (list, dict)) and not value:
        text = "[]" if isinstance(value, list) else "{}"
    else:
        text = str(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    # `<%application_scope_owner%>` or <PROJECT-KEY> would be read as HTML tags; inside code
    # spans (between backticks) entities would show literally, so those stay as they are.
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|").replace("\n", " ")


def _row(name: str, info: FieldInfo) -> str:
    key = _key(name, info)
    common = ActionConfig.model_fields.get(name)
    description = info.description or (common.description if common else None) or _COMMON_FALLBACK.get(key, "")
    if _is_secret(info.annotation):
        # a `<key>-file` holds a path to the secret, not the secret itself
        marker = "**Secret file.**" if key.endswith("-file") else "**Secret.**"
        description = f"{marker} {description}"
    cells = [f"`{key}`", _required(info), _default(info), description]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(fields: dict[str, FieldInfo]) -> list[str]:
    lines = ["| key | required | default | description |", "|---|---|---|---|"]
    lines.extend(_row(name, info) for name, info in fields.items())
    return lines


def _own_fields(model: type[ActionConfig]) -> dict[str, FieldInfo]:
    """Fields an action adds, plus common ones it redefines (e.g. a different default)."""
    common = ActionConfig.model_fields
    out: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        base = common.get(name)
        if base is None or repr(base) != repr(info):
            out[name] = info
    return out


def actions_table_markdown() -> str:
    """Markdown for every available action type, from the config models."""
    lines = ["## Action keys", "", "### Keys every action has", ""]
    lines.extend(_table(dict(ActionConfig.model_fields)))
    for type_name in actions.available():
        cls = actions.action_class(type_name)
        model: type[ActionConfig] = cls.config_model
        lines.extend(["", f"### `{type_name}`", ""])
        if model.__doc__ and model.__doc__ is not ActionConfig.__doc__:
            lines.extend([" ".join(model.__doc__.split()), ""])
        own = _own_fields(model)
        if own:
            lines.extend(_table(own))
        else:
            lines.append("No keys beyond the common ones.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(actions_table_markdown(), end="")
