"""`candlewax replay`: publish historical trades in the contract's shape, in event-time
order, keyed by symbol, paced as fast as possible, in real time or N x real time.

Every file is read by its format adapter (`sources/formats`) and judged by the flow's
own validation; what is not sent is reported with its reason and an example position.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from config.settings import Settings
from sources.formats import TradeFile, read_trade_file
from sources.formats.common import CONTRACT_COLUMNS
from tools.file_reading import add_reading_arguments, read_options
from tools.message_outputs import add_output_arguments, describe, open_output, send_all
from tools.progress import Progress


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="trade files; .gz, .zst and .zip are read directly",
    )
    add_reading_arguments(parser)
    pacing = parser.add_argument_group("pacing")
    pacing.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="0 = as fast as possible (default), 1 = real time, N = N x",
    )
    pacing.add_argument(
        "--loop",
        type=int,
        default=1,
        metavar="N",
        help="play the files N times (0 = forever); each repeat is shifted "
        "past the previous one in time and its ids get a '~N' suffix",
    )
    add_output_arguments(parser, settings)


def report(read: TradeFile, out=sys.stderr) -> None:
    """What a file held and what will not be sent, with reasons and example positions."""
    print(
        f"{read.path}: {read.format}, {read.rows:,} rows, {read.trades.height:,} valid trades",
        file=out,
    )
    reasons: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for reason, count in read.skipped.items():
        reasons[f"skipped: {reason}"] += count
        examples[f"skipped: {reason}"] = read.examples.get(reason, "")
    for rejection in read.rejections:
        key = f"rejected: {rejection.reason}" + (f" ({rejection.field})" if rejection.field else "")
        reasons[key] += 1
        examples.setdefault(key, rejection.source.rsplit("@", 1)[-1])
    if read.filtered:
        reasons["filtered: not a trade (type)"] += read.filtered
    for reason, count in reasons.most_common():
        where = f"  e.g. {examples[reason]}" if examples.get(reason) else ""
        print(f"  not sent: {count:>9,}  {reason}{where}", file=out)


def ordered_trades(files: list[TradeFile]) -> pl.DataFrame:
    """All valid trades in event-time order (ties keep file order)."""
    return pl.concat([f.trades for f in files]).sort("ts", maintain_order=True)


def cycles(trades: pl.DataFrame, loops: int) -> Iterator[tuple[bytes, bytes, int]]:
    """`(key, value, ts)` for each trade, repeated `loops` times (0 = forever)."""
    ts = trades.get_column("ts")
    span = int(ts.max()) - int(ts.min()) + 1  # type: ignore[arg-type]
    cycle = 0
    while loops == 0 or cycle < loops:
        shifted = trades
        if cycle:
            shifted = trades.with_columns(
                pl.col("ts") + cycle * span,
                pl.col("trade_id") + f"~{cycle}",
            )
        lines = shifted.select(CONTRACT_COLUMNS).write_ndjson().encode().rstrip(b"\n").split(b"\n")
        keys = shifted.get_column("symbol").to_list()
        for key, value, ts in zip(keys, lines, shifted.get_column("ts").to_list(), strict=True):
            yield key.encode(), value, ts
        cycle += 1


def run(args: argparse.Namespace) -> int:
    options = read_options(args)
    files = []
    for path in args.files:
        print(f"reading {path} ...", file=sys.stderr, flush=True)
        try:
            read = read_trade_file(path, options)
        except (OSError, ValueError) as exc:
            print(f"candlewax replay: {exc}", file=sys.stderr)
            return 2
        report(read)
        files.append(read)
    trades = ordered_trades(files)
    if trades.height == 0:
        print("candlewax replay: no valid trades to send", file=sys.stderr)
        return 1
    target = describe(args.brokers, args.topic, args.output)
    output = open_output(args.brokers, args.topic, args.output, paced=args.speed > 0)
    total = trades.height * args.loop if args.loop else None
    progress = Progress(f"replay -> {target}", total, unit="trades")
    seconds = send_all(cycles(trades, args.loop), output, progress, args.speed)
    print(
        f"sent {output.sent:,} trades to {target} in {seconds:.1f} s "
        f"({output.sent / max(seconds, 1e-9):,.0f}/s)",
        file=sys.stderr,
    )
    return 0
