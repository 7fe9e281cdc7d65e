"""Which offset a worker may commit: never past a message that is still being processed.

faust decides the commit offset of a partition from the list of acknowledged offsets, and lets
the first run of consecutive acknowledged offsets through when it starts at most one past the
last commit, or anywhere at all when nothing was committed yet (``Consumer._new_offset``). That
is right for an agent that finishes messages in order; Herald's action agents run several
deliveries at once (``concurrency``), and a slow delivery at the head of a partition let faust
commit past it. A worker killed at that moment lost the message: the next owner resumed after it.
The scale-out test (two workers, one SIGKILLed) showed it as routed events that were never
attempted.

``OffsetTracker`` keeps, per partition, the offsets a stream has taken and not yet acknowledged,
and the highest acknowledged offset. Streams of one agent take a partition's messages from one
shared queue in offset order, so every offset below the lowest taken-but-unfinished one is done
(or never existed: compaction, transaction markers). The commit offset is that lowest offset, or
the highest acknowledged one + 1 when nothing is in flight. ``HeraldConsumer`` installs it into
faust's aiokafka consumer; ``faust_consumer_class`` is what ``make_faust_app`` uses.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any
from weakref import WeakSet

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


class OffsetTracker:
    """Taken-but-unfinished offsets and the highest finished offset, per topic partition."""

    def __init__(self) -> None:
        self._in_flight: dict[TP, set[int]] = {}
        self._finished: dict[TP, int] = {}
        self._lock = threading.Lock()  # faust acks from its consumer thread too

    def taken(self, tp: TP, offset: int) -> None:
        with self._lock:
            self._in_flight.setdefault(tp, set()).add(offset)

    def finished(self, tp: TP, offset: int) -> None:
        with self._lock:
            in_flight = self._in_flight.get(tp)
            if in_flight is None or offset not in in_flight:
                return  # taken before the partition was revoked: the next owner reads it again
            in_flight.discard(offset)
            if offset > self._finished.get(tp, -1):
                self._finished[tp] = offset

    def commit_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp`` (the next one to read), or None when nothing finished."""
        with self._lock:
            in_flight = self._in_flight.get(tp)
            if in_flight:
                return min(in_flight)
            finished = self._finished.get(tp)
            return None if finished is None else finished + 1

    def partitions(self) -> list[TP]:
        with self._lock:
            return list(self._in_flight)

    def forget(self, tps: Iterable[TP]) -> None:
        with self._lock:
            for tp in tps:
                self._in_flight.pop(tp, None)
                self._finished.pop(tp, None)


class _TakenMessages(WeakSet):  # type: ignore[type-arg]
    """faust's set of unacknowledged messages; streams ``add`` a message when they take it."""

    def __init__(self, tracker: OffsetTracker, acking: Any) -> None:
        super().__init__()
        self._tracker = tracker
        self._acking = acking

    def add(self, message: Any) -> None:
        super().add(message)
        if self._acking(message.topic):
            self._tracker.taken(message.tp, message.offset)


class _AckedOffsets(list):  # type: ignore[type-arg]
    """faust's list of acknowledged offsets of one partition; both of faust's ack paths (the
    consumer's and the compiled stream iterator's inlined copy) ``append`` to it."""

    def __init__(self, tracker: OffsetTracker, tp: TP) -> None:
        super().__init__()
        self._tracker = tracker
        self._tp = tp

    def append(self, offset: int) -> None:
        super().append(offset)
        self._tracker.finished(self._tp, offset)


class _AckedByPartition(defaultdict):  # type: ignore[type-arg]
    def __init__(self, tracker: OffsetTracker) -> None:
        super().__init__()
        self._tracker = tracker

    def __missing__(self, tp: TP) -> _AckedOffsets:
        acked = self[tp] = _AckedOffsets(self._tracker, tp)
        return acked


class HeraldConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """faust's aiokafka consumer with commit offsets from ``OffsetTracker``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.offsets = OffsetTracker()
        self._unacked_messages = _TakenMessages(self.offsets, self.app.topics.acks_enabled_for)
        self._acked = _AckedByPartition(self.offsets)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        return (tp for tp in self.offsets.partitions() if topics is None or tp in topics or tp.topic in topics)

    def _new_offset(self, tp: TP) -> int | None:
        # faust's own bookkeeping is not used for the decision; keep it from growing
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        self._gap.pop(tp, None)
        return self.offsets.commit_offset(tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.offsets.forget(revoked)
        await super().on_partitions_revoked(revoked)


def install(app: Any) -> None:
    """Make ``app`` create a ``HeraldConsumer`` (call before the app creates its consumer)."""
    app.transport.Consumer = HeraldConsumer
