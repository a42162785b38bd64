"""Decode and validate a batch of raw trade messages against the trade contract.

Two passes, both in native code on the happy path: msgspec checks each message's shape
and JSON types strictly (a string, bool or null where a number belongs, a float for
`ts`, a number out of float64 range are all errors there), then polars reads the
messages that passed as one NDJSON block into columns, where the value rules (price and
size > 0, symbol characters, `ts` bounds) are vectorised expressions. Only messages
msgspec refused are looked at one by one, to name the reason exactly.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import polars as pl

from candlewax.records import TRADE_SCHEMA, RawBatch, Rejection, RejectReason

SYMBOL_PATTERN = r"^[A-Za-z0-9._:/\-]{1,32}$"
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_I64 = Annotated[int, msgspec.Meta(ge=_I64_MIN, le=_I64_MAX)]
REQUIRED_FIELDS = ("symbol", "price", "size", "ts")


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


class _KindShape(msgspec.Struct, gc=False):
    """Just the `type` of a message: order-book noise is filtered at C speed."""

    type: str | None = None


_check_shape = msgspec.json.Decoder(_TradeShape).decode
_check_kind = msgspec.json.Decoder(_KindShape).decode
_SHAPE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, TypeError)
_READ_SCHEMA = {**TRADE_SCHEMA, "type": pl.String()}


@dataclass(frozen=True)
class ValidationRules:
    """The value bounds of a valid trade; `now_ms` is injectable so tests control the clock."""

    ts_min: int = 946_684_800_000
    ts_max_future_ms: int = 3_600_000
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))


@dataclass(frozen=True)
class DecodedBatch:
    """The outcome of one raw batch: valid trades (arrival order), rejections, filtered count."""

    trades: pl.DataFrame
    rejections: list[Rejection]
    filtered: int
    received: int


FILTERED = "filtered"


def decode_batch(batch: RawBatch, rules: ValidationRules) -> DecodedBatch:
    """Split a raw batch into valid trades, rejected messages and filtered (non-trade) ones."""
    values = batch.values
    refused: list[int] = []
    for index, raw in enumerate(values):
        try:
            _check_shape(raw)  # type: ignore[arg-type]
        except _SHAPE_ERRORS:
            refused.append(index)

    rejected: list[tuple[int, Rejection]] = []
    filtered = 0
    now = rules.now_ms()
    for index in refused:
        if _is_noise(values[index]):
            filtered += 1
            continue
        verdict = classify_malformed(values[index])
        if isinstance(verdict, tuple):
            why, where, detail = verdict
            rejected.append((index, _rejection(batch, index, why, where, detail, now)))
        else:
            filtered += 1

    if refused:
        refused_set = set(refused)
        rows = [i for i in range(len(values)) if i not in refused_set]
        frame = _read_rows([values[i] for i in rows])  # type: ignore[misc]
        frame = frame.with_columns(pl.Series("_row", rows, dtype=pl.Int64))
    else:
        frame = _read_rows(values)  # type: ignore[arg-type]
        frame = frame.with_columns(pl.int_range(0, pl.len(), dtype=pl.Int64).alias("_row"))

    is_trade = pl.col("type").is_null() | (pl.col("type") == "trade")
    filtered += frame.height - int(frame.select(is_trade.sum()).item() or 0)
    frame = frame.filter(is_trade)

    reason_expr, field_expr = _value_problems(rules.ts_min, now + rules.ts_max_future_ms)
    checked = frame.with_columns(reason_expr.alias("_reason"), field_expr.alias("_field"))
    bad = checked.filter(pl.col("_reason").is_not_null())
    for row, why, where, value in bad.select(
        "_row", "_reason", "_field", pl.struct("symbol", "price", "size", "ts")
    ).iter_rows():
        detail = f"{where}={value[where]!r} breaks the rule for {where}"
        rejected.append((row, _rejection(batch, row, why, where, detail, now)))
    trades = checked.filter(pl.col("_reason").is_null()).select(list(TRADE_SCHEMA))
    rejected.sort(key=lambda pair: pair[0])
    return DecodedBatch(trades, [r for _, r in rejected], filtered, len(values))


def _is_noise(raw: bytes | None) -> bool:
    """A message whose `type` says it is not a trade (an order-book event, say)."""
    try:
        kind = _check_kind(raw).type  # type: ignore[arg-type]
    except _SHAPE_ERRORS:
        return False
    return kind is not None and kind != "trade"


def _read_rows(rows: list[bytes]) -> pl.DataFrame:
    """Columns of messages that passed the shape check, read as one NDJSON block."""
    if not rows:
        return pl.DataFrame(schema=_READ_SCHEMA)
    try:
        frame = pl.read_ndjson(io.BytesIO(b"\n".join(rows)), schema=_READ_SCHEMA)
        if frame.height == len(rows):
            return frame
    except (pl.exceptions.PolarsError, ValueError):
        pass
    # A message spread over several lines (pretty-printed JSON) cannot be read as NDJSON.
    shapes = [_check_shape(r) for r in rows]
    return pl.DataFrame(
        {
            "symbol": [s.symbol for s in shapes],
            "ts": [s.ts for s in shapes],
            "price": [s.price for s in shapes],
            "size": [s.size for s in shapes],
            "trade_id": [None if s.trade_id is None else str(s.trade_id) for s in shapes],
            "side": [s.side for s in shapes],
            "venue": [s.venue for s in shapes],
            "type": [s.type for s in shapes],
        },
        schema=_READ_SCHEMA,
    )


def _value_problems(ts_min: int, ts_max: int) -> tuple[pl.Expr, pl.Expr]:
    """Reason and field of the first value rule a (well-typed) trade breaks, else null."""
    rules = [
        (~pl.col("symbol").str.contains(SYMBOL_PATTERN), RejectReason.BAD_SYMBOL, "symbol"),
        (pl.col("price") <= 0, RejectReason.NON_POSITIVE, "price"),
        (pl.col("size") <= 0, RejectReason.NON_POSITIVE, "size"),
        ((pl.col("ts") < ts_min) | (pl.col("ts") > ts_max), RejectReason.TS_OUT_OF_RANGE, "ts"),
    ]
    reason: Any = pl
    field_name: Any = pl
    for condition, why, where in rules:
        reason = reason.when(condition).then(pl.lit(why.value))
        field_name = field_name.when(condition).then(pl.lit(where))
    return reason.otherwise(None), field_name.otherwise(None)


def _rejection(
    batch: RawBatch, index: int, reason: str, field_name: str | None, detail: str, now: int
) -> Rejection:
    key = batch.keys[index] if batch.keys is not None else None
    return Rejection(
        batch.values[index], str(reason), field_name, detail, batch.position(index), now, key
    )


def classify_malformed(raw: bytes | None) -> tuple[str, str | None, str] | str:
    """Why a message failed the shape check: `(reason, field, detail)`, or `FILTERED`.

    Python's `json` module reads what strict JSON refuses (NaN, Infinity, numbers out of
    float64 range become inf), so it can tell "not a finite number" from "not JSON".
    """
    if raw is None or not raw.strip():
        return RejectReason.EMPTY_MESSAGE.value, None, "the message has no content"
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return RejectReason.INVALID_JSON.value, None, f"not valid JSON: {str(exc)[:160]}"
    if not isinstance(obj, dict):
        return (
            RejectReason.NOT_AN_OBJECT.value,
            None,
            f"expected a JSON object, got {_json_type(obj)}",
        )

    kind = obj.get("type")
    if kind is not None:
        if not isinstance(kind, str):
            return _wrong_type("type", kind, "a string")
        if kind != "trade":
            return FILTERED

    for name in REQUIRED_FIELDS:
        if name not in obj:
            return RejectReason.MISSING_FIELD.value, name, f"required field {name!r} is missing"
    problem = (
        _text_problem("symbol", obj["symbol"])
        or _number_problem("price", obj["price"])
        or _number_problem("size", obj["size"])
        or _ts_problem(obj["ts"])
        or _trade_id_problem(obj.get("trade_id"))
        or _optional_text_problem("side", obj.get("side"))
        or _optional_text_problem("venue", obj.get("venue"))
    )
    if problem:
        return problem
    return RejectReason.WRONG_TYPE.value, None, "the message does not match the trade contract"


Problem = tuple[str, str | None, str] | None


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


def _wrong_type(name: str, value: Any, expected: str) -> tuple[str, str, str]:
    return (
        RejectReason.WRONG_TYPE.value,
        name,
        f"{name} must be {expected}, got {_json_type(value)}",
    )


def _text_problem(name: str, value: Any) -> Problem:
    return None if isinstance(value, str) else _wrong_type(name, value, "a string")


def _optional_text_problem(name: str, value: Any) -> Problem:
    return None if value is None else _text_problem(name, value)


def _number_problem(name: str, value: Any) -> Problem:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _wrong_type(name, value, "a JSON number")
    if isinstance(value, float) and not math.isfinite(value):
        return RejectReason.NOT_FINITE.value, name, f"{name} must be finite, got {value!r}"
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        return RejectReason.NOT_FINITE.value, name, f"{name} overflows a float64"
    return None


def _ts_problem(value: Any) -> Problem:
    if isinstance(value, float):
        if not math.isfinite(value):
            return RejectReason.NOT_FINITE.value, "ts", f"ts must be finite, got {value!r}"
        return (
            RejectReason.NOT_AN_INTEGER.value,
            "ts",
            f"ts must be a JSON integer of epoch milliseconds, got {value!r}",
        )
    if isinstance(value, bool) or not isinstance(value, int):
        return _wrong_type("ts", value, "an integer of epoch milliseconds")
    if not _I64_MIN <= value <= _I64_MAX:
        return RejectReason.TS_OUT_OF_RANGE.value, "ts", f"ts={value} is beyond 64-bit range"
    return None


def _trade_id_problem(value: Any) -> Problem:
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    return _wrong_type("trade_id", value, "a string or an integer")
