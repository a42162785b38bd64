"""Drop repeated trades of one symbol: same `trade_id` seen within an event-time horizon.

State is bounded: ids live in two generations of at most one horizon each, and a
generation is dropped whole once every id in it is beyond the horizon, so memory follows
the trade rate times the horizon. The rule is exact and independent of how the input was
batched: a trade is a duplicate when its key was kept before at an event time later than
the symbol's newest event time (this trade included) minus the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

FINGERPRINT_COLUMNS = ("symbol", "ts", "price", "size", "side", "venue")


def dedupe_keys(trades: pl.DataFrame, fingerprint: bool) -> pl.Series:
    """The key a trade is deduplicated on: its `trade_id`, else (if enabled) a fingerprint.

    Identical trades in one millisecond are legitimate in real markets, so trades without
    an id pass untouched unless fingerprinting is switched on.
    """
    if not fingerprint:
        return trades.get_column("trade_id")
    digest = pl.struct(list(FINGERPRINT_COLUMNS)).hash(seed=0x5EED).cast(pl.String)
    return trades.select(
        pl.coalesce(pl.col("trade_id"), pl.lit("fp:") + digest).alias("key")
    ).to_series()


@dataclass
class DedupeState:
    """Kept keys with the event time they were kept at, in two generations."""

    current: dict[str, int] = field(default_factory=dict)
    previous: dict[str, int] = field(default_factory=dict)
    generation_start: int | None = None
    max_ts: int | None = None

    def copy(self) -> DedupeState:
        return DedupeState(
            dict(self.current), dict(self.previous), self.generation_start, self.max_ts
        )


class Deduplicator:
    """Per-symbol duplicate filter over batches of trades in arrival order."""

    def __init__(self, horizon_ms: int, fingerprint: bool, state: DedupeState | None = None):
        self.horizon_ms = horizon_ms
        self.fingerprint = fingerprint
        self.state = state if state is not None else DedupeState()

    def filter(self, trades: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """The trades to keep, in order, and how many were duplicates."""
        if trades.height == 0:
            return trades, 0
        state = self.state
        keys = dedupe_keys(trades, self.fingerprint).to_list()
        ts = trades.get_column("ts")
        newest = ts.cum_max()
        if state.max_ts is not None:
            newest = newest.clip(lower_bound=state.max_ts)

        present = [k for k in keys if k is not None]
        distinct = set(present)
        if (
            len(distinct) == len(present)
            and state.current.keys().isdisjoint(distinct)
            and state.previous.keys().isdisjoint(distinct)
        ):
            # The common case: nothing seen before and no repeat inside the batch.
            state.current.update(
                (k, t) for k, t in zip(keys, ts.to_list(), strict=True) if k is not None
            )
            kept, duplicates = trades, 0
        else:
            keep = self._keep_mask(keys, ts.to_list(), (newest - self.horizon_ms).to_list())
            duplicates = keep.count(False)
            kept = trades.filter(pl.Series(keep, dtype=pl.Boolean))
        self._advance(int(newest[-1]))
        return kept, duplicates

    def _keep_mask(self, keys: list, ts: list[int], floors: list[int]) -> list[bool]:
        current, previous = self.state.current, self.state.previous
        keep: list[bool] = []
        for key, event_ts, floor in zip(keys, ts, floors, strict=True):
            if key is None:
                keep.append(True)
                continue
            seen = current.get(key)
            if seen is None:
                seen = previous.get(key)
            if seen is not None and seen > floor:
                keep.append(False)
            else:
                current[key] = event_ts
                keep.append(True)
        return keep

    def _advance(self, max_ts: int) -> None:
        state = self.state
        state.max_ts = max_ts if state.max_ts is None else max(state.max_ts, max_ts)
        if state.generation_start is None:
            state.generation_start = state.max_ts
        elif state.max_ts >= state.generation_start + self.horizon_ms:
            # Every key in `previous` is now older than the horizon: drop it whole.
            state.previous = state.current
            state.current = {}
            state.generation_start = state.max_ts
