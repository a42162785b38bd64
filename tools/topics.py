"""Produce to, and read back whole, Kafka topics: for the demo, the CLI tools and tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from sinks.kafka import ProducerChannel


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int
    offset: int


def produce(
    client_config: dict[str, Any],
    topic: str,
    messages: Iterable[Sequence[Any]],
    progress: Callable[[int], None] | None = None,
    every: int = 50_000,
) -> int:
    """Produce `(key, value, ...)` items; returns the count."""
    output = ProducerChannel(client_config, topic)
    for message in messages:
        output.send(message[0], message[1])
        if progress is not None and output.sent % every == 0:
            progress(output.sent)
    output.close()
    return output.sent


def read_topic(client_config: dict[str, Any], topic: str, stall_s: float = 120.0) -> list[Record]:
    """Every record of every partition of a topic, from the beginning to its end; an
    error when nothing comes for `stall_s` seconds and the end is not reached (the broker
    stopped serving a partition), not a read that waits for ever."""
    metadata = AdminClient(client_config).list_topics(topic, timeout=10).topics[topic]
    partitions = sorted(metadata.partitions)
    consumer = Consumer(
        {
            **client_config,
            "group.id": "candlewax-reader",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            # The fetch that finds the end waits this long for more (librdkafka's 500 ms
            # default), and a batch of `consume` waits out its timeout unless it fills:
            # a topic of 1,500 records took ~2 s to read, now ~0.9.
            "fetch.wait.max.ms": 100,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records: list[Record] = []
    ended: set[int] = set()
    progress_at = time.monotonic()
    try:
        while len(ended) < len(partitions):
            messages = consumer.consume(10_000, 0.2)
            if not messages:  # Tansu may not signal the end of a partition: ask for it
                more = _at_end(consumer, topic, set(partitions) - ended)
                if more:
                    ended |= more
                    progress_at = time.monotonic()
                elif time.monotonic() - progress_at > stall_s:
                    left = sorted(set(partitions) - ended)
                    raise RuntimeError(
                        f"reading {topic!r}: nothing came for {stall_s:.0f} s and partitions "
                        f"{left} are not at their end ({len(records)} records read)"
                    )
            else:
                progress_at = time.monotonic()
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        ended.add(message.partition() or 0)
                        continue
                    raise RuntimeError(f"reading {topic!r}: {error}")
                pairs: list[tuple[str, Any]] = list(message.headers() or [])  # type: ignore[arg-type]
                headers = {k: v for k, v in pairs if isinstance(v, bytes)}
                records.append(
                    Record(
                        message.key(),
                        message.value(),
                        headers,
                        message.partition() or 0,
                        message.offset() or 0,
                    )
                )
    finally:
        consumer.close()
    return records


def _at_end(consumer: Consumer, topic: str, partitions: set[int]) -> set[int]:
    """The partitions whose read position has reached their high watermark."""
    done = set()
    for partition in partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=False)
        (position,) = consumer.position([TopicPartition(topic, partition)])
        if position.offset >= 0 and position.offset >= high:
            done.add(partition)
        elif position.offset < 0 and high == 0:
            done.add(partition)  # an empty partition
    return done
