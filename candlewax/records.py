"""The record types of candlewax, each with its Arrow schema and JSON form, defined once.

Every package imports its records from here: the raw batches sources hand over, the
columns of a decoded trade batch, candles, rejections (the dead-letter queue) and drift
records. Field names follow the contracts in `docs/contracts.md`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum
from itertools import chain
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import pyarrow as pa

from candlewax.ndjson import LineBlock, json_objects
from candlewax.rows import joined

TIMESTAMP_MS = pa.timestamp("ms", tz="UTC")


# --- what sources hand over ------------------------------------------------------------
@dataclass(frozen=True)
class RawBatch:
    """A batch of raw messages from one source partition (or several: `joined`), in
    arrival order.

    Sources hand over whole batches (one item per poll) because per-message Python
    objects are what limits throughput; `positions` are Kafka offsets or file line
    numbers, turned into text only for the few messages that are rejected. `values` is a
    list (Kafka, the simulator) or, from an NDJSON file, the text they were read from
    (`LineBlock`). `ahead`: the decode's strict read of the batch, begun by the source on
    a thread of its own (`read_ahead` of `sources.file` and `sources.kafka`).
    """

    source: str
    values: list[bytes | None] | LineBlock
    positions: Sequence[int]  # a list, or a range when they are consecutive
    keys: list[bytes | None] | None = None
    # Of a joined batch: each source with how many of its messages follow, in order.
    source_runs: tuple[tuple[str, int], ...] = ()
    ahead: Future[Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    def position(self, index: int) -> str:
        return f"{self.source_of(index)}@{self.positions[index]}"

    def source_of(self, index: int) -> str:
        for source, count in self.source_runs:
            if index < count:
                return source
            index -= count
        return self.source

    def sources(self) -> tuple[tuple[str, int], ...]:
        """Each source with how many of the messages, in order, are its."""
        return self.source_runs or ((self.source, len(self)),)

    def __len__(self) -> int:
        return len(self.values)

    @staticmethod
    def joined(batches: Sequence[RawBatch]) -> RawBatch:
        """The batches as one, in order, each message keeping its source and position:
        a live worker polls several partitions a few messages at a time, and a decode
        costs ~1 ms whatever its size."""
        if len(batches) == 1:
            return batches[0]
        # Joined in C (`chain`), not by a Python loop body per message.
        values = list(chain.from_iterable(batch.values for batch in batches))
        positions = list(chain.from_iterable(batch.positions for batch in batches))
        keys = None
        if any(batch.keys is not None for batch in batches):
            keys = list(
                chain.from_iterable(
                    batch.keys if batch.keys is not None else [None] * len(batch)
                    for batch in batches
                )
            )
        runs = tuple(run for batch in batches for run in batch.sources())
        return RawBatch(batches[0].source, values, positions, keys, runs)


# Work on a batch's messages begun by its source before the batch's turn, on a thread of
# the source's own: what it gives is the batch's `ahead` (the decode's strict read).
ReadAhead = Callable[[list[bytes | None] | LineBlock], Any]
# A source that reads ahead makes its first batch this part of a batch (then whole ones):
# the flow has nothing to do until the first batch is decoded, and works on a small one
# while the next is read ahead (a file: the flow waited 0.07-0.2 s at the start with a
# whole first block, 0.02-0.1 s with an eighth; Kafka: the first trade received 0.43-0.75
# s after the start, then 0.23-0.46 s).
FIRST_BATCH_PART = 8


# --- decoded trades (columnar) ---------------------------------------------------------
# The columns of a decoded trade batch, as polars reads them from JSON. `trade_id` is
# text: an integer id and the same digits as a string are one id.
TRADE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": pl.Int64(),
    "price": pl.Float64(),
    "size": pl.Float64(),
    "trade_id": pl.String(),
    "side": pl.String(),
    "venue": pl.String(),
}
# The columns of a decoded quote batch (top of book); `quote_id` is text like `trade_id`.
QUOTE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": pl.Int64(),
    "bid": pl.Float64(),
    "ask": pl.Float64(),
    "bid_size": pl.Float64(),
    "ask_size": pl.Float64(),
    "quote_id": pl.String(),
    "venue": pl.String(),
}


# The symbol of the input contracts: 1 to 32 characters of A-Z a-z 0-9 . _ : / -
SYMBOL_PATTERN = r"^[A-Za-z0-9._:/\-]{1,32}$"


@dataclass(frozen=True, eq=False)
class MessageKind:
    """The fields of one kind of input message (the trade and quote contracts), which the
    decoder, dedupe and the lake read their columns from: one description per contract,
    not one copy of the field list per module."""

    name: str  # the `type` such a message has (or omits)
    columns: dict[str, pl.DataType]  # decoded columns, in contract order
    positive: tuple[str, ...]  # required numbers, finite and > 0
    non_negative: tuple[str, ...]  # optional numbers, finite and >= 0
    id_field: str  # optional string or integer id, unique per symbol
    texts: tuple[str, ...]  # optional strings
    ordered: tuple[str, str] | None = None  # two numbers where the first must be below

    @property
    def required(self) -> tuple[str, ...]:
        return ("symbol", *self.positive, "ts")

    @property
    def contract_fields(self) -> tuple[str, ...]:
        return (*self.required, self.id_field, *self.texts, *self.non_negative, "type")

    @property
    def fingerprint_columns(self) -> tuple[str, ...]:
        """What identical messages share: every field but the id."""
        return ("symbol", "ts", *self.positive, *self.non_negative, *self.texts)


TRADE = MessageKind("trade", TRADE_SCHEMA, ("price", "size"), (), "trade_id", ("side", "venue"))
QUOTE = MessageKind(
    "quote",
    QUOTE_SCHEMA,
    ("bid", "ask"),
    ("bid_size", "ask_size"),
    "quote_id",
    ("venue",),
    ordered=("bid", "ask"),
)

# Where each decoded trade came from: its original bytes, and its source and position
# there. They travel with the trade to the fat-finger guard, so an outlier's dead-letter
# record is the message as it came (the lake and the candles never see them).
ORIGIN_SCHEMA: dict[str, pl.DataType] = {
    "_raw": pl.Binary(),
    "_source": pl.String(),
    "_position": pl.Int64(),
}


def without_origin(trades: pl.DataFrame) -> pl.DataFrame:
    """The trades without the `ORIGIN_SCHEMA` columns. Dropped in place on a shallow
    copy: `DataFrame.drop` goes through a lazy query, ~50 us a call, which is most of what
    a small per-symbol step costs when symbols are many."""
    kept = trades.clone()
    for name in ORIGIN_SCHEMA:
        if name in kept.columns:
            kept.drop_in_place(name)
    return kept


# What the lake stores per valid trade: the columns above, `ts` as a timestamp, and
# whether it came too late for its candle.
TRADE_LAKE_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", TIMESTAMP_MS),
        ("price", pa.float64()),
        ("size", pa.float64()),
        ("trade_id", pa.string()),
        ("side", pa.string()),
        ("venue", pa.string()),
        ("late", pa.bool_()),
        ("seq", pa.int64()),
    ]
)


@dataclass(frozen=True)
class FlaggedTrades:
    """Deduplicated trades of one symbol (arrival order) and which of them came late."""

    trades: pl.DataFrame
    late: Any  # numpy bool array, one flag per row
    seq: Any  # numpy int64 array: arrival order within the symbol (breaks ties on ts)

    def __len__(self) -> int:
        return self.trades.height

    @property
    def symbol(self) -> str:
        return str(self.trades.get_column("symbol")[0])


# --- many small frames into one --------------------------------------------------------
# A live flow hands the sinks thousands of small frames between two writes (a frame per
# symbol per step). One `pl.concat` of them is one long native call that holds the GIL,
# and the frame it makes has thousands of chunks, which makes every later expression
# slow: on a writer thread that stalled the flow's own thread for 100-200 ms.
_CONCAT_SLICE = 64


def concat_frames(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """One frame of `frames` (same columns), contiguous, made in short native calls so a
    background thread doing it lets the flow's thread run in between."""
    if len(frames) == 1:
        return frames[0]
    parts = list(frames)
    while len(parts) > _CONCAT_SLICE:
        parts = [
            pl.concat(parts[i : i + _CONCAT_SLICE], rechunk=True)
            for i in range(0, len(parts), _CONCAT_SLICE)
        ]
    return pl.concat(parts, rechunk=True)


