"""Templates: turn an event into content (Postee §2.4, §3.5, §4).

A template is one of:
- ``rego-package``: a package of the template library (built-in directory, then user directories,
  recursively, ``custom/`` included), queried as ``data.<package>``;
- ``body``: an inline Rego module, compiled with the ``common`` helpers;
- ``url``: a Rego module fetched once at start, then like ``body``. Only ``https://`` URLs are
  accepted (``http://`` only for a loopback host: ``localhost``, ``127.0.0.0/8``, ``::1``; a
  redirect must stay within the same rule), and the module may be pinned by its SHA-256 with a
  ``#sha256=<64 hex digits>`` suffix: a fetched module with another digest is refused;
- ``legacy-scan-renderer``: Postee's built-in html/slack/jira renderers for Aqua scans.

Unlike Postee, a library file that does not compile makes only its own packages unavailable;
the error (path and line) is reported at start.

A user directory is the truth: a package that a user file defines replaces the built-in package
of that name as a whole (the built-in files declaring it are not loaded), so a copy of Postee's
whole ``rego-templates`` folder, ``common/common.rego`` included, loads as it is. Herald's
built-in templates import their helpers from Herald-private packages (``herald.lib.*``), never
from ``postee``, so a user's ``postee`` helpers (Postee's ``common.rego``) replace Herald's copy
without touching a built-in template. A user package replacing a ``herald.lib.*`` helper is
checked against the built-in templates still loaded that import it: one that uses a name the
user's package does not define is not loaded (``unavailable`` says why) instead of failing
at render time.
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from app.config.templateurl import allowed_scheme, check_template_url
from app.content import Content, content_from_result
from app.errors import PolicyError, TemplateError
from app.routing.policy.engine import EmbeddedEngine, PolicyEngine, jsonformat_of_json, make_engine

log = logging.getLogger("herald.templates")

BUILTIN_TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "rego" / "templates"
COMMON_DIR = BUILTIN_TEMPLATE_DIR / "common"
COMMON_PACKAGE = "postee"  # the helpers Postee templates import (common.rego); built-ins do not

EngineFactory = Callable[[], PolicyEngine]


def default_engine_factory() -> PolicyEngine:
    return make_engine("embedded")


class Template(Protocol):
    name: str

    def render(self, event_json: str) -> Content: ...

    def supports_aggregation(self) -> bool: ...

    def aggregate(self, items: list[Content]) -> Content: ...


def aggregation_items(items: list[Content]) -> list[dict[str, Any]]:
    """Postee's aggregation input: one object per content; a description that is a JSON array
    of objects (Slack blocks) is parsed, anything else stays a string."""
    out = []
    for c in items:
        desc: Any = c.description
        text = desc.lstrip()
        if text.startswith("["):
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(x, dict) for x in parsed):
                desc = parsed
        item = c.to_dict()
        item.pop("owners", None)
        item["description"] = desc
        out.append(item)
    return out


# a plain dotted name alone on its line (comments are stripped first); ``package a["b-c"]`` is not
_PACKAGE_DECL = re.compile(r"^[ \t]*package[ \t]+([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)[ \t\r]*$",
                           re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+data\.([A-Za-z_][\w.]*)(?:[ \t]+as[ \t]+([A-Za-z_]\w*))?", re.MULTILINE)
# a rule or function head at the start of a line: name(...), name[...], name :=, name =, name {,
# name if, name contains, default name
_RULE_HEAD = re.compile(r"^(?:default[ \t]+)?([A-Za-z_]\w*)[ \t]*(?:\(|\[|:=|=|\{|if\b|contains\b)", re.MULTILINE)


def declared_package(source: str) -> str | None:
    """The package a Rego module declares (``postee.vuls.html``), read without compiling it;
    ``None`` when there is no plain ``package a.b.c`` line."""
    match = _PACKAGE_DECL.search(_strip_comments(source))
    return match.group(1) if match else None


def _strip_comments(source: str) -> str:
    return re.sub(r"#[^\n\"]*$", "", source, flags=re.MULTILINE)


def _defined_names(sources: list[str]) -> set[str]:
    names: set[str] = set()
    for source in sources:
        names.update(m.group(1) for m in _RULE_HEAD.finditer(_strip_comments(source)))
    return names - {"package", "import", "not", "some", "every", "with", "else"}


def _used_names(source: str, package: str) -> set[str]:
    """The names of ``package`` that a module uses through its imports of it (``import
    data.<package> [as alias]`` then ``alias.name``; ``import data.<package>.name``)."""
    text = _strip_comments(source)
    used: set[str] = set()
    for match in _IMPORT.finditer(text):
        path, alias = match.group(1), match.group(2)
        if path == package:
            alias = alias or package.rsplit(".", 1)[-1]
            used.update(re.findall(rf"(?<![\w.]){re.escape(alias)}\.([A-Za-z_]\w*)", text))
        elif path.rsplit(".", 1)[0] == package:
            used.add(path.rsplit(".", 1)[1])
    used.update(re.findall(rf"\bdata\.{re.escape(package)}\.([A-Za-z_]\w*)", text))
    return used


@dataclass
class _Module:
    path: Path
    source: str
    package: str | None
    builtin: bool


@dataclass
class TemplateLibrary:
    """Every rego module under the template directories, compiled into one engine; a package
    defined in a user directory replaces the built-in package of that name."""

    dirs: list[Path]
    engine_factory: EngineFactory = default_engine_factory
    errors: list[str] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)  # package -> files defining it
    data_files: list[str] = field(default_factory=list)  # JSON data files merged into data
    # built-in package -> the user files that replace it (the built-in files are not loaded)
    replaced: dict[str, list[str]] = field(default_factory=dict)
    # built-in package -> why it is not loaded (it imports a replaced helper it can no longer use)
    unavailable: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = self.engine_factory()
        self._load()

    def _collect(self) -> tuple[list[_Module], list[Path]]:
        modules: list[_Module] = []
        data: list[Path] = []
        seen: set[Path] = set()
        for base in self.dirs:
            if not base.is_dir():
                if base != BUILTIN_TEMPLATE_DIR:
                    self.errors.append(f"{base}: template directory does not exist")
                continue
            builtin = base.resolve() == BUILTIN_TEMPLATE_DIR
            for path in sorted(base.rglob("*")):
                if path in seen or "lost+found" in path.parts or not path.is_file():
                    continue
                seen.add(path)
                if path.suffix == ".rego":
                    try:
                        source = path.read_text()
                    except (OSError, UnicodeDecodeError) as exc:
                        self.errors.append(f"{path}: cannot read template file: {exc}")
                        continue
                    modules.append(_Module(path, source, declared_package(source), builtin))
                elif path.suffix == ".json" and path.name != "package.json":
                    data.append(path)
        return modules, data

    def _replace(self, modules: list[_Module]) -> list[_Module]:
        """The modules to load: user packages replace the built-in packages of the same name."""
        user: dict[str, list[str]] = {}
        for m in modules:
            if not m.builtin and m.package:
                user.setdefault(m.package, []).append(str(m.path))
        builtin_packages = {m.package for m in modules if m.builtin and m.package}
        self.replaced = {p: files for p, files in user.items() if p in builtin_packages}
        kept = [m for m in modules if not (m.builtin and m.package in self.replaced)]
        for package, files in self.replaced.items():
            log.info("template package %s: the user's %s replaces the built-in one", package, ", ".join(files))
        self._forget_replaced([m for m in modules if m.builtin and m.package in self.replaced])
        # a built-in template still loaded must find what it uses in a replaced helper package
        replaced_sources = {p: [m.source for m in kept if m.package == p] for p in self.replaced}
        defined = {p: _defined_names(sources) for p, sources in replaced_sources.items()}
        for m in kept:
            if not m.builtin:
                continue
            for package in self.replaced:
                missing = sorted(_used_names(m.source, package) - defined[package])
                if missing:
                    reason = (f"built-in {m.path} uses {', '.join(package + '.' + n for n in missing)}, which the "
                              f"user's package {package} ({', '.join(self.replaced[package])}) does not define")
                    self._make_unavailable(m, reason)
                    break
        # and so is a built-in importing an unavailable one (vuls.html imports lib.aquahtml)
        progress = True
        while progress:
            progress = False
            for m in kept:
                if not m.builtin or (m.package or str(m.path)) in self.unavailable:
                    continue
                imported = {i.group(1) for i in _IMPORT.finditer(_strip_comments(m.source))}
                lost = sorted(p for p in self.unavailable if p in imported or any(
                    i.rsplit(".", 1)[0] == p for i in imported))
                if lost:
                    self._make_unavailable(m, f"built-in {m.path} imports {', '.join(lost)}, which is unavailable")
                    progress = True
        return [m for m in kept if not (m.builtin and (m.package or str(m.path)) in self.unavailable)]

    def _make_unavailable(self, module: _Module, reason: str) -> None:
        self.unavailable[module.package or str(module.path)] = reason
        self.errors.append(f"template package {module.package} is unavailable: {reason}")
        log.error("template package %s is unavailable: %s", module.package, reason)

    def _forget_replaced(self, modules: list[_Module]) -> None:
        """An OPA server may still hold a replaced built-in module uploaded by an earlier run
        without the user's directory; it would conflict with the user's package."""
        remove = getattr(self.engine, "remove_policies", None)
        policy_id = getattr(self.engine, "policy_id", None)
        if remove is None or policy_id is None or not modules:
            return
        try:
            remove([policy_id(str(m.path), m.source) for m in modules])
        except Exception as exc:  # noqa: BLE001 - best effort; a conflict shows up at upload
            log.warning("could not remove replaced built-in modules from OPA: %s", exc)

    def _load(self) -> None:
        modules, data = self._collect()
        for m in self._replace(modules):
            try:
                package = self.engine.add_module(str(m.path), m.source)
            except PolicyError as exc:
                self.errors.append(str(exc))
                log.error("template file does not compile, its packages are unavailable: %s", exc)
                continue
            self.files.setdefault(package.removeprefix("data."), []).append(str(m.path))
        for path in data:
            try:
                self.engine.add_data(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError, PolicyError) as exc:
                self.errors.append(f"{path}: invalid data file: {exc}")
            else:
                self.data_files.append(str(path))

    def has_package(self, package: str) -> bool:
        prefix = package + "."
        return package in self.files or any(p.startswith(prefix) for p in self.files)

    def is_builtin_only(self, package: str, file: Path) -> bool:
        """Whether ``data.<package>`` is exactly what the built-in ``file`` defines: no other file
        adds to the package, to a package under it or to one above it (which could define a rule
        at its path), and no data file was loaded."""
        parts = package.split(".")
        above = [".".join(parts[:i]) for i in range(1, len(parts))]
        builtin = str(BUILTIN_TEMPLATE_DIR)
        return (self.files.get(package) == [str(file)] and not self.data_files
                and not any(p.startswith(package + ".") for p in self.files)
                and all(f.startswith(builtin + "/") for p in above for f in self.files.get(p, [])))

    def evaluate(self, package: str, input_json: str) -> Any:
        self.engine.set_input_json(input_json)
        return self.engine.eval_path(f"data.{package}")

    def evaluate_loaded(self, package: str, postee: dict[str, Any]) -> Any:
        """``data.<package>`` for the input already set on the engine with ``input.postee``
        replaced by ``postee``: what ``evaluate`` gives for ``{**event, "postee": postee}``.
        Only the embedded engine has Rego's ``with`` on a loaded input (the router checks)."""
        if not isinstance(self.engine, EmbeddedEngine):
            raise PolicyError(f"the {getattr(self.engine, 'kind', '?')} engine cannot evaluate on a loaded input",
                              f"data.{package}")
        return self.engine.eval_path_with(f"data.{package}", "postee", postee)


