"""The past of a series from the lake, so a page opened late shows it: DuckDB over the
`candles/` and `quote_bars/` datasets (partition pruning on `resolution`), the highest
revision of every bar, in the contract's JSON form (epoch-ms windows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from candlewax.records import Candle, QuoteBar
from sinks.lake import scan, scan_parameters

DATASETS: dict[str, tuple[str, type[Candle] | type[QuoteBar]]] = {
    "candle": ("candles", Candle),
    "quote_bar": ("quote_bars", QuoteBar),
}


def lake_bars(lake: Path, kind: str, symbol: str, resolution: str, limit: int) -> list[dict]:
    """The last `limit` bars of one series in the lake (none when the lake has no files
    of that dataset yet: a flow writes its first files after its first flush)."""
    dataset, record = DATASETS[kind]
    if not any((Path(lake) / dataset).rglob("*.parquet")):
        return []
    fields = list(record.ARROW_SCHEMA.names)
    columns = ", ".join(
        f"epoch_ms({name}) as {name}" if name in record.TIMESTAMP_FIELDS else name
        for name in fields
    )
    sql = f"""
        select {columns} from {scan(dataset)}
        where resolution = $resolution and symbol = $symbol
        qualify row_number() over (partition by bar_id order by revision desc) = 1
        order by window_start desc limit $limit"""
    parameters: dict[str, Any] = {
        **scan_parameters(lake, dataset),
        "resolution": resolution,
        "symbol": symbol,
        "limit": limit,
    }
    with duckdb.connect() as con:
        rows = con.execute(sql, parameters).fetchall()
    return [dict(zip(fields, row, strict=True)) for row in reversed(rows)]


def lake_symbols(lake: Path) -> set[str]:
    """The symbols with candles in the lake."""
    if not any((Path(lake) / "candles").rglob("*.parquet")):
        return set()
    with duckdb.connect() as con:
        rows = con.execute(
            f"select distinct symbol from {scan('candles')}", scan_parameters(lake, "candles")
        ).fetchall()
    return {str(row[0]) for row in rows}
