"""Trades/s of the whole flow over an NDJSON file, next to plain polars doing the same work.

    python -m bench.throughput_file [--trades 2000000] [--workers 1]

Plain polars reads the file and groups it into 1 s, 10 s and 1 min OHLCV bars; the flow
does that and validates every message, deduplicates, tracks lateness and writes the
candles and trades to a Parquet lake. The target is the flow within 2x of plain polars.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl

from bench.common import run_flow, timed, trades_file
from config.settings import Settings


def plain_polars(path: Path) -> int:
    trades = pl.read_ndjson(path).sort("ts", maintain_order=True)
    bars = 0
    for ms in (1_000, 10_000, 60_000):
        grouped = trades.group_by("symbol", (pl.col("ts") - pl.col("ts") % ms).alias("window")).agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("size").sum().alias("volume"),
            ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap"),
            pl.len().alias("trade_count"),
        )
        bars += grouped.height
    return bars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--symbols", type=int, default=12, help="12 (default): sparse")
    parser.add_argument(
        "--rate", type=float, default=5_000, help="trades/s in all; --symbols 4 --rate 40: dense"
    )
    args = parser.parse_args()
    path = trades_file(args.trades, symbols=args.symbols, rate=args.rate)
    print(f"input: {path} ({path.stat().st_size / 1e6:.0f} MB, {args.trades:,} trades)")

    bars: list[int] = []
    polars_s = timed(
        "plain polars (read NDJSON + group by, 3 resolutions)",
        lambda: bars.append(plain_polars(path)),
    )
    with tempfile.TemporaryDirectory() as lake:
        settings = Settings(
            source="file",
            source_path=path,
            lake_dir=Path(lake),
            metrics_port=0,
            batch_size=args.batch_size,
            kafka_brokers="",
        )
        result = {}
        flow_s = timed(
            f"flows.ohlcv, file source, {args.workers} worker(s), lake sink",
            lambda: result.update(run_flow(settings, args.workers).summary()),
        )
    candles = sum(result["candles_by_resolution"].values())  # type: ignore[union-attr]
    assert candles == bars[0], f"the flow made {candles} candles, polars {bars[0]}"
    flow_rate, polars_rate = args.trades / flow_s, args.trades / polars_s
    print(f"plain polars : {polars_rate:>12,.0f} trades/s")
    print(f"flows.ohlcv  : {flow_rate:>12,.0f} trades/s  ({candles:,} candles, same as polars)")
    print(f"ratio        : {polars_rate / flow_rate:.2f}x slower than plain polars (target <= 2x)")


if __name__ == "__main__":
    main()