class PackageTemplate:
    """``rego-package``: a package of the library."""

    def __init__(self, name: str, package: str, library: TemplateLibrary) -> None:
        # Postee's spelling is postee.vuls.cyclondx; accept the correct spelling too.
        if not library.has_package(package) and package.endswith(".cyclonedx"):
            package = package.removesuffix(".cyclonedx") + ".cyclondx"
        if package in library.unavailable:
            raise TemplateError(f"rego package {package!r} is unavailable: {library.unavailable[package]}", name)
        if not library.has_package(package):
            raise TemplateError(f"rego package {package!r} is not defined by any template file", name)
        self.name = name
        self.package = package
        self.library = library
        self._aggregation_pkg: str | None = None
        self.native = _native_raw_json(package, library)

    def render_event(self, event: dict[str, Any], postee: dict[str, Any]) -> Content | None:
        """The built-in raw-json template rendered without the engine: the result is
        ``jsonformat(input)`` computed from the event the router decoded (see ``_native_raw_json``).
        ``None`` for another template, or an event only the engine can render exactly."""
        if not self.native:
            return None
        text = jsonformat_of_json({**event, "postee": postee})
        if text is None:
            return None
        return content_from_result({"title": RAW_JSON_TITLE, "result": text}, self.name)

    def render(self, event_json: str) -> Content:
        return self._content(self.library.evaluate(self.package, event_json))

    def render_loaded(self, postee: dict[str, Any]) -> Content:
        """``render`` of the event already set as the library engine's input, with ``postee``
        injected (the router sets the event once for the route filters and the templates)."""
        return self._content(self.library.evaluate_loaded(self.package, postee))

    def _content(self, result: Any) -> Content:
        if result is None:
            raise TemplateError(f"package {self.package} produced no result for this event", self.name)
        if isinstance(result, dict) and isinstance(result.get("aggregation_pkg"), str):
            self._aggregation_pkg = result["aggregation_pkg"]
        return content_from_result(result, self.name)

    def aggregation_package(self) -> str | None:
        if self._aggregation_pkg is None:
            # aggregation_pkg is usually a constant; evaluate it once with an empty input
            try:
                value = self.library.evaluate(self.package + ".aggregation_pkg", "{}")
            except PolicyError:
                value = None
            self._aggregation_pkg = value if isinstance(value, str) else ""
        return self._aggregation_pkg or None

    def supports_aggregation(self) -> bool:
        pkg = self.aggregation_package()
        return bool(pkg and self.library.has_package(pkg))

    def aggregate(self, items: list[Content]) -> Content:
        pkg = self.aggregation_package()
        if not pkg or not self.library.has_package(pkg):
            raise TemplateError(f"aggregation package {pkg!r} is not defined", self.name)
        result = self.library.evaluate(pkg, orjson.dumps(aggregation_items(items)).decode())
        if result is None:
            raise TemplateError(f"aggregation package {pkg} produced no result", self.name)
        return content_from_result(result, f"{self.name} ({pkg})")


