"""Dedupe: (symbol, trade_id) within an event-time horizon, bounded state, batching-proof."""

from __future__ import annotations

import pickle
import random

import polars as pl
import pytest

from operators.dedupe import DedupeState, Deduplicator, ShardDeduplicator, with_dedupe_keys
from tests.factories import T0
from tests.factories import trades_frame as plain_frame


def trades_frame(rows, ids=None, fingerprint=False, symbol="BTC-USD"):
    return with_dedupe_keys(plain_frame(rows, symbol=symbol, ids=ids), fingerprint)


def kept_ids(dedupe: Deduplicator, rows, ids):
    kept, _ = dedupe.filter(trades_frame(rows, ids=ids))
    return kept.get_column("trade_id").to_list()


def test_a_repeated_trade_id_within_the_horizon_is_dropped_and_counted():
    dedupe = Deduplicator(horizon_ms=60_000)
    kept, duplicates = dedupe.filter(
        trades_frame([(T0, 1, 1), (T0 + 1, 2, 1), (T0 + 2, 1, 1)], ids=[1, 2, 1])
    )
    assert kept.get_column("trade_id").to_list() == ["1", "2"]
    assert duplicates == 1
    # ... and in a later batch too
    kept, duplicates = dedupe.filter(trades_frame([(T0 + 50_000, 1, 1)], ids=[2]))
    assert (kept.height, duplicates) == (0, 1)


def test_an_id_seen_beyond_the_horizon_is_a_new_trade():
    dedupe = Deduplicator(horizon_ms=10_000)
    assert kept_ids(dedupe, [(T0, 1, 1)], [7]) == ["7"]
    assert kept_ids(dedupe, [(T0 + 10_000, 1, 1)], [8]) == ["8"]
    # id 7 was seen at T0; the newest event time is now T0+10s: exactly at the horizon
    assert kept_ids(dedupe, [(T0 + 10_000, 1, 1)], [7]) == ["7"]


def test_trades_without_id_pass_unless_fingerprinting_is_on():
    rows = [(T0, 5, 1), (T0, 5, 1)]
    plain = Deduplicator(60_000)
    assert plain.filter(trades_frame(rows))[0].height == 2
    fingerprinted = Deduplicator(60_000)
    kept, duplicates = fingerprinted.filter(trades_frame(rows, fingerprint=True))
    assert (kept.height, duplicates) == (1, 1)
    # a different price is a different fingerprint
    assert fingerprinted.filter(trades_frame([(T0, 5.5, 1)], fingerprint=True))[0].height == 1


def test_ids_that_look_alike_but_differ_are_different_trades():
    dedupe = Deduplicator(60_000)
    ids = [7, "007", "7", "+7", "7.0", "x7", 12345678901234567890123, "12345678901234567890123"]
    rows = [(T0 + i, 1, 1) for i in range(len(ids))]
    # 7 and "7" are the same id (an integer and its digits); the others are all distinct
    assert kept_ids(dedupe, rows, ids) == ["7", "007", "+7", "7.0", "x7", "12345678901234567890123"]


def test_state_stays_bounded_by_the_horizon():
    dedupe = Deduplicator(horizon_ms=1_000)
    for second in range(100):
        ids = [second * 100 + i for i in range(100)]
        dedupe.filter(trades_frame([(T0 + second * 1000 + i, 1, 1) for i in range(100)], ids=ids))
    remembered = len(dedupe.state.current) + len(dedupe.state.previous)
    assert remembered <= 300, remembered  # at most ~2 horizons of ids, not all 10,000


def test_the_result_does_not_depend_on_batch_boundaries():
    rng = random.Random(3)
    rows, ids = [], []
    for i in range(2_000):
        rows.append((T0 + i * 10 + rng.randint(-50, 50), 1.0, 1.0))
        ids.append(rng.randint(0, 400) if rng.random() < 0.5 else 10_000 + i)
    expected = kept_ids(Deduplicator(2_000), rows, ids)
    for _ in range(5):
        dedupe = Deduplicator(2_000)
        got, start = [], 0
        while start < len(rows):
            end = start + rng.randint(1, 300)
            got += kept_ids(dedupe, rows[start:end], ids[start:end])
            start = end
        assert got == expected


def test_a_snapshot_does_not_change_when_the_filter_goes_on():
    dedupe = Deduplicator(horizon_ms=60_000)
    dedupe.filter(trades_frame([(T0, 1.0, 1.0), (T0 + 1, 1.0, 1.0)], ids=[1, 2]))
    snapshot = dedupe.snapshot()  # what the dedupe step hands to Bytewax
    frozen = pickle.dumps(snapshot)
    later = [(T0 + 2, 1.0, 1.0), (T0 + 200_000, 1.0, 1.0), (T0 + 400_000, 1.0, 1.0)]
    dedupe.filter(trades_frame(later, ids=[3, 4, 5]))  # new ids; generations roll over
    assert pickle.dumps(snapshot) == frozen


