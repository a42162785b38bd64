"""Kafka topic partitions as a Bytewax partitioned source that hands over whole batches.

Bytewax's bundled `KafkaSource` emits one Python object per message; handing over each
polled batch of raw values as one `RawBatch` is what lets the flow decode vectorised
(about 3x the throughput). It keeps the bundled connector's habits: one Bytewax
partition per Kafka partition (spread over workers by Bytewax), offsets in the snapshot
so a resume continues exactly, end-of-partition handling for bounded runs, and errors
surfaced instead of swallowed. Beyond them:

- the brokers unreachable at start: one line saying so, then quiet retries with
  backoff (up to `connect_timeout_s`, 0 = for ever), and a line when they answer;
- a topic that does not exist stops the start with one line (Tansu and Kafka with
  auto-creation would otherwise create it, and a typo would read nothing, "successfully");
- bounded runs stop at the end of a partition only once the end is confirmed: no new
  message for `end_confirm_s` after librdkafka's end-of-partition event (Tansu can send
  it before everything written by several producers is readable);
- live, each partition tells the input clock (`candlewax.input_clock`) whether it has
  read everything there is, so the watermark never runs ahead of unread trades. An idle
  partition asks the broker where it ends on a thread of its own (`EndQuestions`): the
  worker's thread never waits on the network.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from prometheus_client import Gauge

from candlewax.failures import EXIT_STOPPED, EXIT_USAGE, InputError, fail
from candlewax.heap import collection_paused
from candlewax.input_clock import INPUT_CLOCK
from candlewax.kafka_health import KafkaHealth
from candlewax.records import FIRST_BATCH_PART, RawBatch, ReadAhead
from candlewax.stopping import stop_requested

log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge(
    "candlewax_kafka_consumer_lag",
    "Messages in the partition after the next offset to read (the high watermark as the "
    "broker last reported it, minus that offset).",
    ["topic", "partition"],
)

# Larger fetches read several times faster than librdkafka's defaults (measured on Tansu).
CONSUMER_DEFAULTS: dict[str, Any] = {
    # Large fetches while there is a backlog (the broker answers at once when it has
    # this much); when caught up, a fetch waits at most 10 ms for more: that wait is
    # part of every live candle's delay.
    "fetch.min.bytes": 1_000_000,
    "fetch.wait.max.ms": 10,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    # 0 makes every consumer spin when its queue is full; 4 consumers then eat a core.
    "fetch.queue.backoff.ms": 100,
    # A resumed offset the topic no longer holds (retention went past it): read from the
    # oldest message still there, not (librdkafka's default) skip to the newest.
    "auto.offset.reset": "earliest",
}
# How often an idle live partition asks the broker where the partition ends (one round
# trip), and how long it waits between asks while the broker does not answer.
_END_CHECK_S = 0.1
_END_CHECK_BACKOFF_S = 2.0
_END_CHECK_TIMEOUT_S = 0.5
# An ask that took this long did not time out at the broker: the process was stopped in
# it (SIGSTOP, a frozen VM, swap). It says nothing about the broker.
_STALLED_S = 4 * _END_CHECK_TIMEOUT_S
# How long a fresh start waits for the broker to say where a partition begins.
_START_QUERY_TIMEOUT_S = 2.0
# A live partition is at its head when what is left to read is no more than one poll
# brought (or this many messages) and the newest message read is this fresh (`at_head`).
_HEAD_MESSAGES = 1_000
_HEAD_AGE_MS = 1_000


# Batches of this many messages or more are read ahead (`KafkaBatchPartition._hand_over`):
# about where the strict read's threads pay (`operators.decode`); a live poll's handful
# is handed over at once.
READ_AHEAD_MESSAGES = 2_000


@functools.cache
def _read_ahead_thread() -> ThreadPoolExecutor:
    """One thread for the process's partitions: the reads are native code with threads
    of their own."""
    return ThreadPoolExecutor(1, "kafka-read-ahead")


@dataclass(frozen=True)
class _Polled:
    batch: RawBatch
    newest_timestamp_ms: int
    next_offset: int  # the offset after the batch's last message


class KafkaBatchPartition(StatefulSourcePartition[RawBatch, int]):
    """One Kafka partition; the snapshot is the offset of the next message to hand over
    (a batch kept back for its read ahead is read again on resume)."""

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        partition: int,
        resume_offset: int | None,
        batch_size: int,
        poll_timeout_s: float,
        tail: bool,
        end_confirm_s: float = 0.5,
        read_ahead: ReadAhead | None = None,
    ):
        self._topic = topic
        self._read_ahead = read_ahead
        self._kept: _Polled | None = None  # a batch kept back while it is read ahead
        self._partition = partition
        self._batch_size = batch_size
        # The first poll with messages takes a small batch (`FIRST_BATCH_PART`).
        self._poll_size = max(1, batch_size // FIRST_BATCH_PART)
        self._idle_wait = timedelta(seconds=poll_timeout_s)
        self._awake: datetime | None = None
        self._tail = tail
        self._end_confirm_s = end_confirm_s
        self._end_seen_at: float | None = None  # bounded: when the end was last signalled
        self._source = f"kafka:{topic}/{partition}"
        self._health = KafkaHealth("consumer", str(config.get("bootstrap.servers")))
        self._consumer = Consumer({**config, **self._health.client_config()})
        self._topic_partition = TopicPartition(topic, partition)
        self._offset = self._first_offset() if resume_offset is None else resume_offset
        # assign(), not subscribe(): Bytewax places partitions and recovery keeps offsets.
        self._consumer.assign([TopicPartition(topic, partition, self._offset)])
        self._lag = CONSUMER_LAG.labels(topic, str(partition))
        self._next_end_check = 0.0
        self._end_questions = EndQuestions(
            {**config, **self._health.helper_config()}, self._topic_partition
        )
        # The outage (its `down_since`) first seen by a poll with messages, and the end of
        # the partition librdkafka had cached then (`outage_over`).
        self._down_seen = NO_OUTAGE_SEEN
        self._at_end = False  # the last answer of the broker: nothing more to read
        self._newest_timestamp_ms = 0  # of the newest message read (Kafka timestamp)
        if tail:
            INPUT_CLOCK.behind(self._source)

    def _first_offset(self) -> int:
        """Where a run with nothing to resume starts: the partition's oldest offset, asked
        for (one round trip). Assigned `OFFSET_BEGINNING`, librdkafka finds it with an
        offset query it first retries on a 500 ms timer: every fresh start read nothing
        for half a second. Without an answer, `OFFSET_BEGINNING` all the same."""
        try:
            low, _ = self._consumer.get_watermark_offsets(
                self._topic_partition, timeout=_START_QUERY_TIMEOUT_S, cached=False
            )
        except KafkaException:
            return OFFSET_BEGINNING
        return low if low is not None and low >= 0 else OFFSET_BEGINNING

    def next_batch(self) -> list[RawBatch]:
        if stop_requested():
            raise StopIteration
        if self._health.fatal is not None:
            fail(InputError(f"Kafka topic {self._topic!r}", self._health.fatal.str()))
        # A poll makes (and frees) one tracked `Message` object per message: no collection
        # while it does (`candlewax.heap`).
        with collection_paused():
            polled = self._poll()
        ready = self._hand_over(polled)
        # A batch kept back goes at the next call, without waiting for a tick.
        self._awake = None if polled or self._kept else self._next_tick()
        if not ready:
            if polled is None:
                self._when_idle()
            return []
        newest = ready[-1]
        self._offset = newest.next_offset
        high = self._report_lag()
        down_since = self._health.down_since
        if down_since is not None:
            # No broker question here (`outage_over`): one can outlive its timeout while
            # a connection comes back (librdkafka issue 1869), on the worker's thread.
            self._down_seen, over = outage_over(self._down_seen, down_since, high)
            if over:
                self._health.reachable()
        if self._tail:
            self._newest_timestamp_ms = newest.newest_timestamp_ms
            self._at_end = high is not None and at_head(
                high - self._offset,
                len(newest.batch),
                newest.newest_timestamp_ms,
                time.time() * 1000,
                kept=self._kept is not None,
            )
            self._tell_clock()
        return [polled.batch for polled in ready]

    def _hand_over(self, polled: _Polled | None) -> list[_Polled]:
        """What to hand over now, oldest first. A batch of `READ_AHEAD_MESSAGES` or more
        is kept back while its strict read runs on the read-ahead thread (`read_ahead`,
        the batch's `ahead`), and the one kept before it goes: the flow works on that one
        meanwhile (the strict read of 100,000 messages, ~0.3 s of native code, runs
        beside the flow's Python: +25-30 % trades/s from a backlog on 2 cores). A smaller
        batch (a live poll's) goes at once, after any kept back."""
        if (
            polled is not None
            and self._read_ahead is not None
            and len(polled.batch) >= READ_AHEAD_MESSAGES
        ):
            ahead = _read_ahead_thread().submit(self._read_ahead, polled.batch.values)
            polled = dataclasses.replace(
                polled, batch=dataclasses.replace(polled.batch, ahead=ahead)
            )
            kept, self._kept = self._kept, polled
            return [] if kept is None else [kept]
        ready = [batch for batch in (self._kept, polled) if batch is not None]
        self._kept = None
        return ready

    def _next_tick(self) -> datetime:
        tick = next_tick(time.time(), self._idle_wait.total_seconds())
        return datetime.fromtimestamp(tick, timezone.utc)

    def _poll(self) -> _Polled | None:
        """What librdkafka has fetched in the background, without waiting (the worker is
        never blocked; when there was nothing it comes back at the next tick, `next_tick`),
        as a batch with the Kafka timestamp of its newest message and the offset after it.
        The `Message` objects are freed on return."""
        messages = self._consumer.consume(self._poll_size, 0)
        end_before = self._end_seen_at
        if messages:
            self._poll_size = self._batch_size
            # Per-message work is the cost here: one C-level pass per field (map over the
            # method descriptors), no Python loop body.
            errors = list(map(Message.error, messages))
            if any(errors):
                messages = self._without_errors(messages, errors)
        if not messages:
            return None
        if self._end_seen_at is end_before:  # new messages after the end: not the end
            self._end_seen_at = None
        values = list(map(Message.value, messages))
        keys = list(map(Message.key, messages))
        first, last = messages[0].offset(), messages[-1].offset()
        assert first is not None and last is not None
        positions: Sequence[int]
        if last - first + 1 == len(messages):
            positions = range(first, last + 1)  # the usual case: no gaps, nothing to list
        else:
            positions = list(map(Message.offset, messages))  # type: ignore[arg-type]
        newest_timestamp_ms = messages[-1].timestamp()[1]
        return _Polled(
            RawBatch(self._source, values, positions, keys), newest_timestamp_ms, last + 1
        )

    def _when_idle(self) -> None:
        answer = self._end_questions.answer()
        now = time.monotonic()
        if answer is not None:
            self._on_end_answer(answer)
        elif self._end_questions.waited_s(now) > _END_CHECK_TIMEOUT_S:
            self._at_end = False  # a question outlived its timeout: cannot tell
        if not self._tail:
            if self._end_seen_at is not None and (now - self._end_seen_at >= self._end_confirm_s):
                raise StopIteration  # the end, confirmed by a quiet `end_confirm_s`
            # Bounded, nothing hangs on the answer but the log's "reachable again" line:
            # asked only during an outage (new messages may never come to show it over).
            if self._health.down_since is not None and now >= self._next_end_check:
                self._end_questions.ask()
            return
        if now >= self._next_end_check:
            self._end_questions.ask()
        self._tell_clock()

    def _on_end_answer(self, answer: EndAnswer) -> None:
        """What the broker said about where the partition ends: whether everything is
        read, and whether it is reachable. Without an answer the next question waits
        `_END_CHECK_BACKOFF_S`.

        An answer is read a poll after it came, and a question can be under way while
        the broker goes or comes back: it tells reachability only when nothing changed
        it since the question was asked (else an answer from just before a cut says
        "reachable again" just after it)."""
        self._next_end_check = answer.answered_at + _END_CHECK_S
        current = answer.asked_at > self._health.changed_at
        if answer.offsets is not None:
            if current:
                self._health.reachable()
            low, high = answer.offsets
            position = self._offset if self._offset >= 0 else low
            self._at_end = at_head(
                high - position, 0, self._newest_timestamp_ms, time.time() * 1000
            )
            return
        self._at_end = False  # cannot tell: not caught up
        if answer.answered_at - answer.asked_at < _STALLED_S:
            if current:
                self._health.unreachable(answer.error or "no answer")
            self._next_end_check = answer.answered_at + _END_CHECK_BACKOFF_S
        # else: stopped mid-question (the process, not the broker): ask again at once

    def _tell_clock(self) -> None:
        # While the broker is unreachable nothing read can say it is all there is.
        if self._at_end and self._health.down_since is None:
            INPUT_CLOCK.caught_up(self._source)
        else:
            INPUT_CLOCK.behind(self._source)

    def _report_lag(self) -> int | None:
        # The watermark librdkafka cached from its last fetch: no broker round trip.
        _, high = self._consumer.get_watermark_offsets(self._topic_partition, cached=True)
        if high is not None and high >= 0:
            self._lag.set(max(0, high - self._offset))
            return int(high)
        return None

    def _without_errors(self, messages: list[Any], errors: list[Any]) -> list[Any]:
        kept = []
        for message, error in zip(messages, errors, strict=True):
            if error is None:
                kept.append(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                if not self._tail and self._end_seen_at is None:
                    self._end_seen_at = time.monotonic()
            elif error.fatal() or error.code() in _MISSING:
                fail(
                    InputError(
                        f"Kafka topic {self._topic!r} partition {self._partition}", error.str()
                    )
                )
            else:  # transient (a broker restarting, a leader moving): librdkafka retries
                self._health.on_error(error)
        return kept

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        INPUT_CLOCK.forget(self._source)
        self._end_questions.close()
        self._consumer.close()


@dataclass(frozen=True)
class EndAnswer:
    """The broker's answer to "where does the partition begin and end" (`offsets`), or
    why there is none (`error`), with when it was asked and answered (monotonic s)."""

    offsets: tuple[int, int] | None
    error: str | None
    asked_at: float
    answered_at: float


class EndQuestions:
    """Asks the broker where a partition begins and ends, on a thread and a client of
    their own, one question at a time; the worker reads the newest answer without waiting.

    On the worker's thread a question took up to its timeout (0.5 s) while the broker did
    not answer, and librdkafka can block in one far longer as a cut connection comes back
    (librdkafka issue 1869; seen here: over 45 s): the whole worker stood still, every
    symbol's candles with it. A client of their own, because a question in flight on the
    partition's consumer holds up its `consume` as long (measured: 0.49 s, timeout 0). The
    client (made on the caller's thread: a bad configuration fails there, not unseen) and
    the thread start with the first question (idle live partitions ask; bounded ones only
    during an outage) and end with `close`; a client stuck in a question is left to its
    thread."""

    def __init__(self, config: dict[str, Any], partition: TopicPartition):
        self._config = config
        self._partition = partition
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._asked_at: float | None = None  # of the question in flight
        self._answer: EndAnswer | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def ask(self) -> None:
        """Ask, unless a question is in flight or an answer waits to be read."""
        with self._lock:
            if self._closed or self._asked_at is not None or self._answer is not None:
                return
            self._asked_at = time.monotonic()
        if self._thread is None:
            client = Consumer(self._config)
            name = f"candlewax-end-{self._partition.topic}-{self._partition.partition}"
            self._thread = threading.Thread(
                target=self._run, args=(client,), name=name, daemon=True
            )
            self._thread.start()
        self._wanted.set()

    def answer(self) -> EndAnswer | None:
        """The answer to the last question, once (None: none yet)."""
        with self._lock:
            answer, self._answer = self._answer, None
        return answer

    def waited_s(self, now: float) -> float:
        """How long the question in flight has waited for its answer (0: none in flight)."""
        asked_at = self._asked_at
        return 0.0 if asked_at is None else now - asked_at

    def close(self) -> None:
        """Stop asking; the thread closes its client once out of its question."""
        with self._lock:
            self._closed = True
        self._wanted.set()

    def _run(self, client: Consumer) -> None:
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                with self._lock:
                    if self._closed:
                        return
                    asked_at = self._asked_at
                if asked_at is not None:
                    answer = self._ask(client, asked_at)
                    with self._lock:
                        self._answer, self._asked_at = answer, None
        finally:
            client.close()

    def _ask(self, client: Consumer, asked_at: float) -> EndAnswer:
        try:
            low, high = client.get_watermark_offsets(
                self._partition, timeout=_END_CHECK_TIMEOUT_S, cached=False
            )
        except KafkaException as exc:
            error = str(exc.args[0].str() if exc.args else exc)
            return EndAnswer(None, error, asked_at, time.monotonic())
        return EndAnswer((int(low), int(high)), None, asked_at, time.monotonic())


OutageSeen = tuple[float | None, int | None]
NO_OUTAGE_SEEN: OutageSeen = (None, None)


def outage_over(seen: OutageSeen, down_since: float, high: int | None) -> tuple[OutageSeen, bool]:
    """Whether a poll that handed out messages during the outage that began at
    `down_since` shows the broker back. Those messages prove nothing: librdkafka may have
    fetched them before the outage. The end of the partition it caches from each fetch
    answer (`high`) does: once it has moved since the outage was first seen, a fetch was
    answered. `seen` is what the last call returned (the outage and the end then)."""
    if seen[0] != down_since or seen[1] is None:
        return (down_since, high), False
    return seen, high is not None and high > seen[1]


def next_tick(now_s: float, step_s: float) -> float:
    """When a partition polls again after an empty poll (wall s): the next multiple of
    the idle wait, so a worker's idle partitions wake in the same moment and what they
    bring comes to the decode together (`RawBatch.joined`), not a decode each."""
    return (math.floor(now_s / step_s) + 1) * step_s


def at_head(
    left: int, read: int, newest_timestamp_ms: int, now_ms: float, kept: bool = False
) -> bool:
    """Whether a live partition has caught up: `left` messages remain by the end offset
    the broker last reported, `read` were just handed over (0 on an empty poll), the
    newest of them was produced at `newest_timestamp_ms`; `kept`: a batch read is kept
    back (for its read ahead), so never.

    `left == 0` alone is too strict for a live stream: at 20 k trades/s more messages
    have arrived by the time they are counted, so the input clock stopped at many polls
    and a quiet symbol's candle waited for its next trade (hundreds of ms). A backlog
    (after a pause, an outage, a restart) shows as more left than a poll brings, or as
    messages produced long ago; either keeps the clock stopped."""
    if kept:
        return False
    if left <= 0:
        return True
    fresh = newest_timestamp_ms > 0 and now_ms - newest_timestamp_ms <= _HEAD_AGE_MS
    return fresh and left <= max(read, _HEAD_MESSAGES)


_MISSING = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}


class KafkaBatchSource(FixedPartitionedSource[RawBatch, int]):
    """Reads a topic from the beginning (or the recovered offsets), batch by batch."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        *,
        tail: bool = True,
        batch_size: int = 20_000,
        poll_timeout_ms: int = 50,
        consumer_config: dict[str, Any] | None = None,
        connect_timeout_ms: int = 0,
        end_confirm_ms: int = 500,
        read_ahead: ReadAhead | None = None,
    ):
        self._client_config = dict(client_config)
        self._read_ahead = read_ahead
        self._topic = topic
        self._tail = tail
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_ms / 1000.0
        self._consumer_config = consumer_config or {}
        self._connect_timeout_s = connect_timeout_ms / 1000.0
        self._end_confirm_s = end_confirm_ms / 1000.0

    @property
    def _brokers(self) -> str:
        return str(self._client_config.get("bootstrap.servers"))

    def list_parts(self) -> list[str]:
        """The topic's partitions. A missing topic stops a bounded run at once (a typo
        would otherwise read nothing, "successfully"); a live flow waits for it to be
        created, saying so once (deployments often start before their topics)."""
        waiting_since: float | None = None
        while True:
            topics = self._topics_at_brokers()
            topic = topics.get(self._topic)
            if topic is not None and topic.error is None and topic.partitions:
                if waiting_since is not None:
                    log.warning("Kafka topic %r exists now; reading it", self._topic)
                return [f"{index}-{self._topic}" for index in sorted(topic.partitions)]
            names = sorted(t for t in topics if not t.startswith("__"))
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            cause = (
                f"does not exist (topics there: {shown or 'none'}); "
                "check CANDLEWAX_KAFKA_TRADES_TOPIC"
                if topic is None
                else str(topic.error or "has no partitions")
            )
            what = f"Kafka topic {self._topic!r} at {self._brokers}"
            if not self._tail:
                fail(InputError(what, cause, EXIT_USAGE))
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.warning("%s %s; waiting for it to be created", what, cause)
            if stop_requested():
                fail(InputError("the flow", "stopped while waiting for the topic", EXIT_STOPPED))
            time.sleep(1.0)

    def _topics_at_brokers(self) -> dict[str, Any]:
        """Metadata of every topic (asking for all topics creates none), retried with
        backoff while the brokers do not answer."""
        health = KafkaHealth("source", self._brokers)
        admin = AdminClient({**self._client_config, **health.client_config()})
        started = time.monotonic()
        backoff = 0.5
        while True:
            try:
                topics = admin.list_topics(timeout=max(backoff, 2.0)).topics
            except KafkaException as exc:
                cause = str(exc.args[0].str() if exc.args else exc)
                health.unreachable(cause)
                waited = time.monotonic() - started
                if self._connect_timeout_s and waited >= self._connect_timeout_s:
                    fail(
                        InputError(
                            f"Kafka at {self._brokers}",
                            f"unreachable for {waited:.0f} s ({cause}); "
                            "check CANDLEWAX_KAFKA_BROKERS (CANDLEWAX_KAFKA_CONNECT_TIMEOUT "
                            "sets how long to wait)",
                            EXIT_USAGE,
                        )
                    )
                if stop_requested():
                    fail(InputError("the flow", "stopped while waiting for Kafka", EXIT_STOPPED))
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            health.reachable()
            return dict(topics)

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> KafkaBatchPartition:
        index, topic = for_part.split("-", 1)
        if topic != self._topic:
            fail(
                InputError(
                    "recovery data",
                    f"is for Kafka topic {topic!r}, the flow now reads {self._topic!r}",
                    EXIT_USAGE,
                )
            )
        config = {
            **CONSUMER_DEFAULTS,
            **self._client_config,
            "group.id": "candlewax",  # required by librdkafka; offsets live in Bytewax recovery
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": not self._tail,
            **self._consumer_config,
        }
        return KafkaBatchPartition(
            config,
            topic,
            int(index),
            resume_state,
            self._batch_size,
            self._poll_timeout_s,
            self._tail,
            self._end_confirm_s,
            self._read_ahead,
        )
