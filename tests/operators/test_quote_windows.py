"""The quote engine against the plain batch computation of `tests/reference.py`: any
batching, disorder and late quotes, drift toward the full view, restatement, resume."""

from __future__ import annotations

import pickle
import random

import polars as pl
import pytest

from candlewax.records import (
    QUOTE,
    QUOTE_DRIFT_FIELDS,
    QuoteBar,
    QuoteDriftRecord,
    RawBatch,
    quote_bar_frame,
)
from operators.candles import CandleSpec
from operators.decode import ValidationRules, decode_batch
from operators.dedupe import Deduplicator, with_dedupe_keys
from operators.quote_windows import SymbolQuoteBars
from tests.factories import RESOLUTIONS, T0, quote
from tests.reference import assert_quote_bars_match, reference_quote_bars

RULES = ValidationRules(now_ms=lambda: T0 + 10_000_000)
LATENESS = 1_000


def quote_stream(n: int, seed: int, late_share: float = 0.03, symbols: int = 2) -> list[bytes]:
    """Quotes of a few symbols in rough time order, some a little out of order, some very
    late, some repeated (same quote_id), some crossed."""
    rng = random.Random(seed)
    messages, ts = [], T0
    mids = {f"S{k}": 100.0 + 10 * k for k in range(symbols)}
    for i in range(n):
        ts += rng.choice((0, 3, 40, 150, 700, 2_600))
        symbol = rng.choice(list(mids))
        mids[symbol] = round(mids[symbol] + rng.uniform(-0.3, 0.3), 2)
        half = rng.choice((0.01, 0.02, 0.05, 0.25))
        event = ts
        if rng.random() < late_share:
            event = ts - rng.randint(1_500, 40_000)
        elif rng.random() < 0.1:
            event = ts - rng.randint(0, 900)
        bid, ask = mids[symbol] - half, mids[symbol] + half
        if rng.random() < 0.01:
            bid, ask = ask, bid
        messages.append(quote(symbol, round(bid, 4), round(ask, 4), event, quote_id=i))
        if rng.random() < 0.02:
            messages.append(messages[-1])
    return messages


