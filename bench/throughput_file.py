"""Trades/s of the whole flow over an NDJSON file, next to plain polars doing the same work.

    python -m bench.throughput_file [--shape sparse|dense|wide|all] [--trades 2000000]
    python -m bench.throughput_file --quotes ...   # the quotes branch over quotes instead

For each data shape (`bench.common.SHAPES`): plain polars reads the file and groups it
into 1 s, 10 s and 1 min OHLCV bars; the flow does that and validates every message,
deduplicates, tracks lateness and writes the candles and trades to a Parquet lake. Each
shape runs in a fresh process, the flow first, so its peak RSS is the flow's own.
Targets: the flow within 2x of plain polars (goal 1.5x); peak RSS on 2 M dense trades
under 1 GiB. `--quotes`: the same shapes as quotes (one per simulated trade) through the
quotes branch (no trades), next to plain polars computing the same quote bars.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from bench.common import ROOT, SHAPES, peak_rss_mb, quotes_file, run_flow, shape_file, timed
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


def plain_polars_quotes(path: Path) -> int:
    """Quote bars in plain polars: mid OHLC, closing bid/ask, spread min/max/mean and the
    time-weighted spread (each quote until the next, the one before from the start)."""
    quotes = (
        pl.read_ndjson(path)
        .sort("ts", maintain_order=True)
        .with_columns(
            ((pl.col("bid") + pl.col("ask")) / 2).alias("mid"),
            (pl.col("ask") - pl.col("bid")).alias("spread"),
        )
        .with_columns(
            pl.col("ts").shift(-1).over("symbol").alias("next"),
            pl.col("spread").shift(1).over("symbol").alias("before"),
        )
    )
    bars = 0
    for ms in (1_000, 10_000, 60_000):
        start = pl.col("ts") - pl.col("ts") % ms
        until = pl.min_horizontal(pl.col("next").fill_null(start + ms), start + ms) - pl.col("ts")
        lead = (pl.col("ts") - start).first() * pl.col("before").first().is_not_null()
        grouped = quotes.group_by("symbol", start.alias("window")).agg(
            pl.col("mid").first().alias("open"),
            pl.col("mid").max().alias("high"),
            pl.col("mid").min().alias("low"),
            pl.col("mid").last().alias("close"),
            pl.col("bid").last().alias("bid_close"),
            pl.col("ask").last().alias("ask_close"),
            pl.col("spread").min().alias("spread_min"),
            pl.col("spread").max().alias("spread_max"),
            pl.col("spread").mean().alias("spread_mean"),
            (
                ((pl.col("spread") * until).sum() + pl.col("before").first().fill_null(0) * lead)
                / (until.sum() + lead)
            ).alias("spread_twa"),
            pl.len().alias("quote_count"),
        )
        bars += grouped.height
    return bars


def run_quotes_shape(shape: str, count: int, workers: int, batch_size: int) -> None:
    preset = SHAPES[shape]
    path = quotes_file(count, int(preset["symbols"]), preset["rate"])
    quotes = path.read_bytes().count(b"\n")
    print(
        f"[{shape}, quotes] {quotes:,} quotes, {preset['symbols']:g} symbols "
        f"({path.stat().st_size / 1e6:.0f} MB)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as lake:
        empty = Path(lake) / "no-trades.ndjson"
        empty.write_bytes(b"")
        settings = Settings(
            source="file",
            source_path=empty,
            quotes_source="file",
            quotes_source_path=path,
            lake_dir=Path(lake) / "lake",
            metrics_port=0,
            batch_size=batch_size,
            kafka_brokers="",
        )
        result = {}
        flow_s = timed(
            f"flows.ohlcv quotes branch, file source, {workers} worker(s), lake sink",
            lambda: result.update(run_flow(settings, workers).quotes.summary()),
        )
    rss = peak_rss_mb()
    bars: list[int] = []
    polars_s = timed(
        "plain polars (read NDJSON + quote bars, 3 resolutions)",
        lambda: bars.append(plain_polars_quotes(path)),
    )
    made = sum(result["bars_by_resolution"].values())  # type: ignore[union-attr]
    assert made == bars[0], f"the flow made {made} quote bars, polars {bars[0]}"
    flow_rate, polars_rate = quotes / flow_s, quotes / polars_s
    print(f"  plain polars : {polars_rate:>12,.0f} quotes/s")
    print(f"  flows.ohlcv  : {flow_rate:>12,.0f} quotes/s  ({made:,} quote bars, as polars)")
    print(f"  ratio        : {polars_rate / flow_rate:.2f}x plain polars (target <= 2x)")
    print(f"  peak RSS     : {rss:,.0f} MB (the flow's run)", flush=True)


def run_shape(shape: str, trades: int, workers: int, batch_size: int) -> None:
    path = shape_file(shape, trades)
    preset = SHAPES[shape]
    print(
        f"[{shape}] {trades:,} trades, {preset['symbols']:g} symbols at {preset['rate']:g}/s "
        f"({path.stat().st_size / 1e6:.0f} MB)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as lake:
        settings = Settings(
            source="file",
            source_path=path,
            lake_dir=Path(lake),
            metrics_port=0,
            batch_size=batch_size,
            kafka_brokers="",
        )
        result = {}
        flow_s = timed(
            f"flows.ohlcv, file source, {workers} worker(s), lake sink",
            lambda: result.update(run_flow(settings, workers).summary()),
        )
    rss = peak_rss_mb()
    bars: list[int] = []
    polars_s = timed(
        "plain polars (read NDJSON + group by, 3 resolutions)",
        lambda: bars.append(plain_polars(path)),
    )
    candles = sum(result["candles_by_resolution"].values())  # type: ignore[union-attr]
    assert candles == bars[0], f"the flow made {candles} candles, polars {bars[0]}"
    flow_rate, polars_rate = trades / flow_s, trades / polars_s
    print(f"  plain polars : {polars_rate:>12,.0f} trades/s")
    print(f"  flows.ohlcv  : {flow_rate:>12,.0f} trades/s  ({candles:,} candles, as polars)")
    print(f"  ratio        : {polars_rate / flow_rate:.2f}x plain polars (target <= 2x)")
    print(f"  peak RSS     : {rss:,.0f} MB (the flow's run)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--quotes", action="store_true", help="quotes through the quotes branch")
    args = parser.parse_args()
    if args.shape != "all":
        run = run_quotes_shape if args.quotes else run_shape
        run(args.shape, args.trades, args.workers, args.batch_size)
        return
    for shape in SHAPES:  # each in its own process: its own peak RSS
        command = [sys.executable, "-m", "bench.throughput_file", "--shape", shape]
        command += ["--trades", str(args.trades), "--workers", str(args.workers)]
        command += ["--batch-size", str(args.batch_size)]
        command += ["--quotes"] if args.quotes else []
        subprocess.run(command, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
