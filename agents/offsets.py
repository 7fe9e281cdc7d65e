"""Which offset a worker may commit, and how messages faust drops in a rebalance are read again.

Two faust behaviours lost events when a worker died (the scale-out test: two workers, one
SIGKILLed, with the CPU starved):

1. Commits past a message still in flight. faust takes the first run of consecutive acknowledged
   offsets and lets it through when it starts at most one past the last commit, or anywhere when
   nothing was committed yet (``Consumer._new_offset``). Action agents deliver several messages at
   once (``concurrency``); a slow delivery at a partition's head was committed past, and a kill
   then lost it (routed events never attempted).
2. Messages fetched around a rebalance and then dropped (the stream skips a message of an old
   generation or while the flow is stopped; a record of a paused partition is not handed on)
   while the fetch position has moved past them. faust rewinds to the committed offsets after a
   rebalance, but aiokafka does not move a partition that has no committed offset, so the dropped
   messages were never read again (events never routed).

``OffsetTracker`` follows, per partition, the offsets streams take and finish:

- the commit offset is the lowest taken-but-unfinished offset, or the highest finished + 1. Streams
  of one agent take a partition's messages from one shared queue in offset order, so everything
  below it is done;
- an offset taken beyond the next expected one is a *hole*: the commit is held at the hole's start
  and the consumer seeks back there, so the missing messages are read again (if they do not exist —
  compaction, transaction markers — the re-read starts past them and the hold is released);
- after faust's rewind to the committed offsets, the next expected offset is the committed one, or
  the partition's first offset where nothing was committed (``HeraldConsumer`` seeks those there).

A producer writing to the events topic in Kafka transactions leaves a commit marker offset after
each transaction; each one reads as a hole once, costs a seek back and re-reads the records after
it (their deliveries are suppressed as duplicates by the delivered-keys log).

``HeraldConsumer`` installs it into faust's aiokafka consumer; ``install`` makes an app use it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakSet

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger("herald.offsets")


@dataclass
class _Partition:
    in_flight: dict[int, int] = field(default_factory=dict)  # offset -> copies taken and not finished
    finished: int | None = None  # highest finished offset
    next: int | None = None  # the offset expected next (None: unknown)
    run_start: int = 0  # first offset of the current in-sequence run
    hold: int | None = None  # never commit past this offset (start of a hole)


class OffsetTracker:
    """Taken and finished offsets per topic partition; decides commit offsets and finds holes."""

    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}
        self._lock = threading.Lock()  # faust may ack from its consumer thread
        self.holes = 0

    def taken(self, tp: TP, offset: int) -> int | None:
        """A stream took ``offset``; returns the offset to seek ``tp`` back to when it found a hole."""
        with self._lock:
            p = self._parts.setdefault(tp, _Partition())
            p.in_flight[offset] = p.in_flight.get(offset, 0) + 1
            seek_to = None
            if p.next is None:
                p.run_start = offset
            elif offset < p.next:  # read again from an earlier offset (a seek)
                p.run_start = offset
                if p.hold is not None and offset >= p.hold:
                    p.hold = None  # the re-read starts at the hole, or past offsets that do not exist
            elif offset > p.next:
                if p.hold is None or p.next < p.hold:
                    p.hold = p.next
                p.run_start = offset
                self.holes += 1
                seek_to = p.hold
                log.warning("%s[%d]: offsets %d..%d were fetched but never processed; reading them again",
                            tp.topic, tp.partition, p.next, offset - 1)
            p.next = offset + 1
            if p.hold is not None and p.run_start <= p.hold <= offset:
                p.hold = None  # the held offsets have now been taken in order
            return seek_to

    def finished(self, tp: TP, offset: int) -> None:
        with self._lock:
            p = self._parts.get(tp)
            if p is None or offset not in p.in_flight:
                return  # taken before the partition was revoked: the next owner reads it again
            if p.in_flight[offset] > 1:
                p.in_flight[offset] -= 1  # a copy read again by a seek back is still in flight
            else:
                del p.in_flight[offset]
            if p.finished is None or offset > p.finished:
                p.finished = offset

    def rewound(self, tp: TP, expected: int | None) -> None:
        """The consumer was moved to ``expected`` (faust's rewind to the committed offsets)."""
        with self._lock:
            self._parts.setdefault(tp, _Partition()).next = expected

    def commit_offset(self, tp: TP, committed: int | None = None) -> int | None:
        """The offset to commit for ``tp`` (the next one to read), or None when nothing finished.

        Messages below ``committed`` (the last commit) are copies of finished ones read again by
        a rewind; faust does not report when they finish, so they do not hold the commit."""
        with self._lock:
            p = self._parts.get(tp)
            if p is None:
                return None
            if committed is not None:
                p.in_flight = {o: n for o, n in p.in_flight.items() if o >= committed}
            if p.in_flight:
                offset: int | None = min(p.in_flight)
            else:
                offset = None if p.finished is None else p.finished + 1
            if offset is not None and p.hold is not None:
                offset = min(offset, p.hold)
            return offset

    def partitions(self) -> list[TP]:
        with self._lock:
            return list(self._parts)

    def rereading(self, tp: TP) -> bool:
        """Whether ``tp`` has a hole that was not read again yet."""
        p = self._parts.get(tp)
        return p is not None and p.hold is not None

    def forget(self, tps: Iterable[TP]) -> None:
        with self._lock:
            for tp in tps:
                self._parts.pop(tp, None)


class _TakenMessages(WeakSet):  # type: ignore[type-arg]
    """faust's set of unacknowledged messages; streams ``add`` a message when they take it."""

    def __init__(self, tracker: OffsetTracker, acking: Any, on_hole: Any) -> None:
        super().__init__()
        self._tracker = tracker
        self._acking = acking
        self._on_hole = on_hole

    def add(self, message: Any) -> None:
        super().add(message)
        if self._acking(message.topic):
            seek_to = self._tracker.taken(message.tp, message.offset)
            if seek_to is not None:
                self._on_hole(message.tp, seek_to)


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


class _NeverSeen(set):  # type: ignore[type-arg]
    """faust's per-partition index of acked offsets, which makes it ignore the ack of a second copy
    of an offset (read again by a seek back); the tracker must hear every copy's ack."""

    def __contains__(self, offset: object) -> bool:
        return False


class _AckedByPartition(defaultdict):  # type: ignore[type-arg]
    def __init__(self, tracker: OffsetTracker) -> None:
        super().__init__()
        self._tracker = tracker

    def __missing__(self, tp: TP) -> _AckedOffsets:
        acked = self[tp] = _AckedOffsets(self._tracker, tp)
        return acked


class _ReadOffsets(defaultdict):  # type: ignore[type-arg]
    """faust's last-read offset per partition. faust's fetch loop drops a record below it as
    already read; after a seek back over a hole, records of the batch fetched before the seek
    raise it again and the re-read would be dropped, so it reads as unknown until the hole is
    read again."""

    def __init__(self, tracker: OffsetTracker) -> None:
        super().__init__(lambda: None)
        self._tracker = tracker

    def __getitem__(self, tp: TP) -> int | None:
        if self._tracker.rereading(tp):
            return None
        value: int | None = super().__getitem__(tp)
        return value


class HeraldConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """faust's aiokafka consumer with commit offsets and hole repair from ``OffsetTracker``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.offsets = OffsetTracker()
        self._unacked_messages = _TakenMessages(self.offsets, self.app.topics.acks_enabled_for, self._seek_back)
        self._acked = _AckedByPartition(self.offsets)
        self._read_offset = _ReadOffsets(self.offsets)
        self._acked_index = defaultdict(_NeverSeen)
        self._expected: dict[TP, int] = {}
        self._seeks: set[asyncio.Future[None]] = set()

    def _seek_back(self, tp: TP, offset: int) -> None:
        task = asyncio.ensure_future(self._seek_back_now(tp, offset))
        self._seeks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._seeks.discard)

    async def _seek_back_now(self, tp: TP, offset: int) -> None:
        try:
            if tp in self.assignment():
                await self.seek(tp, offset)
        except Exception:  # the hold stays; the next rebalance rewinds anyway
            log.exception("seeking %s[%d] back to %d failed", tp.topic, tp.partition, offset)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed: Mapping[TP, int] = await super().seek_to_committed()
        acking = self.app.topics.acks_enabled_for
        fresh = [tp for tp, offset in committed.items() if not offset and acking(tp.topic)]
        expected = {tp: offset for tp, offset in committed.items() if offset and acking(tp.topic)}
        if fresh:
            # aiokafka leaves a partition without a committed offset where it is: rewind it too
            earliest = await self.earliest_offsets(*fresh)
            begin = {tp: int(earliest[tp]) for tp in fresh if earliest.get(tp) is not None}
            await self.seek_wait(begin)
            expected.update(begin)
        self._expected = expected
        return committed

    async def perform_seek(self) -> None:
        self._expected = {}
        await super().perform_seek()
        for tp, offset in self._expected.items():
            self.offsets.rewound(tp, offset)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        return (tp for tp in self.offsets.partitions() if topics is None or tp in topics or tp.topic in topics)

    def _new_offset(self, tp: TP) -> int | None:
        # faust's own bookkeeping is not used for the decision; keep it from growing
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        self._gap.pop(tp, None)
        return self.offsets.commit_offset(tp, self._committed_offset.get(tp))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.offsets.forget(revoked)
        await super().on_partitions_revoked(revoked)


def install(app: Any) -> None:
    """Make ``app`` create a ``HeraldConsumer`` (call before the app creates its consumer)."""
    app.transport.Consumer = HeraldConsumer