class ModuleTemplate:
    """``body`` or ``url``: one inline module compiled with the common helpers (package
    ``postee``: the user's when a template directory replaces it, as Postee compiled inline
    templates with its ``rego-templates/common``).

    Herald also lets an inline template aggregate: ``aggregation_pkg`` naming a library package.
    """

    def __init__(self, name: str, source: str, origin: str, library: TemplateLibrary | None,
                 engine_factory: EngineFactory = default_engine_factory) -> None:
        self.name = name
        self.engine = engine_factory()
        helpers = [Path(f) for f in library.files.get(COMMON_PACKAGE, [])] if library is not None else []
        for path in helpers or sorted(COMMON_DIR.glob("*.rego")):
            try:
                self.engine.add_module(str(path), path.read_text())
            except (OSError, PolicyError) as exc:
                raise TemplateError(f"cannot load the common helpers: {exc}", name) from None
        try:
            self.package = self.engine.add_module(origin, source).removeprefix("data.")
        except PolicyError as exc:
            raise TemplateError(str(exc), name) from None
        self.library = library

    def render(self, event_json: str) -> Content:
        self.engine.set_input_json(event_json)
        result = self.engine.eval_path(f"data.{self.package}")
        result = _find_result(result)
        if result is None:
            raise TemplateError("property result is not found", self.name)
        return content_from_result(result, self.name)

    def supports_aggregation(self) -> bool:
        return False

    def aggregate(self, items: list[Content]) -> Content:
        raise TemplateError("inline and url templates do not aggregate", self.name)


