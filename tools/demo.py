"""The main job end to end on an embedded broker: simulate -> Kafka -> flows.ohlcv -> outputs.

Starts the Tansu broker on a free loopback port, creates the topics, streams simulated
trades (with duplicates, disorder, late and malformed messages mixed in) into `trades`
and the top-of-book quotes of the same markets (with crossed and locked books) into
`quotes`, runs `python -m bytewax.run flows.ohlcv -w 2` with its quotes branch until the
topics are consumed, then prints what came out (counts, candles and quote bars by
resolution, drift alerts, DuckDB queries over the lake: quote bars next to candles) and
where the outputs are. Everything stops by itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import msgspec

from config.settings import Settings
from sinks.lake import scan, scan_parameters
from sources.simulator import SimulatorConfig, TradeSimulator
from tools.broker import FLOW_TOPICS, QUOTE_TOPICS, EmbeddedBroker
from tools.topics import produce, read_topic

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "--trades", type=int, default=300_000, help="simulated trades (default 300000)"
    )
    parser.add_argument("--symbols", type=int, default=12, help="simulated symbols (default 12)")
    parser.add_argument("--workers", type=int, default=2, help="Bytewax workers (default 2)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        help="directory for the lake and logs, emptied first (default ./demo-output)",
    )


def say(text: str) -> None:
    print(f"[candlewax demo] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    output: Path = args.output.resolve()
    if output.exists():
        shutil.rmtree(output)
    lake = output / "lake"
    output.mkdir(parents=True)

    with EmbeddedBroker(log_path=output / "tansu.log") as broker:
        say(f"embedded Kafka broker (Tansu) on {broker.bootstrap}")
        topics = {**FLOW_TOPICS, **QUOTE_TOPICS}
        broker.create_topics(topics)
        say("topics: " + ", ".join(f"{t} ({n} partitions)" for t, n in topics.items()))

        produced = produce_trades(broker.bootstrap, args)
        flow_seconds = run_flow(broker.bootstrap, lake, output, args.workers)
        say(
            f"flow consumed {produced:,} messages in {flow_seconds:.1f} s "
            f"({produced / flow_seconds:,.0f} messages/s, including start-up)"
        )
        report(broker.bootstrap, lake, output)
    return 0


def produce_trades(bootstrap: str, args: argparse.Namespace) -> int:
    """Simulated trades into `trades`, then the quotes of the same markets into `quotes`."""
    rate = 2_000.0
    start = int(time.time() * 1000) - int(args.trades / rate * 1000)
    config = SimulatorConfig(
        symbols=args.symbols,
        trades=args.trades,
        rate=rate,
        seed=args.seed,
        start_ms=start,
        duplicate_rate=0.01,
        disorder_rate=0.03,
        late_rate=0.005,
        malformed_rate=0.01,
    )
    simulator = TradeSimulator(config)
    began = time.monotonic()

    def progress(count: int) -> None:
        say(f"produced {count:,} messages ({count / (time.monotonic() - began):,.0f}/s)")

    client = {"bootstrap.servers": bootstrap}
    count = produce(client, "trades", simulator.messages(), progress)
    say(
        f"produced {count:,} messages to 'trades' ({simulator.emitted_trades:,} trades; "
        "~1% duplicates, 3% out of order, 0.5% late, 1% malformed)"
    )
    quoting = dataclasses.replace(
        config, kind="quote", quotes_per_trade=1.0, crossed_rate=0.002, locked_rate=0.002
    )
    quotes = produce(client, "quotes", TradeSimulator(quoting).messages(), progress)
    say(
        f"produced {quotes:,} messages to 'quotes' (top of book around the same prices; "
        "~1% duplicates, 0.5% late, 0.2% crossed and 0.2% locked books)"
    )
    return count + quotes


def run_flow(bootstrap: str, lake: Path, output: Path, workers: int) -> float:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")},
        "CANDLEWAX_SOURCE": "kafka",
        "CANDLEWAX_KAFKA_BROKERS": bootstrap,
        "CANDLEWAX_KAFKA_TAIL": "false",
        "CANDLEWAX_QUOTES_SOURCE": "kafka",
        "CANDLEWAX_LAKE_DIR": str(lake),
        "CANDLEWAX_METRICS_PORT": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "bytewax.run", "flows.ohlcv", "-w", str(workers)]
    say(
        "running: CANDLEWAX_SOURCE=kafka CANDLEWAX_QUOTES_SOURCE=kafka CANDLEWAX_KAFKA_TAIL=false "
        + " ".join(command[1:])
    )
    began = time.monotonic()
    log_path = output / "flow.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.run(
            command, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
        )
    seconds = time.monotonic() - began
    summary = [line for line in log_path.read_text().splitlines() if "run summary" in line]
    summary = [line.replace("run summary, quotes", "run summary (quotes)") for line in summary]
    for line in summary:
        say("flow " + line.split("candlewax: ", 1)[-1])
    if process.returncode != 0:
        raise RuntimeError(f"the flow failed (exit {process.returncode}); see {log_path}")
    return seconds


def report(bootstrap: str, lake: Path, output: Path) -> None:
    client = {"bootstrap.servers": bootstrap}
    candles = read_topic(client, "candles")
    by_resolution = Counter(msgspec.json.decode(r.value or b"")["resolution"] for r in candles)
    dlq = read_topic(client, "trades.dlq")
    drift = [msgspec.json.decode(r.value or b"") for r in read_topic(client, "candles.drift")]
    alerts = sum(1 for d in drift if d["alert"])
    say(
        f"topic 'candles': {len(candles):,} candles "
        + ", ".join(f"{r}: {n:,}" for r, n in sorted(by_resolution.items(), key=lambda kv: kv[0]))
    )
    say(f"topic 'trades.dlq': {len(dlq):,} rejected messages (original bytes, reason in headers)")
    say(f"topic 'candles.drift': {len(drift):,} drift records, {alerts:,} alerts above 0.5 %")
    bars = read_topic(client, "quote_bars")
    bars_by = Counter(msgspec.json.decode(r.value or b"")["resolution"] for r in bars)
    say(
        f"topic 'quote_bars': {len(bars):,} quote bars "
        + ", ".join(f"{r}: {n:,}" for r, n in sorted(bars_by.items(), key=lambda kv: kv[0]))
    )
    quote_dlq = read_topic(client, "quotes.dlq")
    say(f"topic 'quotes.dlq': {len(quote_dlq):,} rejected quotes (crossed/locked books...)")

    con = duckdb.connect()
    glob = f"{lake}/candles/**/*.parquet"
    say("DuckDB over the lake: the five most traded symbols in 1-minute candles")
    con.sql(
        f"""
        select symbol, count(*) as candles, sum(trade_count) as trades,
               round(sum(volume), 2) as volume, min(low) as low, max(high) as high
        from {scan("candles")}
        where resolution = '1m'
        group by symbol order by trades desc limit 5""",
        params=scan_parameters(lake, "candles"),
    ).show()
    say("DuckDB over the lake: the last 1-minute quote bars next to the candles")
    con.sql(
        f"""
        with c as (select * from {scan("candles")} where resolution = '1m'),
             q as (select * from {scan("quote_bars")} where resolution = '1m')
        select c.symbol, strftime(c.window_start, '%H:%M') as minute, c.close,
               q.bid_close as bid, q.ask_close as ask, round(q.close, 6) as mid,
               round(q.spread_twa / q.close * 1e4, 2) as spread_bps, q.quote_count as quotes,
               c.trade_count as trades
        from c join q using (bar_id)
        order by c.window_start desc, c.trade_count desc limit 8""",
        params=scan_parameters(lake, "candles", "quote_bars"),
    ).show()
    say("DuckDB over the lake: rejected messages by reason")
    con.sql(
        f"select reason, count(*) as messages from {scan('dlq')} "
        "group by reason order by messages desc",
        params=scan_parameters(lake, "dlq"),
    ).show()
    say("outputs:")
    for dataset in ("candles", "trades", "drift", "dlq", "quote_bars", "quotes", "quote_drift"):
        files = list((lake / dataset).rglob("*.parquet"))
        say(f"  {lake / dataset}  ({len(files)} Parquet files)")
    say(f"  flow log: {output / 'flow.log'}; broker log: {output / 'tansu.log'}")
    say(
        'query it: python -c "import duckdb; duckdb.sql(\\"select * from read_parquet('
        f"'{glob}', hive_partitioning = true) limit 5\\\").show()\""
    )
