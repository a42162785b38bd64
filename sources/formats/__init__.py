"""Trade files in the formats people have, turned into the trade contract.

Each adapter reads one format into contract columns (`symbol, ts, price, size, trade_id,
side, venue`) plus the `position` of every row in the file, and counts what it could not
even read as a trade (a book event in a websocket capture, a line that is not CSV).
`read_trade_file` then validates every row with the flow's own decoder, so a row is
judged by exactly the rules the flow applies, and returns valid trades, rejections by
reason and skips by reason. Files without trade ids get ids from their file name and
position, so reading the same file twice gives the same ids.

Formats: `ndjson` (the contract), `csv` and `parquet` (with a column mapping),
`binance-csv` (public trade dumps), `binance-ws` (websocket captures), `kibot` (ticks).
`.gz`, `.zst` and `.zip` files are read directly.
"""

from __future__ import annotations

from sources.formats.common import ReadOptions
from sources.formats.reading import (
    FORMATS,
    TradeFile,
    detect_format,
    read_trade_file,
)

__all__ = ["FORMATS", "ReadOptions", "TradeFile", "detect_format", "read_trade_file"]
