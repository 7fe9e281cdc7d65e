"""The commit-offset rule, without Kafka (the broker-level proof is in test_state_e2e.py)."""

from __future__ import annotations

from agents.offsets import OffsetTracker

A = ("herald.action.w1", 0)
B = ("herald.action.w1", 1)


def test_nothing_taken_means_nothing_to_commit() -> None:
    t = OffsetTracker()
    assert t.commit_offset(A) is None
    t.taken(A, 10)
    assert t.commit_offset(A) == 10  # the message being processed is read again after a crash


def test_the_commit_stops_at_the_oldest_unfinished_message() -> None:
    t = OffsetTracker()
    for offset in range(10, 16):
        t.taken(A, offset)
    for offset in (11, 12, 13, 15):  # concurrent deliveries finish out of order
        assert t.finished(A, offset)
    assert t.commit_offset(A) == 10  # faust's rule gave 14 here
    t.finished(A, 10)
    assert t.commit_offset(A) == 14
    t.finished(A, 14)
    assert t.commit_offset(A) == 16
    assert t.in_flight(A) == 0


def test_offsets_that_do_not_exist_need_no_special_case() -> None:
    # transaction markers at 2 and 5: the consumer never returns them
    t = OffsetTracker()
    for offset in (0, 1, 3, 4, 6, 7):
        t.taken(A, offset)
    for offset in (0, 1, 3, 4, 7):
        t.finished(A, offset)
    assert t.commit_offset(A) == 6
    t.finished(A, 6)
    assert t.commit_offset(A) == 8  # the marker after the last record is passed


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    t = OffsetTracker()
    t.taken(A, 0)
    t.taken(B, 5)
    t.finished(B, 5)
    assert (t.commit_offset(A), t.commit_offset(B)) == (0, 6)
    assert set(t.partitions()) == {A, B}
    t.forget([A])
    assert t.commit_offset(A) is None and t.partitions() == [B]
    # a finish of a message taken before the revoke does not count for the next assignment
    assert not t.finished(A, 0)
    assert t.commit_offset(A) is None


def test_a_finish_of_a_message_never_taken_is_ignored() -> None:
    t = OffsetTracker()
    t.taken(A, 4)
    assert not t.finished(A, 9)
    assert t.commit_offset(A) == 4


def test_a_copy_read_again_after_a_seek_back_holds_the_commit_until_every_copy_finishes() -> None:
    t = OffsetTracker()
    for offset in (5, 6, 7):
        t.taken(A, offset)
    t.taken(A, 6)  # read again: two copies of 6, and 6 is now below the newest taken
    t.finished(A, 5)
    t.finished(A, 7)
    t.finished(A, 6)
    assert t.commit_offset(A) == 6  # the second copy is still in flight
    t.finished(A, 6)
    assert t.commit_offset(A) == 8


def test_a_seek_back_below_the_oldest_in_flight_keeps_the_lowest_first() -> None:
    t = OffsetTracker()
    t.taken(A, 10)
    t.taken(A, 11)
    t.taken(A, 3)  # a rewind below everything in flight
    assert t.commit_offset(A) == 3
    t.finished(A, 3)
    assert t.commit_offset(A) == 10


def test_changed_reports_each_new_commit_offset_once() -> None:
    t = OffsetTracker()
    t.taken(A, 0)
    t.taken(B, 0)
    assert dict(t.changed()) == {A: 0, B: 0}
    assert dict(t.changed()) == {}
    t.finished(A, 0)
    assert dict(t.changed()) == {A: 1}
    assert dict(t.changed()) == {}
