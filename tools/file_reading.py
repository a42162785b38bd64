"""How `replay` and `profile` are told to read a trade file: one set of options for both."""

from __future__ import annotations

import argparse

from sources.formats import FORMATS
from sources.formats.binance import MARKETS
from sources.formats.common import CONTRACT_COLUMNS, ReadOptions


def add_reading_arguments(parser: argparse.ArgumentParser, title: str = "reading") -> None:
    reading = parser.add_argument_group(title)
    reading.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help="file format (default: from the name and first line)",
    )
    reading.add_argument(
        "--symbol",
        help="symbol for files without one (Binance CSV, Kibot; default from the file name)",
    )
    reading.add_argument("--venue", help="venue to set on every trade")
    reading.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="CSV/Parquet: the file column of a contract field, e.g. "
        "--column ts=time --column size=qty (repeatable); --column contract=COL names "
        "futures contract months, each its own symbol (SYMBOL_CONTRACT)",
    )
    reading.add_argument(
        "--ts-unit",
        default="auto",
        help="CSV/Parquet/Binance: unit of numeric times (s, ms, us, ns; "
        "default auto, by magnitude) or a strptime format for text times",
    )
    reading.add_argument(
        "--market",
        choices=MARKETS,
        default="auto",
        help="Binance: spot or futures (default auto: from the events, else the file name); "
        "futures perpetuals are named SYMBOL_PERP, so no candle mixes two markets",
    )
    reading.add_argument(
        "--timezone",
        help="zone of local-time stamps (Kibot: America/New_York by default; others: UTC)",
    )


# The contract's fields, and a futures contract (month) that makes the symbol one instrument.
MAPPABLE_FIELDS = (*CONTRACT_COLUMNS, "contract")


def read_options(args: argparse.Namespace) -> ReadOptions:
    """The `ReadOptions` the arguments of `add_reading_arguments` ask for."""
    columns = {}
    for item in args.column:
        field, sep, column = item.partition("=")
        if not sep or field not in MAPPABLE_FIELDS:
            raise SystemExit(
                f"candlewax: --column wants FIELD=COLUMN with FIELD one of "
                f"{', '.join(MAPPABLE_FIELDS)}; got {item!r}"
            )
        columns[field] = column
    return ReadOptions(
        format=args.format,
        symbol=args.symbol,
        venue=args.venue,
        columns=columns,
        ts_unit=args.ts_unit,
        timezone=args.timezone,
        market=args.market,
    )
