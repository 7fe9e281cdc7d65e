"""A light recording webhook sink for benchmarks, run as its own process.

    python -m bench.sink --port 8099

Unlike ``tests.harness.Sink`` (which keeps every request's headers and body for assertions),
this one keeps three values per request, so 200,000 deliveries fit in a few MB and recording
costs little CPU next to the Herald processes it measures:

- ``at``: ``time.time()`` once the whole body has been read (the receipt time);
- ``key``: the ``Idempotency-Key`` header (``<event_id>:<route>:<action>``);
- ``sent_us``: the ``"sent_us": <int>`` field the benchmark client embedded in the event, found
  with a byte search in the rendered body (no JSON parse), or -1.

Control endpoints (not webhook paths): ``GET /__bench/count`` -> ``{"count": n, "duplicates": d}``,
``GET /__bench/records`` -> ``[[at, key, sent_us], ...]``, ``POST /__bench/reset``.
"""

from __future__ import annotations

import argparse
import re
import time

import orjson
from aiohttp import web

_SENT = re.compile(rb'"sent_us": ?(\d+)')


class BenchSink:
    def __init__(self) -> None:
        self.records: list[tuple[float, str, int]] = []
        self.keys: set[str] = set()
        self.duplicates = 0

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.time()
        key = request.headers.get("Idempotency-Key", "")
        if key in self.keys:
            self.duplicates += 1
        else:
            self.keys.add(key)
        m = _SENT.search(body)
        self.records.append((at, key, int(m.group(1)) if m else -1))
        return web.Response(text="ok")

    async def count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": len(self.records), "duplicates": self.duplicates})

    async def dump(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.records), content_type="application/json")

    async def reset(self, request: web.Request) -> web.Response:
        self.records.clear()
        self.keys.clear()
        self.duplicates = 0
        return web.json_response({"count": 0})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/__bench/count", self.count)
        app.router.add_get("/__bench/records", self.dump)
        app.router.add_post("/__bench/reset", self.reset)
        app.router.add_post("/{tail:.*}", self.hook)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark webhook sink")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(BenchSink().app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
