"""Which offset a worker may commit: never past a message that is still in flight.

A partition's messages are taken in offset order (one consumer, one fetch position per
partition), but they finish out of order: an action delivers several messages at once, and a
message is finished only once its processing is done *and* every record it produced is
acknowledged by the broker. So the commit offset of a partition is

- the lowest offset taken and not finished, or
- the last offset taken + 1 when nothing is in flight.

Offsets that do not exist (transaction markers, compacted records) never reach the consumer and
need no special case: they lie between taken offsets or after the last one.

A message taken again after a seek back (a rebalance that returned a partition) counts as a new
copy; the commit stays below it until every copy finishes.

The tracker belongs to the thread that owns the Kafka consumer; nothing here is thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

TP = tuple[str, int]  # (topic, partition)


@dataclass
class _Partition:
    in_flight: dict[int, int] = field(default_factory=dict)  # offset -> copies taken, not finished
    last_taken: int | None = None
    committed: int | None = None  # the last commit offset handed out by ``commit_offset``


class OffsetTracker:
    """Taken and finished offsets per topic partition; decides each partition's commit offset."""

    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}

    def taken(self, tp: TP, offset: int) -> None:
        p = self._parts.get(tp)
        if p is None:
            p = self._parts[tp] = _Partition()
        if offset in p.in_flight:
            p.in_flight[offset] += 1
        else:
            p.in_flight[offset] = 1
            # offsets arrive in increasing order, so the dict's first key is the lowest in flight;
            # a copy read again after a seek back goes below the others: restore the order
            if p.last_taken is not None and offset < p.last_taken:
                p.in_flight = dict(sorted(p.in_flight.items()))
        if p.last_taken is None or offset > p.last_taken:
            p.last_taken = offset

    def finished(self, tp: TP, offset: int) -> bool:
        """``offset`` of ``tp`` is done; False when it was not in flight (its partition was revoked
        since: the next owner reads it again)."""
        p = self._parts.get(tp)
        if p is None:
            return False
        copies = p.in_flight.get(offset)
        if copies is None:
            return False
        if copies > 1:
            p.in_flight[offset] = copies - 1
        else:
            del p.in_flight[offset]
        return True

    def in_flight(self, tp: TP) -> int:
        p = self._parts.get(tp)
        return len(p.in_flight) if p else 0

    def commit_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp`` (the next one to read), or None when nothing was taken."""
        p = self._parts.get(tp)
        if p is None or p.last_taken is None:
            return None
        if p.in_flight:
            return next(iter(p.in_flight))
        return p.last_taken + 1

    def changed(self) -> Iterator[tuple[TP, int]]:
        """Partitions whose commit offset moved since the last call, with the new offset."""
        for tp, p in self._parts.items():
            offset = self.commit_offset(tp)
            if offset is not None and offset != p.committed:
                p.committed = offset
                yield tp, offset

    def partitions(self) -> list[TP]:
        return list(self._parts)

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._parts.pop(tp, None)