# --- records with a row form -----------------------------------------------------------
class _Record:
    """Shared conversions of the row-shaped records.

    On the flow's hot path records travel as polars frames of these columns, one frame
    per symbol per step (timestamps as epoch-ms integers, as in the JSON form): `frame`,
    `lake_frame` and `json_lines` convert whole frames. The dataclass rows are for
    tests, tools and the few records the flow makes one at a time.
    """

    ARROW_SCHEMA: ClassVar[pa.Schema]
    TIMESTAMP_FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def frame_schema(cls) -> dict[str, pl.DataType]:
        """The columns of a frame of these records, in contract order."""
        cached = cls.__dict__.get("_frame_schema")
        if cached is None:
            empty = pl.from_arrow(cls.ARROW_SCHEMA.empty_table())
            assert isinstance(empty, pl.DataFrame)
            cached = {
                name: pl.Int64() if name in cls.TIMESTAMP_FIELDS else dtype
                for name, dtype in empty.schema.items()
            }
            cls._frame_schema = cached  # type: ignore[attr-defined]
        return cached

    @classmethod
    def frame(cls, records: Sequence[Any]) -> pl.DataFrame:
        """A frame of dataclass rows (for records made one at a time)."""
        schema = cls.frame_schema()
        return pl.DataFrame(
            {name: [getattr(r, name) for r in records] for name in schema}, schema=schema
        )

    @classmethod
    def rows(cls, frame: pl.DataFrame) -> list[Any]:
        """The dataclass rows of a frame (tests and tools; never on the hot path)."""
        return [cls(**row) for row in frame.iter_rows(named=True)]

    @classmethod
    def lake_frame(cls, frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
        """Frames as rows of the lake: timestamps typed, and a float that is not finite (a
        sum that overflowed float64, such as the notional behind `vwap` of extreme but
        valid trades) null, as in the JSON form: never inf or NaN in any output."""
        frame = concat_frames(frames)
        return frame.with_columns(
            *[pl.col(name).cast(pl.Datetime("ms", "UTC")) for name in cls.TIMESTAMP_FIELDS],
            *_finite_or_null(frame),
        )

    @classmethod
    def json_lines(cls, frame: pl.DataFrame) -> list[bytes]:
        """The JSON form of every row, encoded for the whole frame at once."""
        return json_objects(finite(frame))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


def finite(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every float that is not finite made null: no output (JSON, the lake,
    the serving stores) ever holds inf or NaN."""
    return frame.with_columns(*_finite_or_null(frame))


def _finite_or_null(frame: pl.DataFrame) -> list[pl.Expr]:
    return [
        pl.when(pl.col(name).is_finite()).then(pl.col(name)).otherwise(None).alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.Float64
    ]


def record_symbol(batch: Any) -> str:
    """The symbol of a per-symbol batch (a frame of records or flagged trades): the key
    that routes it to a partitioned sink."""
    if isinstance(batch, pl.DataFrame):
        return str(batch.get_column("symbol")[0])
    return str(batch.symbol)


def bar_id(symbol: str, resolution: str, window_start: int) -> str:
    """The idempotency key of a candle: `{symbol}:{resolution}:{window_start epoch ms}`."""
    return f"{symbol}:{resolution}:{window_start}"


@dataclass(frozen=True)
class Candle(_Record):
    """One OHLCV bar of one symbol and resolution (the `candles` contract)."""

    symbol: str
    resolution: str
    window_start: int
    window_end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float
    trade_count: int
    bar_id: str
    revision: int = 0

    ARROW_SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("symbol", pa.string()),
            ("resolution", pa.string()),
            ("window_start", TIMESTAMP_MS),
            ("window_end", TIMESTAMP_MS),
            ("open", pa.float64()),
            ("high", pa.float64()),
            ("low", pa.float64()),
            ("close", pa.float64()),
            ("volume", pa.float64()),
            ("vwap", pa.float64()),
            ("trade_count", pa.int64()),
            ("bar_id", pa.string()),
            ("revision", pa.int64()),
        ]
    )
    TIMESTAMP_FIELDS: ClassVar[tuple[str, ...]] = ("window_start", "window_end")


# The columns of closed candles as the candle engine makes them: numpy rows, built in a
# few vectorised operations per step and turned into a frame only at the sinks, a whole
# sink batch (many symbols) at a time. `res` is the resolution in ms; the trade keys
# (`open_ts`, `open_seq`...) are what later late trades merge against.
_WINDOW_OHLC_FIELDS = [
    ("res", np.int64),
    ("start", np.int64),
    ("open", np.float64),
    ("open_ts", np.int64),
    ("open_seq", np.int64),
    ("close", np.float64),
    ("close_ts", np.int64),
    ("close_seq", np.int64),
    ("high", np.float64),
    ("low", np.float64),
]
CANDLE_ROW = np.dtype(
    [
        *_WINDOW_OHLC_FIELDS,
        ("count", np.int64),
        ("volume", np.float64),
        ("notional", np.float64),
        ("revision", np.int64),
    ]
)
# Quote bars as the quote bar arithmetic makes them (`operators.quote_bars`): OHLC of the
# mid price with the keys above, the closing bid and ask, and the spread's sums, so that
# coarse bars are exact roll-ups of base bars.
QUOTE_BAR_ROW = np.dtype(
    [
        *_WINDOW_OHLC_FIELDS,
        ("bid_close", np.float64),
        ("ask_close", np.float64),
        ("spread_min", np.float64),
        ("spread_max", np.float64),
        ("spread_sum", np.float64),
        ("spread_time", np.float64),  # the integral of the spread over time (spread x ms)
        ("covered_ms", np.int64),  # the time of the window a quote was in force
        ("count", np.int64),
        ("revision", np.int64),
    ]
)


@dataclass(frozen=True)
class FlaggedQuotes:
    """Deduplicated quotes of one symbol (arrival order) and which of them came late."""

    quotes: pl.DataFrame
    late: Any  # numpy bool array
    seq: Any  # numpy int64 array: arrival order within the symbol

    def __len__(self) -> int:
        return self.quotes.height

    @property
    def symbol(self) -> str:
        return str(self.quotes.get_column("symbol")[0])


# What the lake stores per valid quote (`quotes/`): the truth quote bars are checked against.
QUOTE_LAKE_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("ts", TIMESTAMP_MS),
        ("bid", pa.float64()),
        ("ask", pa.float64()),
        ("bid_size", pa.float64()),
        ("ask_size", pa.float64()),
        ("quote_id", pa.string()),
        ("venue", pa.string()),
        ("late", pa.bool_()),
        ("seq", pa.int64()),
    ]
)


@dataclass(frozen=True)
class CandleBatch:
    """Closed candles from one step of the candle engine (`CANDLE_ROW`s) and each one's
    symbol: its index in `symbols`, the engine's symbol table (shared, never reordered)."""

    symbols: Sequence[str]
    sym: Any  # numpy int64 array: each row's symbol, an index into `symbols`
    rows: Any  # numpy array of CANDLE_ROW
    names: tuple[tuple[int, str], ...]  # resolution ms -> its name ("1s")

    @classmethod
    def of_symbol(cls, symbol: str, rows: Any, names: tuple[tuple[int, str], ...]) -> Self:
        """The bars of one symbol."""
        return cls((symbol,), np.zeros(len(rows), dtype=np.int64), rows, names)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def symbol(self) -> str:
        """The symbol of the first row (of every row, for a batch of one symbol)."""
        return self.symbols[int(self.sym[0])] if len(self.sym) else ""


class QuoteBarBatch(CandleBatch):
    """Closed quote bars from one step of the quote engine (`QUOTE_BAR_ROW`s)."""


@dataclass(frozen=True)
class QuoteBar(_Record):
    """Mid OHLC and spreads of one symbol's quotes in one window (the `quote_bars` contract)."""

    symbol: str
    resolution: str
    window_start: int
    window_end: int
    open: float
    high: float
    low: float
    close: float
    bid_close: float
    ask_close: float
    spread_min: float
    spread_max: float
    spread_mean: float
    spread_twa: float
    quote_count: int
    bar_id: str
    revision: int = 0

    ARROW_SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("symbol", pa.string()),
            ("resolution", pa.string()),
            ("window_start", TIMESTAMP_MS),
            ("window_end", TIMESTAMP_MS),
            *[
                (name, pa.float64())
                for name in (
                    "open",
                    "high",
                    "low",
                    "close",
                    "bid_close",
                    "ask_close",
                    "spread_min",
                    "spread_max",
                    "spread_mean",
                    "spread_twa",
                )
            ],
            ("quote_count", pa.int64()),
            ("bar_id", pa.string()),
            ("revision", pa.int64()),
        ]
    )
    TIMESTAMP_FIELDS: ClassVar[tuple[str, ...]] = ("window_start", "window_end")


