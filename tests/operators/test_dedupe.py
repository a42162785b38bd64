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
    remembered = dedupe.state.kept()
    assert remembered <= 300, remembered  # at most ~2 horizons of ids, not all 10,000


def test_state_stays_bounded_by_the_horizon_in_bulk(monkeypatch):
    monkeypatch.setattr("operators.dedupe._BULK_FROM_ROWS", 1)  # rising ids as arrays
    dedupe = Deduplicator(horizon_ms=1_000)
    for second in range(100):
        ids = [second * 100 + i for i in range(100)]
        kept, _ = dedupe.filter(
            trades_frame([(T0 + second * 1000 + i, 1, 1) for i in range(100)], ids=ids)
        )
        assert kept.height == 100
    assert not dedupe.state.current  # all of them kept as rising ids
    assert dedupe.state.kept() <= 300, dedupe.state.kept()


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


def _by_the_rule(streams: dict[str, list[tuple[int, object]]], horizon_ms: int) -> dict:
    """The rule itself, apart from the filter: a trade is a duplicate when its key was
    last kept at an event time later than its symbol's newest event time (the trade's
    own included) minus the horizon. Keys as `with_dedupe_keys` makes them: an integer
    id and its digits are one id; no id, no key."""
    kept: dict[str, list[int]] = {}
    for symbol, trades in streams.items():
        last_kept: dict[object, int] = {}
        newest, kept[symbol] = None, []
        for index, (ts, trade_id) in enumerate(trades):
            newest = ts if newest is None else max(newest, ts)
            key = None if trade_id is None else str(trade_id)
            seen = last_kept.get(key)
            if key is not None and seen is not None and seen > newest - horizon_ms:
                continue
            if key is not None:
                last_kept[key] = ts
            kept[symbol].append(index)
    return kept


