"""Market data files in the formats people have, turned into the trade or quote contract.

Each adapter reads one format into contract columns (`symbol, ts, price, size, trade_id,
side, venue`; with `ReadOptions.quotes`, `symbol, ts, bid, ask, bid_size, ask_size,
quote_id, venue`) plus the `position` of every row in the file, and counts what it could
not even read as one (a book event in a websocket capture, a line that is not CSV).
`read_market_file` then validates every row with the flow's own decoder, so a row is
judged by exactly the rules the flow applies, and returns valid messages, rejections by
reason and skips by reason. Files without ids get ids from their file name and
position, so reading the same file twice gives the same ids.

Formats: `ndjson` (the contract), `csv` and `parquet` (with a column mapping),
`binance-csv` (public trade dumps), `binance-ws` (websocket captures: trades and book
tickers), `kibot` (ticks: trades and the bid/ask at each). `.gz`, `.zst` and `.zip` files
are read directly.
"""

from __future__ import annotations

from sources.formats.common import ReadOptions
from sources.formats.reading import (
    FORMATS,
    QUOTE_FORMATS,
    MarketFile,
    detect_format,
    read_market_file,
)

__all__ = [
    "FORMATS",
    "QUOTE_FORMATS",
    "MarketFile",
    "ReadOptions",
    "detect_format",
    "read_market_file",
]
