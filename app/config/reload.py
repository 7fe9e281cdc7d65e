"""What a config reload reports (``ReloadResult``), and the config's hash: every decision record
carries it, so a timeline shows which config routed each event."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.config.loader import Config


@dataclass
class ReloadResult:
    """What a reload did: ``ok`` with the new ``config_hash``, or ``error`` (the running config stays)."""

    ok: bool
    config_hash: str = ""
    previous_hash: str = ""
    error: str = ""
    changes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        if self.ok:
            return {"status": "reloaded", "config_hash": self.config_hash, "previous_hash": self.previous_hash,
                    "changes": self.changes}
        return {"error": "reload refused; the running config stays", "detail": self.error,
                "config_hash": self.previous_hash}



def config_hash(config: Config) -> str:
    """What routed an event, in 12 hex digits (every decision record carries it): the routes, templates,
    rules, enabled action names and types, the Rego settings, and the content of every file under
    the template directories and the filters path. Action settings (URLs, credentials) are not in
    it: they decide how a message is delivered, not where an event goes."""
    s = config.herald
    doc = {
        "aqua_server": config.aqua_server,
        "routes": {n: r.model_dump(mode="json") for n, r in config.routes.items()},
        "templates": {n: t.model_dump(mode="json") for n, t in config.templates.items()},
        "rules": {n: r.model_dump(mode="json") for n, r in config.rules.items()},
        "actions": {n: a.type for n, a in config.actions.items()},
        "engine": s.engine, "opa_url": s.opa_url, "template_dirs": list(s.template_dirs), "filters_path": s.filters_path,
    }
    h = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
    for directory in [*s.template_dirs, s.filters_path]:
        root = Path(directory)
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:12]