def test_a_snapshot_keeps_the_ids_as_they_were_when_ids_are_kept_again_later():
    # Id 1 is kept again once its first sighting is beyond the horizon: the current
    # generation's entry is rewritten in place after the snapshot was taken.
    dedupe = Deduplicator(horizon_ms=1_000)
    dedupe.filter(trades_frame([(T0 + 900, 1.0, 1.0), (T0, 1.0, 1.0)], ids=[2, 1]))
    snapshot = dedupe.snapshot()
    expected = (dict(dedupe.state.current), dict(dedupe.state.previous), dedupe.state.max_ts)
    dedupe.filter(trades_frame([(T0 + 950, 1.0, 1.0), (T0 + 1_500, 1.0, 1.0)], ids=[1, 1]))
    assert dedupe.state.current[1] == T0 + 1_500  # rewritten: the first sighting expired

    resumed = pickle.loads(pickle.dumps(snapshot))
    assert isinstance(resumed, DedupeState)
    assert (resumed.current, resumed.previous, resumed.max_ts) == expected


def test_a_resumed_filter_decides_as_the_one_that_never_stopped():
    rng = random.Random(5)
    rows, ids = [], []
    for i in range(3_000):
        rows.append((T0 + i * 10 + rng.randint(-300, 300), 1.0, 1.0))
        ids.append(rng.randint(0, 300) if rng.random() < 0.6 else f"x{rng.randint(0, 50)}")
    expected = kept_ids(Deduplicator(2_000), rows, ids)
    dedupe, got = Deduplicator(2_000), []
    for start in range(0, len(rows), 250):
        got += kept_ids(dedupe, rows[start : start + 250], ids[start : start + 250])
        # the step goes on with the snapshot's pickle, as after a restart at this epoch
        dedupe = Deduplicator(2_000, pickle.loads(pickle.dumps(dedupe.snapshot())))
    assert got == expected


def test_a_shard_keeps_what_each_symbols_own_filter_keeps():
    # Four symbols sharing ids (an id is a trade only within its symbol), each with
    # repeats and disorder; interleaved, cut at random, sometimes two frames in one step.
    rng = random.Random(11)
    streams = {}
    for symbol in ("AAA", "BBB", "CCC", "DDD"):
        rows, ids = [], []
        for i in range(800):
            rows.append((T0 + i * 10 + rng.randint(-300, 300), 1.0, 1.0))
            ids.append(rng.randint(0, 200) if rng.random() < 0.5 else f"x{rng.randint(0, 40)}")
        streams[symbol] = (rows, ids)
    expected = {
        symbol: kept_ids(Deduplicator(2_000), rows, ids) for symbol, (rows, ids) in streams.items()
    }
    order = [s for s, (rows, _) in streams.items() for _ in rows]
    rng.shuffle(order)  # which symbol's next trade comes next
    taken = dict.fromkeys(streams, 0)
    arrivals = []
    for symbol in order:
        arrivals.append((symbol, taken[symbol]))
        taken[symbol] += 1
    dedupe, got, start = ShardDeduplicator(2_000), {s: [] for s in streams}, 0
    while start < len(arrivals):
        end = start + rng.randint(1, 200)
        frames = [
            trades_frame([streams[s][0][i]], symbol=s, ids=[streams[s][1][i]])
            for s, i in arrivals[start:end]
        ]
        batch = pl.concat(frames)
        if rng.random() < 0.5:  # runs, as the split makes them
            batch = batch.sort("symbol", maintain_order=True)
        kept, duplicates = dedupe.filter(batch)
        assert kept.height + duplicates == batch.height
        for symbol, trade_id in kept.select("symbol", "trade_id").iter_rows():
            got[symbol].append(trade_id)
        if rng.random() < 0.1:  # resumed from the snapshot's pickle
            dedupe = ShardDeduplicator(2_000, pickle.loads(pickle.dumps(dedupe.snapshot())))
        start = end
    assert got == expected
    assert sum(len(ids) for _, ids in streams.values()) - sum(map(len, got.values())) > 500


def test_a_snapshot_of_one_symbol_from_an_earlier_version_is_refused_with_a_clear_error():
    """Earlier versions kept a `DedupeState` per symbol; a shard's step keeps a dict of
    them. Resumed as a shard's, its ids would be no symbol's: duplicates would pass."""
    earlier = pickle.loads(pickle.dumps(Deduplicator(1_000).snapshot()))
    with pytest.raises(ValueError, match=r"duplicate filter of one symbol.*new recovery store"):
        ShardDeduplicator(1_000, earlier)
    resumed = ShardDeduplicator(1_000, {"BTC-USD": earlier})  # a shard's: resumes
    assert resumed.filter(trades_frame([(T0, 1.0, 1.0)], ids=[1]))[1] == 0
