"""What a quote bar is: top-of-book quotes of a window folded into mid OHLC and spreads.

Pure arithmetic over arrays, free of Bytewax (docs/contracts.md, "Quote bar record"):
per symbol and window, from the window's quotes in event-time order (ties by arrival),
`open`/`high`/`low`/`close` of the mid price (bid + ask) / 2, `bid_close`/`ask_close` of
the last quote, `spread_min`/`spread_max`/`spread_mean` over the quotes, and
`spread_twa`, the spread weighted by the time each quote was in force within
[start, end): until the next quote or the window's end, and the quote in force at the
start (the last one before it) from the start. Before a symbol's first quote nothing
is in force, so the time-weighted mean is over the time a quote was.

Bars are rows of `QUOTE_BAR_ROW`. A row keeps the integral of the spread over time and
the time it covers rather than their ratio, so coarse bars are exact roll-ups of base
bars: a base window with no quote (no bar) is covered by the spread of the last quote
before it.
"""

from __future__ import annotations

import numpy as np

from candlewax.records import QUOTE_BAR_ROW


def base_bars(
    ts: np.ndarray,
    seq: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    res: int,
    spread_before: float | None,
) -> np.ndarray:
    """The bars of the windows of these quotes (every quote of each window, in any order;
    the windows ascending), given the spread of the last quote before the first of them
    (None when the symbol had none)."""
    if len(ts) == 0:
        return np.empty(0, dtype=QUOTE_BAR_ROW)
    order = np.lexsort((seq, ts))  # event time, ties by arrival
    ts, seq, bid, ask = ts[order], seq[order], bid[order], ask[order]
    mid = bid * 0.5 + ask * 0.5
    spread = ask - bid
    window = ts - ts % res
    cuts = np.flatnonzero(window[1:] != window[:-1]) + 1
    firsts = np.concatenate(([0], cuts))
    lasts = np.concatenate((cuts, [len(ts)])) - 1
    starts = window[firsts]

    # Each quote is in force until the next one, or its window's end.
    until = np.empty(len(ts), dtype=np.int64)
    until[:-1] = ts[1:]
    until[lasts] = starts + res
    in_force = until - ts
    # The quote in force at each window's start: the one before its first quote.
    before = np.empty(len(firsts))
    before[1:] = spread[firsts[1:] - 1]
    before[0] = np.nan if spread_before is None else spread_before
    lead = np.where(np.isnan(before), 0, ts[firsts] - starts)

    bars = np.zeros(len(firsts), dtype=QUOTE_BAR_ROW)
    bars["res"], bars["start"] = res, starts
    bars["open"], bars["open_ts"], bars["open_seq"] = mid[firsts], ts[firsts], seq[firsts]
    bars["close"], bars["close_ts"], bars["close_seq"] = mid[lasts], ts[lasts], seq[lasts]
    bars["high"] = np.maximum.reduceat(mid, firsts)
    bars["low"] = np.minimum.reduceat(mid, firsts)
    bars["bid_close"], bars["ask_close"] = bid[lasts], ask[lasts]
    bars["spread_min"] = np.minimum.reduceat(spread, firsts)
    bars["spread_max"] = np.maximum.reduceat(spread, firsts)
    bars["spread_sum"] = np.add.reduceat(spread, firsts)
    bars["spread_time"] = np.add.reduceat(spread * in_force, firsts) + np.nan_to_num(before) * lead
    bars["covered_ms"] = np.add.reduceat(in_force, firsts) + lead
    bars["count"] = lasts - firsts + 1
    return bars


def rolled_up(bars: np.ndarray, res: int, spread_before: float | None) -> np.ndarray:
    """Coarse bars of resolution `res` from base bars (ascending, all of each coarse
    window), given the spread in force before the first of them (None: none was)."""
    if len(bars) == 0:
        return np.empty(0, dtype=QUOTE_BAR_ROW)
    base = int(bars["res"][0])
    starts = bars["start"]
    coarse = starts - starts % res
    cuts = np.flatnonzero(coarse[1:] != coarse[:-1]) + 1
    firsts = np.concatenate(([0], cuts))
    lasts = np.concatenate((cuts, [len(bars)])) - 1

    # Base windows with no quote hold the spread of the last quote before them: after
    # each bar, up to the next bar or the coarse window's end; before the first bar of a
    # coarse window, the last bar before it (or `spread_before`).
    closing = bars["ask_close"] - bars["bid_close"]
    gap_until = np.empty(len(bars), dtype=np.int64)
    gap_until[:-1] = starts[1:]
    gap_until[lasts] = coarse[lasts] + res
    gap_after = gap_until - (starts + base)
    before = np.empty(len(firsts))
    before[1:] = closing[firsts[1:] - 1]
    before[0] = np.nan if spread_before is None else spread_before
    lead = np.where(np.isnan(before), 0, starts[firsts] - coarse[firsts])

    up = np.zeros(len(firsts), dtype=QUOTE_BAR_ROW)
    up["res"], up["start"] = res, coarse[firsts]
    for name in ("open", "open_ts", "open_seq"):
        up[name] = bars[name][firsts]
    for name in ("close", "close_ts", "close_seq", "bid_close", "ask_close"):
        up[name] = bars[name][lasts]
    up["high"] = np.maximum.reduceat(bars["high"], firsts)
    up["low"] = np.minimum.reduceat(bars["low"], firsts)
    up["spread_min"] = np.minimum.reduceat(bars["spread_min"], firsts)
    up["spread_max"] = np.maximum.reduceat(bars["spread_max"], firsts)
    up["spread_sum"] = np.add.reduceat(bars["spread_sum"], firsts)
    filled = bars["spread_time"] + closing * gap_after
    up["spread_time"] = np.add.reduceat(filled, firsts) + np.nan_to_num(before) * lead
    up["covered_ms"] = np.add.reduceat(bars["covered_ms"] + gap_after, firsts) + lead
    up["count"] = np.add.reduceat(bars["count"], firsts)
    return up


def spread_means(bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`spread_mean` (over quote updates) and `spread_twa` (over time) of each bar."""
    return bars["spread_sum"] / bars["count"], bars["spread_time"] / bars["covered_ms"]
