"""JSON Schemas (draft 2020-12) of the messages candlewax reads and writes, made from the
record definitions in `candlewax.records`, so the schemas and the code cannot disagree.

- Inputs (trade, quote) come from their `MessageKind`: the required numbers, the id, the
  optional strings, the symbol pattern, the lower bound of `ts`.
- Outputs (candle, forming candle, quote bar, drift records, dead-letter record) come
  from each record's Arrow schema (the types) and its dataclass (which fields may be
  null); every float may also be null, the JSON form of a sum that overflowed float64.

Some rules of the input contracts no JSON Schema can state; each schema lists them under
`x-candlewax-rules`, and the decoder enforces them: `ts` is written without a fraction or
an exponent (a schema's "integer" admits `1.0`), its upper bound is relative to now, a
number must fit float64, a contract field given twice is rejected, and a quote's bid is
below its ask. `python -m candlewax.json_schemas DIR` writes them (`schemas/` in the
repository holds them, checked against this module by the tests).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pyarrow as pa

from candlewax.records import (
    QUOTE,
    SYMBOL_PATTERN,
    TRADE,
    Candle,
    DriftRecord,
    MessageKind,
    QuoteBar,
    QuoteDriftRecord,
    Rejection,
    RejectReason,
)

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TS_MIN_DEFAULT = 946_684_800_000  # CANDLEWAX_TS_MIN's default, 2000-01-01T00:00:00Z
_INPUT_RULES = [
    "ts, and an id given as a number, are JSON integers written without a fraction or an "
    "exponent (a schema's integer admits 1.0; the decoder rejects it)",
    "ts is at most now + CANDLEWAX_TS_MAX_FUTURE (1 h by default): ts_out_of_range",
    "numbers are finite and fit float64 (NaN, Infinity and 1e400 are rejected)",
    "a field of the contract given twice is rejected: duplicate_key",
    "the lower bound of ts is CANDLEWAX_TS_MIN (the schema shows the default)",
    "a `type` other than the kind's makes the message order-book noise: filtered, not rejected",
    "an optional field given as null is as if it were left out",
]


def input_schema(kind: MessageKind, ts_min: int = TS_MIN_DEFAULT) -> dict[str, Any]:
    """The schema of a valid input message of `kind` (the trade or quote contract)."""
    properties: dict[str, Any] = {
        "symbol": {"type": "string", "pattern": SYMBOL_PATTERN},
        **{name: {"type": "number", "exclusiveMinimum": 0} for name in kind.positive},
        "ts": {
            "type": "integer",
            "minimum": ts_min,
            "maximum": 2**63 - 1,
            "description": "event time, epoch milliseconds UTC",
        },
        kind.id_field: {
            "type": ["string", "integer", "null"],
            "description": f'unique per symbol; 7 and "7" are one {kind.id_field}',
        },
        **{name: {"type": ["string", "null"]} for name in kind.texts},
        **{name: {"type": ["number", "null"], "minimum": 0} for name in kind.non_negative},
        "type": {"const": kind.name},
    }
    rules = list(_INPUT_RULES)
    if kind.ordered is not None:
        low, high = kind.ordered
        rules.append(
            f"{low} < {high}: {low} > {high} is crossed_book, {low} = {high} locked_book "
            "(accepted with CANDLEWAX_QUOTES_ACCEPT_LOCKED)"
        )
    return {
        "$schema": DIALECT,
        "$id": f"{kind.name}.schema.json",
        "title": f"{kind.name} message",
        "description": f"One {kind.name} on the {kind.name}s topic or one NDJSON line of a "
        "file; unknown fields are ignored.",
        "type": "object",
        "properties": properties,
        "required": list(kind.required),
        "x-candlewax-rules": rules,
    }


def record_schema(record: type, name: str, description: str) -> dict[str, Any]:
    """The JSON form of an output record, from its Arrow schema and its dataclass."""
    arrow: pa.Schema = record.ARROW_SCHEMA  # type: ignore[attr-defined]
    hints = typing.get_type_hints(record)
    properties = {}
    for field in dataclasses.fields(record):
        json_type = _json_type(arrow.field(field.name).type, field.name)
        if _may_be_none(hints[field.name]) or json_type.get("type") == "number":
            json_type = {**json_type, "type": [json_type["type"], "null"]}
        properties[field.name] = json_type
    if record is Rejection:
        properties["reason"] = {"enum": [r.value for r in RejectReason]}
    return {
        "$schema": DIALECT,
        "$id": f"{name}.schema.json",
        "title": name.replace("_", " "),
        "description": description,
        "type": "object",
        "properties": properties,
        "required": [f.name for f in dataclasses.fields(record)],
    }


def _json_type(arrow_type: pa.DataType, name: str) -> dict[str, Any]:
    if pa.types.is_timestamp(arrow_type):
        return {"type": "integer", "description": "epoch milliseconds UTC"}
    if pa.types.is_integer(arrow_type):
        return {"type": "integer"}
    if pa.types.is_floating(arrow_type):
        return {"type": "number"}
    if pa.types.is_boolean(arrow_type):
        return {"type": "boolean"}
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return {"type": "string"}
    if pa.types.is_binary(arrow_type):
        return {"type": "string", "contentEncoding": "base64", "description": "bytes"}
    if pa.types.is_list(arrow_type):
        return {"type": "array", "items": _json_type(arrow_type.value_type, name)}
    raise TypeError(f"{name}: no JSON type for {arrow_type}")


def _may_be_none(annotation: Any) -> bool:
    return isinstance(annotation, types.UnionType) and type(None) in annotation.__args__


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every schema, by file name."""
    forming = record_schema(
        Candle,
        "forming_candle",
        "A base window not closed yet, as it stands (topic candles.live, key bar_id); "
        "the closed candle with the same bar_id supersedes it.",
    )
    forming["properties"]["final"] = {"const": False}
    forming["required"].append("final")
    schemas = {
        "trade": input_schema(TRADE),
        "quote": input_schema(QUOTE),
        "candle": record_schema(
            Candle, "candle", "An OHLCV bar (topic candles, key bar_id; the lake's candles/)."
        ),
        "forming_candle": forming,
        "quote_bar": record_schema(
            QuoteBar, "quote_bar", "Mid OHLC and spreads of one window (topic quote_bars)."
        ),
        "drift_record": record_schema(
            DriftRecord, "drift_record", "A candle's drift by late trades (candles.drift)."
        ),
        "quote_drift_record": record_schema(
            QuoteDriftRecord,
            "quote_drift_record",
            "A quote bar's drift by late quotes (quote_bars.drift).",
        ),
        "dlq_record": record_schema(
            Rejection,
            "dlq_record",
            "A rejected message as the lake's dlq/ keeps it (raw: its original bytes). On "
            "the DLQ topics the value is the original bytes and the rest are headers "
            "candlewax.reason, candlewax.detail, candlewax.field, candlewax.source, "
            "candlewax.received_at.",
        ),
    }
    return {f"{name}.schema.json": schema for name, schema in schemas.items()}


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, schema in all_schemas().items():
        path = directory / file_name
        path.write_text(json.dumps(schema, indent=2) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        print(path)