def _bar_frame(
    batches: Sequence[CandleBatch],
    columns: Callable[[np.ndarray], dict[str, Any]],
    schema: dict[str, pl.DataType],
) -> pl.DataFrame:
    """Bar batches (any symbols) as one frame of a bar record's columns (`schema`): the
    columns every bar record has (symbol, resolution, window, bar_id, revision) and the
    bar kind's own, `columns(rows)`. One query (`bar_id`), the rest eager: each polars
    query costs ~90 us, and a live step makes a frame of a few dozen bars."""
    rows = joined([b.rows for b in batches])  # by bytes: `candlewax.rows`
    names = {res: name for b in batches for res, name in b.names}
    resolutions = np.array(sorted(names), dtype=np.int64)
    labels = pl.Series([names[res] for res in resolutions.tolist()], dtype=pl.String)
    start = rows["start"]
    frame = pl.DataFrame(
        {
            "symbol": _row_symbols(batches),
            "resolution": labels.gather(np.searchsorted(resolutions, rows["res"])),
            "window_start": start,
            "window_end": start + rows["res"],
            **columns(rows),
            "revision": rows["revision"],
        }
    )
    bar_id = pl.concat_str(
        "symbol", pl.lit(":"), "resolution", pl.lit(":"), pl.col("window_start").cast(pl.String)
    )
    return frame.select(bar_id.alias(name) if name == "bar_id" else name for name in schema)


