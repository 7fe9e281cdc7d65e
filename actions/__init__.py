"""Action registry: Postee type name (case-insensitive) -> implementing class, imported lazily."""

from __future__ import annotations

import importlib.util
from typing import Any

from app.config import loader as app_config
from app.config.model import ActionConfig
from app.errors import ConfigError

# One line per action: lowercased type name -> "module:Class". The name is also the module name,
# topic suffix and log field.
REGISTRY: dict[str, str] = {
    "stdout": "actions.stdout:StdoutAction",
    "webhook": "actions.webhook:WebhookAction",
    "email": "actions.email:EmailAction",
    "slack": "actions.slack:SlackAction",
    "teams": "actions.teams:TeamsAction",
    "jira": "actions.jira:JiraAction",
    "splunk": "actions.splunk:SplunkAction",
    "servicenow": "actions.servicenow:ServiceNowAction",
    "opsgenie": "actions.opsgenie:OpsGenieAction",
    "pagerduty": "actions.pagerduty:PagerDutyAction",
    "nexusiq": "actions.nexusiq:NexusIqAction",
    "dependencytrack": "actions.dependencytrack:DependencyTrackAction",
    "exec": "actions.exec:ExecAction",
    "http": "actions.http:HttpAction",
    "kubernetes": "actions.kubernetes:KubernetesAction",
    "docker": "actions.docker:DockerAction",
    "awssecurityhub": "actions.awssecurityhub:AwsSecurityHubAction",
}


def available() -> list[str]:
    """Type names whose module is present (the registry may list some still being written)."""
    out = []
    for name, target in REGISTRY.items():
        if importlib.util.find_spec(target.split(":")[0]) is not None:
            out.append(name)
    return out


def action_class(type_name: str, path: str = "type") -> Any:
    key = type_name.strip().lower()
    target = REGISTRY.get(key)
    if target is None:
        raise ConfigError(
            f"unknown action type {type_name!r}; known types: {', '.join(sorted(REGISTRY))}",
            path,
            type_name,
        )
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"action type {type_name!r} is not available in this build", path, type_name) from None
        raise
    return getattr(module, cls_name)


def config_model(type_name: str, path: str = "type") -> type[ActionConfig]:
    """The config model of an action type (``app.config.loader.ActionModels``)."""
    model: type[ActionConfig] = action_class(type_name, path).config_model
    return model


def parse_config(data: Any, path: str = "<config>", environ: dict[str, str] | None = None) -> app_config.Config:
    """``app.config.loader.parse_config`` with every action's keys checked by its type's model."""
    return app_config.parse_config(data, path, environ, action_models=config_model)


def load_config(path: str, environ: dict[str, str] | None = None) -> app_config.Config:
    """Read and check a cfg.yaml (``app.config.loader.load_config``) with the registered action types."""
    return app_config.load_config(path, environ, action_models=config_model)
