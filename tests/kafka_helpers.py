"""Produce to and read back whole topics of the test broker (by bootstrap address)."""

from __future__ import annotations

from collections.abc import Iterable

from candlewax import topics
from candlewax.topics import Record


def produce(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    return topics.produce({"bootstrap.servers": bootstrap}, topic, messages)


def read_topic(bootstrap: str, topic: str) -> list[Record]:
    return topics.read_topic({"bootstrap.servers": bootstrap}, topic)