def _row_symbols(batches: Sequence[CandleBatch]) -> pl.Series:
    """Each row's symbol, batch after batch: one gather from the batches' symbol tables
    (the same table once, however many batches share it)."""
    tables: dict[int, int] = {}  # id of a table -> where it starts in `symbols`
    symbols: list[str] = []
    indices = []
    for batch in batches:
        offset = tables.get(id(batch.symbols))
        if offset is None:
            offset = tables[id(batch.symbols)] = len(symbols)
            symbols.extend(batch.symbols)
        indices.append(batch.sym + offset if offset else batch.sym)
    every = indices[0] if len(indices) == 1 else np.concatenate(indices)
    return pl.Series(symbols, dtype=pl.String).gather(every)


def _candle_columns(rows: np.ndarray) -> dict[str, Any]:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        vwap = rows["notional"] / rows["volume"]
    prices = {name: rows[name] for name in ("open", "high", "low", "close", "volume")}
    return {**prices, "vwap": vwap, "trade_count": rows["count"]}


def _quote_bar_columns(rows: np.ndarray) -> dict[str, Any]:
    kept = ("open", "high", "low", "close", "bid_close", "ask_close", "spread_min", "spread_max")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = rows["spread_sum"] / rows["count"]
        twa = rows["spread_time"] / rows["covered_ms"]
    return {
        **{name: rows[name] for name in kept},
        "spread_mean": mean,
        "spread_twa": twa,
        "quote_count": rows["count"],
    }


