"""What a candle is: the running aggregate of a window's trades, and how two of them merge.

Pure arithmetic with no Bytewax in it. Open and close are chosen by the key
`(ts, arrival sequence)`, so ties on `ts` go by arrival order. Volume and notional are
kept as lists of terms and summed exactly rounded (`exact_sum`, independent of order),
so a candle has the same value to the last bit however its trades were batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from candlewax.segment_sums import exact_sum

TradeKey = tuple[int, int]  # (event time ms, arrival sequence of the symbol)


@dataclass(slots=True)
class Bar:
    """A partial or finished candle of one window."""

    open: float
    open_key: TradeKey
    close: float
    close_key: TradeKey
    high: float
    low: float
    trade_count: int
    volume_terms: list[float] = field(default_factory=list)
    notional_terms: list[float] = field(default_factory=list)

    @classmethod
    def of_trade(cls, ts: int, seq: int, price: float, size: float) -> Bar:
        return cls(price, (ts, seq), price, (ts, seq), price, price, 1, [size], [price * size])

    @property
    def volume(self) -> float:
        return exact_sum(self.volume_terms)

    @property
    def notional(self) -> float:
        return exact_sum(self.notional_terms)

    @property
    def vwap(self) -> float:
        volume = self.volume
        return self.notional / volume if volume else math.nan

    def absorb(self, other: Bar) -> None:
        """Fold another bar of the same window (later arrivals, or a finer bar) into this one."""
        if other.open_key < self.open_key:
            self.open, self.open_key = other.open, other.open_key
        if other.close_key > self.close_key:
            self.close, self.close_key = other.close, other.close_key
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        self.trade_count += other.trade_count
        self.volume_terms.extend(other.volume_terms)
        self.notional_terms.extend(other.notional_terms)

    def merged(self, other: Bar) -> Bar:
        result = self.copy()
        result.absorb(other)
        return result

    def compact(self) -> Bar:
        """The same bar with its sums folded into one term each (for finished candles)."""
        return replace(self, volume_terms=[self.volume], notional_terms=[self.notional])

    def copy(self) -> Bar:
        return replace(
            self, volume_terms=list(self.volume_terms), notional_terms=list(self.notional_terms)
        )


def window_start(ts: int, window_ms: int) -> int:
    """Start of the epoch-aligned window of `window_ms` that holds `ts`."""
    return ts - ts % window_ms
