"""Kubernetes naming rules used by the kubernetes action: pure functions, no client.

- label values: at most 63 characters of ``[A-Za-z0-9._-]``, starting and ending alphanumeric,
  or empty; ``sanitize_label_value`` maps anything onto that (``library/nginx:1.16`` ->
  ``library_nginx_1.16``) so a value taken from an event always fits;
- label and annotation keys: ``[prefix/]name``, the prefix a DNS subdomain, the name 63
  characters at most;
- object names: DNS subdomains (lowercase, at most 253 characters);
- kinds: ``pods`` (Postee's only one), ``deployments``, ``statefulsets``, ``daemonsets``,
  ``replicasets``, accepted in any case, singular or plural, or as the Kind (``ReplicaSet``,
  as trivy-operator writes it);
- images: ``canonical_image`` makes references comparable (``nginx:1.16``,
  ``library/nginx:1.16``, ``index.docker.io/library/nginx:1.16`` and
  ``docker.io/library/nginx:1.16`` are the same image).
"""

from __future__ import annotations

import re

_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_QUALIFIED = re.compile(rf"^({_DNS_SUBDOMAIN}/)?{_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
_OBJECT_NAME = re.compile(rf"^{_DNS_SUBDOMAIN}$")
_NOT_LABEL_CHAR = re.compile(r"[^A-Za-z0-9._-]")

# plural resource -> (Kind, API group used by the client: "core" or "apps", client method suffix)
KINDS: dict[str, tuple[str, str, str]] = {
    "pods": ("Pod", "core", "pod"),
    "deployments": ("Deployment", "apps", "deployment"),
    "statefulsets": ("StatefulSet", "apps", "stateful_set"),
    "daemonsets": ("DaemonSet", "apps", "daemon_set"),
    "replicasets": ("ReplicaSet", "apps", "replica_set"),
}
KIND_TO_RESOURCE = {kind: resource for resource, (kind, _, _) in KINDS.items()}


def check_key(key: str) -> str | None:
    """Why ``key`` is not a valid label/annotation key, or None."""
    prefix, _, name = key.rpartition("/")
    if not _QUALIFIED.match(key):
        return (
            "must be [prefix/]name: the name alphanumeric, '-', '_' or '.', starting and ending "
            "alphanumeric; the prefix a lowercase DNS subdomain"
        )
    if len(name) > 63:
        return "the name part must be at most 63 characters"
    if len(prefix) > 253:
        return "the prefix must be at most 253 characters"
    return None


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def sanitize_label_value(value: str) -> str:
    """Anything -> a valid label value: other characters become '_', at most 63 characters,
    starting and ending alphanumeric ("" if nothing alphanumeric is left)."""
    text = _NOT_LABEL_CHAR.sub("_", value).lstrip("._-")
    return text[:63].rstrip("._-")


def is_object_name(name: str) -> bool:
    return len(name) <= 253 and bool(_OBJECT_NAME.match(name))


def resource_of(kind: str) -> str | None:
    """``ReplicaSet``/``replicaset``/``replicasets`` -> ``replicasets``; None if unsupported."""
    text = kind.strip().lower()
    for resource in KINDS:
        if text in (resource, resource[:-1]):
            return resource
    return None


def canonical_image(ref: str) -> str:
    """A comparable form of an image reference: registry/path[:tag][@digest], with Docker Hub's
    defaults made explicit (docker.io, library/, :latest)."""
    ref = ref.strip()
    name, _, digest = ref.partition("@")
    tag = ""
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        domain, path = first.lower(), rest
    else:
        domain, path = "docker.io", name
    if domain in ("index.docker.io", "registry-1.docker.io"):
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if not tag and not digest:
        tag = "latest"
    return f"{domain}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
