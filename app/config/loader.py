"""Postee's cfg.yaml, loaded into typed models (reference §2), plus Herald's ``herald:`` section.

``load_config(path)`` returns a ``Config`` with ``warnings`` (unknown keys, disabled actions,
...) or raises ``ConfigError`` listing every problem with its key path and value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import Field, StrictBool, StrictInt, field_validator

from app.config.model import ActionConfig, PosteeModel, PStr, PStrList, type_problems, validate_model
from app.errors import ConfigError
from app.config.templateurl import check_template_url
from app.config.settings import HeraldSettings, env_overrides

DEFAULT_CONFIG_PATH = "/config/cfg.yaml"

# An action type name and its key path -> the type's config model; raises ConfigError for an unknown
# type. The action registry provides it (actions.config_model): configuration is core and does not
# import the actions, so loading goes through actions.load_config / actions.parse_config.
ActionModels = Callable[[str, str], type[ActionConfig]]

_TIMEOUT = re.compile(r"^(\d+)([smhd]?)$", re.ASCII)  # Go's Atoi: ASCII digits only, not "١٠"
_TIMEOUT_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_plugin_timeout(value: str, path: str) -> int:
    """Postee's grammar: ``N[s|m|h|d]`` or plain seconds, spaces removed; empty means off.

    Postee silently disabled the feature on a bad value; Herald reports it."""
    text = value.replace(" ", "")
    if not text:
        return 0
    m = _TIMEOUT.match(text.lower())
    if not m:
        raise ConfigError(f"expected a timeout such as '600s', '10m', '2h', '1d', got {value!r}", path, value)
    return int(m.group(1)) * _TIMEOUT_UNIT[m.group(2)]


class RoutePlugins(PosteeModel):
    aggregate_message_number: StrictInt = Field(0, ge=0, description="Send one aggregate every N events.")
    aggregate_message_timeout: PStr = Field("", description="Send the aggregate every T (e.g. 10m).")
    unique_message_props: PStrList = Field(default_factory=list, description="Dotted paths of the dedup key.")
    unique_message_timeout: PStr = Field("", description="How long a dedup key is kept (empty: forever).")


class RouteConfig(PosteeModel):
    name: PStr
    input: PStr = ""
    input_files: PStrList = Field(default_factory=list)
    actions: PStrList = Field(default_factory=list)
    template: PStr = ""
    serialize_actions: StrictBool = False
    plugins: RoutePlugins = Field(default_factory=RoutePlugins)
    allow_unauthenticated_actions: StrictBool = Field(
        False, description="Let this route's system-changing actions (exec, docker, kubernetes, http other "
        "than GET/HEAD) run for events posted to the bridge without credentials; off by default, warned at start.")

    @property
    def aggregate_timeout(self) -> int:
        return parse_plugin_timeout(self.plugins.aggregate_message_timeout, f"routes.{self.name}.plugins")

    @property
    def unique_timeout(self) -> int:
        return parse_plugin_timeout(self.plugins.unique_message_timeout, f"routes.{self.name}.plugins")


class TemplateConfig(PosteeModel):
    name: PStr
    rego_package: PStr = ""
    body: PStr = ""
    url: PStr = ""
    legacy_scan_renderer: PStr = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value:
            check_template_url(value)  # https only (http for loopback), optional #sha256= pin
        return value

    @field_validator("legacy_scan_renderer")
    @classmethod
    def _legacy(cls, value: str) -> str:
        if value and value not in ("html", "slack", "jira"):
            raise ValueError(f"must be html, slack or jira, got {value!r}")
        return value


class RuleConfig(PosteeModel):
    name: PStr
    id: PStr = ""


class _TopLevel(PosteeModel):
    name: PStr = ""
    aqua_server: PStr = ""
    max_db_size: PStr = ""
    db_verify_interval: StrictInt = 1
    delete_old_data: StrictInt = 0
    rules: list[RuleConfig] = Field(default_factory=list)


@dataclass
class Config:
    path: str
    aqua_server: str
    routes: dict[str, RouteConfig]
    templates: dict[str, TemplateConfig]
    actions: dict[str, ActionConfig]  # enabled actions only
    rules: dict[str, RuleConfig]
    herald: HeraldSettings
    warnings: list[str] = field(default_factory=list)

    @property
    def aqua_server_url(self) -> str:
        """The ``AquaServer`` value injected into events: ``<aqua-server>/#/images/``."""
        if not self.aqua_server:
            return ""
        return self.aqua_server.rstrip("/") + "/#/images/"

    def route_actions(self, route: RouteConfig) -> list[str]:
        """The route's enabled actions, in its order, each once."""
        seen: list[str] = []
        for name in route.actions:
            if name in self.actions and name not in seen:
                seen.append(name)
        return seen