def candle_frame(batches: Sequence[CandleBatch]) -> pl.DataFrame:
    """Candle batches (any symbols) as one frame of the `Candle` columns."""
    if not batches:
        return pl.DataFrame(schema=Candle.frame_schema())
    return _bar_frame(batches, _candle_columns, Candle.frame_schema())


def quote_bar_frame(batches: Sequence[CandleBatch]) -> pl.DataFrame:
    """Quote bar batches (any symbols) as one frame of the `QuoteBar` columns."""
    if not batches:
        return pl.DataFrame(schema=QuoteBar.frame_schema())
    return _bar_frame(batches, _quote_bar_columns, QuoteBar.frame_schema())


class RejectReason(str, Enum):
    """Why a message broke its contract (machine-readable, stable names)."""

    EMPTY_MESSAGE = "empty_message"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    NOT_AN_INTEGER = "not_an_integer"
    NON_POSITIVE = "non_positive"
    BAD_SYMBOL = "bad_symbol"
    TS_OUT_OF_RANGE = "ts_out_of_range"
    # A field of the contract given twice: JSON parsers disagree on which value counts.
    DUPLICATE_KEY = "duplicate_key"
    # Not UTF-8, a byte-order mark, or an unpaired UTF-16 surrogate in a contract field.
    BAD_ENCODING = "bad_encoding"
    NESTING_TOO_DEEP = "nesting_too_deep"
    # Valid, but far from the symbol's recent prices: the fat-finger guard caught it.
    PRICE_OUTLIER = "price_outlier"
    # An optional size below zero (quote sizes may be 0: that side of the book is empty).
    NEGATIVE = "negative"
    # A quote whose bid is above its ask, or equal to it (unless locked books are allowed).
    CROSSED_BOOK = "crossed_book"
    LOCKED_BOOK = "locked_book"