RAW_JSON_PACKAGE = "postee.rawmessage.json"
RAW_JSON_FILE = BUILTIN_TEMPLATE_DIR / "raw-message-json.rego"
RAW_JSON_TITLE = "-"
_RAW_JSON_RULES = ["package postee.rawmessage.json", f'title := "{RAW_JSON_TITLE}"', "result := jsonformat(input)"]


def _native_raw_json(package: str, library: TemplateLibrary) -> bool:
    """Whether ``package`` is the built-in raw-json template as shipped (its rules are exactly
    ``title := "-"`` and ``result := jsonformat(input)``, nothing else defines anything at its
    path) on the embedded engine, so that the router can render it from the decoded event:
    jsonformat is most of its cost, and converting the input to Python for the extension and
    the result back to JSON is most of the rest."""
    if package != RAW_JSON_PACKAGE or getattr(library.engine, "kind", "") != "embedded":
        return False
    if not library.is_builtin_only(package, RAW_JSON_FILE):
        return False
    lines = [line.strip() for line in RAW_JSON_FILE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")] == _RAW_JSON_RULES


def _find_result(doc: Any) -> Any:
    """Postee: the first nested object under the module's document that has ``result``."""
    if not isinstance(doc, dict):
        return None
    if "result" in doc:
        return doc
    for value in doc.values():
        found = _find_result(value)
        if found is not None:
            return found
    return None


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not allowed_scheme(newurl):
            raise TemplateError(f"template {req.full_url} redirects to {newurl}, which is not https", req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_template(url: str, timeout: float = 10.0) -> str:
    """``url`` templates are fetched once at start (with a timeout, unlike Postee), over https
    (or http to a loopback host), and checked against a ``#sha256=`` pin when the URL has one."""
    try:
        target, pin = check_template_url(url)
    except ValueError as exc:
        raise TemplateError(f"template url {exc}", url) from None
    opener = urllib.request.build_opener(_SafeRedirects)
    try:
        with opener.open(target, timeout=timeout) as resp:  # the URL is the user's own config
            if resp.status > 399:
                raise TemplateError(f"fetching {target} gave HTTP {resp.status}", url)
            data: bytes = resp.read()
    except OSError as exc:
        raise TemplateError(f"cannot fetch template {target}: {exc}", url) from None
    if pin is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != pin:
            raise TemplateError(f"template {target} has SHA-256 {digest}, but the url pins {pin}", url)
    return data.decode()
