"""CSV and Parquet files of trades, with a mapping from contract fields to columns.

By default a column is looked up by the contract's own name (`symbol, ts, price, size,
trade_id, side, venue`); `ReadOptions.columns` maps others (`{"ts": "time", "size":
"qty"}`). `ts` is converted with `ReadOptions.ts_unit`. A file without `symbol` needs
`ReadOptions.symbol`; one without `trade_id` gets ids from its name and row number.

One instrument per symbol: a file of futures trades whose `symbol` is the root (`ES`)
and another column the contract (`contract`, `expiry`, `expiration`, `contract_month` or
`delivery`, or the column `ReadOptions.columns["contract"]` names) gets symbols of the
contract, `{symbol}_{contract}` (`ES_202412`), unless the symbol already ends with it;
two contract months never blend into one candle.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from candlewax.text import formatted
from sources.formats.common import (
    CONTRACT_COLUMNS,
    Parsed,
    ReadOptions,
    epoch_ms,
    id_from_position,
    read_text_table,
)


def read_csv(data: bytes, path: Path, options: ReadOptions) -> Parsed:
    return _to_contract(read_text_table(data, None, has_header=True), path, options)


def read_parquet(data: bytes, path: Path, options: ReadOptions) -> Parsed:
    frame = pl.read_parquet(io.BytesIO(data))
    # Keep numbers as numbers (the contract checks them); text stays text.
    return _to_contract(frame, path, options)


CONTRACT_MONTH_COLUMNS = ("contract", "expiry", "expiration", "contract_month", "delivery")


def _instrument(symbol: pl.Expr, frame: pl.DataFrame, options: ReadOptions) -> pl.Expr:
    """The symbol, with the contract of a futures trade appended when the file has one."""
    named = options.columns.get("contract")
    if named is not None and named not in frame.columns:
        raise ValueError(f"no column {named!r} for the contract; the file has {frame.columns}")
    column = named or next((c for c in CONTRACT_MONTH_COLUMNS if c in frame.columns), None)
    if column is None:
        return symbol
    contract = pl.col(column).cast(pl.String).str.strip_chars()
    keep = contract.is_null() | (contract == "") | symbol.str.ends_with(contract)
    return pl.when(keep).then(symbol).otherwise(formatted("{}_{}", symbol, contract))


def _to_contract(frame: pl.DataFrame, path: Path, options: ReadOptions) -> Parsed:
    mapping = {name: options.columns.get(name, name) for name in CONTRACT_COLUMNS}
    missing = [
        f"{name} (column {column!r})"
        for name, column in mapping.items()
        if column not in frame.columns and name in ("ts", "price", "size")
    ]
    if missing:
        raise ValueError(
            f"{path}: no column for {', '.join(missing)}; the file has {frame.columns}. "
            "Map contract fields to columns, e.g. --column ts=time --column size=qty"
        )
    if mapping["symbol"] not in frame.columns and options.symbol is None:
        raise ValueError(f"{path}: no symbol column; name it with --column or give --symbol")

    frame = frame.with_row_index("position", offset=1).with_columns(
        pl.col("position").cast(pl.Int64)
    )

    def column(name: str, fallback: pl.Expr) -> pl.Expr:
        source = mapping[name]
        return (pl.col(source) if source in frame.columns else fallback).alias(name)

    numbers = [
        column(name, pl.lit(None)).cast(pl.Float64, strict=False) for name in ("price", "size")
    ]
    try:
        symbol = _instrument(
            column("symbol", pl.lit(options.symbol)).cast(pl.String), frame, options
        )
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    trades = frame.select(
        symbol.alias("symbol"),
        epoch_ms(pl.col(mapping["ts"]), options.ts_unit, options.timezone).alias("ts"),
        *numbers,
        column("trade_id", id_from_position(path)).cast(pl.String),
        column("side", pl.lit(None)).cast(pl.String),
        column("venue", pl.lit(options.venue)).cast(pl.String),
        "position",
    )
    return Parsed(rows=frame.height, messages=trades)
