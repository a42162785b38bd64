"""The decode step's split of a batch into frames per symbol or per shard of symbols (what
each key's steps get)."""

from __future__ import annotations

import random

import polars as pl
import pytest

from candlewax.records import TRADE, RawBatch
from candlewax.shards import shard_key
from operators.decode import ValidationRules, decode_batch
from operators.steps import _split
from tests.factories import T0, trade


def a_batch(size: int, symbols: int):
    """A decoded batch of `size` trades of `symbols` symbols at random, their raw bytes,
    and each symbol's trade ids in arrival order (in order of the symbol's first trade)."""
    rng = random.Random(size * 1_000 + symbols)
    names = [f"S{rng.randrange(10**6):06d}" for _ in range(symbols)]
    arrivals = [(rng.choice(names), str(i)) for i in range(size)]
    values = [trade(symbol=s, trade_id=i, ts=T0 + int(i)) for s, i in arrivals]
    decoded = decode_batch(RawBatch("test", values, range(size)), ValidationRules())
    expected: dict[str, list[str]] = {}
    for symbol, trade_id in arrivals:
        expected.setdefault(symbol, []).append(trade_id)
    return decoded, values, expected


@pytest.mark.parametrize("size", [1, 120, 4_096, 12_000])  # the sorted split, then partition_by
@pytest.mark.parametrize("symbols", [1, 3, 300])
def test_each_symbol_gets_its_trades_in_arrival_order_in_order_of_first_arrival(size, symbols):
    decoded, values, expected = a_batch(size, symbols)
    assert decoded.valid.height == size

    parts = _split(decoded, fingerprint=False, kind=TRADE, shards=None)

    assert [symbol for symbol, _ in parts] == list(expected)  # first arrival first
    for symbol, frame in parts:
        assert frame.get_column("symbol").unique().to_list() == [symbol]
        assert frame.get_column("trade_id").to_list() == expected[symbol]
        assert frame.get_column("_raw").to_list() == [values[int(i)] for i in expected[symbol]], (
            "each trade keeps its own bytes"
        )


@pytest.mark.parametrize("size", [1, 120, 4_096, 12_000])
@pytest.mark.parametrize("symbols", [1, 3, 300])
def test_each_shard_gets_its_symbols_each_as_one_run_in_arrival_order(size, symbols):
    decoded, values, expected = a_batch(size, symbols)

    parts = _split(decoded, fingerprint=False, kind=TRADE, shards=4)

    keys = [key for key, _ in parts]
    assert len(keys) == len(set(keys)), "one frame per shard"
    seen = set()
    for key, frame in parts:
        runs = frame.get_column("symbol").rle()
        run_symbols = runs.struct.field("value").to_list()
        assert len(run_symbols) == len(set(run_symbols)), "each symbol's rows are one run"
        for symbol in run_symbols:
            assert shard_key(symbol, 4) == key
            rows = frame.filter(pl.col("symbol") == symbol)
            assert rows.get_column("trade_id").to_list() == expected[symbol]
            assert rows.get_column("_raw").to_list() == [values[int(i)] for i in expected[symbol]]
        seen.update(run_symbols)
    assert seen == set(expected), "no trade lost"
