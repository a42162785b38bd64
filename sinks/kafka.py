"""Records to Kafka topics: candles and drift records as JSON keyed by `bar_id`, rejected
messages to the dead-letter topic with their original bytes. Records come in batches (a
batch per symbol per step); a sink batch of them is encoded in one call.

Delivery failures are not dropped: the first one stops the flow (`candlewax.failures`),
naming the topic and the cause. A batch counts as written only once every message of it
is delivered; while the brokers are unreachable the sink waits (librdkafka retries until
`message.timeout.ms`, 5 minutes by default, then the delivery fails), so an outage
shorter than that loses nothing and stops nothing.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import polars as pl
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from candlewax.failures import OutputError, fail, failure
from candlewax.kafka_health import KafkaHealth
from candlewax.records import (
    Candle,
    CandleBatch,
    DriftRecord,
    QuoteBar,
    QuoteBarBatch,
    QuoteDriftRecord,
    Rejection,
    candle_frame,
    concat_frames,
    quote_bar_frame,
)

log = logging.getLogger(__name__)

# librdkafka refuses a message above `message.max.bytes` (1 MB by default); keep this much
# room for the key and the headers.
_DLQ_ROOM = 64 * 1024
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000

Headers = list[tuple[str, str | bytes | None]]
KafkaMessage = tuple[bytes | None, bytes | None, Headers | None]
# The items of a sink batch (batches of records) to messages, all in one go.
ToMessages = Callable[[list[Any]], Iterable[KafkaMessage]]

PRODUCER_DEFAULTS: dict[str, Any] = {
    # Delivery reports for failures only: a Python callback per delivered message costs
    # more than producing it; a batch counts as delivered when `flush` returns.
    "delivery.report.only.error": True,
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "acks": "all",
    # Candles are JSON of a few hundred bytes, alike: lz4 makes them ~5x smaller for a
    # little of librdkafka's own threads' time, and the broker stores and serves a
    # compressed batch as it is (on the dense tape Tansu's CPU for the run 1.0 -> 0.4 s,
    # the flow from Kafka ~10 % faster). Consumers decompress without being told.
    "compression.type": "lz4",
}
# Sends between two polls of the producer (which serve its delivery reports).
_POLL_EVERY = 10_000


def candle_messages(batches: list[CandleBatch]) -> Iterable[KafkaMessage]:
    """Candle batches as messages keyed by `bar_id`; the JSON of all of them is encoded
    in one call."""
    return _keyed_by_bar_id(Candle, candle_frame(batches))


def forming_candle_messages(batches: list[CandleBatch]) -> Iterable[KafkaMessage]:
    """Forming candles (the `candles.live` topic): the candle record plus `final: false`,
    keyed by `bar_id`, so a compacted topic keeps each bar's newest state."""
    frame = candle_frame(batches).with_columns(final=pl.lit(False))
    return _keyed_by_bar_id(Candle, frame)


def drift_messages(frames: list[pl.DataFrame]) -> Iterable[KafkaMessage]:
    return _keyed_by_bar_id(DriftRecord, concat_frames(frames))


def quote_bar_messages(batches: list[QuoteBarBatch]) -> Iterable[KafkaMessage]:
    """Quote bar batches as messages keyed by `bar_id`, encoded in one call."""
    return _keyed_by_bar_id(QuoteBar, quote_bar_frame(batches))


def quote_drift_messages(frames: list[pl.DataFrame]) -> Iterable[KafkaMessage]:
    return _keyed_by_bar_id(QuoteDriftRecord, concat_frames(frames))


def _keyed_by_bar_id(record_type: Any, frame: pl.DataFrame) -> Iterable[KafkaMessage]:
    keys = frame.get_column("bar_id").cast(pl.Binary).to_list()
    return zip(keys, record_type.json_lines(frame), itertools.repeat(None), strict=False)


def dlq_messages(
    frames: list[pl.DataFrame], max_message_bytes: int = DEFAULT_MESSAGE_MAX_BYTES
) -> Iterable[KafkaMessage]:
    rows = (r for frame in frames for r in Rejection.rows(frame))
    return (dlq_message(r, max_message_bytes) for r in rows)


