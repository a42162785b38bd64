"""Trades/s of the flow reading a real broker, next to a bare confluent-kafka consumer
(and, with `--quix`, next to Quix Streams computing 1 s OHLCV from the same topic).

    python -m bench.throughput_kafka [--shape sparse|dense|wide] [--trades 2000000]
                                     [--partitions 4] [--workers 1] [--quix]

Starts the embedded Tansu broker, produces the trades of the shape (keyed by symbol),
then reads the topic: with a bare consumer doing nothing per message, with `flows.ohlcv`
(`CANDLEWAX_KAFKA_TAIL=false`, candles to Kafka and the lake), and with `--quix` with
`bench/quix_ohlcv.py` in its own virtual environment (made on first use in
`bench/data/quix-venv`, `pip install quixstreams`). Targets: >= 400 k trades/s on one
process; >= 10x Quix Streams.

The flow's rate is given twice: over the whole run (its start, the bounded run's
confirmation of the end, the last flushes included) and from the first trade received
to the last, the span Quix Streams is timed over (`bench/quix_ohlcv.py`), so the ratio
compares like with like.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from bench.common import (
    DATA,
    ROOT,
    SHAPES,
    FirstToLast,
    peak_rss_mb,
    run_flow,
    run_flow_processes,
    shape_file,
    timed,
)
from candlewax.metrics import FlowMetrics
from config.settings import Settings
from sources.kafka import CONSUMER_DEFAULTS
from tools.broker import EmbeddedBroker
from tools.topics import produce


def file_messages(path: Path):
    with open(path, "rb") as lines:
        for line in lines:
            value = line.rstrip(b"\n")
            symbol = value.split(b'"symbol":"', 1)[1].split(b'"', 1)[0]
            yield symbol, value


def bare_consume(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer(
        {
            **CONSUMER_DEFAULTS,
            "bootstrap.servers": bootstrap,
            "group.id": "bench",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    count, ended = 0, set[int]()
    while len(ended) < partitions:
        for message in consumer.consume(100_000, 0.05):
            error = message.error()
            if error is None:
                count += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                ended.add(message.partition() or 0)
    consumer.close()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=list(SHAPES), default="sparse")
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--quix", action="store_true", help="also time Quix Streams")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run the flow as this many `bytewax.run` processes (timed from their start)",
    )
    parser.add_argument(
        "--subprocess",
        action="store_true",
        help="run even a single process as `bytewax.run` (so 1 and N processes compare alike)",
    )
    args = parser.parse_args()
    path = shape_file(args.shape, args.trades)
    print(f"[{args.shape}] {args.trades:,} trades from {path.name}", flush=True)
    topic = "bench.trades"
    with EmbeddedBroker() as broker:
        broker.create_topics({"candles": 4, "trades.dlq": 1, "candles.drift": 1})
        # Retention given explicitly: Quix Streams derives its changelog topics from the
        # input topic's settings, and Tansu describes only settings given at creation.
        retention = {"retention.ms": "604800000", "retention.bytes": "-1"}
        broker.create_topics({topic: args.partitions}, config=retention)
        began = time.perf_counter()
        sent = produce({"bootstrap.servers": broker.bootstrap}, topic, file_messages(path))
        print(
            f"  produced {sent:,} trades into {args.partitions} partitions in "
            f"{time.perf_counter() - began:.1f} s"
        )

        counted: list[int] = []
        bare_s = timed(
            "bare confluent-kafka consumer",
            lambda: counted.append(bare_consume(broker.bootstrap, topic, args.partitions)),
        )
        assert counted[0] == sent, f"bare consumer read {counted[0]} of {sent}"

        first_to_last_s: float | None = None
        label = f"flows.ohlcv from Kafka, {args.processes} process(es) x {args.workers} worker(s)"
        with tempfile.TemporaryDirectory() as lake:
            if args.processes == 1 and not args.subprocess:
                settings = Settings(
                    source="kafka",
                    kafka_brokers=broker.bootstrap,
                    kafka_tail=False,
                    kafka_trades_topic=topic,
                    lake_dir=Path(lake),
                    metrics_port=0,
                )
                metrics = FlowMetrics()
                with FirstToLast(metrics, sent) as span:
                    flow_s = timed(label, lambda: run_flow(settings, args.workers, metrics))
                assert metrics.summary()["received"] == sent, metrics.summary()
                first_to_last_s = span.seconds
            else:
                env = {
                    "CANDLEWAX_SOURCE": "kafka",
                    "CANDLEWAX_KAFKA_BROKERS": broker.bootstrap,
                    "CANDLEWAX_KAFKA_TAIL": "false",
                    "CANDLEWAX_KAFKA_TRADES_TOPIC": topic,
                    "CANDLEWAX_LAKE_DIR": lake,
                }
                flow_s = timed(label, lambda: run_flow_processes(env, args.processes, args.workers))
        rss = peak_rss_mb()
        quix_s = quix_seconds(broker.bootstrap, topic, sent) if args.quix else None
    print(f"bare consumer : {sent / bare_s:>12,.0f} messages/s")
    print(f"flows.ohlcv   : {sent / flow_s:>12,.0f} trades/s (target >= 400,000)")
    print(f"ratio         : {bare_s / flow_s:.2f} of the bare consumer's rate")
    if first_to_last_s is not None:
        print(
            f"first to last : {sent / first_to_last_s:>12,.0f} trades/s (from the first trade "
            "received to the last, as Quix Streams is timed)"
        )
    if args.processes == 1 and not args.subprocess:
        print(f"peak RSS      : {rss:,.0f} MB (this process, the flow included)")
    if quix_s is not None:
        print(f"Quix Streams  : {sent / quix_s:>12,.0f} trades/s (1 s OHLCV only)")
        print(f"candlewax / Quix Streams, whole run: {quix_s / flow_s:.1f}x (target >= 10x)")
        if first_to_last_s is not None:
            print(f"candlewax / Quix Streams, first to last trade: {quix_s / first_to_last_s:.1f}x")


QUIX_VENV = DATA / "quix-venv"


def quix_seconds(bootstrap: str, topic: str, count: int) -> float:
    """Seconds Quix Streams takes from its first trade to the last (1 s OHLCV)."""
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        print("  making the Quix Streams venv (pip install quixstreams) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "quixstreams"], check=True)
    with tempfile.TemporaryDirectory() as state:
        done = subprocess.run(
            [
                str(python),
                str(ROOT / "bench" / "quix_ohlcv.py"),
                bootstrap,
                topic,
                str(count),
                state,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    line = next(x for x in done.stdout.splitlines() if x.startswith("QUIX "))
    fields = dict(part.split("=") for part in line.split()[1:])
    assert int(fields["trades"]) == count, line
    print(f"  Quix Streams (1 s OHLCV, {fields['candles']} candles): {fields['seconds']} s")
    return float(fields["seconds"])


if __name__ == "__main__":
    main()
