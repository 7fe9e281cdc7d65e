"""Routing cost per event: ``Router.route(raw, meta)`` and its parts, on the embedded engine.

    python bench/route_bench.py [--iterations 5000] [--templates raw-json,vuls-html]

The event is the Aqua scan fixture (``postee/aqua-input.json`` under ``tests.harness.FIXTURES``,
compact, with the load generator's ``"bench"`` key in front, as in ``make bench``). The config is
the end-to-end bench's: one route with an ``input`` filter (``input.bench.seq >= 0``) and one
webhook action, once with the raw-json template (``postee.rawmessage.json``) and once with an
HTML template (``postee.vuls.html``).

Each row is timed over ``--iterations`` calls after a warm-up: the median wall time of one call
(``time.perf_counter``) and the mean CPU time (``time.process_time`` over the whole loop divided
by the number of calls); that ``--repeat`` times, keeping the lowest of each (other work on the
machine only ever adds time). ``route`` is ``Router.route``; ``worker total`` adds what the worker does
with its result (each action message's ``to_json`` and the decision record's JSON); the other rows
are the parts of ``route``, called the way the router calls them (on the embedded engine the
event is set once, for the filters and the template). ``message bytes`` is the size
of one action message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from actions import parse_config
from app.routing.router import EventMeta, Router
from tests.harness import FIXTURES

TEMPLATES = {"raw-json": "postee.rawmessage.json", "vuls-html": "postee.vuls.html", "vuls-slack": "postee.vuls.slack"}


def event_bytes() -> bytes:
    """The Aqua fixture, compact, behind the load generator's ``bench`` key."""
    aqua = orjson.dumps(orjson.loads((FIXTURES / "postee" / "aqua-input.json").read_bytes()))
    return b'{"bench":{"run":"routebench","seq":1,"sent_us":1764000000000000},' + aqua[1:]


def make_router(package: str) -> Router:
    cfg = parse_config({
        "routes": [{"name": "bench", "input": "input.bench.seq >= 0", "actions": ["sink"], "template": "t"}],
        "templates": [{"name": "t", "rego-package": package}],
        "actions": [{"name": "sink", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/hook"}],
    }, "route_bench")
    return Router(cfg)


def measure(op: Callable[[], object], iterations: int, repeat: int = 1) -> tuple[float, float]:
    """(median wall µs per call, mean CPU µs per call) over ``iterations`` calls; with ``repeat``
    rounds, the lowest of each (the machine is shared: other work only ever adds time)."""
    for _ in range(min(200, iterations)):
        op()
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        walls = [0.0] * iterations
        cpu0 = time.process_time()
        for i in range(iterations):
            t0 = time.perf_counter()
            op()
            walls[i] = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        best_wall = min(best_wall, statistics.median(walls) * 1e6)
        best_cpu = min(best_cpu, cpu / iterations * 1e6)
    return best_wall, best_cpu


def parts(router: Router, raw: bytes, meta: EventMeta) -> dict[str, Callable[[], object]]:
    """The parts of ``Router.route`` for one event, each callable on its own."""
    route = router.config.routes["bench"]
    template = router.templates[route.template]
    event = router.parse(raw)
    text = raw.decode("utf-8", "replace")
    render_input = router.render_input(event)
    result = router.route(raw, meta)
    message = result.messages[0]
    templates = {name: r.template for name, r in router.config.routes.items()}

    def worker_total() -> None:
        res = router.route(raw, meta)
        for m in res.messages:
            m.to_json()
        orjson.dumps(res.decision(router.config_hash, templates))

    ops: dict[str, Callable[[], object]] = {"parse (orjson.loads)": lambda: router.parse(raw)}
    shared = router.shared_engine
    if shared is not None:  # one engine for the filters and the library's templates
        filters = router.filters

        def set_filter_input() -> None:  # as the router does: the keys the filters read, or all
            projected = filters.input_of(event)
            shared.set_input_json(text if projected is None else projected)

        ops["set input for the filters"] = set_filter_input
        ops["filter eval"] = filters.evaluate_loaded
        if getattr(template, "native", False):  # the built-in raw-json, rendered without the engine
            ops["template render"] = lambda: template.render_event(event, router.postee)
        else:
            ops["set input, whole event"] = lambda: shared.set_input_json(text)
            ops["template render"] = lambda: template.render_loaded(router.postee)  # on the whole event
    else:
        ops["filter eval"] = lambda: router.filters.evaluate(text)
        ops["render input"] = lambda: router.render_input(event)
        ops["template render"] = lambda: template.render(render_input)
    ops.update({
        "message to_json": message.to_json,
        "decision JSON": lambda: orjson.dumps(result.decision(router.config_hash, templates)),
        "route": lambda: router.route(raw, meta),
        "worker total": worker_total,
    })
    return ops


def run(name: str, iterations: int, repeat: int = 1) -> dict[str, Any]:
    package = TEMPLATES.get(name, name)
    router = make_router(package)
    raw = event_bytes()
    meta = EventMeta(event_id="0123456789abcdef0123456789abcdef", received_at=time.time(), source="bench")
    result = router.route(raw, meta)
    if result.failures or len(result.messages) != 1:
        raise RuntimeError(f"{package}: expected one message, got {result.messages} / {result.failures}")
    rows = {}
    for label, op in parts(router, raw, meta).items():
        if label == "template render" and router.shared_engine is not None:
            router.shared_engine.set_input_json(raw.decode())  # what it renders on: the whole event
        rows[label] = measure(op, iterations, repeat)
    return {"template": name, "package": package, "event_bytes": len(raw), "iterations": iterations, "repeat": repeat,
            "message_bytes": len(result.messages[0].to_json()), "rows": rows}


def table(runs: list[dict[str, Any]]) -> str:
    head = f"{'µs per event (median wall / mean CPU)':<28}" + "".join(f"{r['template']:>22}" for r in runs)
    lines = [head]
    labels: list[str] = []
    for r in sorted(runs, key=lambda r: -len(r["rows"])):  # the longest list first keeps the order
        labels += [label for label in r["rows"] if label not in labels]
    for label in labels:
        cells = "".join(f"{r['rows'][label][0]:>12.1f} / {r['rows'][label][1]:>7.1f}" if label in r["rows"]
                        else f"{'-':>22}" for r in runs)
        lines.append(f"{label:<28}{cells}")
    lines.append(f"{'message bytes':<28}" + "".join(f"{r['message_bytes']:>22,}" for r in runs))
    lines.append(f"{'event bytes':<28}" + "".join(f"{r['event_bytes']:>22,}" for r in runs))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3000, help="calls per row and round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per row; the lowest median is kept")
    parser.add_argument("--templates", default="raw-json,vuls-html",
                        help="comma-separated: " + ",".join(TEMPLATES) + " or a rego package")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    runs = [run(t.strip(), args.iterations, args.repeat) for t in args.templates.split(",") if t.strip()]
    print(table(runs))
    if args.json:
        print(orjson.dumps(runs, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
