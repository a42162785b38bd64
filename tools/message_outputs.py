"""Where the CLI tools send messages (a Kafka topic, an NDJSON file, or standard output),
and the options naming what they read and write."""

from __future__ import annotations

import argparse
import gzip
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from config.settings import Settings
from sinks.kafka import ProducerChannel
from tools.pacing import paced
from tools.progress import Progress


class MessageOutput(Protocol):
    @property
    def sent(self) -> int: ...

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


def add_output_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """`--brokers/--topic` (Kafka, keyed by symbol) or `--output` (NDJSON), for the tools."""
    out = parser.add_argument_group("where to")
    out.add_argument(
        "--brokers",
        default=settings.kafka_brokers or None,
        help="Kafka bootstrap servers (default %(default)s, from CANDLEWAX_KAFKA_BROKERS); "
        "messages are keyed by symbol",
    )
    out.add_argument(
        "--topic",
        default=settings.kafka_trades_topic,
        help="Kafka topic (default %(default)s, from CANDLEWAX_KAFKA_TRADES_TOPIC)",
    )
    out.add_argument(
        "--output",
        "-o",
        type=ndjson_path,
        help="NDJSON file to write when no brokers are given (.ndjson, .jsonl, .json or "
        ".txt; .gz compresses); default standard output",
    )
    parser.set_defaults(
        trades_topic_default=settings.kafka_trades_topic,
        quotes_topic_default=settings.kafka_quotes_topic,
    )


def chosen_topic(args: argparse.Namespace, quotes: bool) -> str:
    """`--topic`, except that quotes go to the quotes topic unless a topic was named."""
    if quotes and args.topic == args.trades_topic_default:
        return str(args.quotes_topic_default)
    return str(args.topic)


NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".json", ".txt")


def ndjson_path(text: str) -> str:
    """An output path the tools can honour: they write NDJSON messages (a message may be
    malformed on purpose, which no Parquet or CSV column could hold)."""
    name = text.lower().removesuffix(".gz")
    if text != "-" and not name.endswith(NDJSON_SUFFIXES):
        raise argparse.ArgumentTypeError(
            f"{text}: messages are written as NDJSON; name the file .ndjson, .jsonl, .json "
            "or .txt (add .gz to compress)"
        )
    return text


def add_lake_argument(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """`--lake`: the lake a tool reads, by default where the flow writes it."""
    parser.add_argument(
        "--lake",
        type=Path,
        default=settings.lake_dir,
        help="the lake (default %(default)s, from CANDLEWAX_LAKE_DIR)",
    )


def open_output(
    brokers: str | None, topic: str, path: str | None, paced: bool = False
) -> MessageOutput:
    """Kafka when brokers are given, else the file at `path`, else standard output. A
    `paced` (real-time) stream goes out within 5 ms, as a live feed would, not in the
    batches that make a backfill fast."""
    if brokers:
        latency = {"linger.ms": 5} if paced else None
        return ProducerChannel({"bootstrap.servers": brokers}, topic, latency)
    if path and path != "-":
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        stream = gzip.open(target, "wb") if target.suffix == ".gz" else open(target, "wb")  # noqa: SIM115
        return LinesOutput(stream, owned=True)  # type: ignore[arg-type]
    return LinesOutput(sys.stdout.buffer, owned=False)


def send_all(
    messages: Iterable[Sequence[Any]],
    output: MessageOutput,
    progress: Progress,
    speed: float,
    counted: Callable[[], int] | None = None,
) -> float:
    """Send `(key, value, event ms)` items, paced by `speed`, reporting progress (by
    `counted()`, else messages sent); Ctrl-C stops cleanly. Returns the seconds taken."""
    try:
        for key, value, _ in paced(messages, lambda m: m[2], speed):
            output.send(key, value)
            progress.update(counted() if counted else output.sent)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        output.close()
        seconds = progress.done()
    return seconds


def describe(brokers: str | None, topic: str, path: str | None) -> str:
    if brokers:
        return f"Kafka topic {topic!r} at {brokers}"
    return f"file {path}" if path and path != "-" else "standard output"
