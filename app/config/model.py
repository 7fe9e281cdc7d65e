"""Typed models for Postee-format config: the shared machinery.

Postee decodes YAML with Go's ``encoding/json`` rules; Herald keeps what users rely on and
is strict where Postee silently failed:

- unknown keys are kept and *warned about* (Postee configs carry v1 leftovers);
- YAML scalars bound to string fields become strings (``timeout: 10`` -> ``"10"``);
- any other type mismatch is an error naming the key path and the value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from app import redact
from app.errors import ConfigError


def yaml_kind(value: Any) -> str:
    """What a YAML value is, in the words of an error message: ``a mapping``, ``a list``..."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return type(value).__name__


def _to_str(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {yaml_kind(value)}")


def _to_str_list(value: Any) -> Any:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {yaml_kind(value)}")  # noqa: TRY004 - pydantic wants ValueError
    return value


PStr = Annotated[str, BeforeValidator(_to_str)]
PStrList = Annotated[list[PStr], BeforeValidator(_to_str_list)]


class Secret:
    """A secret value: redacted in repr, str and every log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        redact.register(value)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _to_secret(value: Any) -> Secret:
    """Postee expands a leading ``$NAME`` from the environment (empty when unset)."""
    if isinstance(value, Secret):
        return value
    text = _to_str(value)
    if text.startswith("$") and len(text) > 1:
        text = os.environ.get(text[1:].strip("{}"), "")
    return Secret(text)


SecretStr = Annotated[
    Secret, BeforeValidator(_to_secret), WithJsonSchema({"type": "string", "format": "password", "writeOnly": True})
]


def read_secret_file(path: str, key: str) -> Secret:
    try:
        return Secret(Path(path).read_text().strip())
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path!r}: {exc.strerror}", key, path) from None


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "ns": 1e-9, "us": 1e-6, "µs": 1e-6}


def parse_duration(value: Any, path: str) -> float:
    """Seconds from ``10``, ``"600s"``, ``"2 d"``, ``"1m"`` (Postee) or Go durations (``"1m30s"``)."""
    if isinstance(value, bool):
        raise ConfigError(f"expected a duration such as '30s', got {value!r}", path, value)
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).replace(" ", "").lower()
    m = _DURATION.match(text)
    if m:
        return float(m.group(1)) * _UNIT[m.group(2) or "s"]
    parts = _GO_DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum(float(n) * _UNIT[u] for n, u in parts)
    raise ConfigError(f"expected a duration such as '30s', '10m', '2h', got {value!r}", path, value)


class PosteeModel(BaseModel):
    """Base of every config model: hyphenated keys, unknown keys kept for a warning."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        alias_generator=lambda name: name.replace("_", "-"),
        arbitrary_types_allowed=True,
        frozen=False,
    )

    def unknown_keys(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


M = TypeVar("M", bound=PosteeModel)

_SECRET_KEYS = {"password", "token", "pagerduty-auth-token", "pagerduty-routing-key",
                "dependency-track-api-key", "api-key", "bearer-tokens", "hmac-keys"}


def _loc_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "list[", "str", "int")):
            path += f".{part}" if path else part
    return path


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    cur = data
    for part in loc:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _masked(value: Any) -> Any:
    """``value`` with the values of secret-looking keys of mappings (at any depth) as ``***``."""
    if isinstance(value, dict):
        return {k: "***" if isinstance(k, str) and (k in _SECRET_KEYS or "password" in k.lower()
                                                    or "secret" in k.lower()) else _masked(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _describe(model: type[PosteeModel], data: dict[str, Any], path: str, err: Any) -> str:
    """One validation error as ``<key path>: <message> (value: <value, secrets masked>)``."""
    secret_fields = {(f.alias or n) for n, f in model.model_fields.items() if "Secret" in repr(f.annotation)}
    loc = tuple(err["loc"])
    value = _value_at(data, loc)
    secret = loc and (loc[-1] in _SECRET_KEYS or loc[-1] in secret_fields
                      or (isinstance(loc[-1], str) and ("password" in loc[-1] or "secret" in loc[-1])))
    shown = "***" if secret else repr(_masked(value))
    msg = err["msg"].removeprefix("Value error, ")
    return f"{_loc_path(path, loc)}: {msg} (value: {shown})"


def validate_model(model: type[M], data: Any, path: str) -> tuple[M, list[str]]:
    """Validate ``data`` into ``model``; returns the instance and warnings for unknown keys.

    Raises ``ConfigError`` listing every problem with its key path and value.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {yaml_kind(data)}", path, data)
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(model, data, path, err) for err in exc.errors())) from None
    warnings = [f"{path}.{k}: unknown key, ignored" for k in obj.unknown_keys()]
    return obj, warnings


# what a value of the wrong YAML type gives: pydantic's own type errors, and the messages of
# Herald's coercing validators (_to_str, _to_str_list, actions/_config.py's file paths)
_TYPE_MESSAGES = re.compile(r"^(?:Value error, )?expected (?:a string|a list|a mapping|a file path|true or false),")


def _is_type_error(err: Any) -> bool:
    kind = str(err["type"])
    if kind == "missing":
        return False
    return kind.endswith(("_type", "_parsing")) or bool(_TYPE_MESSAGES.match(str(err["msg"])))


def type_problems(model: type[PosteeModel], data: Any, path: str) -> tuple[list[str], list[str]]:
    """The wrong-type problems of ``data`` for ``model`` and warnings for its unknown keys, without
    the checks that only matter to something that runs (required keys, URL and address formats,
    cross-key rules): how a disabled action is checked. Postee decoded every action, enabled or
    not, into typed fields, so a value of the wrong type (a mapping or a list where a string
    belongs: an action indented into another's key) was an error there too."""
    if not isinstance(data, dict):
        return [f"{path}: expected a mapping, got {yaml_kind(data)}"], []
    fields = {f.alias or n for n, f in model.model_fields.items()} | set(model.model_fields)
    warnings = [f"{path}.{k}: unknown key, ignored" for k in sorted(data) if k not in fields]
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [_describe(model, data, path, err) for err in exc.errors() if _is_type_error(err)], warnings
    return [], warnings


class ActionConfig(PosteeModel):
    """Keys every action has. Herald adds the retry policy keys (all optional)."""

    name: PStr = Field(..., description="Unique action name, used by routes, topics and logs.")
    type: PStr = Field(..., description="Action type (case-insensitive).")
    enable: StrictBool = Field(False, description="Only enabled actions exist (Postee's default: false).")
    runs_on: PStr = Field("", description="Postee runner name; accepted and ignored (every worker runs every action).")
    retry_max_attempts: StrictInt = Field(5, ge=1, description="Attempts before dead-lettering.")
    retry_deadline: float = Field(
        300.0, description="Give up and dead-letter after this long (duration, e.g. '5m')."
    )
    retry_initial_backoff: float = Field(0.5, description="First backoff (duration).")
    retry_max_backoff: float = Field(30.0, description="Longest backoff between attempts.")
    concurrency: StrictInt = Field(
        8, ge=1, le=256, description="Messages of this action delivered in parallel per worker."
    )

    @field_validator("retry_deadline", "retry_initial_backoff", "retry_max_backoff", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value, "duration")
