"""The worker's Kafka I/O: one consumer and one producer, owned by one thread, on public APIs only.

    Kafka thread                                   event loop
    ────────────                                   ──────────
    consume(batch) ─▶ tracker.taken ─▶ Ticket ───▶ stages (router, route-state, actions)
    producer.poll ─▶ delivery reports (Ticket.acked)      │ produce(..., ticket)
    notices ◀──────────────────────────────────────────── done(ticket) / skip(ticket)
    tracker.finished ─▶ store_offsets ─▶ auto-commit

A message is *finished* once its stage is done with it **and** every record it produced is
acknowledged by the broker (delivery reports, not a flush that blocks everything). The commit
offset of a partition never passes a message that is not finished (``OffsetTracker``).
Offsets are stored (``store_offsets``), never committed explicitly outside a rebalance callback:
librdkafka refuses to store offsets of a partition this member no longer owns, so stale work can
never overwrite the new owner's commit.

Every consumer call, and the producer's ``poll``, happens on the Kafka thread (confluent-kafka
2.16 serialises consumer calls across threads, so a call from another thread would wait behind
``consume``). The loop talks to the thread through thread-safe deques only.

Rebalances (cooperative-sticky): ``on_revoke`` runs inside ``consume`` on the Kafka thread; it
waits (bounded) until the loop has finished or skipped the revoked partitions' messages, then
commits their offsets synchronously. Messages the loop had not started yet are skipped: the next
owner reads them again from the commit. ``on_lost`` commits nothing. Each assignment of a
partition has a generation; a ticket of an older generation is stale and the loop skips it.

A record that the broker refuses (delivery report error) could be lost if its source message were
committed, so its ticket never finishes and the worker stops with an error: the next worker
processes the message again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from agents.offsets import TP, OffsetTracker
from app.telemetry import metrics
from app.errors import ConfigError
from app.kafka.client import consumer_config, producer_config

log = logging.getLogger("herald.kafka")

# A partition with this many messages in flight is paused until it is back under RESUME_BELOW
# (a pause drops librdkafka's prefetch of the partition, so the window must outlast a refetch:
# 64/16 halved the soak's throughput). Consumed batches are small (``batch_size``) so that one
# batch cannot overshoot the window by much: with 500 a worker held ~3,700 action messages.
PAUSE_ABOVE = 256
RESUME_BELOW = 128


class Ticket:
    """One consumed message on its way through a stage."""

    __slots__ = ("io", "msg", "topic", "partition", "offset", "gen", "produced", "acked", "processed", "finished")

    def __init__(self, io: KafkaIO, msg: Message, gen: int) -> None:
        self.io = io
        self.msg = msg
        # the stubs say "| None": None only on error events, which never become tickets
        self.topic: str = msg.topic()  # type: ignore[assignment]
        self.partition: int = msg.partition()  # type: ignore[assignment]
        self.offset: int = msg.offset()  # type: ignore[assignment]
        self.gen = gen
        self.produced = 0  # records produced for this message (written by the loop only)
        self.acked = 0  # of which the broker acknowledged (written by the producer's poll thread only)
        self.processed = False  # the Kafka thread got the loop's done notice
        self.finished = False  # the Kafka thread told the tracker

    @property
    def value(self) -> bytes:
        return self.msg.value() or b""

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:  # producer's poll thread
        if err is not None:
            self.io._failed(self, err, msg)
            return
        self.acked += 1
        self.io._acks.append(self)

    def all_acked(self) -> bool:
        """Whether every record produced so far is acknowledged (read on the loop; may lag)."""
        return self.acked == self.produced


class KafkaFatalError(Exception):
    pass


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class KafkaIO:
    def __init__(
        self,
        conf: dict[str, Any],
        group: str,
        topics: list[str],
        dispatch: Callable[[list[Ticket]], None],
        *,
        instance_id: str = "",
        on_assigned: Callable[[list[TP]], None] | None = None,
        on_revoked: Callable[[list[TP]], None] | None = None,
        batch_size: int = 64,
        revoke_timeout: float = 20.0,
        max_message_bytes: int | None = None,
    ) -> None:
        """``max_message_bytes``: the largest record the worker produces (``app.kafka.topics.SizeLimits``
        ``.pipeline``); a larger ``message.max.bytes`` in ``herald.kafka.properties`` is kept, a
        smaller one raises ``ConfigError``."""
        self.topics = topics
        self.dispatch = dispatch
        self.on_assigned = on_assigned or (lambda tps: None)
        self.on_revoked = on_revoked or (lambda tps: None)
        self.batch_size = batch_size
        self.revoke_timeout = revoke_timeout
        self.tracker = OffsetTracker()
        self.assignment: set[TP] = set()
        self._gen: dict[TP, int] = {}
        self._next_gen = 0
        self._paused: set[TP] = set()
        self._skipped: dict[TP, int] = {}
        self._notices: deque[tuple[Ticket, bool]] = deque()  # (ticket, finished?) from the loop
        self._acks: deque[Ticket] = deque()  # tickets with a new delivery report, from the poll thread
        self._poll_stop = threading.Event()
        self._stop = threading.Event()
        self._closing = False
        self._resubscribe: list[str] | None = None
        self.fatal: str | None = None
        self.stopped: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_outage_log = 0.0
        common = {**conf, "error_cb": self._on_error, "logger": logging.getLogger("herald.kafka.client")}
        # acks=all, idempotent, murmur2 (the partitions of the bridge, replay and Java clients)
        sizes: dict[str, Any] = {}
        if max_message_bytes is not None:
            own = conf.get("message.max.bytes")
            if own is not None and int(own) < max_message_bytes:
                raise ConfigError(f"{own} is below the {max_message_bytes} bytes the worker must produce for "
                                  "herald.body-limit "
                                  "(4x the body limit + 64 KiB: action messages carry the event and its rendered content)",
                                  "herald.kafka.properties.message.max.bytes", own)
            sizes["message.max.bytes"] = max(int(own or 0), max_message_bytes)
        self.producer = Producer(producer_config(common, **{"linger.ms": 2, "compression.type": "lz4", **sizes}))
        consumer_conf = consumer_config(common, group, **{
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 300000,
            "isolation.level": "read_committed",
            # a subscribed topic missing from the metadata (created by another worker a moment ago)
            # gets its partitions at the next refresh: every 10 s, not librdkafka's 5 min
            "topic.metadata.refresh.interval.ms": 10000,
            # let the broker gather a fetch's worth of data (fewer, larger fetches cost the broker
            # 2.5x less CPU per event), but not for long: each hop waits at most fetch.wait.max.ms
            "fetch.min.bytes": 65536,
            "fetch.wait.max.ms": 10,
            # prefetch bounded for memory: at most 8 MiB queued in librdkafka, 8 MiB per fetch
            "fetch.max.bytes": 8 * 1024 * 1024,
            "queued.max.messages.kbytes": 8 * 1024,
            "queued.min.messages": 1000,
            # consumer lag per assigned partition for /metrics (one JSON document per interval)
            "statistics.interval.ms": metrics.STATS_INTERVAL_MS,
            "stats_cb": lambda stats: metrics.consumer_stats(stats, self.assignment),
        })
        if instance_id:
            consumer_conf["group.instance.id"] = instance_id
        self.consumer = Consumer(consumer_conf)
        self._thread = threading.Thread(target=self._run, name="herald-kafka", daemon=True)
        # delivery reports as soon as they come (consume waits up to its timeout): they finish
        # messages and release action slots waiting for a delivered key
        self._poller = threading.Thread(target=self._poll_producer, name="herald-kafka-producer", daemon=True)

    # -- loop side ----------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.stopped = self._loop.create_future()
        self.consumer.subscribe(self.topics, on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lost)
        self._poller.start()
        self._thread.start()

    def current(self, ticket: Ticket) -> bool:
        """Whether ``ticket``'s partition is still assigned to this worker in the same generation."""
        return self._gen.get(ticket.tp) == ticket.gen

    def produce(self, topic: str, key: str | bytes | None, value: bytes | None, ticket: Ticket | None = None,
                partition: int | None = None) -> None:
        """Hand a record to the producer; ``ticket``'s message finishes only once it is acknowledged."""
        on_delivery = None
        if ticket is not None:
            ticket.produced += 1
            on_delivery = ticket.on_delivery
        while not self._try_produce(topic, key, value, on_delivery, partition):
            time.sleep(0.005)

    async def produce_acked(self, topic: str, key: str, value: bytes, ticket: Ticket,
                            partition: int | None = None) -> None:
        """``produce``, then wait until the broker acknowledged the record (a record that fails
        stops the worker, and this never returns)."""
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:  # producer's poll thread
            ticket.on_delivery(err, msg)
            if err is None:
                self._call_loop(_resolve, fut)

        ticket.produced += 1
        while not self._try_produce(topic, key, value, on_delivery, partition):
            await asyncio.sleep(0.005)
        await fut

    def _try_produce(self, topic: str, key: str | bytes | None, value: bytes | None,
                     on_delivery: Callable[[KafkaError | None, Message], None] | None, partition: int | None) -> bool:
        """False when the local queue is full (the producer's poll thread drains it: try again)."""
        kwargs: dict[str, Any] = {}
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        if partition is not None:
            kwargs["partition"] = partition
        try:
            self.producer.produce(topic, value, key, **kwargs)
            return True
        except BufferError:
            if self.fatal:
                raise KafkaFatalError(self.fatal) from None
            return False

    def done(self, ticket: Ticket) -> None:
        """The loop finished with ``ticket``'s message (its records may still be in flight)."""
        self._notices.append((ticket, True))

    def skip(self, ticket: Ticket) -> None:
        """The loop dropped ``ticket``'s message unprocessed (its partition was revoked)."""
        self._notices.append((ticket, False))

    def stop(self) -> None:
        self._stop.set()

    def subscribe(self, topics: list[str]) -> None:
        """Change the subscription (a config reload added or retired an action); the Kafka thread
        applies it (cooperative rebalance: partitions of the other topics stay assigned)."""
        self._resubscribe = list(topics)

    # -- Kafka thread -------------------------------------------------------------------------
    def _call_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the process is exiting
            pass

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self.fatal is None:
                if self._resubscribe is not None:
                    self.topics, self._resubscribe = self._resubscribe, None
                    self.consumer.subscribe(self.topics, on_assign=self._assign, on_revoke=self._revoke,
                                            on_lost=self._lost)
                busy = bool(self._notices) or any(self.tracker.in_flight(tp) for tp in self.assignment)
                # consume(n, timeout) waits for n messages or the timeout, which at low rates adds the
                # whole timeout to every hop: wait for the first message only, then take what is queued
                first = self.consumer.poll(0.02 if busy else 0.1)
                msgs = [] if first is None else [first, *self.consumer.consume(self.batch_size, 0)]
                self._serve_notices()
                if msgs:
                    self._hand_over(msgs)
                self._store()
                self._flow_control()
            self._shutdown()
        except BaseException as exc:  # noqa: BLE001 - nothing may end this thread silently
            if self.fatal is None:
                self.fatal = f"Kafka thread failed: {type(exc).__name__}: {exc}"
            log.error("%s", self.fatal)
            try:
                self.consumer.close()
            except Exception:  # noqa: BLE001
                pass
        finally:
            self._call_loop(self._set_stopped)

    def _set_stopped(self) -> None:
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(None)

    def _on_error(self, err: KafkaError) -> None:
        code = err.code()
        if err.fatal() or code == KafkaError._AUTHENTICATION:
            if self.fatal is None:
                self.fatal = f"Kafka: {err.str()}"
                log.error("fatal Kafka error: %s", err.str())
            return
        if code in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            now = time.monotonic()
            if now - self._last_outage_log > 10:
                self._last_outage_log = now
                log.warning("Kafka unreachable (retrying): %s", err.str())
            return
        log.warning("Kafka: %s", err.str())

    def _hand_over(self, msgs: list[Message]) -> None:
        tickets = []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    self.fatal = f"Kafka: {err.str()}"
                log.warning("consumer: %s", err.str())
                continue
            tp = (msg.topic(), msg.partition())
            gen = self._gen.get(tp)  # type: ignore[arg-type]  # "str | None" in the stubs; set on a message
            if gen is None:  # a message of a partition revoked meanwhile
                continue
            self.tracker.taken(tp, msg.offset())  # type: ignore[arg-type]  # as above
            tickets.append(Ticket(self, msg, gen))
        if tickets:
            self._call_loop(self.dispatch, tickets)

    def _poll_producer(self) -> None:
        while not self._poll_stop.is_set():
            self.producer.poll(0.05)

    def _serve_notices(self) -> None:
        acks = self._acks
        while acks:
            ticket = acks.popleft()
            if ticket.processed and not ticket.finished and ticket.acked == ticket.produced:
                self._finish(ticket)
        notices = self._notices
        while notices:
            ticket, finished = notices.popleft()
            if self._gen.get(ticket.tp) != ticket.gen:
                continue  # stale: the partition was revoked and the next owner reads it again
            if not finished:
                self._skipped[ticket.tp] = self._skipped.get(ticket.tp, 0) + 1
                continue
            ticket.processed = True
            if ticket.acked == ticket.produced:
                self._finish(ticket)

    def _finish(self, ticket: Ticket) -> None:
        ticket.finished = True
        if self._gen.get(ticket.tp) == ticket.gen:
            self.tracker.finished(ticket.tp, ticket.offset)

    def _failed(self, ticket: Ticket, err: KafkaError, msg: Message) -> None:
        # the record may be lost: keep the source message unfinished (its offset holds the commit)
        # and stop, so that the next worker processes it again
        if self.fatal is None:
            self.fatal = (f"producing to {msg.topic()} failed ({err.str()}) for {ticket.topic}[{ticket.partition}]"
                          f"@{ticket.offset}; stopping so that it is processed again")
            log.error("%s", self.fatal)

    def _store(self) -> None:
        offsets = [TopicPartition(tp[0], tp[1], off) for tp, off in self.tracker.changed() if tp in self.assignment]
        if offsets:
            try:
                self.consumer.store_offsets(offsets=offsets)
            except KafkaException as exc:  # a partition revoked meanwhile: its new owner commits it
                log.debug("store_offsets: %s", exc)

    def _flow_control(self) -> None:
        pause, resume = [], []
        for tp in self.assignment:
            n = self.tracker.in_flight(tp)
            if tp in self._paused:
                if n < RESUME_BELOW:
                    resume.append(tp)
            elif n > PAUSE_ABOVE:
                pause.append(tp)
        if pause:
            self.consumer.pause([TopicPartition(*tp) for tp in pause])
            self._paused.update(pause)
        if resume:
            self.consumer.resume([TopicPartition(*tp) for tp in resume])
            self._paused.difference_update(resume)

    # rebalance callbacks: inside consume()/close(), on the Kafka thread
    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        for tp in tps:
            self._next_gen += 1
            self._gen[tp] = self._next_gen
            self._skipped.pop(tp, None)
        self.tracker.forget(tps)
        self.assignment.update(tps)
        # librdkafka keeps a partition's pause across a revoke or loss and a later re-assignment
        # (librdkafka #1849), while _drop forgot it: a partition paused by _flow_control when the
        # group lost it (a broker outage longer than session.timeout.ms) came back paused and was
        # never fetched again. Each assignment starts resumed, as _paused says.
        try:
            consumer.resume(partitions)
        except KafkaException as exc:
            log.warning("could not resume newly assigned partitions %s: %s",
                        " ".join(f"{t}[{p}]" for t, p in tps), exc)
        self._call_loop(self.on_assigned, tps)

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._wait_finished(tps, 1.0 if self._closing else self.revoke_timeout)
        pending = {tp: self.tracker.in_flight(tp) - self._skipped.get(tp, 0) for tp in tps}
        if any(n > 0 for n in pending.values()):
            log.warning("partitions revoked with messages still in flight (the next owner processes them again): %s",
                        ", ".join(f"{t}[{p}]: {n}" for (t, p), n in pending.items() if n > 0))
        offsets = []
        for tp in tps:
            off = self.tracker.commit_offset(tp)
            if off is not None:
                offsets.append(TopicPartition(tp[0], tp[1], off))
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("commit on revoke failed: %s", exc)
        self._drop(tps)

    def _wait_finished(self, tps: list[TP], timeout: float) -> None:
        """Until every message of ``tps`` handed to the loop is finished or skipped (bounded)."""
        deadline = time.monotonic() + timeout
        while self.fatal is None:
            self._serve_notices()
            if all(self.tracker.in_flight(tp) <= self._skipped.get(tp, 0) for tp in tps):
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.warning("partitions lost (not committed; their next owner processes them again): %s",
                    " ".join(f"{t}[{p}]" for t, p in tps))
        self._drop(tps)

    def _drop(self, tps: list[TP]) -> None:
        for tp in tps:
            self._gen.pop(tp, None)
            self._skipped.pop(tp, None)
        self.tracker.forget(tps)
        self.assignment.difference_update(tps)
        self._paused.difference_update(tps)
        self._call_loop(self.on_revoked, tps)

    def _shutdown(self, timeout: float = 15.0) -> None:
        """Stop intake, let the loop finish what it has, flush, store the offsets, and leave the group."""
        if self.assignment and self.fatal is None:
            self.consumer.pause([TopicPartition(*tp) for tp in self.assignment])
            self._wait_finished(list(self.assignment), timeout)
        self._poll_stop.set()
        self._poller.join()
        remaining = self.producer.flush(10)  # reports of the last records, on this thread now
        if remaining:
            log.warning("%d records were not acknowledged at shutdown; their messages are processed again", remaining)
        self._serve_notices()
        if self.fatal is None:
            self._store()
        self._closing = True
        self.consumer.close()  # commits the stored offsets and leaves the group
