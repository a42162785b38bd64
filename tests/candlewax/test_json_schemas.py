"""The JSON Schemas in `schemas/`: made from the record definitions, valid 2020-12, and
every message the flow writes validates against its schema."""

from __future__ import annotations

import json

import msgspec
import pytest
from jsonschema import Draft202012Validator

from candlewax.json_schemas import all_schemas
from candlewax.records import (
    Candle,
    DriftRecord,
    QuoteBar,
    QuoteDriftRecord,
    RejectReason,
)
from operators.candles import CandleSpec, ShardCandles
from sinks.kafka import dlq_messages, forming_candle_messages
from tests import factories
from tests.factories import T0, quote, trades_frame
from tests.flow_runs import run_flow
from tests.operators.test_quote_windows import quote_stream
from tests.processes import ROOT

SCHEMAS = ROOT / "schemas"


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def test_the_checked_in_schemas_are_the_ones_the_records_make():
    made = all_schemas()
    assert sorted(p.name for p in SCHEMAS.glob("*.schema.json")) == sorted(made)
    for name, schema in made.items():
        assert json.loads((SCHEMAS / name).read_text()) == schema, (
            f"{name} is stale: python -m candlewax.json_schemas schemas"
        )
        Draft202012Validator.check_schema(schema)


@pytest.fixture(scope="module")
def flow_output():
    trades = factories.faulty_stream(6_000, seed=3)
    quotes = quote_stream(3_000, seed=5, symbols=3)
    quotes.insert(100, quote("S0", 101.0, 100.0, T0 + 5_000))  # crossed: to the DLQ
    settings = factories.settings(restatement=True)
    return run_flow(trades, settings, batch_size=500, quotes=quotes)


def test_every_record_the_flow_writes_validates(flow_output):
    out = flow_output
    written = {
        "candle": (Candle, out.candles),
        "drift_record": (DriftRecord, out.drift),
        "quote_bar": (QuoteBar, out.quote_bars),
        "quote_drift_record": (QuoteDriftRecord, out.quote_drift),
    }
    for name, (record, rows) in written.items():
        assert rows, f"the stream makes {name}s"
        check = validator(name)
        # The encoder the Kafka sinks use (`json_lines`), on the records as the flow made them.
        for line in record.json_lines(record.frame(rows)):
            errors = [e.message for e in check.iter_errors(msgspec.json.decode(line))]
            assert errors == [], (name, line, errors)
    assert any(c.revision > 0 for c in out.candles), "restated candles included"


def test_every_dead_letter_reason_is_one_the_schema_names(flow_output):
    reasons = set(validator("dlq_record").schema["properties"]["reason"]["enum"])
    assert reasons == {r.value for r in RejectReason}
    sent = [
        *dlq_messages([r.frame([r]) for r in flow_output.dlq]),
        *dlq_messages([r.frame([r]) for r in flow_output.quote_dlq]),
    ]
    assert len(sent) > 50
    for _key, _value, headers in sent:
        assert dict(headers)["candlewax.reason"].decode() in reasons


def test_forming_candles_validate_and_closed_candles_do_not_pass_for_forming():
    engine = ShardCandles(CandleSpec(resolutions=(1_000, 10_000)))
    engine.on_trades(trades_frame([(T0 + 10 * i, 100.0 + i % 7, 1.0) for i in range(300)]))
    lines = [value for _, value, _ in forming_candle_messages([engine.forming()])]
    assert lines
    forming, candle = validator("forming_candle"), validator("candle")
    for line in lines:
        record = msgspec.json.decode(line)
        assert list(forming.iter_errors(record)) == []
        closed = {k: v for k, v in record.items() if k != "final"}
        assert list(candle.iter_errors(closed)) == []
        assert list(forming.iter_errors(closed)), "a closed candle has no final: false"


def test_valid_simulated_trades_and_quotes_validate_and_broken_ones_do_not():
    trade_check, quote_check = validator("trade"), validator("quote")
    for _, value in factories.simulated(2_000, duplicate_rate=0, malformed_rate=0):
        assert list(trade_check.iter_errors(msgspec.json.decode(value))) == []
    for value in quote_stream(500, seed=2, symbols=2):
        assert list(quote_check.iter_errors(msgspec.json.decode(value))) == []
    broken = [
        {"symbol": "A B", "price": 1, "size": 1, "ts": T0},  # bad symbol
        {"symbol": "A", "price": 0, "size": 1, "ts": T0},  # price not > 0
        {"symbol": "A", "price": "1", "size": 1, "ts": T0},  # a string for a number
        {"symbol": "A", "price": 1, "size": 1},  # no ts
        {"symbol": "A", "price": 1, "size": 1, "ts": 5},  # before 2000
        {"symbol": "A", "price": 1, "size": 1, "ts": T0, "trade_id": 1.5},
    ]
    for message in broken:
        assert list(trade_check.iter_errors(message)), message
