"""The policy engine interface and the embedded engine (regorus).

Herald evaluates Rego through ``PolicyEngine`` only, so the embedded engine and an OPA server
are interchangeable. Rules for the embedded engine (gordon-to-regorus):

- an ``Engine`` is *unsendable*: it must be used only on the thread that created it, so engines
  are created where they are used (the worker's event-loop thread);
- Postee templates are Rego v0; ``v0=True`` turns that parser on;
- ``jsonformat`` (Postee's custom builtin) is registered on every engine.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson
import regorus

from app import gojson
from app.errors import PolicyError

_BACKTRACE = re.compile(r"\n*Stack backtrace:.*", re.DOTALL)
_DATA_PATH = re.compile(r"data(\.[A-Za-z_][A-Za-z0-9_]*)+")
_INPUT_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def clean_error(exc: BaseException) -> str:
    """regorus errors carry a Rust backtrace when RUST_BACKTRACE is set; keep the message."""
    return _BACKTRACE.sub("", str(exc)).strip()


def jsonformat(value: Any) -> str:
    """Postee's builtin: Go ``json.MarshalIndent(v, "", " ")`` (sorted keys, HTML-escaped)."""
    return gojson.marshal_indent(value, " ")


class _NeedsEngine(Exception):
    """Only the engine can tell what it makes of this value."""


def _extension_float(x: float) -> str:
    """A JSON float as jsonformat writes it on the embedded engine: regorus hands an integral
    float to a Python extension as an int, and refuses one outside int64 ("not an i64")."""
    if x.is_integer():
        if -(2**63) <= x < 2**63:
            return str(int(x))  # also -0.0 -> 0
        raise _NeedsEngine
    return gojson.format_float(x)  # ValueError for NaN/Inf, which JSON text cannot hold


def jsonformat_of_json(doc: Any) -> str | None:
    """What ``jsonformat(input)`` gives on the embedded engine for the input ``doc`` (a document
    orjson decoded from JSON text, as the router's events are), without the engine: no
    conversion of the input to Python and back. ``None`` when only the engine can tell (an
    integral float beyond int64, which regorus refuses or clamps; a value gojson's fast path
    declines); the caller then evaluates the template. tests/policy/test_jsonformat_native.py
    holds the two to the same bytes."""
    try:
        return gojson.marshal_indent_fast(doc, " ", _extension_float)
    except (_NeedsEngine, ValueError):
        return None


class PolicyEngine(Protocol):
    """What Herald needs from a Rego engine."""

    def add_module(self, path: str, source: str) -> str:
        """Compile a module; returns its package (``data.x.y``). Raises ``PolicyError``."""

    def add_data(self, data: dict[str, Any]) -> None:
        """Merge a JSON document into ``data``."""

    def set_input_json(self, text: str) -> None:
        """Set ``input`` from JSON text (the fastest path)."""

    def eval_path(self, path: str) -> Any:
        """Value of a document such as ``data.postee.allow``; ``None`` when undefined."""

    def packages(self) -> list[str]:
        """Packages compiled so far."""


