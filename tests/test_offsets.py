"""The commit-offset rule, without Kafka (the broker-level proof is in test_state_e2e.py)."""

from __future__ import annotations

from faust.types import TP

from agents.offsets import OffsetTracker, _AckedByPartition, _TakenMessages

A = TP("herald.action.w1", 0)
B = TP("herald.action.w1", 1)


def test_nothing_finished_means_nothing_to_commit() -> None:
    t = OffsetTracker()
    assert t.commit_offset(A) is None
    t.taken(A, 10)
    assert t.commit_offset(A) == 10  # the message being processed is read again after a crash


def test_the_commit_stops_at_the_oldest_unfinished_message() -> None:
    t = OffsetTracker()
    for offset in range(10, 16):
        t.taken(A, offset)
    for offset in (11, 12, 13, 15):  # concurrent deliveries finish out of order
        t.finished(A, offset)
    assert t.commit_offset(A) == 10  # faust's rule gave 14 here
    t.finished(A, 10)
    assert t.commit_offset(A) == 14
    t.finished(A, 14)
    assert t.commit_offset(A) == 16


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    t = OffsetTracker()
    t.taken(A, 0)
    t.taken(B, 5)
    t.finished(B, 5)
    assert (t.commit_offset(A), t.commit_offset(B)) == (0, 6)
    assert set(t.partitions()) == {A, B}
    t.forget([A])
    assert t.commit_offset(A) is None and t.partitions() == [B]
    # an ack for a message taken before the revoke does not count for the next assignment
    t.finished(A, 0)
    assert t.commit_offset(A) is None


def test_an_ack_of_a_message_never_taken_is_ignored() -> None:
    t = OffsetTracker()
    t.taken(A, 4)
    t.finished(A, 9)
    assert t.commit_offset(A) == 4


class _Message:
    def __init__(self, tp: TP, offset: int) -> None:
        self.tp, self.topic, self.offset = tp, tp.topic, offset


def test_fausts_structures_feed_the_tracker() -> None:
    # streams add a message to the unacked set when they take it and append its offset to the
    # acked list of its partition when they finish it (both faust code paths do exactly that)
    t = OffsetTracker()
    taken = _TakenMessages(t, lambda topic: topic == A.topic, lambda tp, offset: None)
    acked = _AckedByPartition(t)
    first, second, other = _Message(A, 0), _Message(A, 1), _Message(TP("changelog", 0), 0)
    for m in (first, second, other):
        taken.add(m)
    assert t.partitions() == [A]  # topics without acks (table changelogs) are not tracked
    acked[A].append(1)
    assert t.commit_offset(A) == 0
    acked[A].append(0)
    assert t.commit_offset(A) == 2 and acked[A] == [1, 0]


def test_a_hole_holds_the_commit_and_asks_for_a_seek_back_until_it_is_read_again() -> None:
    # 3..5 were fetched and dropped in a rebalance while the fetch position moved on
    t = OffsetTracker()
    t.rewound(A, 0)
    for offset in range(3):
        assert t.taken(A, offset) is None
        t.finished(A, offset)
    assert t.taken(A, 6) == 3  # seek back to 3
    t.taken(A, 7)
    t.finished(A, 6)
    t.finished(A, 7)
    assert t.commit_offset(A) == 3  # not 8: 3..5 were never processed
    assert t.taken(A, 3) is None  # the re-read after the seek
    assert t.commit_offset(A) == 3
    t.finished(A, 3)
    for offset in (4, 5, 6, 7):
        t.taken(A, offset)
        t.finished(A, offset)
    assert t.commit_offset(A) == 8 and t.holes == 1


def test_offsets_that_do_not_exist_release_the_hold_after_one_seek() -> None:
    # transaction markers or compaction: the re-read after the seek starts past the hole
    t = OffsetTracker()
    t.rewound(A, 10)
    t.taken(A, 10)
    t.finished(A, 10)
    assert t.taken(A, 12) == 11
    t.finished(A, 12)
    assert t.commit_offset(A) == 11
    assert t.taken(A, 12) is None  # seek to 11 gave 12 first: 11 does not exist
    t.finished(A, 12)
    assert t.commit_offset(A) == 13


def test_the_first_message_after_a_rewind_must_be_the_expected_one() -> None:
    # after a rebalance faust rewinds to the committed offset (here 40); a message beyond it first
    # means the ones before were dropped
    t = OffsetTracker()
    t.rewound(A, 40)
    assert t.taken(A, 43) == 40
    t.finished(A, 43)
    assert t.commit_offset(A) == 40


def test_copies_below_the_last_commit_do_not_hold_it() -> None:
    t = OffsetTracker()
    t.taken(A, 5)  # a copy of an offset committed earlier, read again; faust never reports its ack
    t.taken(A, 6)
    t.finished(A, 6)
    assert t.commit_offset(A) == 5
    assert t.commit_offset(A, committed=6) == 7


def test_every_copy_of_an_offset_must_finish() -> None:
    # a seek back can put a second copy of an offset in flight before the first one finished
    t = OffsetTracker()
    t.rewound(A, 0)
    t.taken(A, 0)
    t.taken(A, 1)
    t.taken(A, 0)  # the re-read copy
    t.finished(A, 0)
    t.finished(A, 1)
    assert t.commit_offset(A) == 0
    t.finished(A, 0)
    assert t.commit_offset(A) == 2