def run(
    messages: list[bytes],
    spec: CandleSpec,
    cut: int | None = None,
    seed: int = 0,
    sizes: tuple[int, ...] = (1, 2, 7, 50, 400),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Published bars and drift records of the engine over the messages in batches of
    random `sizes` (one engine per symbol); `cut`: pickle every engine after that many
    batches, go on from the copies."""
    rng = random.Random(seed)
    engines: dict[str, SymbolQuoteBars] = {}
    dedupers: dict[str, Deduplicator] = {}
    bars, drift = [], []
    i = batches = 0
    while i < len(messages):
        size = rng.choice(sizes)
        batch = RawBatch("q", messages[i : i + size], range(i, i + size))
        i += size
        valid = decode_batch(batch, RULES, origin=False, kind=QUOTE).valid
        for (symbol,), frame in (
            with_dedupe_keys(valid, False, QUOTE)
            .partition_by("symbol", as_dict=True, maintain_order=True)
            .items()
        ):
            kept, _ = dedupers.setdefault(symbol, Deduplicator(3_600_000)).filter(frame)
            engine = engines.setdefault(symbol, SymbolQuoteBars(spec))
            events = engine.on_quotes(kept)
            bars += [events.bars] if events.bars else []
            drift += events.drift_records
        batches += 1
        if batches == cut:
            engines = {
                s: SymbolQuoteBars(spec, pickle.loads(pickle.dumps(e.snapshot())))
                for s, e in engines.items()
            }
    for engine in engines.values():
        events = engine.on_end()
        bars += [events.bars] if events.bars else []
        drift += events.drift_records
    return quote_bar_frame(bars), QuoteDriftRecord.frame(drift)


def newest(frame: pl.DataFrame, order: str) -> dict[str, dict]:
    rows = frame.sort(order).unique("bar_id", keep="last")
    return {r["bar_id"]: r for r in rows.iter_rows(named=True)}


SPEC = CandleSpec(resolutions=tuple(RESOLUTIONS.values()), allowed_lateness_ms=LATENESS)
# Closed windows kept for less time than a coarse window lasts and than quotes are late.
SHORT_RETENTION = CandleSpec(
    resolutions=tuple(RESOLUTIONS.values()), allowed_lateness_ms=LATENESS, drift_retention_ms=2_000
)


@pytest.mark.parametrize(
    ("seed", "spec"),
    [(0, SPEC), (1, SPEC), (2, SPEC), (0, SHORT_RETENTION), (1, SHORT_RETENTION)],
    ids=["0", "1", "2", "0-short-retention", "1-short-retention"],
)
def test_published_bars_are_the_bars_of_the_quotes_that_came_on_time(seed, spec):
    messages = quote_stream(3_000, seed)
    bars, _ = run(messages, spec, seed=seed)
    assert bars.get_column("revision").unique().to_list() == [0]
    assert bars.get_column("bar_id").is_unique().all(), "a bar went out twice"
    expected = reference_quote_bars(messages, LATENESS, RESOLUTIONS)
    assert_quote_bars_match(newest(bars, "revision"), expected)


@pytest.mark.parametrize("seed", range(3))
def test_drift_records_correct_every_touched_bar_to_the_bars_of_all_quotes(seed):
    messages = quote_stream(3_000, seed)
    bars, drift = run(messages, SPEC, seed=seed)
    assert drift.height > 0
    published = newest(bars, "revision")
    full = reference_quote_bars(messages, LATENESS, RESOLUTIONS, full=True)
    corrected = {
        bar_id: {name: row[f"corrected_{name}"] for name in QUOTE_DRIFT_FIELDS}
        for bar_id, row in newest(drift.with_row_index("n"), "n").items()
    }
    # Every bar the full view changes has a drift record whose correction is that bar.
    current = {b: {n: r[n] for n in QUOTE_DRIFT_FIELDS} for b, r in published.items()}
    current.update(corrected)
    want = {b: {n: v[n] for n in QUOTE_DRIFT_FIELDS} for b, v in full.items()}
    assert_quote_bars_match(current, want)
    for row in drift.iter_rows(named=True):
        assert row["emitted_missing"] == (row["bar_id"] not in published)


QUOTE_FIELDS = [
    name
    for name in QuoteBar.frame_schema()
    if name not in ("symbol", "resolution", "window_start", "window_end", "bar_id", "revision")
]


def test_with_restatement_the_newest_revision_of_every_bar_is_the_full_view():
    spec = CandleSpec(
        resolutions=tuple(RESOLUTIONS.values()),
        allowed_lateness_ms=LATENESS,
        restatement=True,
        restatement_horizon_ms=3_600_000,
    )
    messages = quote_stream(3_000, 7)
    bars, _ = run(messages, spec, seed=7)
    assert bars.get_column("revision").max() > 0
    full = reference_quote_bars(messages, LATENESS, RESOLUTIONS, full=True)
    got = {b: {n: r[n] for n in QUOTE_FIELDS} for b, r in newest(bars, "revision").items()}
    assert_quote_bars_match(got, {b: {n: v[n] for n in QUOTE_FIELDS} for b, v in full.items()})


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,
        SHORT_RETENTION,
        CandleSpec(
            resolutions=tuple(RESOLUTIONS.values()),
            allowed_lateness_ms=LATENESS,
            drift_retention_ms=2_000,
            restatement=True,
            restatement_horizon_ms=3_000,
        ),
    ],
    ids=["default", "short-retention", "short-restatement-horizon"],
)
def test_output_does_not_depend_on_how_the_quotes_were_batched(spec):
    messages = quote_stream(2_000, 11, late_share=0.2)

    def by_bar(frames: tuple[pl.DataFrame, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
        # What comes out for each bar, in order; not how bars of a step interleave.
        bars, drift = frames
        return bars.sort("bar_id", "revision"), drift.sort("bar_id", maintain_order=True)

    bars, drift = by_bar(run(messages, spec, sizes=(1,)))
    assert drift.height > 20, "the input has late quotes"
    for seed, sizes in [(1, (1, 2, 7, 50, 400)), (2, (300, 1_000)), (3, (2_100,))]:
        other_bars, other_drift = by_bar(run(messages, spec, seed=seed, sizes=sizes))
        assert other_bars.equals(bars)  # every bar and drift record, bit for bit
        assert other_drift.equals(drift)


@pytest.mark.parametrize("cut", [1, 5, 40])
def test_a_resumed_engine_publishes_what_an_uninterrupted_one_does(cut):
    messages = quote_stream(2_000, 3)
    whole = run(messages, SPEC, seed=3)
    resumed = run(messages, SPEC, cut=cut, seed=3)
    assert whole[0].equals(resumed[0])
    assert whole[1].equals(resumed[1])


def test_a_live_symbol_closes_its_windows_as_the_clock_runs():
    spec = CandleSpec(resolutions=(1_000, 10_000), allowed_lateness_ms=LATENESS, live=True)
    engine = SymbolQuoteBars(spec)
    frame = decode_batch(
        RawBatch("q", [quote("A", 1, 2, T0 + 100), quote("A", 1, 3, T0 + 600)], range(2)),
        RULES,
        origin=False,
        kind=QUOTE,
    ).valid
    assert engine.on_quotes(frame, now_ms=0.0).bars is None
    assert engine.next_close_at_ms() == 1_400.0  # window end + lateness - newest + when seen
    early = engine.on_clock(1_399.0)
    assert early.bars is None
    closed = quote_bar_frame([engine.on_clock(1_400.0).bars])
    assert closed.select("resolution", "open", "close", "quote_count").rows() == [
        ("1s", 1.5, 2.0, 2)
    ]
    ten = quote_bar_frame([engine.on_clock(10_400.0).bars])
    assert ten.select("resolution", "spread_twa").rows() == [("10s", (1 * 500 + 2 * 9_400) / 9_900)]


def test_a_slower_newest_quote_holds_the_live_watermark_back_only_beyond_the_jitter():
    spec = CandleSpec(
        resolutions=(1_000, 10_000),
        allowed_lateness_ms=LATENESS,
        live=True,
        watermark_jitter_ms=100,
    )
    engine = SymbolQuoteBars(spec)

    def quotes(*ts):
        batch = RawBatch("q", [quote("A", 1, 2, t) for t in ts], range(len(ts)))
        return decode_batch(batch, RULES, origin=False, kind=QUOTE).valid

    engine.on_quotes(quotes(T0 + 100), now_ms=0.0)
    # 500 ms of event time later, seen 560 ms later (60 ms slower than the first one's
    # pace, within the jitter): the watermark runs on as if it came at that pace, 500
    engine.on_quotes(quotes(T0 + 600), now_ms=560.0)
    assert engine.next_close_at_ms() == 500.0 + (T0 + 1_000 + LATENESS - (T0 + 600))
    # 1 s of event time after that, seen 1,300 ms later (300 ms slower): it runs from
    # 100 ms (the jitter) before this quote's arrival, not from the pace's 1,500
    engine.on_quotes(quotes(T0 + 1_600), now_ms=1_860.0)
    assert engine.next_close_at_ms() == 1_760.0 + (T0 + 1_000 + LATENESS - (T0 + 1_600))
