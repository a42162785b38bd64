"""Decode and validate a batch of raw messages against their contract (trades or quotes).

Three paths, from fastest to exact:
1. The strict read (most batches): polars' NDJSON reader (where the batch's punctuation
   vouches for it, `_polars_read`) or else Arrow's JSON reader reads the whole batch in
   one call with the contract's types, and fails on anything typed wrong (`_strict_read`).
   The value rules (price and size > 0, symbol characters, `ts` bounds) are vectorised
   expressions on its columns.
2. The careful read, for a batch the strict read refused: msgspec checks each message's
   shape and JSON types, polars reads the messages that passed as one NDJSON block.
3. The exact path, `verdict`, one message at a time: for the messages the other paths
   refused or cannot vouch for (a contract field that may be given twice: parsers
   disagree on which value counts, so those are `duplicate_key`; a `\\u` escape, which can
   spell a key; bytes that are not UTF-8). It is total: no input makes it raise.

Every message gets exactly one verdict, which depends on its bytes alone, never on the
batch it came in or the path it took (tested with hypothesis over any batching).

The same code reads both contracts; what differs (the fields, which numbers must be
positive, the quote's `bid < ask`) comes from the `MessageKind` of `candlewax.records`.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

from candlewax.ndjson import LineBlock, byte_counts, may_hold_negative_zero
from candlewax.records import (
    QUOTE,
    SYMBOL_PATTERN,
    TRADE,
    MessageKind,
    RawBatch,
    ReadAhead,
    Rejection,
    RejectReason,
)

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_I64 = Annotated[int, msgspec.Meta(ge=_I64_MIN, le=_I64_MAX)]
# How much of an offending value a rejection's detail quotes: a 600 KB symbol must not
# make a 600 KB header on the dead-letter record.
DETAIL_VALUE_CHARS = 64
_UTF8_BOM = b"\xef\xbb\xbf"


class _TradeShape(msgspec.Struct, gc=False):
    """The JSON shape of a trade message; unknown extra fields are ignored."""

    symbol: str
    price: float
    size: float
    ts: _I64
    trade_id: int | str | None = None
    side: str | None = None
    venue: str | None = None
    type: str | None = None


class _QuoteShape(msgspec.Struct, gc=False):
    """The JSON shape of a quote message; unknown extra fields are ignored."""

    symbol: str
    bid: float
    ask: float
    ts: _I64
    bid_size: float | None = None
    ask_size: float | None = None
    quote_id: int | str | None = None
    venue: str | None = None
    type: str | None = None


@dataclass(frozen=True, eq=False)
class _Reader:
    """What the decoder needs of one `MessageKind`, made once."""

    kind: MessageKind
    check_shape: Callable[[bytes], Any]
    read_schema: dict[str, pl.DataType]
    # A contract key as it appears in the text (or a value that looks like one: a false
    # alarm only sends the message down the exact path).
    contract_key: str
    text_fields: tuple[str, ...]
    # The id may be a string or an integer: a batch is read with one type or the other
    # (the one that worked last first); a batch that mixes them takes the careful path.
    id_types: list[pa.DataType]

    @classmethod
    def of(cls, kind: MessageKind, shape: type[msgspec.Struct]) -> _Reader:
        return cls(
            kind,
            msgspec.json.Decoder(shape).decode,
            {**kind.columns, "type": pl.String()},
            '"(?:' + "|".join(kind.contract_fields) + ')"',
            ("symbol", *kind.texts, "type", kind.id_field),
            [pa.string(), pa.int64()],
        )


_READERS = {TRADE.name: _Reader.of(TRADE, _TradeShape), QUOTE.name: _Reader.of(QUOTE, _QuoteShape)}


@dataclass(frozen=True)
class ValidationRules:
    """The value bounds of a valid trade; `now_ms` is injectable so tests control the clock."""

    ts_min: int = 946_684_800_000
    ts_max_future_ms: int = 3_600_000
    accept_locked: bool = False  # a quote with bid == ask is valid (else `locked_book`)
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))


@dataclass(frozen=True)
class DecodedBatch:
    """The outcome of one raw batch: valid messages (arrival order), rejections, and how
    many were filtered (not of the kind read)."""

    valid: pl.DataFrame  # the kind's columns, then (if asked for) ORIGIN_SCHEMA
    rejections: list[Rejection]
    filtered: int
    received: int
    # The ids of `valid` as the integers they were read as, when the read found every id
    # a JSON number: the dedupe keys are made of them without parsing their text.
    id_numbers: pl.Series | None = None


# Which read made a frame, which is what the exact path must judge of it (`_checked`):
# the strict read, the careful read, or messages the exact path itself read.
ReadPath = Literal["unvouched", "doubtful", "vouched"]
FILTERED = "filtered"
_ID_NUMBER = "_id_number"  # `_checked`'s column of the ids read as integers
Problem = tuple[str, str | None, str]
# What `verdict` says of one message: a problem, FILTERED, or the contract fields.
Verdict = Problem | str | dict[str, Any]


def decode_batch(
    batch: RawBatch, rules: ValidationRules, origin: bool = True, kind: MessageKind = TRADE
) -> DecodedBatch:
    """Split a raw batch into valid messages of `kind`, rejected messages and filtered ones
    (of another kind). `origin`: give the valid ones the `ORIGIN_SCHEMA` columns (their
    bytes and position), which only the fat-finger guard's dead-letter records need."""
    reader = _READERS[kind.name]
    values = batch.values
    now = rules.now_ms()
    strict = batch.ahead.result() if batch.ahead is not None else _strict_read(values, reader)
    refused: list[int] = []
    rows: Sequence[int] = range(len(values))
    block = values if isinstance(values, LineBlock) else None
    if strict is not None:  # the whole batch in one strict, typed read
        read, block = strict
        checked = _checked(read, rows, "unvouched", rules, now, kind)
    else:  # something in the batch is off: every message's shape checked on its own
        for index, raw in enumerate(values):  # the loop body inline: this runs per message
            try:
                reader.check_shape(raw)  # type: ignore[arg-type]
            except Exception:  # any failure at all (bad UTF-8, deep nesting...): judged below
                refused.append(index)
        refused_set = set(refused)
        if refused:
            rows = [i for i in rows if i not in refused_set]
        raw_rows: list[bytes] = [values[i] for i in rows]  # type: ignore[misc]
        read = _read_rows(raw_rows, reader).hstack([_text(raw_rows)])
        checked = _checked(read, rows, "doubtful", rules, now, kind)
        checked.drop_in_place("_text")

    # The exact path: refused messages, and fast-path rows it cannot vouch for.
    doubtful = np.flatnonzero(checked.get_column("_doubtful").to_numpy())
    keep = np.ones(checked.height, dtype=bool)
    # `rows[i]`, not an array of `rows`: on the strict read it is a range, of which
    # `np.asarray` makes a Python int per row (4 ms for 100,000).
    judged = [(rows[i], i) for i in doubtful.tolist()] + [(i, -1) for i in refused]
    rejected: list[tuple[int, Rejection]] = []
    filtered = 0
    recovered: list[dict[str, Any]] = []  # refused by msgspec, valid after all
    for index, position in sorted(judged):
        outcome = verdict(values[index], kind)
        if isinstance(outcome, dict):  # a valid shape: its values are checked with the rest
            if position < 0:
                recovered.append({**outcome, "_row": index})
            continue
        if position >= 0:
            keep[position] = False
        if outcome == FILTERED:
            filtered += 1
        else:
            why, where, detail = outcome  # type: ignore[misc,str-unpack]
            rejected.append((index, _rejection(batch, index, why, where, detail, now)))
    if recovered:
        extra = pl.DataFrame(recovered, schema={**reader.read_schema, "_row": pl.Int64()})
        extra_rows = extra.get_column("_row").to_list()
        extra_checked = _checked(extra.drop("_row"), extra_rows, "vouched", rules, now, kind)
        if _ID_NUMBER in checked.columns:  # the recovered ids were read one by one
            checked.drop_in_place(_ID_NUMBER)
        checked = pl.concat([checked.filter(pl.Series(keep)), extra_checked]).sort("_row")
        keep = np.ones(checked.height, dtype=bool)

    is_kind = checked.get_column("_is_kind").to_numpy()
    filtered += int(np.count_nonzero(keep & ~is_kind))
    keep &= is_kind
    problem = checked.get_column("_problem").to_numpy()
    has_problem = problem >= 0
    if (keep & has_problem).any():
        bad = checked.filter(pl.Series(keep & has_problem))
        value_rules = _value_rules(kind, rules.accept_locked)
        ruled = ("symbol", *kind.positive, *kind.non_negative, "ts")
        for row, broken, value in bad.select("_row", "_problem", pl.struct(*ruled)).iter_rows():
            why, where = value_rules[broken].reason.value, value_rules[broken].field
            detail = _value_detail(why, where, value, kind)
            rejected.append((row, _rejection(batch, row, why, where, detail, now)))
        keep &= ~has_problem
    columns = list(kind.columns)
    names = [*columns, "_row"] if origin else columns
    if _ID_NUMBER in checked.columns:
        names = [*names, _ID_NUMBER]
    # The columns taken one by one: selecting them is a query of its own (~40 us).
    valid = pl.DataFrame([checked.get_column(name) for name in names])
    if not keep.all():
        valid = valid.filter(pl.Series(keep))
    id_numbers = valid.drop_in_place(_ID_NUMBER) if _ID_NUMBER in valid.columns else None
    rejected.sort(key=lambda pair: pair[0])
    return DecodedBatch(
        _with_origin(valid, batch, block) if origin else valid,
        [r for _, r in rejected],
        filtered,
        len(values),
        id_numbers,
    )


