"""Produce to, and read back whole, Kafka topics: for the demo, the CLI tools and tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

PRODUCER_CONFIG: dict[str, Any] = {"linger.ms": 20, "batch.num.messages": 10_000}


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
    messages: Iterable[tuple[bytes | None, bytes | None]],
    progress: Callable[[int], None] | None = None,
    every: int = 50_000,
) -> int:
    """Produce `(key, value)` pairs, waiting when the local queue is full; returns the count."""
    producer = Producer({**PRODUCER_CONFIG, **client_config})
    count = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % every == 0:
            producer.poll(0)
            if progress is not None:
                progress(count)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} messages to {topic!r} were not delivered within 60 s")
    return count


def read_topic(client_config: dict[str, Any], topic: str) -> list[Record]:
    """Every record of every partition of a topic, from the beginning to its end."""
    metadata = AdminClient(client_config).list_topics(topic, timeout=10).topics[topic]
    partitions = sorted(metadata.partitions)
    consumer = Consumer(
        {
            **client_config,
            "group.id": "candlewax-reader",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records: list[Record] = []
    ended: set[int] = set()
    try:
        while len(ended) < len(partitions):
            for message in consumer.consume(10_000, 1.0):
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