def dlq_message(
    rejection: Rejection, max_message_bytes: int = DEFAULT_MESSAGE_MAX_BYTES
) -> KafkaMessage:
    """The original bytes (and key) untouched; why and where in headers, the convention of
    Kafka Connect's dead-letter queues. A value too large for a Kafka message (from a
    file: a topic's own messages always fit) is cut to fit, with its real length in the
    `candlewax.truncated` header; the lake's `dlq/` keeps it whole."""
    value = rejection.raw
    limit = max(1024, max_message_bytes - _DLQ_ROOM)
    truncated = value is not None and len(value) > limit
    headers: Headers = [
        ("candlewax.reason", rejection.reason.encode()),
        ("candlewax.detail", rejection.detail.encode()),
        ("candlewax.source", rejection.source.encode()),
        ("candlewax.received_at", str(rejection.received_at).encode()),
    ]
    if rejection.field:
        headers.append(("candlewax.field", rejection.field.encode()))
    if truncated:
        assert value is not None
        headers.append(("candlewax.truncated", str(len(value)).encode()))
        value = value[:limit]
    return rejection.key, value, headers


class ProducerChannel:
    """One producer writing to one topic: the only place candlewax produces to Kafka (the
    flow's sinks and the tools alike). Sends wait, not fail, while the local queue is full;
    a delivery failure is never dropped (`OutputError`); `deliver()` returns once every
    message sent so far is delivered, waiting through outages (librdkafka retries until
    `message.timeout.ms`)."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        producer_config: dict[str, Any] | None = None,
    ):
        self.topic = topic
        config = {**PRODUCER_DEFAULTS, **client_config, **(producer_config or {})}
        self.health = KafkaHealth(f"producer of {topic!r}", str(config["bootstrap.servers"]))
        self.producer = Producer(
            {
                **config,
                **self.health.producer_config(self._pending),
                "on_delivery": self._on_delivery,
            }
        )
        self.failure: str | None = None
        self.sent = 0
        self.offered = 0
        self.dropped = 0  # `offer`ed messages not delivered
        self._dropped_seen = 0  # `dropped` at the last `_offers_delivered`

    def _pending(self) -> int:
        """Messages waiting to be delivered (0 before the producer exists)."""
        producer = getattr(self, "producer", None)
        return 0 if producer is None else len(producer)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        # Called for failed deliveries only (`delivery.report.only.error`).
        if error is not None and self.failure is None:
            self.failure = str(error.str())

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise OutputError(f"Kafka topic {self.topic!r} at {self.health.brokers}", self.failure)

    def send(self, key: bytes | None, value: bytes | None, headers: Headers | None = None) -> None:
        self.send_all(((key, value, headers),))

    def send_all(self, messages: Iterable[KafkaMessage]) -> None:
        """Send every `(key, value, headers)`. A sink batch holds hundreds of thousands of
        candles on dense tape, so the loop is one `produce` call per message and nothing
        else (measured: 0.5 us a message; a call per message of `send` through keyword
        arguments and a callback each: 1.7 us); the delivery callback is the producer's
        default (`on_delivery` in its configuration)."""
        produce, topic = self.producer.produce, self.topic
        sent = self.sent
        try:
            for key, value, headers in messages:
                try:
                    if headers is None:
                        produce(topic, value, key)
                    else:
                        produce(topic, value, key, headers=headers)
                except (BufferError, KafkaException) as exc:
                    self._send_refused(exc, key, value, headers)
                sent += 1
                if sent % _POLL_EVERY == 0:  # serve delivery reports (failures) now and then
                    self.producer.poll(0)
                    self.raise_failure()
        finally:
            self.sent = sent

    def _send_refused(
        self, refused: Exception, key: bytes | None, value: bytes | None, headers: Headers | None
    ) -> None:
        """A message `produce` refused: while the local queue is full, wait for librdkafka
        to send some and retry; anything else (too large, a bad topic name) fails."""
        while True:
            if isinstance(refused, KafkaException):
                self.failure = str(refused.args[0].str() if refused.args else refused)
                self.raise_failure()
            self.producer.poll(0.05)
            self.raise_failure()
            try:
                self.producer.produce(self.topic, value, key, headers=headers)
                return
            except (BufferError, KafkaException) as exc:
                refused = exc

    def deliver(self) -> None:
        started = time.monotonic()
        while self.producer.flush(1.0):
            self.raise_failure()
            if self.health.down_since is None and time.monotonic() - started > 10:
                self.health.unreachable("messages are waiting to be delivered")
        self.raise_failure()
        if self.sent:
            self.health.reachable()  # everything sent so far is delivered

    close = deliver  # what the tools' outputs (`MessageOutput`) call at the end

    def offer(self, key: bytes | None, value: bytes | None) -> None:
        """Send without waiting and without failing: for views, never for outputs. A full
        local queue drops the message; a failed delivery is logged (see `_on_offer_failed`)."""
        try:
            self.producer.produce(self.topic, value, key, on_delivery=self._on_offer_failed)
        except (BufferError, KafkaException) as exc:
            self._offer_failed(str(exc))
        self.offered += 1
        self.producer.poll(0)
        if self.health.down_since is not None and self._offers_delivered():
            self.health.reachable()

    def _offers_delivered(self) -> bool:
        """Whether the messages offered before this one went through: none of them is
        left to deliver and none failed since the last look (only failures are reported;
        `flush`, which would tell, would make `offer` wait)."""
        dropped_before, self._dropped_seen = self._dropped_seen, self.dropped
        return self.offered > 1 and self.dropped == dropped_before and len(self.producer) <= 1

    def _on_offer_failed(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._offer_failed(str(error.str()))

    def _offer_failed(self, reason: str) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 10_000 == 0:
            log.warning(
                "%s messages to %r not delivered (%s); the flow goes on", self.dropped,
                self.topic, reason,
            )  # fmt: skip


class _ProducerPartition(StatelessSinkPartition[Any]):
    def __init__(self, channel: ProducerChannel, to_messages: ToMessages):
        self.channel = channel
        self.to_messages = to_messages

    def write_batch(self, items: list[Any]) -> None:
        try:
            self.channel.send_all(self.to_messages(items))
            # Delivered before the batch counts as written: a recovery snapshot taken
            # after it never covers a message still in a local queue (at least once, keyed).
            self.channel.deliver()
        except OutputError as error:
            fail(error)

    def close(self) -> None:
        if failure() is None:  # after a failure elsewhere nothing more is sent
            try:
                self.channel.deliver()
            except OutputError as error:
                fail(error)


class _ViewPartition(StatelessSinkPartition[Any]):
    """A view's messages (forming candles): sent without waiting for their delivery, and a
    topic that is missing or down never stops the flow; nothing is retried."""

    def __init__(self, channel: ProducerChannel, to_messages: ToMessages):
        self.channel = channel
        self.to_messages = to_messages

    def write_batch(self, items: list[Any]) -> None:
        offer = self.channel.offer
        for key, value, _ in self.to_messages(items):
            offer(key, value)

    def close(self) -> None:
        self.channel.producer.flush(5.0)


class KafkaViewSink(DynamicSink[Any]):
    """A producer per worker for a view of the flow (`_ViewPartition`): best effort."""

    def __init__(self, client_config: dict[str, Any], topic: str, to_messages: ToMessages):
        self.client_config = client_config
        self.topic = topic
        self.to_messages = to_messages

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ViewPartition:
        # Sent as soon as made: a forming candle is worth seeing at once, and it is small.
        channel = ProducerChannel(self.client_config, self.topic, {"linger.ms": 5})
        return _ViewPartition(channel, self.to_messages)


class KafkaRecordSink(DynamicSink[Any]):
    """A producer per worker, writing batches of records converted by `to_messages`."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        to_messages: ToMessages,
        producer_config: dict[str, Any] | None = None,
    ):
        self.client_config = client_config
        self.producer_config = producer_config
        self.topic = topic
        self.to_messages = to_messages

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        channel = ProducerChannel(self.client_config, self.topic, self.producer_config)
        return _ProducerPartition(channel, self.to_messages)
