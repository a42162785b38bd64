"""The fat-finger guard: a trade whose price strays too far from its symbol's recent prices.

The rule (docs/design.md, "Price outliers"): a trade is an outlier when
`|price / reference - 1| > threshold`, where the reference is the median of the prices of
the symbol's previous `trades` valid, non-duplicate trades in arrival order, outliers and
late trades included, so a genuine level shift is accepted once half the window has
moved. With fewer than `MIN_REFERENCE_TRADES` previous trades there is no reference and
nothing is an outlier.

`reference_prices` is the one implementation of the reference: the flow's guard
(`PriceGuard`, per symbol, batch by batch; `ShardGuard` holds those of a shard of
symbols) and `candlewax profile` (a whole file) both call it, so they find the same
outliers. It is exact and independent of batching: the
median of a window is one of its prices, or the midpoint of two of them computed the same
way every time.

It runs on every trade, so the common case costs a few vectorised operations: where no
price of a block of trades can be further from any reference than the threshold (every
reference lies between the lowest and the highest of the prices it is the median of),
the medians are not computed at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from candlewax.records import RejectReason
from candlewax.shards import SymbolRuns, check_by_symbol
from candlewax.text import formatted

MIN_REFERENCE_TRADES = 10
# What the shortcut leaves to rounding: a batch whose bound is within this of the
# threshold has its medians computed.
_BOUND_MARGIN = 1e-9
# Rows judged together by the bound of `_unvouched_rows`.
_BLOCK_ROWS = 64
# Rows of windows partitioned at once (a row is `trades` prices): bounds the memory a
# whole-file profile needs.
_CHUNK_ROWS = 1 << 16


@dataclass(frozen=True)
class OutlierRule:
    """When a price is an outlier: beyond `threshold` (a fraction; 0 = the guard is off)
    from the median of the symbol's previous `trades` trades."""

    threshold: float = 0.1
    trades: int = 50

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"the outlier threshold must be >= 0, got {self.threshold}")
        if self.trades < MIN_REFERENCE_TRADES:
            raise ValueError(
                f"the outlier reference needs at least {MIN_REFERENCE_TRADES} trades, "
                f"got {self.trades}"
            )

    @property
    def enabled(self) -> bool:
        return self.threshold > 0


@dataclass(frozen=True)
class Outliers:
    """The outliers among some prices: a mask, and for them the reference and deviation."""

    mask: np.ndarray  # bool, one per price checked
    reference: np.ndarray  # float64, of the outliers only
    deviation: np.ndarray  # float64, |price / reference - 1| of the outliers only

    def __len__(self) -> int:
        return len(self.reference)


def reference_prices(prices: np.ndarray, first: int, trades: int) -> np.ndarray:
    """The reference price of each of `prices[first:]`: the median of the up to `trades`
    prices before it in `prices`; NaN where fewer than `MIN_REFERENCE_TRADES` come before."""
    prices = np.ascontiguousarray(prices, dtype=np.float64)
    return _references_at(prices, np.arange(first, len(prices)), trades)


def _references_at(prices: np.ndarray, rows: np.ndarray, trades: int) -> np.ndarray:
    """The reference price of the rows `rows` (ascending) of `prices`."""
    reference = np.full(len(rows), np.nan)
    partial = rows < trades  # fewer than `trades` before: a window of all of them
    for at in np.flatnonzero(partial & (rows >= MIN_REFERENCE_TRADES)).tolist():
        reference[at] = _medians(prices[np.newaxis, : rows[at]])[0]
    full = np.flatnonzero(~partial)
    if len(full):
        # The window of row j is prices[j - trades : j], row j - trades of this view.
        windows = sliding_window_view(prices[:-1], trades)
        for start in range(0, len(full), _CHUNK_ROWS):
            chunk = full[start : start + _CHUNK_ROWS]
            reference[chunk] = _medians(windows[rows[chunk] - trades])
    return reference


def _medians(windows: np.ndarray) -> np.ndarray:
    """The median of each row; of an even count, the midpoint of the two middle values,
    as `low / 2 + high / 2`: the same float as `(low + high) / 2` (halving is exact), but
    it cannot overflow."""
    width = windows.shape[1]
    middle = width // 2
    if width % 2:
        return np.partition(windows, middle, axis=1)[:, middle]
    ordered = np.partition(windows, (middle - 1, middle), axis=1)
    low, high = ordered[:, middle - 1], ordered[:, middle]
    return low * 0.5 + high * 0.5