class EmbeddedEngine:
    """regorus, in process."""

    kind = "embedded"

    def __init__(self, v0: bool = True) -> None:
        self._engine = regorus.Engine()
        self._engine.set_rego_v0(v0)
        self._engine.add_extension("jsonformat", 1, jsonformat)
        self._packages: list[str] = []
        self._doc_rules: dict[str, str | None] = {}  # eval_path's path -> rule holding its document

    def add_module(self, path: str, source: str) -> str:
        try:
            package = self._engine.add_policy(path, source)
        except RuntimeError as exc:
            raise PolicyError(clean_error(exc), path) from None
        self._packages.append(package)
        return str(package)

    def add_data(self, data: dict[str, Any]) -> None:
        self._engine.add_data_json(orjson.dumps(data).decode())

    def set_input_json(self, text: str) -> None:
        self._engine.set_input_json(text)

    def eval_path(self, path: str) -> Any:
        rule = self._doc_rules.get(path) if path in self._doc_rules else self._doc_rule(path)
        try:
            # as JSON: the Python conversion of eval_query fails on integral numbers beyond int64
            if rule is not None:
                values = orjson.loads(self._engine.eval_rule_as_json(rule))
                return values[0] if values else None
            result = orjson.loads(self._engine.eval_query_as_json(path))
        except RuntimeError as exc:
            raise PolicyError(clean_error(exc), path) from None
        rows = result.get("result") or []
        if not rows:
            return None
        exprs = rows[0].get("expressions") or []
        return exprs[0].get("value") if exprs else None

    def eval_path_with(self, path: str, input_key: str, value: Any) -> Any:
        """``eval_path`` with ``input.<input_key>`` replaced by ``value`` (Rego's ``with``): the
        document for the input ``{**input, input_key: value}`` without setting that input, so one
        ``set_input_json`` serves queries on the event and on the event with a key added."""
        if not _INPUT_KEY.fullmatch(input_key):
            raise PolicyError(f"not an input key: {input_key!r}", path)
        query = f"{path} with input.{input_key} as {orjson.dumps(value).decode()}"
        rule = self._doc_rules.get(query) if query in self._doc_rules else self._doc_rule(query, path)
        try:
            if rule is not None:
                values = orjson.loads(self._engine.eval_rule_as_json(rule))
                return values[0] if values else None
            result = orjson.loads(self._engine.eval_query_as_json(f"x := {query}"))
        except RuntimeError as exc:
            raise PolicyError(clean_error(exc), path) from None
        rows = result.get("result") or []
        return rows[0].get("bindings", {}).get("x") if rows else None

    def _doc_rule(self, query: str, path: str | None = None) -> str | None:
        """A rule whose value is ``[document at path]`` (``[]`` when undefined), added once per
        query (a path, or a path ``with`` an input key replaced).

        regorus parses and plans a query on every ``eval_query``, at ~1 us per module in the
        engine (~100 us per render in the template library); a rule is planned once.
        """
        rule: str | None = None
        if _DATA_PATH.fullmatch(path if path is not None else query):
            package = f"heraldeval.doc{len(self._doc_rules)}"
            try:
                self._engine.add_policy(f"{package}.rego", f"package {package}\n\nvalue := [x | x := {query}]\n")
                rule = f"data.{package}.value"
            except RuntimeError:
                rule = None  # evaluate this path as a query
        self._doc_rules[query] = rule
        return rule

    def eval_rule(self, path: str) -> Any:
        """Faster than ``eval_path`` for a single rule (no query parsing)."""
        try:
            return self._engine.eval_rule(path)
        except RuntimeError as exc:
            raise PolicyError(clean_error(exc), path) from None

    def packages(self) -> list[str]:
        return list(self._packages)


def opa_options(settings: Any) -> dict[str, Any]:
    """``OpaEngine``'s connection options from ``herald.opa-*`` (``app.config.settings.HeraldSettings``)."""
    return {"token": settings.opa_token.reveal(), "ca_file": settings.opa_ca_file,
            "cert_file": settings.opa_cert_file, "key_file": settings.opa_key_file,
            "verify": settings.opa_tls_verify}


def make_engine(kind: str = "embedded", opa_url: str = "", v0: bool = True, **opa: Any) -> PolicyEngine:
    """An engine of the configured kind: ``embedded`` (regorus) or ``opa`` (an OPA server).

    ``opa``: ``OpaEngine``'s connection options (``opa_options(settings)``); an OPA engine checks
    its access (token, TLS) before it is returned, raising ``ConfigError`` naming the setting."""
    if kind == "embedded":
        return EmbeddedEngine(v0=v0)
    if kind == "opa":
        from app.routing.policy.opa import OpaEngine

        engine = OpaEngine(opa_url, v0=v0, **opa)
        engine.check_access()
        return engine
    raise PolicyError(f"unknown engine {kind!r}; use 'embedded' or 'opa'", "herald.engine")