@dataclass(frozen=True)
class Rejection(_Record):
    """A message that broke the contract, kept whole for the dead-letter queue."""

    raw: bytes | None
    reason: str
    field: str | None
    detail: str
    source: str
    received_at: int
    key: bytes | None = None

    ARROW_SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("raw", pa.binary()),
            ("reason", pa.string()),
            ("field", pa.string()),
            ("detail", pa.string()),
            ("source", pa.string()),
            ("received_at", TIMESTAMP_MS),
            ("key", pa.binary()),
        ]
    )
    TIMESTAMP_FIELDS: ClassVar[tuple[str, ...]] = ("received_at",)


# Candle fields whose drift is measured, in the order drift records list them.
DRIFT_FIELDS = ("open", "high", "low", "close", "volume", "vwap", "trade_count")
# The fields whose drift raises an alert by default: one late trade always moves the
# trade count of a small bar by more than 0.5 %, which says nothing about its prices.
DEFAULT_ALERT_FIELDS = DRIFT_FIELDS[:-1]


_DRIFT_TIMESTAMPS = ("window_start", "window_end", "detected_event_ts")


def _drift_schema(late_field: str, fields: tuple[str, ...]) -> pa.Schema:
    """The columns of a drift record over the measured `fields` (the last one a count):
    the bar, how late, then each field emitted, corrected, and its drift."""

    def typed(name: str) -> pa.DataType:
        return pa.int64() if name == fields[-1] else pa.float64()

    return pa.schema(
        [
            ("bar_id", pa.string()),
            ("symbol", pa.string()),
            ("resolution", pa.string()),
            ("window_start", TIMESTAMP_MS),
            ("window_end", TIMESTAMP_MS),
            ("revision", pa.int64()),
            (late_field, pa.int64()),
            ("max_lateness_ms", pa.int64()),
            ("emitted_missing", pa.bool_()),
            *[(f"{prefix}_{f}", typed(f)) for prefix in ("emitted", "corrected") for f in fields],
            *[(f"drift_{f}", pa.float64()) for f in fields],
            ("max_drift", pa.float64()),
            ("drifted_fields", pa.string()),
            ("alert", pa.bool_()),
            ("detected_event_ts", TIMESTAMP_MS),
        ]
    )


