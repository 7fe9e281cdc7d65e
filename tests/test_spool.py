"""The disk spool (app/ingest/spool.py) on real files: order, the byte bound, torn tails after a crash,
restarts, the lock, and segments deleted only once everything in them is acknowledged."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from app.ingest.spool import Position, Spool, SpoolError, SpoolFull, SpoolRecord


def rec(n: int, size: int = 0) -> SpoolRecord:
    return SpoolRecord("t.events", f"id-{n}".encode(), b'{"n": %d, "pad": "%s"}' % (n, b"x" * size),
                       [("herald-event-id", f"id-{n}".encode()), ("herald-route", b"r\x00\xff")])


def numbers(spool: Spool, limit: int = 10_000) -> list[int]:
    import json
    return [json.loads(r.value)["n"] for _, r in spool.peek(limit, 1 << 30)]


def drain(spool: Spool, batch: int = 7) -> list[int]:
    import json
    out = []
    while spool.records:
        got = spool.peek(batch)
        out += [json.loads(r.value)["n"] for _, r in got]
        spool.ack(got[-1][0])
    return out


def test_record_round_trip_keeps_everything() -> None:
    r = SpoolRecord("p.events", b"\x00key", b"\x00\xffvalue", [("a", b""), ("b", b"\x01" * 300), ("c", b"x")])
    raw = r.encode()
    assert SpoolRecord.decode(raw[12:]) == r
    assert r.header("b") == "\x01" * 300 and r.header("zz") == ""


def test_order_across_segments_and_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=500)
    assert spool.append([rec(i) for i in range(50)]) == [True] * 50
    assert len(list(tmp_path.glob("*.seg"))) > 3  # several segments
    assert numbers(spool) == list(range(50))
    first = spool.peek(10)
    spool.ack(first[-1][0])
    assert spool.records == 40
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=500)  # a restart: the cursor is kept
    assert again.records == 40 and numbers(again) == list(range(10, 50))
    again.append([rec(i) for i in range(50, 60)])
    assert drain(again) == list(range(10, 60))
    assert again.records == 0 and again.bytes == 0 and not list(tmp_path.glob("*.seg"))
    again.close()


def test_segments_are_deleted_only_when_every_record_is_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=300)
    spool.append([rec(i) for i in range(20)])
    segs = sorted(tmp_path.glob("*.seg"))
    batch = spool.peek(1)
    spool.ack(batch[0][0])  # one record of the first segment
    assert sorted(tmp_path.glob("*.seg")) == segs  # the first segment still holds waiting records
    rest = spool.peek(100)
    # acknowledge exactly up to the end of the first segment
    end_of_first = [p for p, _ in rest if p.segment == int(segs[0].stem)][-1]
    spool.ack(end_of_first)
    assert not segs[0].exists() and segs[1].exists()
    assert numbers(spool)[0] == len([p for p, _ in batch + rest if p <= end_of_first])
    spool.close()


def test_bound_refuses_what_does_not_fit_and_frees_after_ack(tmp_path: Path) -> None:
    one = len(rec(0, 100).encode())
    spool = Spool(tmp_path, max_bytes=one * 5 + 10, segment_bytes=one * 2)
    assert spool.append([rec(i, 100) for i in range(7)]) == [True] * 5 + [False] * 2
    with pytest.raises(SpoolFull, match="spool is full"):
        spool.append_one(rec(99, 100))
    assert spool.depth() == {"records": 5, "bytes": one * 5, "max-bytes": one * 5 + 10}
    # a smaller record after a refused one still fits if there is room: order of accepted ones holds
    got = spool.peek(2)
    spool.ack(got[-1][0])  # the first segment (two records) is deleted: room again
    assert spool.append([rec(7, 100), rec(8, 100)]) == [True, True]
    assert drain(spool) == [2, 3, 4, 7, 8]
    spool.close()


@pytest.mark.parametrize("cut", [1, 5, 12, 13, 40])
def test_torn_tail_is_dropped_cleanly(tmp_path: Path, cut: int) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([rec(i) for i in range(10)])
    spool.close()
    seg = max(tmp_path.glob("*.seg"))
    whole = seg.read_bytes()
    torn = rec(10).encode()[:cut]  # a write the crash cut short
    seg.write_bytes(whole + torn)
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.dropped_torn == len(torn)
    assert seg.read_bytes() == whole  # cut back to the last complete record
    assert numbers(again) == list(range(10))
    again.append([rec(11)])
    assert drain(again) == [*range(10), 11]
    again.close()


def test_corrupted_record_cuts_the_segment_there(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([rec(i) for i in range(5)])
    spool.close()
    seg = max(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    third = sum(len(rec(i).encode()) for i in range(2))
    data[third + 20] ^= 0xFF  # a flipped byte inside record 2: its checksum fails
    seg.write_bytes(bytes(data))
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert numbers(again) == [0, 1]  # never a damaged record, nor what follows it in that segment
    again.close()


def _writer(directory: str, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    spool = Spool(directory, max_bytes=1 << 30, segment_bytes=64 * 1024)
    n = 0
    ready.set()
    while True:
        spool.append([rec(n + i, 500) for i in range(5)])
        n += 5


def test_sigkill_while_appending_loses_no_acknowledged_record(tmp_path: Path) -> None:
    """A process SIGKILLed in the middle of appends: the reopened spool holds a gap-free prefix."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_writer, args=(str(tmp_path), ready))
    proc.start()
    assert ready.wait(10)
    import time
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    spool = Spool(tmp_path, max_bytes=1 << 30)
    got = numbers(spool, 1 << 30)
    assert len(got) > 10 and got == list(range(len(got)))
    spool.close()