def _value_detail(why: str, where: str, value: dict[str, Any], kind: MessageKind) -> str:
    if kind.ordered is not None and why in (RejectReason.CROSSED_BOOK, RejectReason.LOCKED_BOOK):
        low, high = kind.ordered
        book = "crossed" if why == RejectReason.CROSSED_BOOK else "locked"
        sides = f"{low}={value[low]!r} {high}={value[high]!r}"
        return f"{sides}: a {book} book ({low} must be below {high})"
    return f"{where}={_quote(value[where])} breaks the rule for {where}"


_VIEWS_FROM_ROWS = 10_000


def _with_origin(trades: pl.DataFrame, batch: RawBatch, block: LineBlock | None) -> pl.DataFrame:
    """The messages (with their `_row` in the batch) with the `ORIGIN_SCHEMA` columns in
    its place: the original bytes and the position of each. `block`: the batch's
    messages as one text (a file's, or the strict read's), which the bytes point into:
    a Series made from the Python list of them costs ~0.05 us a message, the views
    ~0.03 plus ~50 us a call, so small batches keep the list."""
    rows = trades.get_column("_row")
    values = batch.values
    if block is not None and len(rows) >= _VIEWS_FROM_ROWS:  # views, for the valid rows
        views = block.binary(rows.to_numpy())
        if views is not None:
            return _origin_columns(trades, views.alias("_raw"), batch, rows)
    try:
        raw = pl.Series("_raw", values, dtype=pl.Binary)
    except (TypeError, pl.exceptions.PolarsError):  # not bytes: never a valid trade
        raw = pl.Series("_raw", [v if isinstance(v, bytes) else None for v in values])
    if trades.height != len(batch):
        raw = raw.gather(rows)
    return _origin_columns(trades, raw, batch, rows)


