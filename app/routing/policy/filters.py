"""Route filters (Postee §3.2), compiled once at start and evaluated with one engine call per event.

Each route becomes its own package under ``herald.routes``:
- ``input``: wrapped as Postee does (``default allow = false`` / ``allow { <input> }``);
- ``input-files`` (from ``REGO_FILTERS_PATH``, overriding ``input``): each file gets its own
  sub-package, so files that each declare ``default allow`` or the same constant combine, and the
  route's ``allow`` is the OR of the files' ``allow`` (Postee's semantics);
- neither: the route matches every event.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.config.loader import RouteConfig
from app.errors import ConfigError, PolicyError
from app.routing.policy.engine import PolicyEngine, make_engine

log = logging.getLogger("herald.filters")

BUILTIN_FILTER_DIR = Path(__file__).resolve().parents[2] / "rego" / "filters"
ROUTES_PACKAGE = "herald.routes"  # each route's filter is the package herald.routes.r<i>
_PACKAGE = re.compile(r"^(\s*package\s+)postee\b", re.MULTILINE)
_DATA_REF = re.compile(r"\bdata\.postee\b")
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')
_ROOT = re.compile(r"(?<![\w.])(input|data)\b")  # not a field (x.input) or part of a name
_INPUT_KEY = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_ROUTES_REF = re.compile(r"\s*\.\s*herald\s*\.\s*routes\b")
_WITH_OR_IMPORT_INPUT = re.compile(r"\bwith\b|\bimport\s+input\b")


def input_keys(source: str) -> set[str] | None:
    """The top-level input keys a filter module can read: every ``input`` in it is ``input.<key>``,
    it reads no ``data`` outside the route filters (whose modules are checked alike) and uses no
    ``with`` or ``import input``. ``None`` when that does not hold (it may read any of the input)."""
    code = _STRING_OR_COMMENT.sub(lambda m: '""' if m.group(0)[0] in "\"`" else "", source)
    if _WITH_OR_IMPORT_INPUT.search(code) or '$""' in code:
        return None  # ($"{input.x}": OPA's template strings read inside what looks like a string)
    keys: set[str] = set()
    for m in _ROOT.finditer(code):
        if m.group(1) == "data":
            if not _ROUTES_REF.match(code, m.end()):
                return None
            continue
        key = _INPUT_KEY.match(code, m.end())
        if key is None:
            return None  # input itself, input[x], ...
        keys.add(key.group(1))
    return keys


def resolve_filter_file(name: str, filters_path: str) -> Path:
    """Postee joins a name onto ``REGO_FILTERS_PATH`` unless it already starts with that path.
    Herald then falls back to its built-in filters (with or without ``.rego``)."""
    candidates = [Path(name) if name.startswith(filters_path) else Path(filters_path) / name]
    for base in (Path(filters_path), BUILTIN_FILTER_DIR):
        candidates += [base / name, base / f"{name}.rego"]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"filter file {name!r} not found in {filters_path} or the built-in filters", "input-files", name)


@dataclass
class RouteRule:
    route: str
    package: str
    kind: str  # "input", "files" or "all"
    files: list[tuple[str, str]] = field(default_factory=list)  # (file name, sub-package)


@dataclass
class Verdict:
    matched: bool
    reason: str  # which rule or file decided, or the error


class RouteFilters:
    def __init__(
        self,
        routes: list[RouteConfig],
        filters_path: str,
        rules: dict[str, Any] | None = None,
        engine_factory: Callable[[], PolicyEngine] = lambda: make_engine("embedded"),
    ) -> None:
        self.engine = engine_factory()
        self.rules: dict[str, RouteRule] = {}
        self._sources: list[str] = []
        problems: list[str] = []
        for i, route in enumerate(routes):
            package = f"{ROUTES_PACKAGE}.r{i}"
            try:
                self.rules[route.name] = self._compile(route, package, filters_path, rules or {})
            except (PolicyError, ConfigError) as exc:
                problems.append(f"route {route.name!r}: {exc}")
        if problems:
            raise PolicyError("; ".join(problems))
        self._evaluated = [r for r in self.rules.values() if r.kind != "all"]
        # What the filters read of an event: the router can set just those keys as the input
        # (an Aqua scan's resources and vulnerabilities are most of its bytes, and of the cost of
        # set_input_json); None when a filter may read any of it.
        keys: set[str] | None = set()
        for source in self._sources:
            found = input_keys(source)
            keys = None if found is None or keys is None else keys | found
        self.input_keys: frozenset[str] | None = None if keys is None else frozenset(keys)
        del self._sources

    def _compile(self, route: RouteConfig, package: str, filters_path: str, rules: dict[str, Any]) -> RouteRule:
        files = [f for f in route.input_files if f]
        if files:
            rule = RouteRule(route.name, package, "files")
            for j, name in enumerate(files):
                # the `rules` section maps a rule name to a filter file (Postee's UI used it)
                target = getattr(rules.get(name), "id", "") or name
                path = resolve_filter_file(target, filters_path)
                sub = f"{package}.f{j}"
                source = _DATA_REF.sub(f"data.{sub}", _PACKAGE.sub(rf"\g<1>{sub}", path.read_text(), count=1))
                self.engine.add_module(str(path), source)
                self._sources.append(source)
                rule.files.append((str(path), sub))
            return rule
        if route.input.strip():
            source = f"package {package}\n\ndefault allow = false\n\nallow {{\n{route.input}\n}}\n"
            self.engine.add_module(f"route {route.name} input", source)
            self._sources.append(source)
            return RouteRule(route.name, package, "input")
        return RouteRule(route.name, package, "all")

    def evaluate(self, event_json: str, only: str | None = None) -> dict[str, Verdict]:
        """Verdict per route for one event: one ``set_input`` and (normally) one query."""
        return self._evaluate(event_json, only)

    def needs_input(self, only: str | None = None) -> bool:
        """Whether ``evaluate`` of these routes queries the engine (routes without a rule do not)."""
        rules = [self.rules[only]] if only is not None else self.rules.values()
        return any(r.kind != "all" for r in rules)

    def input_of(self, event: dict[str, Any]) -> str | None:
        """The input the filters need, as JSON: the event's ``input_keys`` only; ``None`` when
        they need the whole event."""
        keys = self.input_keys
        if keys is None:
            return None
        return orjson.dumps({k: event[k] for k in keys if k in event}).decode()

    def evaluate_loaded(self, only: str | None = None) -> dict[str, Verdict]:
        """``evaluate`` on the input already set on the engine (an engine the router shares with
        the template library sets the event once for both)."""
        return self._evaluate(None, only)

    def _evaluate(self, event_json: str | None, only: str | None) -> dict[str, Verdict]:
        rules = [self.rules[only]] if only is not None else list(self.rules.values())
        out: dict[str, Verdict] = {}
        evaluated = [r for r in rules if r.kind != "all"]
        for r in rules:
            if r.kind == "all":
                out[r.route] = Verdict(True, "no rule: matches every event")
        if not evaluated:
            return out
        if event_json is not None:
            self.engine.set_input_json(event_json)
        try:
            tree = self.engine.eval_path(f"data.{ROUTES_PACKAGE}") or {}
        except PolicyError:
            tree = None  # one route failed: evaluate them one by one to isolate it
        for r in evaluated:
            if tree is not None:
                doc = tree.get(r.package.rsplit(".", 1)[1]) or {}
            else:
                try:
                    doc = self.engine.eval_path(f"data.{r.package}") or {}
                except PolicyError as exc:
                    out[r.route] = Verdict(False, f"error: {exc}")
                    continue
            out[r.route] = self._verdict(r, doc)
        return out

    @staticmethod
    def _verdict(rule: RouteRule, doc: dict[str, Any]) -> Verdict:
        if rule.kind == "input":
            ok = doc.get("allow") is True
            return Verdict(ok, "input rule " + ("allowed" if ok else "did not allow"))
        for name, sub in rule.files:
            if (doc.get(sub.rsplit(".", 1)[1]) or {}).get("allow") is True:
                return Verdict(True, f"{name} allowed")
        return Verdict(False, "no input-file allowed: " + ", ".join(n for n, _ in rule.files))
