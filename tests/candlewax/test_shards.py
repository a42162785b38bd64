"""Shards of the candle step: every symbol in one, and the shards spread evenly over workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import bytewax.operators as op
import numpy as np
import polars as pl
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main

from candlewax import shards
from candlewax.shards import bytewax_worker, shard_key, shard_keys, shard_of

_SHARDS_OF_SYMBOLS = (
    "import json; from candlewax.shards import shard_of; "
    "print(json.dumps([shard_of(f'SYM{i:04d}', 8) for i in range(2000)]))"
)


def test_a_symbol_has_one_shard_in_every_process_and_symbols_spread_over_all():
    """Processes of a cluster (and a restart) must agree: Python's own string hash is
    salted per process, so another process, with another salt, must give the same."""
    symbols = [f"SYM{i:04d}" for i in range(2_000)]
    shards = [shard_of(symbol, 8) for symbol in symbols]
    elsewhere = subprocess.run(
        [sys.executable, "-c", _SHARDS_OF_SYMBOLS],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(elsewhere.stdout) == shards
    counts = [shards.count(i) for i in range(8)]
    assert min(counts) > 180, counts  # ~250 each
    assert {shard_key(symbol, 8) for symbol in symbols} == set(shard_keys(8))
    assert len(set(shard_keys(8))) == 8


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_bytewax_puts_shard_i_on_worker_i_mod_w(workers):
    """Where a real Bytewax cluster runs each shard's state: shards `i` and `j` share a
    worker exactly when `i % W == j % W`, so 12 shards spread evenly over 2, 3 or 4."""
    keys = shard_keys(12)
    flow = Dataflow("shard_routing")
    stream = op.input("in", flow, TestingSource(list(keys)))
    keyed = op.key_on("key", stream, lambda key: key)
    placed = op.stateful_map("where", keyed, lambda s, _: (s, threading.current_thread().name))
    out: list = []
    op.output("out", placed, TestingSink(out))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    thread_of = dict(out)
    for i, key in enumerate(keys):
        for j, other in enumerate(keys):
            assert (thread_of[key] == thread_of[other]) == (i % workers == j % workers)
        assert bytewax_worker(key, workers) == i % workers


def test_the_keys_kept_for_the_first_shards_are_those_the_search_finds():
    assert [shards._key_of(i) for i in range(70)] == [shards._search_key(i) for i in range(70)]


@pytest.mark.parametrize(
    "runs",
    [
        [("AAPL", 3), ("MSFT", 1), ("AAPL", 2)],  # a live poll's few rows
        [("AAPL", 9_000), ("MSFT", 8_000), ("GOOG", 1), ("AAPL", 8_000)],  # a file batch's
        [(f"S{i}", 20 + i % 7) for i in range(400)],  # hundreds of symbols' runs
        # longer than a view holds (compared in polars), and equal in their first 12 bytes
        [("BTC-USDT-PERP-1", 3_000), ("BTC-USDT-PERP-2", 2_000), ("A", 1)],
    ],
    ids=["small", "large", "many-runs", "long"],
)
def test_run_lengths_are_each_run_s_symbol_and_length(runs):
    column = pl.Series("symbol", [symbol for symbol, length in runs for _ in range(length)])
    names, lengths = shards.run_lengths(column)
    assert (names, lengths.tolist()) == ([s for s, _ in runs], [n for _, n in runs])
    with_null = pl.concat([column, pl.Series("symbol", [None], dtype=pl.String)])
    names, lengths = shards.run_lengths(with_null)
    assert names[-1] is None and lengths[-1] == 1 and names[:-1] == [s for s, _ in runs]


def _numbered_as_reference(column: pl.Series) -> tuple[list[str], list[int]]:
    names = list(dict.fromkeys(column.to_list()))
    index = {name: i for i, name in enumerate(names)}
    return names, [index[name] for name in column.to_list()]


@pytest.mark.parametrize(
    "symbols",
    [
        [f"S{i}-USD" for i in range(12)],
        [f"{i:05d}" for i in range(5_000)],  # many hash slots shared: more rounds
        # 12 bytes differing in the last; the empty string; a NUL byte (the length tells)
        ["ABCDEFGHIJK1", "ABCDEFGHIJK2", "A", "AB", "", "A\x00", "\x00"],
        ["BTC-USDT-PERP", "ETH-USDT-PERP", "A"],  # longer than a view holds: polars
    ],
    ids=["tickers", "5000-symbols", "view-edges", "long"],
)
def test_symbols_are_numbered_in_the_order_of_their_first_rows(symbols):
    rng = np.random.default_rng(3)
    column = pl.Series("symbol", [symbols[i] for i in rng.integers(0, len(symbols), 30_000)])
    names, numbers = shards.symbol_numbers(column)
    assert (names, numbers.tolist()) == _numbered_as_reference(column)
    # A slice of a column, and a column of several chunks, the same way.
    part = column.slice(7_000, 9_000)
    names, numbers = shards.symbol_numbers(part)
    assert (names, numbers.tolist()) == _numbered_as_reference(part)
    chunked = pl.concat([column.slice(0, 10_000), column.slice(10_000)], rechunk=False)
    assert chunked.n_chunks() == 2
    names, numbers = shards.symbol_numbers(chunked)
    assert (names, numbers.tolist()) == _numbered_as_reference(column)