def _origin_columns(
    trades: pl.DataFrame, raw: pl.Series, batch: RawBatch, rows: pl.Series
) -> pl.DataFrame:
    """`trades` (with their `_row`) with `_raw` (their bytes, one per trade) and each
    one's source and position in the batch in place of the `_row`."""
    positions = batch.positions
    if isinstance(positions, range):
        position = pl.Series(
            "_position", np.arange(positions.start, positions.stop, positions.step)
        )
    else:
        position = pl.Series("_position", positions, dtype=pl.Int64)
    if trades.height != len(batch):
        position = position.gather(rows)
    # Eager column operations: `drop` and `with_columns` go through a lazy query each,
    # ~250 us of a live poll's decode; these ~25 us.
    sources = batch.sources()
    if len(sources) == 1:
        source = pl.Series("_source", [batch.source], dtype=pl.String).new_from_index(0, len(rows))
    else:  # a joined batch: each message's source
        names = pl.Series("_source", [name for name, _ in sources], dtype=pl.String)
        of_row = np.repeat(np.arange(len(sources)), [count for _, count in sources])
        source = names.gather(of_row[rows.to_numpy()])
    with_origin = trades.clone()
    with_origin.drop_in_place("_row")
    return with_origin.hstack([raw.cast(pl.Binary), source, position])


def _checked(
    frame: pl.DataFrame,
    rows: Sequence[int],
    read: ReadPath,
    rules: ValidationRules,
    now: int,
    kind: MessageKind,
) -> pl.DataFrame:
    """The read rows with their checks as columns: `_row` (position in the batch),
    `_doubtful` (rows the `read` cannot vouch for: the exact path judges them),
    `_is_kind`, and `_problem`, the index in `_value_rules` of the first value rule
    broken (-1: none); the id as text (read as integers, also `_id_number`).

    Native column operations and numpy, not a query: a query of these checks cost
    ~300 us whatever the batch's size (a quarter of a live poll's decode), and so does
    each polars method that runs as a query (`fill_null`, `str.contains`), so those
    are kept to the rare batches that need them. A comparison with null breaks no rule,
    as in polars."""
    ts = frame.get_column("ts")
    in_range = (ts >= rules.ts_min) & (ts <= now + rules.ts_max_future_ms)
    problem = np.full(frame.height, -1, dtype=np.int8)
    value_rules = _value_rules(kind, rules.accept_locked)
    for index in range(len(value_rules) - 1, -1, -1):  # the first rule broken wins
        problem[_breaches(value_rules[index], frame, in_range)] = index
    columns = [
        pl.Series("_row", rows, dtype=pl.Int64),
        pl.Series("_doubtful", _doubtful_rows(frame, read, kind)),
        pl.Series("_is_kind", _of_kind(frame.get_column("type"), kind)),
        pl.Series("_problem", problem),
    ]
    ids = frame.get_column(kind.id_field)
    if ids.dtype.is_integer():  # kept for the dedupe keys (`DecodedBatch.id_numbers`)
        columns.append(ids.alias(_ID_NUMBER))
    checked = frame.hstack(columns)
    checked.replace_column(checked.get_column_index(kind.id_field), ids.cast(pl.String))
    return checked


