"""kubernetes: label, annotate or delete Kubernetes objects named by an event (Postee's
kubernetes action, plus the "remove a vulnerable image" story).

Postee's form: list the **pods** of ``kube-namespace`` matching ``kube-label-selector`` and merge
``kube-actions.labels`` / ``kube-actions.annotations`` into each; values and the selector may
hold ``event.input`` placeholders. Herald keeps that and fixes what hurt:

- a placeholder that resolves to nothing in the selector, the target name, the target kind or
  ``kube-delete-image`` fails the attempt permanently and **no object is touched** (Postee then
  selected every pod of the namespace); a config with neither a selector nor a target name is
  rejected for the same reason;
- values resolved into a selector or a label are sanitised to label syntax
  (``library/nginx:1.16`` -> ``library_nginx_1.16``), so a selector matches what a label set;
- API errors are failures: 409 is retried a few times in place (optimistic concurrency), 429,
  5xx and connection errors are retryable, other statuses (403, 404, 422...) permanent.

Beyond Postee (all optional):
- ``kube-target-kind``: pods, deployments, statefulsets, daemonsets or replicasets; a
  placeholder is allowed (trivy-operator writes ``trivy-operator.resource.kind: ReplicaSet``);
- ``kube-target-name``: the object's name, placeholders allowed, e.g.
  ``event.raw.metadata.labels.trivy-operator\\.resource\\.name`` (a backslash escapes a dot
  that belongs to a key, as in gjson);
- ``kube-apply-to``: ``targets`` (the matched objects), ``owner`` (their top-level controller:
  a ReplicaSet's Deployment) or ``pods`` (the pods they run);
- ``kube-delete-pods`` deletes the pods of what ``kube-apply-to`` selects, optionally only those
  with a container running ``kube-delete-image`` (references compare canonically);
- ``kube-patch-type``: ``merge`` (JSON merge patch, default) or ``strategic``.

The official client is synchronous: every call runs in a worker thread (``asyncio.to_thread``)
on one ``ApiClient`` per action, built on first use from ``kube-config-file`` or, when it is
empty, the in-cluster service account.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from actions._common import timeout_default
from actions._http import parse_retry_after
from actions._kubenames import (
    KIND_TO_RESOURCE,
    KINDS,
    canonical_image,
    check_key,
    is_label_value,
    is_object_name,
    resource_of,
    sanitize_label_value,
)
from actions._placeholders import EventView, NonJson, has_placeholder, substitute
from actions.base import Action, ActionConfig
from app.config.model import PStr
from app.errors import ActionError, PermanentActionError, RetryableActionError
from app.messages import ActionMessage
from app.redact import redact

log = logging.getLogger("herald.actions.kubernetes")

CONFLICT_ATTEMPTS = 4  # a 409 means someone else wrote the object meanwhile: re-patch
_PATCH_TYPES = {"merge": "application/merge-patch+json", "strategic": "application/strategic-merge-patch+json"}


def _map(value: Any) -> Any:
    return {} if value is None else value


class KubeActions(BaseModel):
    """``kube-actions``: what to merge into each object. Typos here are errors, not warnings."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[str, PStr] = Field(default_factory=dict, description="Labels to set (values may hold placeholders).")
    annotations: dict[str, PStr] = Field(default_factory=dict, description="Annotations to set.")

    @field_validator("labels", "annotations", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _map(value)

    @field_validator("labels", "annotations")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if why := check_key(key):
                raise ValueError(f"invalid key {key!r}: {why}")
        return value

    @field_validator("labels")
    @classmethod
    def _label_values(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not has_placeholder(text) and not is_label_value(text):
                raise ValueError(
                    f"label {key!r}: value {text!r} is not a valid label value (at most 63 of "
                    "[A-Za-z0-9._-], starting and ending alphanumeric)"
                )
        return value


class KubernetesConfig(ActionConfig):
    kube_namespace: PStr = Field(..., description="Namespace of the objects to act on.")
    kube_config_file: PStr = Field(
        "", description="Path of a kubeconfig; required unless Herald runs in a cluster "
        "(KUBERNETES_SERVICE_HOST set), where the service account is used."
    )
    kube_label_selector: PStr = Field(
        "", description="Label selector of the objects; placeholders allowed anywhere, and one "
        "that resolves to nothing fails the event instead of selecting everything."
    )
    kube_actions: KubeActions = Field(
        default_factory=KubeActions, description="`labels` and `annotations` maps to merge into each object."
    )
    kube_target_kind: PStr = Field(
        "pods", description="Kind of the objects selected: pods, deployments, statefulsets, "
        "daemonsets or replicasets (placeholders allowed)."
    )
    kube_target_name: PStr = Field("", description="Name of the object (placeholders allowed).")
    kube_apply_to: Literal["targets", "owner", "pods"] = Field(
        "targets", description="Act on the selected objects (`targets`), their top-level "
        "controller (`owner`, e.g. a ReplicaSet's Deployment) or the pods they run (`pods`)."
    )
    kube_delete_pods: StrictBool = Field(False, description="Delete the pods of what kube-apply-to selects.")
    kube_delete_image: PStr = Field(
        "", description="With kube-delete-pods: only pods with a container running this image "
        "(placeholders allowed; compared canonically, e.g. nginx:1.16 = docker.io/library/nginx:1.16)."
    )
    kube_patch_type: Literal["merge", "strategic"] = Field(
        "merge", description="`merge` (application/merge-patch+json) or `strategic` "
        "(application/strategic-merge-patch+json)."
    )
    kube_timeout: Annotated[float, timeout_default(30.0)] = Field(
        30.0, description="Timeout of each API request (duration).")

    @field_validator("kube_actions", mode="before")
    @classmethod
    def _no_actions(cls, value: Any) -> Any:
        return _map(value)

    @field_validator("kube_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not is_object_name(value) or "." in value or len(value) > 63:
            raise ValueError(f"must be a namespace name (lowercase DNS label), got {value!r}")
        return value

    @field_validator("kube_target_kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if has_placeholder(value):
            return value
        resource = resource_of(value)
        if resource is None:
            raise ValueError(f"unsupported kind {value!r}; use one of {', '.join(KINDS)}")
        return resource

    @field_validator("kube_target_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not has_placeholder(value) and not is_object_name(value):
            raise ValueError(f"not a valid object name: {value!r}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> KubernetesConfig:
        if not self.kube_config_file and not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise ValueError(
                "'kube-config-file' is required unless Herald runs inside a cluster "
                "(KUBERNETES_SERVICE_HOST is not set)"
            )
        if not self.kube_label_selector.strip() and not self.kube_target_name:
            raise ValueError(
                "set 'kube-label-selector' or 'kube-target-name': without either every object "
                "of the namespace would be changed"
            )
        acts = self.kube_actions
        if not acts.labels and not acts.annotations and not self.kube_delete_pods:
            raise ValueError("nothing to do: set 'kube-actions' labels/annotations or 'kube-delete-pods'")
        if self.kube_delete_image and not self.kube_delete_pods:
            raise ValueError("'kube-delete-image' only makes sense with 'kube-delete-pods: true'")
        return self


@dataclass(slots=True)
class KubePlan:
    """Everything resolved from one event: what to select and what to do."""

    namespace: str
    resource: str
    name: str
    selector: str
    apply_to: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    delete_pods: bool = False
    delete_image: str = ""  # canonical reference; "" deletes every pod selected


Obj = tuple[str, Any]  # (resource, client model)


class KubernetesAction(Action[KubernetesConfig, KubePlan]):
    type_name = "kubernetes"
    config_model = KubernetesConfig

    def __init__(self, config: KubernetesConfig) -> None:
        super().__init__(config)
        self._api: k8s.ApiClient | None = None
        self._lock = threading.Lock()

    async def close(self) -> None:
        if self._api is not None:
            api, self._api = self._api, None
            await asyncio.to_thread(api.close)

    # -- pure -----------------------------------------------------------------------------

    def build_payload(self, message: ActionMessage) -> KubePlan:
        cfg = self.config
        view = EventView.of(message)

        def strict(key: str, value: str, transform: Callable[[str], str] | None = None) -> str:
            # Selectors and names never guess: an unresolved placeholder stops the event here.
            result = substitute(value, view, non_json=NonJson.EMPTY, transform=transform)
            if result.empty:
                raise PermanentActionError(
                    f"kubernetes {self.name}: {key} {value!r}: {', '.join(result.empty)} resolved "
                    "to nothing in this event; no object was changed"
                )
            return result.text

        kind = strict("kube-target-kind", cfg.kube_target_kind)
        resource = resource_of(kind)
        if resource is None:
            raise PermanentActionError(
                f"kubernetes {self.name}: kube-target-kind {kind!r} is not one of {', '.join(KINDS)}"
            )
        name = strict("kube-target-name", cfg.kube_target_name) if cfg.kube_target_name else ""
        if name and not is_object_name(name):
            raise PermanentActionError(f"kubernetes {self.name}: kube-target-name {name!r} is not a valid name")
        selector = strict("kube-label-selector", cfg.kube_label_selector, sanitize_label_value)
        labels = {}
        for key, value in cfg.kube_actions.labels.items():
            result = substitute(value, view, non_json=NonJson.WHOLE)
            labels[key] = sanitize_label_value(result.text) if result.count else value
        annotations = {
            key: substitute(value, view, non_json=NonJson.WHOLE).text
            for key, value in cfg.kube_actions.annotations.items()
        }
        image = strict("kube-delete-image", cfg.kube_delete_image) if cfg.kube_delete_image else ""
        return KubePlan(
            namespace=cfg.kube_namespace,
            resource=resource,
            name=name,
            selector=selector.strip(),
            apply_to=cfg.kube_apply_to,
            labels=labels,
            annotations=annotations,
            delete_pods=cfg.kube_delete_pods,
            delete_image=canonical_image(image) if image else "",
        )

    # -- I/O ------------------------------------------------------------------------------

    async def send(self, request: KubePlan) -> None:
        await asyncio.to_thread(self._apply, request)

    def _client(self) -> k8s.ApiClient:
        with self._lock:
            if self._api is None:
                conf = type.__call__(k8s.Configuration)  # a fresh one, not the library default
                path = self.config.kube_config_file
                try:
                    if path:
                        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]  # kubernetes: unannotated
                            config_file=path, client_configuration=conf, persist_config=False
                        )
                    else:
                        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]  # unannotated
                            client_configuration=conf)
                except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
                    where = f"kube-config-file {path!r}" if path else "in-cluster config"
                    raise PermanentActionError(
                        f"kubernetes {self.name}: cannot load {where}: {redact(str(exc))}"
                    ) from None
                conf.retries = False  # the runner owns retries
                self._api = k8s.ApiClient(conf)
            return self._api

    def _method(self, verb: str, resource: str) -> Callable[..., Any]:
        _, group, suffix = KINDS[resource]
        api = self._client()
        apis: Any = k8s.CoreV1Api(api) if group == "core" else k8s.AppsV1Api(api)
        fn: Callable[..., Any] = getattr(apis, f"{verb}_namespaced_{suffix}")
        return fn

    def _error(self, what: str, exc: ApiException) -> ActionError:
        detail = exc.reason or ""
        try:
            detail = orjson.loads(exc.body or b"").get("message") or detail
        except (orjson.JSONDecodeError, AttributeError):
            pass
        msg = f"kubernetes {self.name}: {what}: HTTP {exc.status} {redact(str(detail))}".rstrip()
        status = exc.status or 0
        if status in (408, 409, 429) or status >= 500:
            retry_after = parse_retry_after((exc.headers or {}).get("Retry-After"))
            return RetryableActionError(msg, status=status, retry_after=retry_after)
        return PermanentActionError(msg, status=status)

    def _call(self, what: str, verb: str, resource: str, *args: Any, allow: tuple[int, ...] = (), **kw: Any) -> Any:
        """One API call; an ``ApiException`` whose status is in ``allow`` is returned, not raised."""
        fn = self._method(verb, resource)
        try:
            return fn(*args, _request_timeout=self.config.kube_timeout, **kw)
        except ApiException as exc:
            if exc.status in allow:
                return exc
            raise self._error(what, exc) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RetryableActionError(
                f"kubernetes {self.name}: {what}: cannot reach the API server: {type(exc).__name__}"
            ) from None

    def _list(self, resource: str, ns: str, selector: str = "", name: str = "") -> list[Any]:
        kw: dict[str, Any] = {}
        if selector:
            kw["label_selector"] = selector
        if name:
            kw["field_selector"] = f"metadata.name={name}"
        what = f"list {resource} in {ns}" + (f" ({selector})" if selector else "")
        return list(self._call(what, "list", resource, ns, **kw).items or [])

    def _apply(self, plan: KubePlan) -> None:
        ns = plan.namespace
        targets = [(plan.resource, o) for o in self._list(plan.resource, ns, plan.selector, plan.name)]
        if not targets:
            if plan.name:
                extra = f" with labels {plan.selector!r}" if plan.selector else ""
                raise PermanentActionError(
                    f"kubernetes {self.name}: {plan.resource} {plan.name!r} not found in namespace {ns!r}{extra}"
                )
            log.info("kubernetes %s: no %s in %s match %r", self.name, plan.resource, ns, plan.selector)
            return
        subjects = targets
        if plan.apply_to == "owner":
            subjects = _unique(self._top_owner(ns, t) for t in targets)
        elif plan.apply_to == "pods":
            subjects = _unique(p for t in targets for p in self._pods_of(ns, t))
        if plan.labels or plan.annotations:
            for subject in subjects:
                self._patch(ns, subject, plan)
        if plan.delete_pods:
            pods = _unique(p for s in subjects for p in self._pods_of(ns, s))
            for _resource, pod in pods:
                if plan.delete_image and plan.delete_image not in _images(pod):
                    continue
                self._delete_pod(ns, pod)

    def _patch(self, ns: str, subject: Obj, plan: KubePlan) -> None:
        resource, obj = subject
        name = obj.metadata.name
        meta: dict[str, Any] = {}
        if plan.labels:
            meta["labels"] = plan.labels
        if plan.annotations:
            meta["annotations"] = plan.annotations
        what = f"patch {resource}/{name} in {ns}"
        ctype = _PATCH_TYPES[self.config.kube_patch_type]
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            result = self._call(
                what, "patch", resource, name, ns, {"metadata": meta}, allow=(409,), _content_type=ctype
            )
            if not isinstance(result, ApiException):
                break
            if attempt == CONFLICT_ATTEMPTS:
                raise self._error(f"{what} (conflict {attempt} times)", result)
        log.info("kubernetes %s: patched %s/%s in %s: %s", self.name, resource, name, ns, redact(str(meta)))

    def _delete_pod(self, ns: str, pod: Any) -> None:
        name = pod.metadata.name
        # 404: already gone, which is what we wanted
        self._call(f"delete pods/{name} in {ns}", "delete", "pods", name, ns, allow=(404,))
        log.info("kubernetes %s: deleted pods/%s in %s", self.name, name, ns)

    def _top_owner(self, ns: str, subject: Obj) -> Obj:
        """Follow controller ownerReferences up (Pod -> ReplicaSet -> Deployment)."""
        resource, obj = subject
        for _ in range(4):
            ref = next(
                (r for r in obj.metadata.owner_references or [] if r.controller and r.kind in KIND_TO_RESOURCE),
                None,
            )
            if ref is None:
                break
            owner_resource = KIND_TO_RESOURCE[ref.kind]
            what = f"read {owner_resource}/{ref.name} in {ns}"
            owner = self._call(what, "read", owner_resource, ref.name, ns, allow=(404,))
            if isinstance(owner, ApiException) or owner.metadata.uid != ref.uid:
                break  # an orphan, or a namesake of a deleted owner: it is its own top
            resource, obj = owner_resource, owner
        return resource, obj

    def _pods_of(self, ns: str, subject: Obj) -> list[Obj]:
        """The pods a workload runs (directly, or through its ReplicaSets for a Deployment)."""
        resource, obj = subject
        if resource == "pods":
            return [subject]
        selector = _match_labels(obj)
        owners = {obj.metadata.uid}
        if resource == "deployments":
            owners = {rs.metadata.uid for rs in self._list("replicasets", ns, selector) if _owned_by(rs, owners)}
        return [("pods", p) for p in self._list("pods", ns, selector) if _owned_by(p, owners)]


def _match_labels(obj: Any) -> str:
    """The workload's matchLabels as a selector, to list fewer objects (ownership decides)."""
    sel = getattr(obj.spec, "selector", None)
    labels = getattr(sel, "match_labels", None) or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _owned_by(obj: Any, uids: set[str]) -> bool:
    return any(r.uid in uids for r in obj.metadata.owner_references or [])


def _images(pod: Any) -> set[str]:
    containers = list(pod.spec.containers or []) + list(pod.spec.init_containers or [])
    return {canonical_image(c.image) for c in containers if c.image}


def _unique(objs: Any) -> list[Obj]:
    seen: dict[str, Obj] = {}
    for resource, obj in objs:
        seen.setdefault(obj.metadata.uid or f"{resource}/{obj.metadata.name}", (resource, obj))
    return list(seen.values())