def deviations(prices: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`|price / reference - 1|`: how far each price is from its reference (NaN where
    there is none)."""
    return np.abs(prices / reference - 1.0)


def find_outliers(prices: np.ndarray, first: int, rule: OutlierRule) -> Outliers:
    """The outliers among `prices[first:]`, the prices before `first` being the symbol's
    history (at most `rule.trades` are used)."""
    prices = np.ascontiguousarray(prices, dtype=np.float64)
    checked = len(prices) - first
    mask = np.zeros(checked, dtype=bool)
    if not rule.enabled or checked == 0 or len(prices) <= MIN_REFERENCE_TRADES:
        return Outliers(mask, np.empty(0), np.empty(0))
    rows = _unvouched_rows(prices, max(first, MIN_REFERENCE_TRADES), rule)
    if len(rows) == 0:  # the usual case: no medians to compute
        return Outliers(mask, np.empty(0), np.empty(0))
    reference = _references_at(prices, rows, rule.trades)
    deviation = deviations(prices[rows], reference)
    with np.errstate(invalid="ignore"):
        caught = deviation > rule.threshold  # NaN (no reference) is never an outlier
    mask[rows[caught] - first] = True
    return Outliers(mask, reference[caught], deviation[caught])


def _unvouched_rows(prices: np.ndarray, first: int, rule: OutlierRule) -> np.ndarray:
    """The rows from `first` on that may be outliers; the others cannot be, whatever their
    reference: it lies between the lowest and the highest price of the row's window, so
    a price's deviation is at most its distance to the further of the two.

    The bound is taken per block of rows (at least `rule.trades` long, so the windows of
    a block's rows lie within it and the block before): a fat finger makes only the
    blocks it reaches compute medians. The whole batch is tried first, with one bound over
    every price the rows' windows reach: where it holds (the usual case, and all a live
    poll of a trade or two per symbol needs), no block is looked at.
    """
    rows = np.arange(first, len(prices))
    if rule.threshold <= _BOUND_MARGIN or len(rows) == 0:
        return rows
    bound = rule.threshold - _BOUND_MARGIN
    reached = prices[max(0, first - rule.trades) :]
    lowest, highest = reached.min(), reached.max()
    if _vouched(highest, lowest, lowest, highest, bound):
        return rows[:0]
    block = max(rule.trades, _BLOCK_ROWS)
    count = -(-len(prices) // block)
    padded = np.full(count * block, np.nan)
    padded[: len(prices)] = prices
    blocks = padded.reshape(count, block)
    low, high = np.nanmin(blocks, axis=1), np.nanmax(blocks, axis=1)
    window_low = np.minimum(low, np.concatenate(([np.inf], low[:-1])))
    window_high = np.maximum(high, np.concatenate(([-np.inf], high[:-1])))
    vouched = _vouched(high, window_low, low, window_high, bound)
    return rows[~vouched[rows // block]]


def _vouched(high: Any, window_low: Any, low: Any, window_high: Any, bound: float) -> Any:
    """Whether prices from `low` to `high` are within `bound` of any reference from
    `window_low` to `window_high` (numbers or arrays, elementwise)."""
    return (high / window_low - 1.0 <= bound) & (1.0 - low / window_high <= bound)


_NO_RANGE = (math.inf, -math.inf)


def _vouched_floats(known: tuple[float, float], low: float, high: float, bound: float) -> bool:
    """`_vouched` of a batch from `low` to `high` with a history within `known`."""
    lowest, highest = min(known[0], low), max(known[1], high)
    return bool(_vouched(highest, lowest, lowest, highest, bound))


@dataclass
class GuardState:
    """What the guard keeps of a symbol: the prices of its newest trades, oldest first
    (replaced, never changed in place, so a snapshot may share the array)."""

    recent: np.ndarray


class PriceGuard:
    """The guard of one symbol, fed its trades' prices batch by batch in arrival order."""

    def __init__(self, rule: OutlierRule, state: GuardState | None = None):
        self.rule = rule
        self.state = state if state is not None else GuardState(np.empty(0))
        # Bounds of the prices in `state.recent`, when known: exactly their range, or (after
        # `extend`) a range around it, which can only make `vouches` stricter.
        self._range: tuple[float, float] | None = None
        self._range_exact = False

    def check(self, prices: np.ndarray) -> Outliers:
        """The outliers of a batch; every price, outliers included, joins the history."""
        recent = self.state.recent
        joined = np.concatenate((recent, prices)) if len(recent) else prices
        outliers = find_outliers(joined, len(recent), self.rule)
        self._keep(joined)
        return outliers

    def vouches(self, low: float, high: float, count: int) -> bool:
        """Whether a batch of `count` prices from `low` to `high` has no outlier, told from
        the bounds alone: the first test `find_outliers` makes (`_unvouched_rows`), on the
        history and the batch, so where it holds `check` would find none."""
        rule = self.rule
        if not rule.enabled or len(self.state.recent) + count <= MIN_REFERENCE_TRADES:
            return True
        bound = rule.threshold - _BOUND_MARGIN
        if bound <= 0:
            return False
        # Bounds kept from batch to batch first (Python floats: the usual batch of a live
        # poll is a trade or two per symbol, and two array reductions per symbol were
        # most of the guard's cost); the exact range when those are too wide.
        if self._range is not None:
            if _vouched_floats(self._range, low, high, bound):
                return True
            if self._range_exact:
                return False
        recent = self.state.recent
        self._range = (float(recent.min()), float(recent.max())) if len(recent) else _NO_RANGE
        self._range_exact = True
        return _vouched_floats(self._range, low, high, bound)

    def extend(self, prices: np.ndarray, low: float, high: float) -> None:
        """A batch of prices from `low` to `high` joins the history unchecked (one
        `vouches` cleared)."""
        recent, known = self.state.recent, self._range
        self._keep(np.concatenate((recent, prices)) if len(recent) else prices)
        if known is not None:  # the prices that left the history can only narrow it
            self._range = (min(known[0], low), max(known[1], high))

    def _keep(self, joined: np.ndarray) -> None:
        self.state = GuardState(joined[-self.rule.trades :].copy())
        self._range = None
        self._range_exact = False

    def snapshot(self) -> GuardState:
        return self.state


class ShardGuard:
    """The guard of the symbols of a shard (`candlewax.shards`): a `PriceGuard` per
    symbol, each fed its run of every batch. The usual batch is cleared by the bounds of
    each run (`PriceGuard.vouches`), taken for all the runs at once; only a run that a
    fat finger may be in has its medians computed."""

    def __init__(self, rule: OutlierRule, state: dict[str, GuardState] | None = None):
        """`state`: a snapshot's, each symbol's `GuardState` (ValueError for one of an
        earlier version, a single symbol's)."""
        check_by_symbol(state, GuardState, "the price history")
        self.rule = rule
        self._symbols = {symbol: PriceGuard(rule, kept) for symbol, kept in (state or {}).items()}

    def check(self, runs: SymbolRuns) -> Outliers:
        """The outliers among the trades of `runs` (a mask over its frame's rows)."""
        prices = np.ascontiguousarray(runs.frame.get_column("price").to_numpy(), np.float64)
        mask = np.zeros(len(prices), dtype=bool)
        found: list[Outliers] = []
        if len(prices) == 0:
            return Outliers(mask, np.empty(0), np.empty(0))
        firsts = runs.bounds[:-1]
        lows = np.minimum.reduceat(prices, firsts).tolist()
        highs = np.maximum.reduceat(prices, firsts).tolist()
        for (symbol, first, end), low, high in zip(runs, lows, highs, strict=True):
            guard = self._symbols.get(symbol)
            if guard is None:
                guard = self._symbols[symbol] = PriceGuard(self.rule)
            if guard.vouches(low, high, end - first):
                guard.extend(prices[first:end], low, high)
                continue
            outliers = guard.check(prices[first:end])
            if len(outliers):
                mask[first:end] = outliers.mask
                found.append(outliers)
        if not found:
            return Outliers(mask, np.empty(0), np.empty(0))
        return Outliers(
            mask,
            np.concatenate([o.reference for o in found]),
            np.concatenate([o.deviation for o in found]),
        )

    def snapshot(self) -> dict[str, GuardState]:
        # Each GuardState is replaced, never changed: the dict may share them.
        return {symbol: guard.state for symbol, guard in self._symbols.items()}


def outlier_rejections(
    trades: pl.DataFrame, outliers: Outliers, rule: OutlierRule, now_ms: int
) -> pl.DataFrame:
    """Dead-letter records (`Rejection` columns) of the outliers among `trades` (a frame
    with the `ORIGIN_SCHEMA` columns; `outliers` found in its rows' order): the original
    bytes and position, reason `price_outlier`, and the reference price and deviation in
    the detail."""
    caught = trades.filter(pl.Series(outliers.mask)).with_columns(
        pl.Series("_reference", outliers.reference),
        pl.Series("_deviation", outliers.deviation),
    )
    detail = formatted(
        "price {} deviates {} from the reference price {} (the median of the symbol's "
        "previous {} trades); the guard's threshold is {}",
        pl.col("price"),
        pl.col("_deviation").round(6),
        pl.col("_reference"),
        pl.lit(rule.trades),
        pl.lit(rule.threshold),
    )
    return caught.select(
        pl.col("_raw").alias("raw"),
        pl.lit(RejectReason.PRICE_OUTLIER.value).alias("reason"),
        pl.lit("price").alias("field"),
        detail.alias("detail"),
        formatted("{}@{}", "_source", "_position").alias("source"),
        pl.lit(now_ms, dtype=pl.Int64).alias("received_at"),
        pl.col("symbol").cast(pl.Binary).alias("key"),
    )