def _true(column: pl.Series) -> np.ndarray:
    """Where a boolean column is true (not false, not null), as a numpy mask."""
    values = column.to_numpy()
    return values if column.null_count() == 0 else np.equal(values, True)


def _of_kind(kind_of: pl.Series, kind: MessageKind) -> np.ndarray:
    """Messages of `kind`: their `type` is its name, or absent."""
    absent = kind_of.null_count()
    if absent == len(kind_of):
        return np.ones(len(kind_of), dtype=bool)
    named = _true(kind_of == kind.name)
    return named if absent == 0 else named | kind_of.is_null().to_numpy()


@dataclass(frozen=True)
class _ValueRule:
    """A value rule of a (well-typed) message: the reason and field a breach is rejected
    with, and the test (`_breaches`)."""

    reason: RejectReason
    field: str
    test: Literal["symbol", "positive", "non_negative", "ts", "above", "equal"]
    other: str = ""  # "above", "equal": the field compared with


@functools.cache
def _value_rules(kind: MessageKind, accept_locked: bool) -> tuple[_ValueRule, ...]:
    """The value rules of a kind of message, in the order they are judged."""
    value_rules = [
        _ValueRule(RejectReason.BAD_SYMBOL, "symbol", "symbol"),
        *[_ValueRule(RejectReason.NON_POSITIVE, name, "positive") for name in kind.positive],
        *[_ValueRule(RejectReason.NEGATIVE, name, "non_negative") for name in kind.non_negative],
        _ValueRule(RejectReason.TS_OUT_OF_RANGE, "ts", "ts"),
    ]
    if kind.ordered is not None:
        low, high = kind.ordered
        value_rules.append(_ValueRule(RejectReason.CROSSED_BOOK, low, "above", high))
        if not accept_locked:
            value_rules.append(_ValueRule(RejectReason.LOCKED_BOOK, low, "equal", high))
    return tuple(value_rules)


def _breaches(rule: _ValueRule, frame: pl.DataFrame, in_range: pl.Series) -> np.ndarray:
    """Which rows break `rule` (`in_range`: whether each `ts` is within its bounds, which
    change from batch to batch)."""
    value = frame.get_column(rule.field)
    if rule.test == "symbol":
        return _bad_symbols(value)
    if rule.test == "positive":
        return _true(value <= 0)
    if rule.test == "non_negative":
        return _true(value < 0)
    if rule.test == "ts":
        return _true(~in_range)
    other = frame.get_column(rule.other)
    return _true(value > other if rule.test == "above" else value == other)


_SYMBOL = re.compile(SYMBOL_PATTERN)


def _bad_symbols(symbols: pl.Series) -> np.ndarray:
    """Symbols that break the symbol rule, judged once per distinct symbol (a batch has
    a few hundred at most; the pattern's `^...$` is matched whole, as polars does)."""
    bad = [s for s in symbols.unique().to_list() if s is not None and not _SYMBOL.fullmatch(s)]
    if not bad:
        return np.zeros(len(symbols), dtype=bool)
    return np.isin(symbols.to_numpy(), bad)


# --- the strict batch read -------------------------------------------------------------
# Polars' NDJSON reader where the batch's punctuation vouches for it (`_polars_read`),
# else Arrow's JSON reader, which is strict where the contract is: a string where a
# number belongs (or the reverse), a float for `ts`, a number out of range, a contract
# field given twice (`\u`-spelt too), a bad surrogate escape, anything but an object:
# each fails the read.
# What it lets through that the contract refuses is checked on the whole batch first
# (bytes that are not UTF-8, a byte-order mark, a message over several lines or empty,
# deep nesting) or on the columns after (`_doubtful_rows`).
_ARROW_TYPES = {pl.String(): pa.string(), pl.Int64(): pa.int64(), pl.Float64(): pa.float64()}
# A batch whose brackets could nest a message deeper than this takes the careful path,
# which can say `nesting_too_deep` (this is far below where it does).
_STRICT_MAX_NESTING = 200
_STRICT_READ_OPTIONS = pa_json.ReadOptions(use_threads=True, block_size=1 << 20)
# Below this many bytes the reader's threads cost more than they save (a live poll of a
# few hundred messages reads ~15 % faster on one thread; 5,000 messages ~30 % slower).
_THREADED_READ_BYTES = 1 << 18
_SINGLE_READ_OPTIONS = pa_json.ReadOptions(use_threads=False, block_size=1 << 20)


