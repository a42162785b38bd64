"""`candlewax replay`: publish historical trades (or, `--quotes`, top-of-book quotes) in
the contract's shape, in event-time order, keyed by symbol, paced as fast as possible,
in real time or N x real time.

Every file is read by its format adapter (`sources/formats`) and judged by the flow's
own validation; what is not sent is reported with its reason and an example position.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from candlewax.records import QUOTE, TRADE, MessageKind
from config.settings import Settings
from sources.formats import MarketFile, read_market_file
from sources.formats.reading import contract_lines
from tools.file_reading import add_reading_arguments, read_options
from tools.message_outputs import (
    add_output_arguments,
    chosen_topic,
    describe,
    open_output,
    send_all,
)
from tools.progress import Progress


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="trade files; .gz, .zst and .zip are read directly",
    )
    parser.add_argument(
        "--quotes",
        action="store_true",
        help="send the files' top-of-book quotes (Binance bookTicker events, Kibot bid/ask, "
        "NDJSON quote messages) instead of their trades, to the quotes topic "
        "(CANDLEWAX_KAFKA_QUOTES_TOPIC) unless --topic says",
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


def report(read: MarketFile, out=sys.stderr, noun: str = "trades") -> None:
    """What a file held and what will not be sent, with reasons and example positions."""
    print(
        f"{read.path}: {read.format}, {read.rows:,} rows, {read.valid.height:,} valid {noun}",
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
        reasons[f"filtered: not a {noun[:-1]} (type)"] += read.filtered
    for reason, count in reasons.most_common():
        where = f"  e.g. {examples[reason]}" if examples.get(reason) else ""
        print(f"  not sent: {count:>9,}  {reason}{where}", file=out)


def ordered_messages(files: list[MarketFile]) -> pl.DataFrame:
    """All valid messages in event-time order (ties keep file order)."""
    return pl.concat([f.valid for f in files]).sort("ts", maintain_order=True)


def cycles(
    messages: pl.DataFrame, loops: int, kind: MessageKind = TRADE
) -> Iterator[tuple[bytes, bytes, int]]:
    """`(key, value, ts)` for each message, repeated `loops` times (0 = forever)."""
    ts = messages.get_column("ts")
    span = int(ts.max()) - int(ts.min()) + 1  # type: ignore[arg-type]
    cycle = 0
    while loops == 0 or cycle < loops:
        shifted = messages
        if cycle:
            shifted = messages.with_columns(
                pl.col("ts") + cycle * span,
                pl.col(kind.id_field) + f"~{cycle}",
            )
        lines = contract_lines(shifted, kind)
        keys = shifted.get_column("symbol").to_list()
        for key, value, ts in zip(keys, lines, shifted.get_column("ts").to_list(), strict=True):
            yield key.encode(), value, ts
        cycle += 1


def run(args: argparse.Namespace) -> int:
    options = dataclasses.replace(read_options(args), quotes=args.quotes)
    kind, noun = (QUOTE, "quotes") if args.quotes else (TRADE, "trades")
    files = []
    for path in args.files:
        print(f"reading {path} ...", file=sys.stderr, flush=True)
        try:
            read = read_market_file(path, options)
        except (OSError, ValueError) as exc:
            print(f"candlewax replay: {exc}", file=sys.stderr)
            return 2
        report(read, noun=noun)
        files.append(read)
    messages = ordered_messages(files)
    if messages.height == 0:
        print(f"candlewax replay: no valid {noun} to send", file=sys.stderr)
        return 1
    topic = chosen_topic(args, args.quotes)
    target = describe(args.brokers, topic, args.output)
    output = open_output(args.brokers, topic, args.output, paced=args.speed > 0)
    total = messages.height * args.loop if args.loop else None
    progress = Progress(f"replay -> {target}", total, unit=noun)
    seconds = send_all(cycles(messages, args.loop, kind), output, progress, args.speed)
    print(
        f"sent {output.sent:,} {noun} to {target} in {seconds:.1f} s "
        f"({output.sent / max(seconds, 1e-9):,.0f}/s)",
        file=sys.stderr,
    )
    return 0
