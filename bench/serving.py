"""The serving stores: PostgreSQL upserts per second, and the flow's throughput with the
stores on next to off, in the same run.

    python -m bench.serving [--candles 1000000] [--symbols 500] [--shape dense] [--runs 3]

Part 1 writes `--candles` 1 s candles of `--symbols` symbols through one `PostgresWriter`
(what one sink partition does), in batches as the candle step hands them over (one per
symbol per step): new rows (inserts), every row again at revision 1 (a restatement:
updates), and the same again (a replay: nothing changes). Target: >= 50 k candles/s.

Part 2 runs the whole flow over the `--shape` file with the lake only, then with the
lake, PostgreSQL and Redis, alternating, `--runs` times each; it reports the best run of
each and the ratio. Target: the stores cost at most 10 % of the trade throughput.

Both start a throwaway PostgreSQL and Redis (`tools.stores`), or use `--dsn`/`--redis`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from pydantic import SecretStr

from bench.common import SHAPES, run_flow, shape_file
from candlewax.records import CANDLE_ROW, CandleBatch
from config.settings import Settings
from sinks.postgres import CANDLES, PostgresTarget, PostgresWriter
from tools.stores import LocalPostgres, LocalRedis

T0 = 1_723_161_600_000


def candle_steps(
    candles: int, symbols: int, revision: int, per_step: int
) -> list[list[CandleBatch]]:
    """`candles` 1 s candles, `per_step` windows per symbol per step, every symbol a batch."""
    steps = []
    windows = candles // symbols
    rng = np.random.default_rng(1)
    for first in range(0, windows, per_step):
        count = min(per_step, windows - first)
        step = []
        for s in range(symbols):
            rows = np.zeros(count, dtype=CANDLE_ROW)
            rows["res"], rows["start"] = 1_000, T0 + (first + np.arange(count)) * 1_000
            prices = 100 + rng.random(count)
            rows["open"] = rows["close"] = rows["high"] = rows["low"] = prices
            rows["count"], rows["volume"] = 7, 1.5
            rows["notional"], rows["revision"] = prices * 1.5, revision
            step.append(CandleBatch.of_symbol(f"SYM{s:04d}", rows, ((1_000, "1s"),)))
        steps.append(step)
    return steps


def upsert_rate(dsn: str, candles: int, symbols: int, per_step: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS candles")
    target = PostgresTarget(dsn)
    for label, revision in (("insert (new bars)", 0), ("restate (revision 1)", 1), ("replay", 1)):
        steps = candle_steps(candles, symbols, revision, per_step)
        writer = PostgresWriter(target, CANDLES)
        began = time.perf_counter()
        for step in steps:
            writer.add(step)
        writer.close()
        seconds = time.perf_counter() - began
        print(
            f"  {label:<22} {writer.rows_written:>10,} candles in {seconds:6.2f} s: "
            f"{writer.rows_written / seconds:>9,.0f} candles/s",
            flush=True,
        )
    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT count(*), min(revision) FROM candles").fetchone()
    assert row == (candles // symbols * symbols, 1), row


def flow_rates(shape: str, trades: int, runs: int, dsn: str, redis_url: str) -> None:
    path = shape_file(shape, trades)
    best: dict[str, float] = {}
    for run in range(runs):
        for label, stores in (("lake only", {}), ("lake + PostgreSQL + Redis", {"on": True})):
            with tempfile.TemporaryDirectory() as lake:
                if stores:
                    with psycopg.connect(dsn, autocommit=True) as connection:
                        connection.execute("DROP TABLE IF EXISTS candles, drift")
                settings = Settings(
                    source="file",
                    source_path=path,
                    lake_dir=Path(lake),
                    metrics_port=0,
                    kafka_brokers="",
                    postgres_dsn=SecretStr(dsn if stores else ""),
                    redis_url=SecretStr(redis_url if stores else ""),
                )
                began = time.perf_counter()
                summary = run_flow(settings).summary()
                seconds = time.perf_counter() - began
            rate = trades / seconds
            best[label] = max(best.get(label, 0.0), rate)
            candles = sum(summary["candles_by_resolution"].values())  # type: ignore[union-attr]
            print(
                f"  run {run + 1} {label:<27} {rate:>10,.0f} trades/s ({candles:,} candles)",
                flush=True,
            )
    off, on = best["lake only"], best["lake + PostgreSQL + Redis"]
    print(f"  best: lake only {off:,.0f}/s, with the stores {on:,.0f}/s")
    print(f"  the stores cost {(1 - on / off) * 100:.1f} % of the throughput (target <= 10 %)")
    with psycopg.connect(dsn) as connection:
        row = connection.execute("SELECT count(*) FROM candles").fetchone()
    assert row is not None and row[0] == candles, (row, candles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--per-step", type=int, default=20, help="windows per symbol per batch")
    parser.add_argument("--shape", choices=list(SHAPES), default="dense")
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dsn", help="your PostgreSQL (default: a throwaway one)")
    parser.add_argument("--redis", help="your Redis (default: a throwaway one)")
    parser.add_argument(
        "--nice-server",
        type=int,
        default=0,
        help="run the throwaway PostgreSQL at this niceness: the server takes only the CPU "
        "the flow leaves, as on a database host of its own (default 0: equal shares)",
    )
    args = parser.parse_args()
    postgres = None if args.dsn else LocalPostgres(nice=args.nice_server).start()
    redis = None if args.redis else LocalRedis().start()
    try:
        dsn = args.dsn or postgres.dsn  # type: ignore[union-attr]
        redis_url = args.redis or redis.url  # type: ignore[union-attr]
        print(f"PostgreSQL upserts, one writer: {args.candles:,} candles of {args.symbols} symbols")
        upsert_rate(dsn, args.candles, args.symbols, args.per_step)
        print(f"the flow over the {args.shape} file ({args.trades:,} trades), 1 worker")
        flow_rates(args.shape, args.trades, args.runs, dsn, redis_url)
    finally:
        for server in (postgres, redis):
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