@functools.cache
def _strict_options(reader: _Reader, id_type: pa.DataType) -> pa_json.ParseOptions:
    fields = [
        (name, id_type if name == reader.kind.id_field else _ARROW_TYPES[dtype])
        for name, dtype in reader.read_schema.items()
    ]
    return pa_json.ParseOptions(
        explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore"
    )


def _strict_read(
    values: list[bytes | None] | LineBlock, reader: _Reader
) -> tuple[pl.DataFrame, LineBlock] | None:
    """The batch's columns from one strict read, with the batch as the text it read, or
    None when anything in it needs the careful path."""
    n = len(values)
    if isinstance(values, LineBlock):  # read from a file: the text as it lies there
        block = values
    else:
        if n == 0 or None in values:
            return None
        try:
            block = LineBlock.of(values)  # type: ignore[arg-type]
        except TypeError:
            return None
    blob = block.text
    if not _one_object_per_line(blob, n, block.newlines):
        return None
    # `[` and `\\` are rare: found by `bytes.find` (memchr, ~20x a comparison pass).
    opens, colons, quotes = byte_counts(blob, b'{:"')
    squares = blob.count(b"[") if b"[" in blob else 0
    backslashes = b"\\" in blob
    if opens + squares > n + _STRICT_MAX_NESTING:
        return None
    if not blob.isascii():  # ASCII (the usual case) is UTF-8; else decode to find out
        try:
            blob.decode("utf-8")
        except UnicodeDecodeError:
            return None
    # Flat objects (one `{` a line), no escapes: polars' read may be vouched for.
    if opens == n and not squares and not backslashes and len(blob) >= _POLARS_READ_BYTES:
        read = _polars_read(blob, n, reader, colons, quotes)
        if read is not None:
            return read, block
    id_field, id_types = reader.kind.id_field, reader.id_types
    for id_type in list(id_types):
        try:
            table = pa_json.read_json(
                io.BytesIO(blob),
                read_options=_STRICT_READ_OPTIONS
                if len(blob) > _THREADED_READ_BYTES
                else _SINGLE_READ_OPTIONS,
                parse_options=_strict_options(reader, id_type),
            )
        except (pa.ArrowException, ValueError) as error:
            if f"/{id_field})" in str(error) and id_type == id_types[0]:
                continue  # the other type of id
            return None
        if table.num_rows != n:  # an empty or blank message
            return None
        if id_type != id_types[0]:
            id_types.reverse()
        frame = pl.from_arrow(table)  # the id is cast to text with the checks
        assert isinstance(frame, pl.DataFrame)
        return frame, block
    return None


def _polars_read(
    blob: bytes, n: int, reader: _Reader, colons: int, quotes: int
) -> pl.DataFrame | None:
    """The batch's columns from polars' NDJSON reader, or None where that read cannot be
    vouched for as strict (then Arrow's reads it); `colons` and `quotes`: how many the
    batch holds.

    Polars reads a batch in ~60 % of Arrow's CPU time, and refuses what Arrow does
    (malformed JSON, a string, bool, float or out-of-range number for a number column,
    anything but an object), except in three ways: a text column takes any value (`5`
    is read as "5"), a key given twice keeps its first value, and `-0` reads as +0.0
    (where a number column read a zero, the text is scanned for `-0`). The batch's
    punctuation vouches for the rest (callers checked the objects are flat, one `{` a
    line and no `[`, and that there is no backslash). So every `"` delimits a string. Each contract
    value polars found has its own key and colon, so the colons are at least the values
    found, and equal only if there is no other key (none repeated, none null, none
    unknown) and no colon in a string. Then the quotes are two for each key and two for
    each string value; a number column holds no string, so they are two for each key
    and each text value found only if every text value is a string."""
    if not _POLARS_VOUCHABLE:
        return None
    if _POLARS_PAUSE.left:  # it failed lately: this feed's batches are not for it
        _POLARS_PAUSE.left -= 1
        return None
    if colons > n * len(reader.read_schema):  # more keys than the contract's
        return None
    id_field, id_types = reader.kind.id_field, reader.id_types
    for id_type in list(id_types):
        schema = _polars_schema(reader, pl.Int64() if id_type == pa.int64() else pl.String())
        try:
            frame = pl.read_ndjson(io.BytesIO(blob), schema=schema)
        except (Exception, pl.exceptions.PanicException):  # refused: Arrow's read says why
            break
        if frame.height != n:
            break
        found = {name: n - frame.get_column(name).null_count() for name in schema}
        values = sum(found.values())
        texts = sum(found[name] for name, dtype in schema.items() if dtype == pl.String())
        if colons == values and quotes == 2 * (values + texts):
            return None if _signed_zero_doubt(frame, blob) else frame
        numbered = schema[id_field] == pl.String() and quotes == 2 * (
            values + texts - found[id_field]
        )
        if colons != values or not numbered or id_type != id_types[0]:
            break
        id_types.reverse()  # every id is a number, read as text: read them as such
    _POLARS_PAUSE.left = _POLARS_PAUSE_BATCHES
    return None


