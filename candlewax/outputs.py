"""Where the CLI tools send messages: a Kafka topic, an NDJSON file, or standard output."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import IO, Protocol

from candlewax.topics import KafkaOutput


class MessageOutput(Protocol):
    sent: int

    def send(self, key: bytes | None, value: bytes | None) -> None: ...

    def close(self) -> None: ...


class LinesOutput:
    """One message per line (NDJSON): a file (`.gz` compressed) or standard output."""

    def __init__(self, stream: IO[bytes], owned: bool):
        self.stream = stream
        self.owned = owned
        self.sent = 0

    def send(self, key: bytes | None, value: bytes | None) -> None:
        self.stream.write((value or b"") + b"\n")
        self.sent += 1

    def close(self) -> None:
        self.stream.flush()
        if self.owned:
            self.stream.close()


def open_output(brokers: str | None, topic: str, path: str | None) -> MessageOutput:
    """Kafka when brokers are given, else the file at `path`, else standard output."""
    if brokers:
        return KafkaOutput({"bootstrap.servers": brokers}, topic)
    if path and path != "-":
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        stream = gzip.open(target, "wb") if target.suffix == ".gz" else open(target, "wb")  # noqa: SIM115
        return LinesOutput(stream, owned=True)  # type: ignore[arg-type]
    return LinesOutput(sys.stdout.buffer, owned=False)


def describe(brokers: str | None, topic: str, path: str | None) -> str:
    if brokers:
        return f"Kafka topic {topic!r} at {brokers}"
    return f"file {path}" if path and path != "-" else "standard output"
