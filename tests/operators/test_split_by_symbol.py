"""The decode step's split of a batch into per-symbol frames (what each symbol's steps get)."""

from __future__ import annotations

import random

import pytest

from candlewax.records import RawBatch
from operators.decode import ValidationRules, decode_batch
from operators.steps import _split_by_symbol
from tests.factories import T0, trade


@pytest.mark.parametrize("size", [1, 120, 4_096, 12_000])  # the sorted split, then partition_by
@pytest.mark.parametrize("symbols", [1, 3, 300])
def test_each_symbol_gets_its_trades_in_arrival_order_in_order_of_first_arrival(size, symbols):
    rng = random.Random(size * 1_000 + symbols)
    names = [f"S{rng.randrange(10**6):06d}" for _ in range(symbols)]
    arrivals = [(rng.choice(names), str(i)) for i in range(size)]
    values = [trade(symbol=s, trade_id=i, ts=T0 + int(i)) for s, i in arrivals]
    decoded = decode_batch(RawBatch("test", values, range(size)), ValidationRules())
    assert decoded.valid.height == size

    parts = _split_by_symbol(decoded, fingerprint=False)

    expected: dict[str, list[str]] = {}
    for symbol, trade_id in arrivals:
        expected.setdefault(symbol, []).append(trade_id)
    assert [symbol for symbol, _ in parts] == list(expected)  # first arrival first
    for symbol, frame in parts:
        assert frame.get_column("symbol").unique().to_list() == [symbol]
        assert frame.get_column("trade_id").to_list() == expected[symbol]
        assert frame.get_column("_raw").to_list() == [values[int(i)] for i in expected[symbol]], (
            "each trade keeps its own bytes"
        )