def _signed_zero_doubt(frame: pl.DataFrame, blob: bytes) -> bool:
    """Whether a number column read 0.0 where the text may say `-0` (rare: a zero price
    or size; the text is scanned only then)."""
    floats = [column for column in frame.iter_columns() if column.dtype == pl.Float64()]
    return not all(column.to_numpy().all() for column in floats) and may_hold_negative_zero(blob)


# Below this many bytes polars' read costs more than Arrow's on one thread (a batch of
# 300 messages ~15 % more; 2,000 ~20 % less, 100,000 ~30 % less and ~35 % less CPU).
_POLARS_READ_BYTES = 1 << 18
# After polars' read fails on a batch, this many batches go straight to Arrow's: a feed
# with an extra field or nulls on every message would otherwise be read twice.
_POLARS_PAUSE_BATCHES = 15


@dataclass
class _Pause:
    left: int = 0  # batches to go before polars' read is tried again


_POLARS_PAUSE = _Pause()  # shared by the workers of a process: a guess, never a result


@functools.cache
def _polars_schema(reader: _Reader, id_type: pl.DataType) -> dict[str, pl.DataType]:
    return {
        name: id_type if name == reader.kind.id_field else dtype
        for name, dtype in reader.read_schema.items()
    }


def _polars_types_strict() -> bool:
    """Whether this polars refuses (or reads as null) a JSON value of the wrong type for
    a typed column, as 2.1 does: `_polars_read`'s vouching rests on it."""
    for text, dtype in ((b'{"x":"1"}', pl.Float64()), (b'{"x":1.5}', pl.Int64())):
        try:
            frame = pl.read_ndjson(io.BytesIO(text), schema={"x": dtype})
        except Exception:
            continue
        if frame.get_column("x").null_count() != frame.height:
            return False
    return True


_POLARS_VOUCHABLE = _polars_types_strict()  # else Arrow reads every batch


def read_ahead(kind: MessageKind) -> ReadAhead:
    """The strict read of a batch of `kind` messages, for a source to begin on a thread
    of its own before the decode gets the batch (`RawBatch.ahead`), while the flow works
    on the batch before. It is a function of the bytes alone: nothing else changes."""
    return functools.partial(_strict_read, reader=_READERS[kind.name])


def _one_object_per_line(blob: bytes, n: int, newlines: np.ndarray) -> bool:
    """Whether the batch's text (`newlines`: where its newlines are) is exactly one
    `{...}` per line, nothing around it and no `\\r` (a message over several lines, a
    blank one, or one Arrow would split or trim could shift the rows). Also a guard:
    Arrow's reader crashes the process on a line that is `null` (pyarrow 26)."""
    if b"\r" in blob or blob[:1] != b"{" or blob[-1:] != b"}" or len(newlines) != n - 1:
        return False
    text = np.frombuffer(blob, dtype=np.uint8)
    return n == 1 or bool(
        (text[newlines + 1] == _OPEN).all() and (text[newlines - 1] == _CLOSE).all()
    )


_OPEN, _CLOSE = (ord(c) for c in "{}")


def _doubtful_rows(frame: pl.DataFrame, read: ReadPath, kind: MessageKind) -> np.ndarray:
    """Rows the `read` cannot vouch for, which the exact path judges.

    The strict read ("unvouched"): a required field missing or null, or a number that
    is not finite (Arrow reads `NaN` and `Infinity`). The careful read ("doubtful"):
    bytes that are not UTF-8 (msgspec skips unknown fields unchecked), a `\\u` escape
    (which can spell a key), or more contract keys in the text than fields the read
    found (a key given twice: polars keeps the first value, other parsers the last).
    Messages the exact path read ("vouched"): none."""
    doubtful = np.zeros(frame.height, dtype=bool)
    if read == "unvouched":
        for name in kind.required:
            column = frame.get_column(name)
            if column.null_count():
                doubtful |= column.is_null().to_numpy()
        for name in (*kind.positive, *kind.non_negative):
            column = frame.get_column(name)
            not_finite = ~np.isfinite(column.to_numpy())  # a null is NaN here: not a breach
            doubtful |= (
                not_finite & column.is_not_null().to_numpy() if column.null_count() else not_finite
            )
    elif read == "doubtful":
        present = np.zeros(frame.height, dtype=np.int64)
        for name in kind.contract_fields:
            present += frame.get_column(name).is_not_null().to_numpy()
        text = frame.get_column("_text")
        doubtful |= text.is_null().to_numpy()
        doubtful |= _true(text.str.contains("\\u", literal=True))
        keys = text.str.count_matches(_READERS[kind.name].contract_key).fill_null(0)
        doubtful |= keys.to_numpy() != present
    return doubtful


