"""An external merge sort for timeline rows: bounded memory whatever the number of rows.

Rows arrive as (key, payload bytes). They are buffered until ``run_bytes`` of payload (or
``run_items`` rows) are held, sorted, and spilled to a temporary file as one line each
(``<key JSON>\\t<payload>``: orjson escapes tabs and newlines inside strings, so neither can
appear raw in a line). ``sorted()`` then ``heapq.merge``-s the runs, at most ``FAN_IN`` files at a
time, holding one line per run. Peak memory: one run's buffer, plus one row per open run.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import orjson

FAN_IN = 64


def _write_run(items: list[tuple[Any, bytes]], directory: str) -> str:
    fd, path = tempfile.mkstemp(prefix="run-", suffix=".tsv", dir=directory)
    with os.fdopen(fd, "wb", buffering=1024 * 1024) as out:
        for key, payload in items:
            out.write(orjson.dumps(key))
            out.write(b"\t")
            out.write(payload)
            out.write(b"\n")
    return path


def _read_run(path: str) -> Iterator[tuple[Any, bytes]]:
    fh: IO[bytes]
    with open(path, "rb", buffering=256 * 1024) as fh:
        for line in fh:
            key, _, payload = line.rstrip(b"\n").partition(b"\t")
            yield orjson.loads(key), payload


def _first(item: tuple[Any, bytes]) -> Any:
    return item[0]


class ExternalSorter:
    """Add rows with ``add(key, payload)``, then iterate ``sorted()`` once.

    Keys must be JSON-able and compare the same after a JSON round trip (tuples become lists:
    use lists or tuples of str/int consistently)."""

    def __init__(self, run_bytes: int = 32 * 1024 * 1024, run_items: int = 100_000,
                 directory: str | None = None) -> None:
        self.run_bytes = run_bytes
        self.run_items = run_items
        self._tmp = tempfile.TemporaryDirectory(prefix="herald-sort-", dir=directory)
        self._buffer: list[tuple[Any, bytes]] = []
        self._held = 0
        self.runs: list[str] = []
        self.count = 0

    def add(self, key: list[Any], payload: bytes) -> None:
        # a copy: orjson's bytes keep their growth buffer (8 KiB for a 1 KiB row), which would
        # make a run's real footprint several times ``run_bytes``
        self._buffer.append((key, bytes(memoryview(payload))))
        self._held += len(payload)
        self.count += 1
        if self._held >= self.run_bytes or len(self._buffer) >= self.run_items:
            self._spill()

    def _spill(self) -> None:
        if not self._buffer:
            return
        self._buffer.sort(key=_first)
        self.runs.append(_write_run(self._buffer, self._tmp.name))
        self._buffer = []
        self._held = 0

    def sorted(self) -> Iterator[tuple[Any, bytes]]:
        """Rows in key order; the temporary files are removed once iteration ends."""
        try:
            if not self.runs:
                self._buffer.sort(key=_first)
                items, self._buffer = self._buffer, []
                yield from items
                return
            self._spill()
            runs = list(self.runs)
            while len(runs) > FAN_IN:  # merge passes keep open files and held rows bounded
                merged = []
                for i in range(0, len(runs), FAN_IN):
                    group = runs[i:i + FAN_IN]
                    merged.append(_write_run_iter(heapq.merge(*(_read_run(p) for p in group), key=_first),
                                                  self._tmp.name))
                    for p in group:
                        os.unlink(p)
                runs = merged
            yield from heapq.merge(*(_read_run(p) for p in runs), key=_first)
        finally:
            self.close()

    def close(self) -> None:
        self._buffer = []
        self._tmp.cleanup()


def _write_run_iter(items: Iterator[tuple[Any, bytes]], directory: str) -> str:
    fd, path = tempfile.mkstemp(prefix="merged-", suffix=".tsv", dir=directory)
    with os.fdopen(fd, "wb", buffering=1024 * 1024) as out:
        for key, payload in items:
            out.write(orjson.dumps(key) + b"\t" + payload + b"\n")
    return path
