"""What the format adapters share: options, their result, time and id conversions."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from candlewax.records import QUOTE_SCHEMA, TRADE_SCHEMA
from candlewax.text import formatted
from sources.formats.compressed import base_name

CONTRACT_COLUMNS = list(TRADE_SCHEMA)
QUOTE_COLUMNS = list(QUOTE_SCHEMA)


@dataclass(frozen=True)
class ReadOptions:
    """How to read a file: its format and what the file itself does not say."""

    format: str = "auto"
    symbol: str | None = None  # for files without a symbol column (Binance CSV, Kibot)
    venue: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # contract field -> file column
    ts_unit: str = "auto"  # s, ms, us, ns, auto (by magnitude) or a strptime format
    timezone: str | None = None  # of local-time stamps; Kibot's default is America/New_York
    market: str = "auto"  # Binance: spot or futures (auto: from the events and file name)
    quotes: bool = False  # read the file's top-of-book quotes, not its trades


@dataclass
class Parsed:
    """What an adapter made of a file: rows in contract columns, and what it skipped."""

    rows: int
    # CONTRACT_COLUMNS (QUOTE_COLUMNS when reading quotes) + `position` (Int64, 1-based
    # row or line)
    messages: pl.DataFrame
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, where)


def epoch_ms(column: pl.Expr, unit: str, timezone: str | None = None) -> pl.Expr:
    """A time column as epoch milliseconds: numbers in `s/ms/us/ns` (or `auto`, by
    magnitude), or text in a strptime format (local time in `timezone`, else UTC)."""
    if unit in ("s", "ms", "us", "ns", "auto"):
        numeric = column.cast(pl.Float64, strict=False)
        if unit == "auto":
            magnitude = numeric.abs().max()
            divisor = (
                pl.when(magnitude > 1e17)
                .then(1e6)
                .when(magnitude > 1e14)
                .then(1e3)
                .when(magnitude > 1e11)
                .then(1.0)
                .otherwise(1e-3)
            )
        else:
            divisor = pl.lit({"s": 1e-3, "ms": 1.0, "us": 1e3, "ns": 1e6}[unit])
        return (numeric / divisor).floor().cast(pl.Int64, strict=False)
    parsed = column.cast(pl.String).str.strptime(pl.Datetime("ms"), unit, strict=False)
    if timezone:
        parsed = parsed.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    else:
        parsed = parsed.dt.replace_time_zone("UTC")
    return parsed.dt.epoch("ms")


def id_from_position(path: Path) -> pl.Expr:
    """A deterministic trade id for files without one: `<file name>:<position>`."""
    return formatted("{}:{}", pl.lit(base_name(path)), pl.col("position"))


def read_text_table(data: bytes, columns: list[str] | None, has_header: bool) -> pl.DataFrame:
    """A comma-separated table, every column as text (typed later, row by row)."""
    return pl.read_csv(
        io.BytesIO(data),
        has_header=has_header,
        new_columns=columns,
        infer_schema=False,
        truncate_ragged_lines=True,
    )
