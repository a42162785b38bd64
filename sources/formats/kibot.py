"""Kibot-style tick files: `date,time,price,bid,ask,size`, no header, US Eastern time.

Each row is a trade and the quote in force at it: read for quotes (`ReadOptions.quotes`),
the `bid` and `ask` columns become quote messages (no sizes; ids from the file name and
line number like the trades').

`date` is `MM/DD/YYYY`, `time` `HH:MM:SS` (fractions allowed). The stamps are local
time in `ReadOptions.timezone` (Kibot's data is `America/New_York`), converted to UTC;
a stamp that does not exist in that zone (the spring-forward hour) is skipped. Kibot
files carry no symbol (it comes from `--symbol` or the file name) and no trade ids (they
come from the file name and line number); several trades in one second keep file order.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sources.formats.common import (
    Parsed,
    ReadOptions,
    epoch_ms,
    id_from_position,
    read_text_table,
)
from sources.formats.compressed import base_name

KIBOT_COLUMNS = ["date", "time", "price", "bid", "ask", "size"]
KIBOT_TIMEZONE = "America/New_York"


def read_ticks(data: bytes, path: Path, options: ReadOptions) -> Parsed:
    symbol = options.symbol or base_name(path).split(".")[0].split("_")[0].upper()
    has_header = data[:4].lower() == b"date"
    frame = read_text_table(data, KIBOT_COLUMNS, has_header=has_header)
    stamp = pl.concat_str(pl.col("date"), pl.lit(" "), pl.col("time"))
    ts = epoch_ms(stamp, "%m/%d/%Y %H:%M:%S%.f", options.timezone or KIBOT_TIMEZONE)
    numbered = frame.with_row_index("position", offset=1)
    position = (pl.col("position") + int(has_header)).cast(pl.Int64)
    venue = pl.lit(options.venue).cast(pl.String).alias("venue")
    if options.quotes:
        quotes = numbered.select(
            pl.lit(symbol).alias("symbol"),
            ts.alias("ts"),
            pl.col("bid").cast(pl.Float64, strict=False),
            pl.col("ask").cast(pl.Float64, strict=False),
            pl.lit(None, dtype=pl.Float64).alias("bid_size"),
            pl.lit(None, dtype=pl.Float64).alias("ask_size"),
            pl.lit(None, dtype=pl.String).alias("quote_id"),
            venue,
            position,
        ).with_columns(id_from_position(path).alias("quote_id"))
        return Parsed(rows=frame.height, messages=quotes)
    trades = numbered.select(
        pl.lit(symbol).alias("symbol"),
        ts.alias("ts"),
        pl.col("price").cast(pl.Float64, strict=False),
        pl.col("size").cast(pl.Float64, strict=False),
        pl.lit(None, dtype=pl.String).alias("trade_id"),
        pl.lit(None, dtype=pl.String).alias("side"),
        venue,
        position,
    ).with_columns(id_from_position(path).alias("trade_id"))
    return Parsed(rows=frame.height, messages=trades)