def test_one_process_per_directory(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    with pytest.raises(SpoolError, match=f"{tmp_path}.*in use by another process \\(pid {os.getpid()}\\)"):
        Spool(tmp_path, max_bytes=1 << 20)
    spool.close()
    Spool(tmp_path, max_bytes=1 << 20).close()  # free again


def test_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match=f"cannot use spool directory {blocker}/spool"):
        Spool(blocker / "spool", max_bytes=1 << 20)


def test_ack_positions_are_ordered(tmp_path: Path) -> None:
    assert Position(1, 500) < Position(2, 0) < Position(2, 1)
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([rec(i) for i in range(3)])
    got = spool.peek(3)
    spool.ack(got[1][0])
    spool.ack(got[0][0])  # an older position changes nothing
    assert numbers(spool) == [2]
    spool.close()


def test_full_until_an_acknowledgement_frees_space(tmp_path: Path) -> None:
    one = len(rec(0, 2000).encode())
    spool = Spool(tmp_path, max_bytes=one * 3 + 1500, segment_bytes=one)
    assert not spool.full
    assert spool.append([rec(i, 2000) for i in range(4)]) == [True, True, True, False]
    assert spool.full  # refused once: full, although a tiny event would still fit
    got = spool.peek(1)
    spool.ack(got[0][0])
    assert not spool.full
    spool.close()


def test_spool_settings_from_the_config_and_the_environment() -> None:
    from actions import parse_config
    from app.errors import ConfigError

    cfg = parse_config({"herald": {"spool": {"dir": "/var/spool/herald", "max-bytes": "64MiB"}}}, environ={})
    assert (cfg.herald.spool.enabled, cfg.herald.spool.dir, cfg.herald.spool.max_bytes) == (
        True, "/var/spool/herald", 64 * 1024 * 1024)
    env = {"HERALD_SPOOL_DIR": "/data/spool", "HERALD_SPOOL_ENABLED": "false"}
    cfg = parse_config({"herald": {"spool": {"max-bytes": "1MiB"}}}, environ=env)
    assert (cfg.herald.spool.enabled, cfg.herald.spool.dir, cfg.herald.spool.max_bytes) == (
        False, "/data/spool", 1024 * 1024)  # the environment wins per key
    assert parse_config({}, environ={}).herald.spool.dir == ".herald/spool"
    with pytest.raises(ConfigError, match="HERALD_SPOOL_ENABLED.*maybe"):
        parse_config({}, environ={"HERALD_SPOOL_ENABLED": "maybe"})
    with pytest.raises(ConfigError, match="herald.spool.max-bytes.*'lots'"):
        parse_config({"herald": {"spool": {"max-bytes": "lots"}}}, environ={})


def test_which_kafka_errors_send_an_event_to_the_spool() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from app.ingest.bridge import transient

    def exc(code: int) -> KafkaException:
        return KafkaException(KafkaError(code))

    for code in (KafkaError._MSG_TIMED_OUT, KafkaError._PURGE_QUEUE, KafkaError._TRANSPORT,
                 KafkaError._ALL_BROKERS_DOWN, KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.LEADER_NOT_AVAILABLE):
        assert transient(exc(code)), code
    assert transient(TimeoutError())
    # these would fail again: the event is refused (503), never spooled to block the ones behind it
    for code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.TOPIC_AUTHORIZATION_FAILED,
                 KafkaError.INVALID_RECORD):
        assert not transient(exc(code)), code
    assert not transient(ValueError("x"))
    # a spooled record is set aside only when the record itself is at fault, never for Kafka's state
    from app.ingest.bridge import record_error
    assert record_error(exc(KafkaError.MSG_SIZE_TOO_LARGE)) and record_error(exc(KafkaError.INVALID_RECORD))
    for code in (KafkaError._FATAL, KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._MSG_TIMED_OUT):
        assert not record_error(exc(code)), code


def _fill_until_the_disk_refuses(directory: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    spool = Spool(directory, max_bytes=1 << 30)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))  # a disk that is full at 3,000 bytes a file
    taken = 0
    try:
        for i in range(100):
            spool.append([rec(i, 200)])
            taken += 1
    except SpoolError as exc:
        queue.put((taken, str(exc), spool.records))
        return
    queue.put((taken, "", spool.records))


def test_a_full_disk_is_a_spool_error_and_leaves_no_half_record(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_fill_until_the_disk_refuses, args=(str(tmp_path), queue))
    proc.start()
    taken, error, records = queue.get(timeout=30)
    proc.join(10)
    assert error.startswith(f"cannot write to spool directory {tmp_path}") and 0 < taken == records, (taken, error)
    again = Spool(tmp_path, max_bytes=1 << 30)
    assert again.dropped_torn == 0  # the failed append was rolled back, not left torn
    assert numbers(again) == list(range(taken))
    again.close()
