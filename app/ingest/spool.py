"""The bridge's disk spool: events Kafka could not take, kept in order until it can.

    <dir>/lock                        flock'd by the one bridge using the directory (holds its pid)
    <dir>/00000000000000000001.seg    append-only segments of records, oldest first
    <dir>/cursor                      "<segment> <offset>": where the oldest unacknowledged record starts

A record is ``magic(4) length(4) crc32(4) payload(length)``; the payload holds everything needed to
produce the event later exactly as it would have been: topic, key, headers and the raw value.
Appends are written and fsync'd before they are acknowledged to the caller (one fsync per batch).
A crash can leave a torn record at the end of a segment: opening the spool checks every record's
length and checksum and cuts a segment at its first bad record, so a half-record is never read.

The reader (the bridge's drain) takes records from the head (``peek``), produces them, and
``ack``s the position after the last one Kafka acknowledged; the cursor file is replaced
atomically, and a segment is deleted once every record in it is acknowledged. A crash between
Kafka's acknowledgement and the cursor update produces those records again (at least once; they
keep their event id, so the worker's delivered keys suppress a second delivery).

The bound ``max_bytes`` is on the segment files' total size (at most one partly acknowledged
segment, ``segment_bytes``, more than what is waiting); an append that does not fit raises
nothing but reports the record as refused (``SpoolFull`` from ``append_one``).

Plain Python, no Kafka: everything here is testable with files only.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("herald.spool")

MAGIC = b"HSP1"
_HEAD = struct.Struct(">4sII")  # magic, payload length, crc32 of the payload
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
SEGMENT_BYTES = 16 * 1024 * 1024
FULL_BELOW = 1024  # free bytes under which the spool counts as full (for /readyz)
_SUFFIX = ".seg"


class SpoolError(Exception):
    """The spool cannot be used (directory, lock, disk)."""


class SpoolFull(SpoolError):
    """The record does not fit in ``max_bytes``."""


@dataclass(frozen=True)
class SpoolRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def encode(self) -> bytes:
        topic = self.topic.encode()
        parts = [_U16.pack(len(topic)), topic, _U32.pack(len(self.key)), self.key, _U16.pack(len(self.headers))]
        for name, value in self.headers:
            raw = name.encode()
            parts += [_U16.pack(len(raw)), raw, _U32.pack(len(value)), value]
        parts.append(self.value)
        payload = b"".join(parts)
        return _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> SpoolRecord:
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(payload):
                raise ValueError("record shorter than its fields")
            out = payload[pos:pos + n]
            pos += n
            return out

        topic = take(_U16.unpack(take(2))[0]).decode()
        key = take(_U32.unpack(take(4))[0])
        headers = []
        for _ in range(_U16.unpack(take(2))[0]):
            name = take(_U16.unpack(take(2))[0]).decode()
            headers.append((name, take(_U32.unpack(take(4))[0])))
        return cls(topic, key, payload[pos:], headers)

    def header(self, name: str) -> str:
        for n, v in self.headers:
            if n == name:
                return v.decode(errors="replace")
        return ""


@dataclass(frozen=True, order=True)
class Position:
    """Where a record ends (``ack`` takes the position after the last acknowledged record)."""

    segment: int
    offset: int


@dataclass
class _Segment:
    id: int
    path: Path
    size: int = 0  # valid bytes
    records: int = 0  # records in the file (acknowledged ones included)


def _scan(data: bytes, start: int = 0) -> tuple[list[tuple[int, int]], int]:
    """``(record spans (start, end), end of the last valid record)`` of a segment's bytes."""
    spans = []
    pos = start
    while pos + _HEAD.size <= len(data):
        magic, length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if magic != MAGIC or end > len(data) or zlib.crc32(data[pos + _HEAD.size:end]) != crc:
            break
        spans.append((pos, end))
        pos = end
    return spans, pos


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A bounded, ordered, crash-safe queue of ``SpoolRecord`` on disk. Thread-safe: the bridge
    appends from one thread and drains from another."""

    def __init__(self, directory: str | Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes))
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # the last segment, open for appending
        self.head = Position(0, 0)
        self.records = 0  # waiting (not acknowledged)
        self.bytes = 0  # waiting
        self.dropped_torn = 0  # bytes cut from torn tails when opened
        self._refused = False  # an append did not fit since the last acknowledgement
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {self.dir}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip()
            os.close(self._lock_fd)
            raise SpoolError(f"spool directory {self.dir} is in use by another process (pid {other or '?'}); "
                             "each bridge needs its own herald.spool.dir") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        self._open()

    # -- opening ----------------------------------------------------------------------------------
    def _path(self, seg_id: int) -> Path:
        return self.dir / f"{seg_id:020d}{_SUFFIX}"

    def _read_cursor(self) -> Position:
        try:
            seg, off = (self.dir / "cursor").read_text().split()
            return Position(int(seg), int(off))
        except (OSError, ValueError):
            return Position(0, 0)

    def _open(self) -> None:
        ids = sorted(int(p.name[:-len(_SUFFIX)]) for p in self.dir.glob(f"*{_SUFFIX}")
                     if p.name[:-len(_SUFFIX)].isdigit())
        cursor = self._read_cursor()
        for seg_id in ids:
            if seg_id < cursor.segment:  # acknowledged; its deletion was interrupted
                self._path(seg_id).unlink(missing_ok=True)
                continue
            path = self._path(seg_id)
            data = path.read_bytes()
            spans, valid = _scan(data)
            if valid < len(data):
                self.dropped_torn += len(data) - valid
                log.warning("spool segment %s: %d bytes after the last complete record dropped (a write cut "
                            "short by a crash)", path.name, len(data) - valid)
                with open(path, "r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
            self._segments.append(_Segment(seg_id, path, valid, len(spans)))
            start = cursor.offset if seg_id == cursor.segment else 0
            waiting = [s for s in spans if s[0] >= start]
            self.records += len(waiting)
            self.bytes += valid - (waiting[0][0] if waiting else valid)
        if self._segments:
            first = self._segments[0]
            self.head = cursor if cursor.segment == first.id else Position(first.id, 0)
            if self.head.offset > first.size:  # a cursor past the data: nothing of that segment is waiting
                self.head = Position(first.id, first.size)
        else:
            self.head = Position(max(cursor.segment, 1), 0)
        if self.records == 0:
            self._clear()
        if self.records:
            log.info("spool %s: %d event(s), %d bytes waiting for Kafka", self.dir, self.records, self.bytes)

    def _clear(self) -> None:
        """Nothing waits: delete every segment (the next append starts a fresh one)."""
        next_id = (self._segments[-1].id + 1) if self._segments else max(self.head.segment, 1)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for seg in self._segments:
            seg.path.unlink(missing_ok=True)
        self._segments = []
        self.head = Position(next_id, 0)
        self._write_cursor()

    def _write_cursor(self) -> None:
        tmp = self.dir / "cursor.tmp"
        with open(tmp, "w") as f:
            f.write(f"{self.head.segment} {self.head.offset}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "cursor")
        _fsync_dir(self.dir)

    # -- state --------------------------------------------------------------------------------------
    @property
    def disk_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def full(self) -> bool:
        """An append was refused since space was last freed, or not even a small event fits."""
        return self._refused or self.max_bytes - self.disk_bytes < FULL_BELOW

    def depth(self) -> dict[str, int]:
        with self._lock:
            return {"records": self.records, "bytes": self.bytes, "max-bytes": self.max_bytes}

    def __len__(self) -> int:
        return self.records

    # -- writing ------------------------------------------------------------------------------------
    def append(self, records: Iterable[SpoolRecord]) -> list[bool]:
        """Append ``records`` in order, fsync'd before returning; for each, whether it was taken
        (False: it did not fit in ``max_bytes``). Raises ``SpoolError`` when the disk fails (then
        none of them was taken)."""
        encoded = [r.encode() for r in records]
        taken: list[bool] = []
        with self._lock:
            touched: list[tuple[_Segment, int]] = []  # (segment, size before) for a rollback
            synced_dir = False
            try:
                used = self.disk_bytes
                for raw in encoded:
                    if used + len(raw) > self.max_bytes:
                        taken.append(False)
                        self._refused = True
                        continue
                    seg = self._segments[-1] if self._segments and self._fd is not None else None
                    if seg is None or (seg.size and seg.size + len(raw) > self.segment_bytes):
                        seg = self._new_segment()
                        synced_dir = True
                    if not touched or touched[-1][0] is not seg:
                        touched.append((seg, seg.size))
                    written = os.write(self._fd_of(seg), raw)
                    if written != len(raw):
                        raise OSError(28, "short write")
                    seg.size += len(raw)
                    seg.records += 1
                    used += len(raw)
                    taken.append(True)
                if touched:
                    os.fsync(self._fd_of(touched[-1][0]))
                if synced_dir:
                    _fsync_dir(self.dir)
            except OSError as exc:
                for seg, size in touched:  # roll back: no half-written record stays behind
                    try:
                        os.truncate(seg.path, size)
                    except OSError:
                        pass
                    seg.size = size
                self._recount()
                raise SpoolError(f"cannot write to spool directory {self.dir}: {exc.strerror or exc}") from None
            n = sum(taken)
            self.records += n
            self.bytes += sum(len(raw) for raw, ok in zip(encoded, taken) if ok)
        return taken

    def append_one(self, record: SpoolRecord) -> None:
        if not self.append([record])[0]:
            raise SpoolFull(f"the spool is full ({self.disk_bytes} of {self.max_bytes} bytes)")

    def _fd_of(self, seg: _Segment) -> int:
        assert self._fd is not None and seg is self._segments[-1]
        return self._fd

    def _new_segment(self) -> _Segment:
        if self._fd is not None:  # finish the previous segment before moving on
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        seg_id = self._segments[-1].id + 1 if self._segments else self.head.segment
        if not self._segments:  # an empty spool: the head is the new segment's start
            self.head = Position(seg_id, 0)
        seg = _Segment(seg_id, self._path(seg_id))
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if os.fstat(self._fd).st_size:  # a leftover with the same number (cannot happen after _open)
            os.ftruncate(self._fd, 0)
        self._segments.append(seg)
        return seg

    def _recount(self) -> None:
        """Records and bytes waiting, from the files (after a failed append)."""
        self.records = self.bytes = 0
        for seg in self._segments:
            data = seg.path.read_bytes()[:seg.size]
            spans, _ = _scan(data)
            seg.records = len(spans)
            start = self.head.offset if seg.id == self.head.segment else 0
            waiting = [s for s in spans if s[0] >= start]
            self.records += len(waiting)
            self.bytes += seg.size - (waiting[0][0] if waiting else seg.size)

    # -- reading ------------------------------------------------------------------------------------
    def peek(self, max_records: int = 500, max_bytes: int = 8 * 1024 * 1024) -> list[tuple[Position, SpoolRecord]]:
        """The oldest waiting records (at least one when any waits), each with the position after it."""
        with self._lock:
            segments = [(s.id, s.path, s.size) for s in self._segments if s.id >= self.head.segment]
            head = self.head
        out: list[tuple[Position, SpoolRecord]] = []
        total = 0
        for seg_id, path, size in segments:
            start = head.offset if seg_id == head.segment else 0
            if start >= size:
                continue
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(size - start)
            pos = 0
            while pos < len(data) and len(out) < max_records and (not out or total < max_bytes):
                magic, length, crc = _HEAD.unpack_from(data, pos)
                end = pos + _HEAD.size + length
                payload = data[pos + _HEAD.size:end]
                if magic != MAGIC or zlib.crc32(payload) != crc:  # checked at open and written whole
                    raise SpoolError(f"spool segment {path.name} is damaged at offset {start + pos}")
                out.append((Position(seg_id, start + end), SpoolRecord.decode(payload)))
                total += end - pos
                pos = end
            if len(out) >= max_records or total >= max_bytes:
                break
        return out

    def ack(self, upto: Position) -> None:
        """Every record before ``upto`` is in Kafka: move the head, delete finished segments."""
        with self._lock:
            if upto <= self.head:
                return
            acked = 0
            acked_bytes = 0
            for seg in self._segments:
                if seg.id < self.head.segment or seg.id > upto.segment:
                    continue
                start = self.head.offset if seg.id == self.head.segment else 0
                end = upto.offset if seg.id == upto.segment else seg.size
                if end <= start:
                    continue
                with open(seg.path, "rb") as f:
                    f.seek(start)
                    spans, _ = _scan(f.read(end - start))
                acked += len(spans)
                acked_bytes += end - start
            self.records -= acked
            self.bytes -= acked_bytes
            self.head = upto
            self._refused = False
            if self.records <= 0:
                self.records = self.bytes = 0
                self._clear()
                return
            # segments wholly before the head (the appender has moved on from them)
            done = [s for s in self._segments[:-1]
                    if s.id < upto.segment or (s.id == upto.segment and upto.offset >= s.size)]
            if done and done[-1].id == upto.segment:
                nxt = self._segments[len(done)]
                self.head = Position(nxt.id, 0)
            self._write_cursor()
            for seg in done:
                seg.path.unlink(missing_ok=True)
            self._segments = self._segments[len(done):]

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd >= 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = -1
