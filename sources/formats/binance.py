"""Binance trade data: the public trade CSV dumps and websocket capture lines.

Trade CSV dumps (data.binance.vision): `id,price,qty,quote_qty,time,is_buyer_maker[,
is_best_match]`, with or without a header; `time` in ms (µs in spot files from 2025 on,
told apart by magnitude). The symbol is not in the file: it comes from `--symbol` or the
file name (`BTCUSDT-trades-2024-08-08.csv`).

Websocket captures: `<receive time ns> <JSON>` lines of the combined-stream envelope
`{"stream": ..., "data": {...}}`. Trade events (`"e": "trade"`, and `aggTrade`) become
trades: `s` symbol, `t` (`a`) id, `p`/`q` decimal strings, `T` trade time in ms, `m`
buyer-is-maker (so the taker sold). Depth and book-ticker events are skipped and counted.

The taker's side is the trade's `side`: `sell` when the buyer was the maker.

One instrument per symbol: Binance names a USD-M perpetual like the spot pair
(`BTCUSDT`), so the two would blend into one candle. Every futures symbol here carries
its contract: a perpetual without one in its name gets `_PERP` (`BTCUSDT_PERP`, as
Binance itself names COIN-M perpetuals, `BTCUSD_PERP`); delivery contracts keep theirs
(`BTCUSDT_240927`); spot symbols stay as they are. The market is told per event (futures
trade events carry `X`, the order type, and spot ones `M`; futures book tickers carry
`e` and a time), else by `ReadOptions.market`, else by the file name (`usdm`, `um`,
`coinm`, `cm`, `futures`, `fapi`, `dapi`). The venue is `binance` for spot and
`binance-futures` for futures unless `--venue` says.

Quotes (`ReadOptions.quotes`): book-ticker events become quote messages, `b`/`a` the
best bid and ask, `B`/`A` their sizes, `u` (the book's update id) the quote id. A
futures book ticker carries its time (`T`); a spot one carries none, so its `ts` is the
capture's receive time (the line's nanosecond prefix, to the millisecond): the
capturing machine's clock, not the exchange's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from candlewax.records import QUOTE_SCHEMA
from sources.formats.common import Parsed, ReadOptions, epoch_ms, read_text_table
from sources.formats.compressed import base_name

TRADE_CSV_COLUMNS = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]
_SYMBOL_IN_NAME = re.compile(r"^([A-Z0-9_]+)-(?:agg)?trades-", re.IGNORECASE)
_TRADE_EVENTS = {"trade": "t", "aggTrade": "a"}
SPOT, FUTURES = "spot", "futures"
MARKETS = ("auto", SPOT, FUTURES)
_FUTURES_IN_NAME = re.compile(r"(^|[^a-z])(usdm|um|coinm|cm|futures|fapi|dapi)([^a-z]|$)", re.I)
VENUES = {SPOT: "binance", FUTURES: "binance-futures"}


def symbol_from_name(path: Path) -> str | None:
    match = _SYMBOL_IN_NAME.match(base_name(path))
    return match.group(1).upper() if match else None


def instrument(symbol: str, market: str) -> str:
    """The symbol that names one instrument: a futures symbol without a contract in it
    (a perpetual, named like the spot pair) gets `_PERP`."""
    if market == FUTURES and "_" not in symbol:
        return f"{symbol}_PERP"
    return symbol


def _market_of_file(path: Path, options: ReadOptions) -> str:
    if options.market != "auto":
        return options.market
    return FUTURES if _FUTURES_IN_NAME.search(base_name(path)) else SPOT


def read_trade_csv(data: bytes, path: Path, options: ReadOptions) -> Parsed:
    exchange_symbol = options.symbol or symbol_from_name(path)
    if exchange_symbol is None:
        raise ValueError(f"{path}: Binance trade files carry no symbol; give --symbol")
    has_header = data[:3].lower() == b"id,"
    head = data.split(b"\n", 2)
    first_row = head[int(has_header)] if len(head) > int(has_header) else b""
    width = min(len(first_row.split(b",")), len(TRADE_CSV_COLUMNS)) if first_row.strip() else 6
    # Spot dumps have 7 columns (with is_best_match); futures dumps 6, and a header.
    market = options.market if options.market != "auto" else SPOT if width == 7 else FUTURES
    symbol = instrument(exchange_symbol, market)
    frame = read_text_table(data, TRADE_CSV_COLUMNS[:width], has_header=has_header)
    trades = frame.with_row_index("position", offset=1).select(
        pl.lit(symbol).alias("symbol"),
        epoch_ms(pl.col("time"), options.ts_unit).alias("ts"),
        pl.col("price").cast(pl.Float64, strict=False),
        pl.col("qty").cast(pl.Float64, strict=False).alias("size"),
        pl.col("id").alias("trade_id"),
        _side(pl.col("is_buyer_maker").str.to_lowercase() == "true"),
        pl.lit(options.venue or VENUES[market]).alias("venue"),
        pl.col("position").cast(pl.Int64),
    )
    return Parsed(rows=frame.height, messages=trades)


def _side(buyer_is_maker: pl.Expr) -> pl.Expr:
    return pl.when(buyer_is_maker).then(pl.lit("sell")).otherwise(pl.lit("buy")).alias("side")


def _event_kind(event: dict[str, Any]) -> str:
    if "e" in event:
        return str(event["e"])
    if "lastUpdateId" in event and "bids" in event:
        return "depthSnapshot"
    if "b" in event and "a" in event:
        return "bookTicker"
    return "unknown"


def _event_market(event: dict[str, Any], kind: str) -> str | None:
    """The market an event comes from, when the event says (see the module's doc)."""
    if kind in _TRADE_EVENTS:
        if "X" in event:
            return FUTURES
        if "M" in event:
            return SPOT
    elif kind == "bookTicker":
        return FUTURES if "e" in event or "T" in event else SPOT
    return None


def read_ws_capture(data: bytes, path: Path, options: ReadOptions) -> Parsed:
    file_market = _market_of_file(path, options)
    rows: list[tuple[Any, ...]] = []
    quotes: list[tuple[Any, ...]] = []
    parsed = Parsed(rows=0, messages=pl.DataFrame())
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        parsed.rows += 1
        where = f"line {number}"
        received, _, body = line.partition(b" ")
        try:
            message = msgspec.json.decode(body)
        except msgspec.DecodeError:
            parsed.skip("unreadable_line", where)
            continue
        event = message.get("data", message) if isinstance(message, dict) else None
        if not isinstance(event, dict):
            parsed.skip("unreadable_line", where)
            continue
        kind = _event_kind(event)
        id_field = _TRADE_EVENTS.get(kind)
        wanted = kind == "bookTicker" if options.quotes else id_field is not None
        if not wanted:
            parsed.skip(f"not_a_{'quote' if options.quotes else 'trade'}_event:{kind}", where)
            continue
        market = file_market
        if options.market == "auto":
            market = _event_market(event, kind) or file_market
        symbol = event.get("s")
        if options.quotes:
            ts = event.get("T")
            if ts is None and received.isdigit():
                ts = int(received) // 1_000_000
            quotes.append(
                (
                    instrument(symbol, market) if isinstance(symbol, str) else symbol,
                    ts,
                    _number(event.get("b")),
                    _number(event.get("a")),
                    _number(event.get("B")),
                    _number(event.get("A")),
                    _text(event.get("u")),
                    options.venue or VENUES[market],
                    number,
                )
            )
            continue
        assert id_field is not None
        rows.append(
            (
                instrument(symbol, market) if isinstance(symbol, str) else symbol,
                options.venue or VENUES[market],
                event.get("T"),
                _number(event.get("p")),
                _number(event.get("q")),
                _text(event.get(id_field)),
                event.get("m"),
                number,
            )
        )
    if options.quotes:
        schema = {**QUOTE_SCHEMA, "position": pl.Int64()}
        frame = pl.DataFrame(quotes, schema=schema, orient="row", strict=False)
        symbol_or_option = pl.col("symbol").fill_null(pl.lit(options.symbol, dtype=pl.String))
        parsed.messages = frame.with_columns(symbol_or_option)
        return parsed
    frame = pl.DataFrame(
        rows,
        schema={
            "symbol": pl.String,
            "venue": pl.String,
            "ts": pl.Int64,
            "price": pl.Float64,
            "size": pl.Float64,
            "trade_id": pl.String,
            "buyer_is_maker": pl.Boolean,
            "position": pl.Int64,
        },
        orient="row",
        strict=False,
    )
    parsed.messages = frame.select(
        pl.col("symbol").fill_null(pl.lit(options.symbol, dtype=pl.String)),
        "ts",
        "price",
        "size",
        "trade_id",
        _side(pl.col("buyer_is_maker")),
        "venue",
        "position",
    )
    return parsed


def _number(value: Any) -> float | None:
    """Binance sends prices and quantities as decimal strings."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
