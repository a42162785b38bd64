"""The past of a series from the lake, so a page opened late shows it: DuckDB over the
`candles/` and `quote_bars/` datasets (only the newest date partitions of the resolution
that can hold the bars asked for), the highest revision of every bar, in the contract's
JSON form (epoch-ms windows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from candlewax.records import Candle, QuoteBar
from config.durations import parse_duration_ms
from sinks.lake import scan, scan_parameters

DATASETS: dict[str, tuple[str, type[Candle] | type[QuoteBar]]] = {
    "candle": ("candles", Candle),
    "quote_bar": ("quote_bars", QuoteBar),
}


def recent_dates(lake: Path, dataset: str, resolution: str, limit: int) -> list[Path]:
    """The newest `date=` partitions of a resolution that can hold its last `limit` bars
    (the days they span, and one more for a window across midnight or a day with a
    gap), so a page load never scans a year of files for a chart of 500 bars."""
    directory = Path(lake) / dataset / f"resolution={resolution}"
    if not directory.is_dir():
        return []
    dates = sorted(
        (d for d in directory.iterdir() if d.name.startswith("date=") and d.is_dir()),
        reverse=True,
    )
    try:
        span_ms = limit * parse_duration_ms(resolution)
    except ValueError:
        return dates
    return dates[: span_ms // 86_400_000 + 2]


def lake_bars(lake: Path, kind: str, symbol: str, resolution: str, limit: int) -> list[dict]:
    """The last `limit` bars of one series in the lake, from the date partitions that can
    hold them (none when the lake has no files of that dataset yet: a flow writes its
    first files after its first flush)."""
    dataset, record = DATASETS[kind]
    files = [str(d / "*.parquet") for d in recent_dates(lake, dataset, resolution, limit)]
    files = [pattern for pattern in files if any(Path(pattern).parent.glob("*.parquet"))]
    if not files:
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
        dataset: files,
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