def _list_section(data: dict[str, Any], key: str, problems: list[str]) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{key}: expected a list, got {type(value).__name__} (value: {value!r})")
        return []
    return value


def _nested_action(value: Any) -> str | None:
    """The name of an action found inside a key's value (a mapping with name and type, alone or
    in a list): what a mis-indented action looks like."""
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, dict) and "type" in v and "name" in v:
            return str(v["name"])
    return None


def _nesting_hint(item: dict[str, Any], where: str, problem: str) -> str:
    """A problem about ``<where>.<key>`` whose value holds an action says so: Postee's own
    cfg.yaml has the dependencytrack action indented under nexusIq's organization-id."""
    for key, value in item.items():
        nested = _nested_action(value)
        if nested is not None and problem.startswith(f"{where}.{key}: "):
            return (f"{problem} -- it holds the action {nested!r}, indented under {key!r}: "
                    "move it out to be an item of actions")
    return problem


def parse_config(data: Any, path: str = "<config>", environ: dict[str, str] | None = None, *,
                 action_models: ActionModels) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a YAML mapping, got {type(data).__name__}", path)
    problems: list[str] = []
    warnings: list[str] = []
    if "- type: common" in str(data):
        warnings.append("this looks like a Postee v1 config (type: common); v1 keys are ignored")

    def collect(model: Any, item: Any, where: str) -> Any:
        try:
            obj, warns = validate_model(model, item, where)
        except ConfigError as exc:
            problems.append(str(exc))
            return None
        warnings.extend(warns)
        return obj

    known = {"routes", "templates", "actions", "herald"}
    top = collect(_TopLevel, {k: v for k, v in data.items() if k not in known}, "")
    if top is not None:
        warnings[:] = [w.lstrip(".") for w in warnings]

    herald_raw = data.get("herald") or {}
    try:
        overrides = env_overrides(environ)
    except ConfigError as exc:
        problems.append(str(exc))
        overrides = {}
    herald_data = (
        {**{k.replace("_", "-"): v for k, v in herald_raw.items()}, **{k.replace("_", "-"): v for k, v in overrides.items()}}
        if isinstance(herald_raw, dict)
        else herald_raw
    )
    if isinstance(herald_raw, dict) and "kafka" in overrides and isinstance(herald_raw.get("kafka") or {}, dict):
        herald_data["kafka"] = {**(herald_raw.get("kafka") or {}), **overrides["kafka"]}  # env wins per key
    if isinstance(herald_raw, dict) and "auth" in overrides and isinstance(herald_raw.get("auth") or {}, dict):
        herald_data["auth"] = {**(herald_raw.get("auth") or {}), **overrides["auth"]}  # env wins per key
    if isinstance(herald_raw, dict) and "spool" in overrides and isinstance(herald_raw.get("spool") or {}, dict):
        herald_data["spool"] = {**(herald_raw.get("spool") or {}), **overrides["spool"]}  # env wins per key
    herald = collect(HeraldSettings, herald_data, "herald")
    if herald is not None:
        problems.extend(herald.kafka.problems("herald.kafka"))
        warnings.extend(f"herald.kafka.{k}: unknown key, ignored (librdkafka properties go under "
                        "herald.kafka.properties)" for k in herald.kafka.unknown_keys())

    routes: dict[str, RouteConfig] = {}
    for i, item in enumerate(_list_section(data, "routes", problems)):
        route = collect(RouteConfig, item, f"routes[{i}]")
        if route is not None:
            if route.name in routes:
                warnings.append(f"routes[{i}]: duplicate route name {route.name!r}; the later one wins")
            for key in ("aggregate_timeout", "unique_timeout"):
                try:
                    getattr(route, key)
                except ConfigError as exc:
                    problems.append(f"routes[{i}].plugins: {exc}")
            routes[route.name] = route

    templates: dict[str, TemplateConfig] = {}
    for i, item in enumerate(_list_section(data, "templates", problems)):
        tpl = collect(TemplateConfig, item, f"templates[{i}]")
        if tpl is not None:
            if not (tpl.rego_package or tpl.body or tpl.url or tpl.legacy_scan_renderer):
                warnings.append(f"templates[{i}] ({tpl.name}): no rego-package, body, url or legacy-scan-renderer; ignored")
                continue
            templates[tpl.name] = tpl

    actions: dict[str, ActionConfig] = {}
    disabled: set[str] = set()
    for i, item in enumerate(_list_section(data, "actions", problems)):
        where = f"actions[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping, got {type(item).__name__}")
            continue
        enabled = item.get("enable", False)
        if not isinstance(enabled, bool):
            problems.append(f"{where}.enable: expected true or false (value: {enabled!r})")
            continue
        name = str(item.get("name", ""))
        if not name:
            problems.append(f"{where}.name: required")
            continue
        if not enabled:
            # checked for wrong types (Postee refused those too), not for what only matters to a
            # running action: disabled actions often keep placeholders
            disabled.add(name)
            try:
                model = action_models(str(item.get("type", "")), f"{where}.type")
            except ConfigError as exc:
                warnings.append(f"{exc} (the action is disabled)")
                continue
            wrong, unknown = type_problems(model, item, where)
            problems.extend(_nesting_hint(item, where, p) for p in wrong)
            warnings.extend(unknown)
            continue
        try:
            model = action_models(str(item.get("type", "")), f"{where}.type")
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        before = len(problems)
        action = collect(model, item, where)
        problems[before:] = [_nesting_hint(item, where, p) for p in problems[before:]]
        if action is not None:
            if name in actions:
                warnings.append(f"{where}: duplicate action name {name!r}; the later one wins")
            actions[name] = action

    for route in routes.values():
        for name in route.actions:
            if name not in actions:
                if name in disabled:
                    warnings.append(f"route {route.name!r}: action {name!r} is not enabled; skipped")
                else:
                    problems.append(f"route {route.name!r}: action {name!r} is not defined in actions")
        if not route.actions:
            warnings.append(f"route {route.name!r} has no actions; it does nothing")
        if not route.template:
            if route.actions:
                problems.append(f"route {route.name!r}: template is required when the route has actions")
        elif route.template not in templates:
            problems.append(f"route {route.name!r}: template {route.template!r} is not defined in templates")

    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    assert top is not None and herald is not None
    return Config(
        path=path,
        aqua_server=top.aqua_server,
        routes=routes,
        templates=templates,
        actions=actions,
        rules={r.name: r for r in top.rules},
        herald=herald,
        warnings=warnings,
    )


def config_path(cli_value: str | None = None, environ: dict[str, str] | None = None) -> str:
    """``--config`` wins, then ``POSTEE_CFG``/``AQUAALERT_CFG``, then Postee's default path."""
    env = os.environ if environ is None else environ
    return cli_value or env.get("POSTEE_CFG") or env.get("AQUAALERT_CFG") or DEFAULT_CONFIG_PATH


def load_config(path: str, environ: dict[str, str] | None = None, *, action_models: ActionModels) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path) from None
    return parse_config(data, path, environ, action_models=action_models)