def _text(raw_rows: list[bytes]) -> pl.Series:
    """The messages as text; null where they are not UTF-8."""
    binary = pl.Series("_text", raw_rows, dtype=pl.Binary)
    try:
        return binary.cast(pl.String)  # validates UTF-8 in native code
    except pl.exceptions.PolarsError:  # a hostile batch: null out the rows that are not UTF-8
        text = pl.Series("_text", [raw if _is_utf8(raw) else None for raw in raw_rows])
        return text.cast(pl.Binary).cast(pl.String)


def _doubtful(reader: _Reader) -> pl.Expr:
    """Rows the fast read cannot vouch for: bytes that are not UTF-8 (msgspec skips
    unknown fields unchecked), a `\\u` escape (which can spell a key), or more contract
    keys in the text than fields the read found (a key given twice: polars keeps the
    first value, other parsers the last)."""
    fields = reader.kind.contract_fields
    present = pl.sum_horizontal([pl.col(name).is_not_null() for name in fields])
    text = pl.col("_text")
    return (
        text.is_null()
        | text.str.contains("\\u", literal=True)
        | (text.str.count_matches(reader.contract_key) != present)
    )


def _read_rows(rows: list[bytes], reader: _Reader) -> pl.DataFrame:
    """Columns of messages that passed the shape check, read as one NDJSON block."""
    schema = reader.read_schema
    if not rows:
        return pl.DataFrame(schema=schema)
    try:
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(rows)), schema=schema)
        if frame.height == len(rows):
            return frame
    except Exception:
        pass
    # A message spread over several lines (pretty-printed JSON) cannot be read as NDJSON.
    shapes = [reader.check_shape(r) for r in rows]
    id_field = reader.kind.id_field
    columns = {name: [getattr(s, name) for s in shapes] for name in schema}
    columns[id_field] = [None if v is None else str(v) for v in columns[id_field]]
    return pl.DataFrame(columns, schema=schema)


def _rejection(
    batch: RawBatch, index: int, reason: str, field_name: str | None, detail: str, now: int
) -> Rejection:
    key = batch.keys[index] if batch.keys is not None else None
    return Rejection(
        batch.values[index], str(reason), field_name, detail, batch.position(index), now, key
    )


def _quote(value: Any) -> str:
    """A value for a rejection's detail, cut short: the original bytes are kept whole."""
    text = repr(value)
    if len(text) <= DETAIL_VALUE_CHARS:
        return text
    return f"{text[:DETAIL_VALUE_CHARS]}... ({len(text)} characters)"