@pytest.mark.parametrize("bulk_from", [20, 1_000])
def test_bulk_batches_of_rising_ids_keep_what_the_rule_keeps(monkeypatch, bulk_from):
    """Batches from `bulk_from` rows on (where rising integer ids are kept as arrays,
    not hash tables; 20: small batches too) mixed with smaller ones; ids that rise, are
    replayed after a reconnect (rising again, but seen), repeat one by one, are text or
    missing, start again from 0; generations dropped on the way, snapshots resumed:
    every trade kept or dropped as the rule says."""
    monkeypatch.setattr("operators.dedupe._BULK_FROM_ROWS", bulk_from)
    rng = random.Random(17)
    horizon = 5_000
    streams: dict[str, list[tuple[int, object]]] = {s: [] for s in ("AAA", "BBB", "CCC")}
    next_id = dict.fromkeys(streams, 1_000)
    arrivals = []  # (symbol, index in its stream), in the order they come

    def arrive(symbol: str, ts: int, trade_id: object) -> None:
        arrivals.append((symbol, len(streams[symbol])))
        streams[symbol].append((ts, trade_id))

    for step in range(40_000):
        symbol = rng.choice(list(streams))
        ts = T0 + step * 2 + rng.randint(-400, 400) * (rng.random() < 0.1)
        # Stretches of clean rising ids (the usual tape) and stretches with faults.
        roll = rng.random() if (step // 1_000) % 3 == 2 else 0.0
        if roll < 0.9:  # the exchange's next id
            next_id[symbol] += rng.randint(1, 3)
            arrive(symbol, ts, next_id[symbol])
        elif roll < 0.905:  # a reconnect: the symbol's last trades again, in order
            for replayed in streams[symbol][-rng.randint(5, 300) :]:
                arrive(symbol, *replayed)
        elif roll < 0.95:  # an id seen before (a repeat, or beyond the horizon)
            arrive(symbol, ts, next_id[symbol] - rng.randint(0, 3_000))
        elif roll < 0.98:
            arrive(symbol, ts, f"x{rng.randint(0, 30)}")
        else:
            arrive(symbol, ts, None)
        if step == 25_000:  # the venue numbers from the start again
            next_id = dict.fromkeys(streams, 0)
    expected = _by_the_rule(streams, horizon)

    dedupe, got, start = ShardDeduplicator(horizon), {s: [] for s in streams}, 0
    while start < len(arrivals):
        end = start + int(10 ** rng.uniform(0, 3.7))  # 1 to 5,000 trades
        part = arrivals[start:end]
        rows = [(s, i, *streams[s][i]) for s, i in part]
        batch = with_dedupe_keys(
            pl.DataFrame(
                {
                    "symbol": [s for s, *_ in rows],
                    "ts": [ts for *_, ts, _ in rows],
                    "trade_id": [None if tid is None else str(tid) for *_, tid in rows],
                    "_index": [i for _, i, *_ in rows],
                }
            ),
            fingerprint=False,
        )
        batch = batch.sort("symbol", maintain_order=True)  # runs, as the split makes them
        kept, duplicates = dedupe.filter(batch)
        assert kept.height + duplicates == batch.height
        for symbol, index in kept.select("symbol", "_index").iter_rows():
            got[symbol].append(index)
        if rng.random() < 0.1:  # resumed from the snapshot's pickle
            dedupe = ShardDeduplicator(horizon, pickle.loads(pickle.dumps(dedupe.snapshot())))
        start = end
    for symbol in streams:
        assert got[symbol] == expected[symbol], symbol
    dropped = sum(map(len, streams.values())) - sum(map(len, got.values()))
    assert dropped > 1_000, dropped  # repeats were there to drop


def _kept_by_the_shard(batches, horizon_ms, resume_after=()):
    """Feed batches of (symbol, ts, id) to a shard's filter (resumed from its snapshot's
    pickle after the batches numbered in `resume_after`): the streams it saw and the
    index in its stream of each trade it kept."""
    dedupe = ShardDeduplicator(horizon_ms)
    streams: dict[str, list[tuple[int, object]]] = {}
    kept: dict[str, list[int]] = {}
    for number, batch in enumerate(batches):
        indexes = []
        for symbol, ts, trade_id in batch:
            stream = streams.setdefault(symbol, [])
            kept.setdefault(symbol, [])
            indexes.append(len(stream))
            stream.append((ts, trade_id))
        frame = with_dedupe_keys(
            pl.DataFrame(
                {
                    "symbol": [symbol for symbol, _, _ in batch],
                    "ts": [ts for _, ts, _ in batch],
                    "trade_id": [None if i is None else str(i) for _, _, i in batch],
                    "_index": indexes,
                }
            ),
            fingerprint=False,
        ).sort("symbol", maintain_order=True)
        for symbol, index in dedupe.filter(frame)[0].select("symbol", "_index").iter_rows():
            kept[symbol].append(index)
        if number in resume_after:
            dedupe = ShardDeduplicator(horizon_ms, pickle.loads(pickle.dumps(dedupe.snapshot())))
    return streams, kept


def _rising(symbol, ids, ts):
    return [(symbol, ts + i, trade_id) for i, trade_id in enumerate(ids)]


@pytest.mark.parametrize(
    "batches, resume_after",
    [
        # a reconnect replays rising ids already kept as rising ids: all dropped
        ([_rising("A", range(100, 110), T0), _rising("A", range(104, 112), T0 + 20)], ()),
        # ... after a restart from the snapshot
        ([_rising("A", range(100, 110), T0), _rising("A", range(104, 112), T0 + 20)], (0,)),
        # ... one at a time and out of order
        ([_rising("A", range(100, 110), T0), _rising("A", [107, 101, 111], T0 + 20)], ()),
        # ... after the generation they were kept in was dropped, within the horizon
        (
            [
                _rising("A", range(100, 110), T0),
                _rising("A", range(110, 120), T0 + 900),
                _rising("A", [105, 115, 121], T0 + 1_050),
                _rising("A", range(108, 125), T0 + 1_800),
            ],
            (1, 2),
        ),
        # ids kept one by one, then rising ids that start below the highest of them
        (
            [
                _rising("A", [50, 40], T0),
                _rising("A", range(45, 55), T0 + 10),
                _rising("A", range(38, 42), T0 + 30),
            ],
            (),
        ),
        # runs with no id or a text id in them are not rising ids
        (
            [
                _rising("A", [None, 5, 6], T0),
                _rising("A", ["x", 7, 8], T0 + 5),
                _rising("A", [0, 1, 2, 3], T0 + 10),
            ],
            (),
        ),
        # an id twice in a row does not rise
        ([_rising("A", [5, 5, 6], T0), _rising("A", [6, 7], T0 + 5)], ()),
        # a rising id kept again (its first, late, sighting beyond the horizon), then its
        # generation the previous one: the newer sighting counts, not the array's
        (
            [
                _rising("A", range(1, 6), T0),
                _rising("A", range(10, 15), T0 + 1_100),
                _rising("A", range(100, 106), T0 + 500),
                _rising("A", [103], T0 + 1_600),
                _rising("A", [200, 201], T0 + 2_200),
                _rising("A", [103], T0 + 2_300),
            ],
            (),
        ),
        # several symbols in one batch, each its own ids
        (
            [
                _rising("A", range(10, 20), T0) + _rising("B", range(10, 20), T0),
                _rising("B", range(15, 25), T0 + 30) + _rising("A", range(5, 12), T0 + 30),
            ],
            (0,),
        ),
    ],
    ids=[
        "replayed",
        "replayed-after-restart",
        "repeated-alone",
        "previous-generation",
        "below-the-highest",
        "missing-or-text-ids",
        "twice-in-a-row",
        "kept-again-then-previous",
        "two-symbols",
    ],
)
def test_rising_ids_in_bulk_are_found_again_as_the_rule_says(monkeypatch, batches, resume_after):
    monkeypatch.setattr("operators.dedupe._BULK_FROM_ROWS", 1)  # every batch in bulk
    streams, kept = _kept_by_the_shard(batches, horizon_ms=1_000, resume_after=resume_after)
    assert kept == _by_the_rule(streams, 1_000)


def test_a_state_pickled_before_rising_ids_were_kept_as_arrays_resumes(monkeypatch):
    """Earlier versions pickled `DedupeState(current, previous, generation_start,
    max_ts)`: resumed, its ids are still found, by the bulk path too."""
    monkeypatch.setattr("operators.dedupe._BULK_FROM_ROWS", 1)

    class Earlier:  # what an earlier version's snapshot pickled as
        def __reduce__(self):
            return DedupeState, ({10: T0, 11: T0 + 1}, {5: T0 - 10}, T0, T0 + 1)

    state = pickle.loads(pickle.dumps(Earlier()))
    dedupe = Deduplicator(60_000, state)
    rows = [(T0 + 2 + i, 1.0, 1.0) for i in range(4)]
    assert kept_ids(dedupe, rows, [9, 10, 11, 12]) == ["9", "12"]  # rising, but seen
    assert kept_ids(dedupe, rows[:2], [5, 13]) == ["13"]