@dataclass(frozen=True)
class DriftRecord(_Record):
    """How far an emitted candle is from the candle with the late trades that missed it.

    One record per late trade per bar it belongs to, cumulative: `late_trades` counts all
    late trades of the bar so far and `corrected_*` includes them all, so the newest
    record of a `bar_id` (highest `late_trades`) is the current truth. `emitted_missing`
    marks a bar that was never emitted because its window closed empty.
    """

    bar_id: str
    symbol: str
    resolution: str
    window_start: int
    window_end: int
    revision: int
    late_trades: int
    max_lateness_ms: int
    emitted_missing: bool
    emitted_open: float | None
    emitted_high: float | None
    emitted_low: float | None
    emitted_close: float | None
    emitted_volume: float | None
    emitted_vwap: float | None
    emitted_trade_count: int | None
    corrected_open: float
    corrected_high: float
    corrected_low: float
    corrected_close: float
    corrected_volume: float
    corrected_vwap: float
    corrected_trade_count: int
    drift_open: float
    drift_high: float
    drift_low: float
    drift_close: float
    drift_volume: float
    drift_vwap: float
    drift_trade_count: float
    max_drift: float
    drifted_fields: str
    alert: bool
    detected_event_ts: int

    ARROW_SCHEMA: ClassVar[pa.Schema] = _drift_schema("late_trades", DRIFT_FIELDS)
    TIMESTAMP_FIELDS: ClassVar[tuple[str, ...]] = _DRIFT_TIMESTAMPS


# Quote bar fields whose drift is measured; a late quote always moves the count.
QUOTE_DRIFT_FIELDS = ("open", "high", "low", "close", "spread_mean", "spread_twa", "quote_count")
QUOTE_ALERT_FIELDS = QUOTE_DRIFT_FIELDS[:-1]


@dataclass(frozen=True)
class QuoteDriftRecord(_Record):
    """How far a published quote bar is from the bar with the late quotes that missed it
    (the full view). Cumulative like `DriftRecord`: the newest record of a `bar_id` is the
    current truth. `late_quotes` is 0 for a bar that drifted only because a late quote
    became the quote in force at its start."""

    bar_id: str
    symbol: str
    resolution: str
    window_start: int
    window_end: int
    revision: int
    late_quotes: int
    max_lateness_ms: int
    emitted_missing: bool
    emitted_open: float | None
    emitted_high: float | None
    emitted_low: float | None
    emitted_close: float | None
    emitted_spread_mean: float | None
    emitted_spread_twa: float | None
    emitted_quote_count: int | None
    corrected_open: float
    corrected_high: float
    corrected_low: float
    corrected_close: float
    corrected_spread_mean: float
    corrected_spread_twa: float
    corrected_quote_count: int
    drift_open: float
    drift_high: float
    drift_low: float
    drift_close: float
    drift_spread_mean: float
    drift_spread_twa: float
    drift_quote_count: float
    max_drift: float
    drifted_fields: str
    alert: bool
    detected_event_ts: int

    ARROW_SCHEMA: ClassVar[pa.Schema] = _drift_schema("late_quotes", QUOTE_DRIFT_FIELDS)
    TIMESTAMP_FIELDS: ClassVar[tuple[str, ...]] = _DRIFT_TIMESTAMPS