# --- the exact, one-by-one path --------------------------------------------------------
class _Members(dict):  # type: ignore[type-arg]
    """A JSON object that remembers which keys it was given more than once."""

    repeated: tuple[str, ...] = ()


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    obj = _Members(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.repeated = tuple(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    return obj


def verdict(raw: bytes | None, kind: MessageKind = TRADE) -> Verdict:
    """What one message is: `(reason, field, detail)`, `FILTERED`, or its contract fields.

    Total: whatever the bytes, it returns. Python's `json` module reads what strict JSON
    refuses (NaN, Infinity, numbers out of float64 range become inf), so it can tell
    "not a finite number" from "not JSON".
    """
    try:
        return _verdict(raw, _READERS[kind.name])
    except Exception as exc:  # a guard: no message may stop the flow
        detail = f"the message could not be read ({type(exc).__name__})"
        return RejectReason.INVALID_JSON.value, None, detail


def _verdict(raw: bytes | None, reader: _Reader) -> Verdict:
    kind = reader.kind
    if raw is None or not raw.strip():
        return RejectReason.EMPTY_MESSAGE.value, None, "the message has no content"
    if raw.lstrip().startswith(_UTF8_BOM):
        detail = "the message starts with a byte-order mark, which JSON messages must not"
        return RejectReason.BAD_ENCODING.value, None, detail
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(raw, exc)
    try:
        obj = json.loads(text, object_pairs_hook=_members)
    except RecursionError:
        detail = "the message nests arrays or objects too deeply to read"
        return RejectReason.NESTING_TOO_DEEP.value, None, detail
    except ValueError as exc:
        return RejectReason.INVALID_JSON.value, None, f"not valid JSON: {str(exc)[:160]}"
    if not isinstance(obj, dict):
        return (
            RejectReason.NOT_AN_OBJECT.value,
            None,
            f"expected a JSON object, got {_json_type(obj)}",
        )
    repeated = [k for k in getattr(obj, "repeated", ()) if k in kind.contract_fields]
    if repeated:
        name = repeated[0]
        detail = f"field {name!r} is given more than once; the contract allows it once"
        return RejectReason.DUPLICATE_KEY.value, name, detail
    for name in reader.text_fields:
        value = obj.get(name)
        if isinstance(value, str) and not _is_unicode(value):
            detail = f"{name} holds an unpaired UTF-16 surrogate escape, not a character"
            return RejectReason.BAD_ENCODING.value, name, detail

    message_type = obj.get("type")
    if message_type is not None:
        if not isinstance(message_type, str):
            return _wrong_type("type", message_type, "a string")
        if message_type != kind.name:
            return FILTERED

    for name in kind.required:
        if name not in obj:
            return RejectReason.MISSING_FIELD.value, name, f"required field {name!r} is missing"
    problem = (
        _text_problem("symbol", obj["symbol"])
        or next(filter(None, (_number_problem(n, obj[n]) for n in kind.positive)), None)
        or _ts_problem(obj["ts"])
        or _id_problem(kind.id_field, obj.get(kind.id_field))
        or next(filter(None, (_optional_text_problem(n, obj.get(n)) for n in kind.texts)), None)
        or next(
            filter(None, (_optional_number_problem(n, obj.get(n)) for n in kind.non_negative)),
            None,
        )
    )
    if problem:
        return problem
    values: dict[str, Any] = {name: obj.get(name) for name in kind.columns}
    for name in (*kind.positive, *kind.non_negative):
        if values[name] is not None:
            values[name] = float(values[name])
    message_id = values[kind.id_field]
    values[kind.id_field] = None if message_id is None else str(message_id)
    values["type"] = message_type
    return values


def _not_utf8(raw: bytes, error: UnicodeDecodeError) -> Problem:
    """Name the field whose text holds the bad bytes, when the rest is JSON."""
    where: str | None = None
    try:
        obj = json.loads(raw.decode("utf-8", "surrogateescape"))
        if isinstance(obj, dict):
            where = next(
                (k for k, v in obj.items() if isinstance(v, str) and not _is_unicode(v)), None
            )
    except (ValueError, RecursionError):
        pass
    bad = raw[error.start : error.start + 1].hex()
    inside = f" in field {where!r}" if where else ""
    detail = f"not valid UTF-8: byte 0x{bad} at offset {error.start}{inside}"
    return RejectReason.BAD_ENCODING.value, where, detail


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong_type(name: str, value: Any, expected: str) -> Problem:
    return (
        RejectReason.WRONG_TYPE.value,
        name,
        f"{name} must be {expected}, got {_json_type(value)}",
    )


def _text_problem(name: str, value: Any) -> Problem | None:
    return None if isinstance(value, str) else _wrong_type(name, value, "a string")


def _optional_text_problem(name: str, value: Any) -> Problem | None:
    return None if value is None else _text_problem(name, value)


def _optional_number_problem(name: str, value: Any) -> Problem | None:
    return None if value is None else _number_problem(name, value)


def _number_problem(name: str, value: Any) -> Problem | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _wrong_type(name, value, "a JSON number")
    if isinstance(value, float) and not math.isfinite(value):
        return RejectReason.NOT_FINITE.value, name, f"{name} must be finite, got {value!r}"
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        return RejectReason.NOT_FINITE.value, name, f"{name} overflows a float64"
    return None


def _ts_problem(value: Any) -> Problem | None:
    if isinstance(value, float):
        if not math.isfinite(value):
            return RejectReason.NOT_FINITE.value, "ts", f"ts must be finite, got {value!r}"
        return (
            RejectReason.NOT_AN_INTEGER.value,
            "ts",
            f"ts must be a JSON integer of epoch milliseconds, got {_quote(value)}",
        )
    if isinstance(value, bool) or not isinstance(value, int):
        return _wrong_type("ts", value, "an integer of epoch milliseconds")
    if not _I64_MIN <= value <= _I64_MAX:
        return RejectReason.TS_OUT_OF_RANGE.value, "ts", "ts is beyond the 64-bit range"
    return None


def _id_problem(name: str, value: Any) -> Problem | None:
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    return _wrong_type(name, value, "a string or an integer")
