"""Policy micro-benchmark: route-filter evaluations/s and template renders/s, per engine.

    run("embedded") / run("opa") -> dict     (OPA: a managed local server unless opa_url is given)
    python bench/policy_bench.py [--seconds 2] [--engines embedded,opa]   prints a table

The event is the Aqua scan fixture (compact JSON, ~7.7 KB); the filter is one route rule
``contains(input.image, "all-in-one")`` evaluated through RouteFilters (one input conversion and
one engine call per event); the render is postee.vuls.slack (postee.rawmessage.json when that
template does not exist yet) through a TemplateLibrary that is loaded once. Each measurement runs
for a bounded time and reports operations per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from app.config.loader import RouteConfig
from app.routing.policy.engine import EmbeddedEngine, PolicyEngine
from app.routing.policy.filters import RouteFilters
from app.devtools.opa_local import OpaServer
from app.routing.policy.opa import OpaEngine
from app.routing.policy.templates import BUILTIN_TEMPLATE_DIR, PackageTemplate, TemplateLibrary

FIXTURES = Path(os.environ.get("HERALD_FIXTURES", str(Path(__file__).resolve().parent.parent / "tests" / "fixtures")))
EVENT = FIXTURES / "postee" / "aqua-input.json"
RULE = 'contains(input.image, "all-in-one")'
TEMPLATES = ("postee.vuls.slack", "postee.rawmessage.json")


def _rate(op: Callable[[], object], seconds: float) -> tuple[float, int]:
    """Operations per second of ``op`` over about ``seconds`` (after one warm-up call)."""
    op()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        op()
        count += 1
        now = time.perf_counter()
    return count / (now - start), count


def run(engine_kind: str, seconds: float = 2.0, opa_url: str | None = None) -> dict[str, Any]:
    """Measure one engine; returns the numbers as a dict (see the module docstring)."""
    server: OpaServer | None = None
    engines: list[OpaEngine] = []
    if engine_kind == "embedded":
        factory: Callable[[], PolicyEngine] = EmbeddedEngine
    elif engine_kind == "opa":
        if opa_url is None:
            server = OpaServer().start()
            opa_url = server.url
        url = opa_url

        def factory() -> PolicyEngine:
            engines.append(OpaEngine(url, id_prefix="herald-bench"))
            return engines[-1]
    else:
        raise ValueError(f"unknown engine {engine_kind!r}; use 'embedded' or 'opa'")

    event_json = orjson.dumps(orjson.loads(EVENT.read_bytes())).decode()
    try:
        filters = RouteFilters([RouteConfig(name="all-in-one", input=RULE)], "", engine_factory=factory)
        if not filters.evaluate(event_json)["all-in-one"].matched:
            raise RuntimeError("the benchmark rule does not match the Aqua fixture")
        filter_rate, filter_count = _rate(lambda: filters.evaluate(event_json), seconds)

        library = TemplateLibrary(dirs=[BUILTIN_TEMPLATE_DIR], engine_factory=factory)
        package = next(p for p in TEMPLATES if library.has_package(p))
        template = PackageTemplate("bench", package, library)
        render_rate, render_count = _rate(lambda: template.render(event_json), seconds)
    finally:
        for engine in engines:
            engine.remove_all()
            engine.close()
        if server is not None:
            server.stop()
    return {
        "engine": engine_kind,
        "event_bytes": len(event_json),
        "filter_evals_per_s": round(filter_rate, 1),
        "filter_evals": filter_count,
        "template": package,
        "renders_per_s": round(render_rate, 1),
        "renders": render_count,
        "seconds_each": seconds,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'engine':<10} {'filter evals/s':>15} {'renders/s':>10}  template (event bytes)"]
    for r in rows:
        lines.append(f"{r['engine']:<10} {r['filter_evals_per_s']:>15,.0f} {r['renders_per_s']:>10,.0f}  "
                     f"{r['template']} ({r['event_bytes']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--engines", default="embedded,opa", help="comma-separated: embedded,opa")
    parser.add_argument("--opa-url", default=None, help="use this OPA instead of starting one")
    args = parser.parse_args()
    rows = [run(kind.strip(), args.seconds, args.opa_url) for kind in args.engines.split(",") if kind.strip()]
    print(table(rows))


if __name__ == "__main__":
    main()
