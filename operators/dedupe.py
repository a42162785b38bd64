"""Drop repeated trades (or quotes) of one symbol: same id seen within an event-time horizon.

State is bounded: ids live in two generations of at most one horizon each, and a
generation is dropped whole once every id in it is beyond the horizon, so memory follows
the trade rate times the horizon. The rule is exact and independent of how the input was
batched: a trade is a duplicate when its key was kept before at an event time later than
the symbol's newest event time (this trade included) minus the horizon.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from candlewax.records import TRADE, MessageKind
from candlewax.shards import check_by_symbol, symbol_runs

# A trade id that is a canonical decimal integer is kept as a Python int: dict lookups of
# ints cost a tenth of those of fresh strings. Non-canonical ids ("007", "A-1") stay text,
# so two different ids never become one key.
_CANONICAL_INT = r"^-?(0|[1-9][0-9]{0,17})$"
KEY_COLUMNS = ("_key_int", "_key_str")


_NUMBER = "_id_number"
# The integers whose text `_CANONICAL_INT` takes: up to 18 digits.
_CANONICAL_BOUND = 10**18 - 1


def with_dedupe_keys(
    messages: pl.DataFrame,
    fingerprint: bool,
    kind: MessageKind = TRADE,
    id_numbers: pl.Series | None = None,
) -> pl.DataFrame:
    """Add the key each message is deduplicated on: its id (`trade_id`, `quote_id`), else
    (if switched on) a fingerprint of its other fields. Done once per whole batch, where
    polars is cheapest. `id_numbers`: the ids as the integers they were read as
    (`DecodedBatch.id_numbers`), the same keys without matching and parsing their text
    (0.07 us a trade of CPU).

    Identical trades in one millisecond are legitimate in real markets, so messages without
    an id pass untouched unless fingerprinting is switched on.
    """
    if id_numbers is None:
        return messages.with_columns(*_key_expressions(fingerprint, kind, False))
    keyed = messages.hstack([id_numbers.alias(_NUMBER)]).with_columns(
        *_key_expressions(fingerprint, kind, True)
    )
    keyed.drop_in_place(_NUMBER)
    return keyed


@functools.cache
def _key_expressions(
    fingerprint: bool, kind: MessageKind, numbered: bool
) -> tuple[pl.Expr, pl.Expr]:
    """The key columns' expressions, built once (~60 us a batch, a live poll's split):
    from the ids' text, or (`numbered`) from the integers they were read as."""
    message_id = pl.col(kind.id_field)
    if numbered:
        number = pl.col(_NUMBER)
        canonical = number.is_between(-_CANONICAL_BOUND, _CANONICAL_BOUND)
        as_integer = number.cast(pl.Int64)
    else:
        canonical = message_id.str.contains(_CANONICAL_INT)
        as_integer = message_id.str.to_integer(strict=False)
    text = pl.when(canonical).then(None).otherwise(message_id)
    if fingerprint:
        digest = pl.struct(list(kind.fingerprint_columns)).hash(seed=0x5EED).cast(pl.String)
        text = pl.coalesce(text, pl.when(message_id.is_null()).then(pl.lit("fp:") + digest))
    return (
        pl.when(canonical).then(as_integer).alias("_key_int"),
        text.alias("_key_str"),
    )


def dedupe_keys(trades: pl.DataFrame) -> list[int | str | None]:
    """The keys added by `with_dedupe_keys`, one Python value (or None) per trade."""
    ints = trades.get_column("_key_int").to_list()
    texts = trades.get_column("_key_str")
    if texts.null_count() == trades.height:
        return ints
    return [t if t is not None else i for i, t in zip(ints, texts.to_list(), strict=True)]


@dataclass
class RisingIds:
    """Integer ids kept in batches of rising ids, each above every id kept before
    (exchanges number a symbol's trades in order), with the event time each was kept
    at: one sorted array, found with a binary search instead of held in a hash table
    (keeping a bulk batch's ids in `DedupeState.current` cost ~0.2 us a trade, most of
    the dedupe). Appended to only, a batch's arrays at a time; joined when searched."""

    chunks: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(ids) for ids, _ in self.chunks)

    def append(self, ids: np.ndarray, ts: np.ndarray) -> None:
        self.chunks.append((ids, ts))

    def joined(self) -> tuple[np.ndarray, np.ndarray]:
        """The ids (rising) and the event times they were kept at, as one array each."""
        if len(self.chunks) > 1:  # rebound, not changed in place: a snapshot holds it
            self.chunks = _joined(self.chunks)
        if not self.chunks:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return self.chunks[0]

    def highest(self) -> int | None:
        return int(self.chunks[-1][0][-1]) if self.chunks else None

    def seen(self, keys: list[int | str | None]) -> dict[int | str, int]:
        """The event time each of `keys` that is here was kept at. Keys outside the
        range of the ids are sifted out in Python first: a live poll's new ids, above
        them all, cost no numpy call."""
        if not self.chunks:
            return {}
        low, high = int(self.chunks[0][0][0]), int(self.chunks[-1][0][-1])
        wanted = [k for k in keys if type(k) is int and low <= k <= high]
        if not wanted:
            return {}
        ids, ts = self.joined()
        candidates = np.array(wanted, dtype=np.int64)
        at = np.searchsorted(ids, candidates)  # within the range: at < len(ids)
        found = ids[at] == candidates
        return dict(zip(candidates[found].tolist(), ts[at[found]].tolist(), strict=True))


def _joined(chunks: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Chunks of `RisingIds` as one (none if they hold no id)."""
    chunks = [(ids, ts) for ids, ts in chunks if len(ids)]
    if len(chunks) < 2:
        return chunks
    return [(np.concatenate([i for i, _ in chunks]), np.concatenate([t for _, t in chunks]))]


@dataclass
class DedupeState:
    """Kept keys with the event time they were kept at, in two generations (the form a
    snapshot is pickled and resumed in); each generation a hash table and the rising
    integer ids of bulk batches (`RisingIds`)."""

    current: dict[int | str, int] = field(default_factory=dict)
    previous: dict[int | str, int] = field(default_factory=dict)
    generation_start: int | None = None
    max_ts: int | None = None
    current_rising: RisingIds = field(default_factory=RisingIds)
    previous_rising: RisingIds = field(default_factory=RisingIds)

    def kept(self) -> int:
        """How many keys the two generations hold."""
        return (
            len(self.current)
            + len(self.previous)
            + len(self.current_rising)
            + len(self.previous_rising)
        )

    def highest_int(self) -> int | None:
        """The largest integer key kept (None: none)."""
        kept = [self.current_rising.highest(), self.previous_rising.highest()]
        kept.append(_highest_int(self.current, self.previous))
        return max((k for k in kept if k is not None), default=None)


class DedupeSnapshot:
    """The state at one moment, taken in constant time.

    Bytewax snapshots every key at every epoch, recovery or not, and pickles the
    snapshot only after the step has gone on with the next epoch. Copying the current
    generation (a horizon of ids: 750 k per symbol at 20 k trades/s over 8 symbols and 5
    minutes) stalled the flow for hundreds of milliseconds per epoch. Instead the
    snapshot holds the append-only log of the current generation's writes with its
    length, and the read-only previous generation, and builds the `DedupeState` only
    when pickled.
    """

    __slots__ = (
        "_generation_start",
        "_length",
        "_log",
        "_max_ts",
        "_previous",
        "_previous_rising",
        "_rising",
        "_rising_length",
    )

    def __init__(
        self, log: list[tuple[tuple[int | str, ...], tuple[int, ...]]], state: DedupeState
    ):
        self._log, self._length = log, len(log)
        self._rising = state.current_rising.chunks  # appended to only, or rebound
        self._rising_length = len(self._rising)
        # The previous generation is read only (rising ids joined in a new list).
        self._previous, self._previous_rising = state.previous, state.previous_rising.chunks
        self._generation_start, self._max_ts = state.generation_start, state.max_ts

    def __reduce__(self) -> tuple[type[DedupeState], tuple[Any, ...]]:
        current: dict[int | str, int] = {}
        for keys, ts in self._log[: self._length]:
            # In order: last write wins, as the dict was written.
            current.update(zip(keys, ts, strict=True))
        rising = RisingIds(_joined(self._rising[: self._rising_length]))
        previous_rising = RisingIds(_joined(self._previous_rising))
        return DedupeState, (
            current,
            self._previous,
            self._generation_start,
            self._max_ts,
            rising,
            previous_rising,
        )


class Deduplicator:
    """The duplicate filter of one symbol, over batches of its trades in arrival order."""

    def __init__(self, horizon_ms: int, state: DedupeState | None = None):
        self.horizon_ms = horizon_ms
        self.state = state if state is not None else DedupeState()
        # Every write to `state.current`, in order (see `DedupeSnapshot`): a pair of
        # tuples (keys, event times) per batch, only appended to, and replaced whole with
        # the generation. Tuples of ints and strings, which the garbage collector stops
        # tracking, so millions of ids cost a full collection nothing.
        self._log: list[tuple[tuple[int | str, ...], tuple[int, ...]]] = [
            (tuple(self.state.current), tuple(self.state.current.values()))
        ]
        # No integer key above this was kept (None: none was): rising ids that start
        # above it are new without a lookup (`keep_rising`).
        self._highest = self.state.highest_int()

    def snapshot(self) -> DedupeSnapshot:
        """The state now, in constant time: later filtering does not change it."""
        return DedupeSnapshot(self._log, self.state)

    def filter(self, trades: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """The trades to keep, in order, and how many were duplicates.

        `trades` (of this symbol) carries the key columns of `with_dedupe_keys`.
        """
        if trades.height == 0:
            return trades, 0
        bounds = np.array([0, trades.height], dtype=np.int64)
        bulk = BulkKeys.of(trades, bounds)
        if bulk is not None and self.keep_rising(*bulk.run(0)):
            return trades, 0
        keep = self.keep(dedupe_keys(trades), trades.get_column("ts").to_list())
        if keep is None:
            return trades, 0
        return trades.filter(pl.Series(keep, dtype=pl.Boolean)), keep.count(False)

    def keep_rising(self, ids: np.ndarray | None, ts: np.ndarray, newest: int) -> bool:
        """Keep a batch of rising integer ids (each above the one before; None: not
        rising) if it starts above every integer key kept: then none was seen before.
        False: nothing done, the batch is for `keep`."""
        if ids is None or (self._highest is not None and ids[0] <= self._highest):
            return False
        self.state.current_rising.append(ids, ts)
        self._highest = int(ids[-1])
        self._advance(newest)
        return True

    def keep(self, keys: list[int | str | None], ts: list[int]) -> list[bool] | None:
        """Which of a batch of this symbol's trades to keep (their keys, `dedupe_keys`,
        and event times, in arrival order); None: all of them (the usual case).

        Python lists, not arrays: a live poll gives each symbol a trade or two, where
        each numpy call costs more than the work."""
        if not keys:
            return None
        state = self.state
        if None not in keys:
            present, present_ts = keys, ts
        else:
            pairs = [(k, t) for k, t in zip(keys, ts, strict=True) if k is not None]
            present, present_ts = [k for k, _ in pairs], [t for _, t in pairs]
        rising = self._rising_seen(present)
        distinct = set(present)
        keep = None
        if (
            len(distinct) == len(present)
            and not rising
            and state.current.keys().isdisjoint(distinct)
            and state.previous.keys().isdisjoint(distinct)
        ):
            # The common case: nothing seen before and no repeat inside the batch.
            state.current.update(zip(present, present_ts, strict=True))  # type: ignore[arg-type]
            self._log.append((tuple(present), tuple(present_ts)))  # type: ignore[arg-type]
            newest = max(ts)
        else:
            running = np.maximum.accumulate(np.asarray(ts, dtype=np.int64))
            if state.max_ts is not None:
                np.maximum(running, state.max_ts, out=running)
            floors = (running - self.horizon_ms).tolist()
            keep = self._keep_mask(keys, ts, floors, rising)
            newest = int(running[-1])
        try:
            highest = max(present)  # type: ignore[type-var]  # C speed: all ints or all text
        except (TypeError, ValueError):  # both kinds, or no key at all
            highest = _highest_int(present)
        if type(highest) is int and (self._highest is None or highest > self._highest):
            self._highest = highest
        self._advance(newest)
        return keep

    def _rising_seen(self, keys: list[int | str | None]) -> dict[int | str, int]:
        """The event time each of `keys` kept as a rising id was kept at, as the lookup
        of `_keep_mask` finds it between the current table and the previous one: the
        newest write wins, so the previous generation's rising ids only where the
        previous table does not have the key (usually nothing: no search at all)."""
        state = self.state
        if not state.current_rising.chunks and not state.previous_rising.chunks:
            return {}
        previous = state.previous
        seen = {
            key: ts for key, ts in state.previous_rising.seen(keys).items() if key not in previous
        }
        seen.update(state.current_rising.seen(keys))
        return seen

    def _keep_mask(
        self, keys: list, ts: list[int], floors: list[int], rising: dict[int | str, int]
    ) -> list[bool]:
        """Keep or drop each key (`rising`: `_rising_seen`'s, looked up after the current
        table and before the previous one)."""
        current = self.state.current
        older = collections.ChainMap(rising, self.state.previous) if rising else self.state.previous
        log_keys: list[int | str] = []
        log_ts: list[int] = []
        keep: list[bool] = []
        for key, event_ts, floor in zip(keys, ts, floors, strict=True):
            if key is None:
                keep.append(True)
                continue
            seen = current.get(key)
            if seen is None:
                seen = older.get(key)
            if seen is not None and seen > floor:
                keep.append(False)
            else:
                current[key] = event_ts
                log_keys.append(key)
                log_ts.append(event_ts)
                keep.append(True)
        self._log.append((tuple(log_keys), tuple(log_ts)))
        return keep

    def _advance(self, max_ts: int) -> None:
        state = self.state
        state.max_ts = max_ts if state.max_ts is None else max(state.max_ts, max_ts)
        if state.generation_start is None:
            state.generation_start = state.max_ts
        elif state.max_ts >= state.generation_start + self.horizon_ms:
            # Every key in `previous` is now older than the horizon: drop it whole.
            state.previous, state.previous_rising = state.current, state.current_rising
            state.current, state.current_rising = {}, RisingIds()
            self._log = []  # a snapshot keeps the old one whole
            state.generation_start = state.max_ts


class ShardDeduplicator:
    """The duplicate filter of the symbols of a shard (`candlewax.shards`): a
    `Deduplicator` per symbol, each fed its run of every batch. One step for all the
    symbols of a shard: a step per symbol costs tens of microseconds of Bytewax and
    polars whatever its size, and a live poll touches hundreds of symbols."""

    def __init__(self, horizon_ms: int, state: dict[str, DedupeState] | None = None):
        """`state`: a snapshot's, each symbol's `DedupeState` (ValueError for one of an
        earlier version, a single symbol's)."""
        check_by_symbol(state, DedupeState, "the duplicate filter")
        self.horizon_ms = horizon_ms
        self._symbols = {
            symbol: Deduplicator(horizon_ms, kept) for symbol, kept in (state or {}).items()
        }

    def filter(self, trades: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """The trades to keep and how many were duplicates; the kept trades come as runs
        of one symbol each (`symbol_runs`), each in arrival order."""
        if trades.height == 0:
            return trades, 0
        runs = symbol_runs(trades)
        bulk = BulkKeys.of(runs.frame, runs.bounds)
        keys: list[int | str | None] = []
        ts: list[int] = []
        mask: np.ndarray | None = None
        for index, (symbol, first, end) in enumerate(runs):
            dedupe = self._symbols.get(symbol)
            if dedupe is None:
                dedupe = self._symbols[symbol] = Deduplicator(self.horizon_ms)
            if bulk is not None and dedupe.keep_rising(*bulk.run(index)):
                continue
            if not ts:  # Python lists, once, for the runs that need them
                keys, ts = dedupe_keys(runs.frame), runs.frame.get_column("ts").to_list()
            keep = dedupe.keep(keys[first:end], ts[first:end])
            if keep is not None:
                if mask is None:
                    mask = np.ones(runs.frame.height, dtype=bool)
                mask[first:end] = keep
        if mask is None:
            return runs.frame, 0
        return runs.frame.filter(pl.Series(mask)), int(len(mask) - mask.sum())

    def snapshot(self) -> dict[str, DedupeSnapshot]:
        """Each symbol's state now (`Deduplicator.snapshot`): pickled as a dict of
        `DedupeState`, the form the step resumes from."""
        return {symbol: dedupe.snapshot() for symbol, dedupe in self._symbols.items()}


# Below this many trades a batch is kept through the hash tables only: numpy's calls
# cost more than the lookups (a live poll).
_BULK_FROM_ROWS = 1_000


@dataclass
class BulkKeys:
    """A large batch's integer keys as arrays, with which of its runs of one symbol have
    rising ids (`Deduplicator.keep_rising`), found in numpy for all the runs at once."""

    ids: np.ndarray
    ts: np.ndarray
    bounds: np.ndarray  # run i is rows bounds[i]:bounds[i + 1]
    rising: list[bool]
    newest: list[int]

    @classmethod
    def of(cls, frame: pl.DataFrame, bounds: np.ndarray) -> BulkKeys | None:
        """None unless the batch is large and has integer keys (`with_dedupe_keys`: a
        canonical integer id; a run with any other key, text, a fingerprint or none, is
        not rising)."""
        if frame.height < _BULK_FROM_ROWS:
            return None
        ints = frame.get_column("_key_int")
        missing = ints.null_count()
        if missing == frame.height:
            return None
        ids = (ints if not missing else ints.fill_null(0)).to_numpy()
        ts = frame.get_column("ts").to_numpy()
        firsts, ends = bounds[:-1], bounds[1:]
        # Steps that do not rise, counted up to each row: a run rises if none is in it.
        falls = np.zeros(len(ids), dtype=np.int64)
        np.cumsum(ids[1:] <= ids[:-1], out=falls[1:])
        rising = falls[ends - 1] == falls[firsts]
        if missing:  # and if every key of it is an integer
            others = np.zeros(len(ids) + 1, dtype=np.int64)
            np.cumsum(ints.is_null().to_numpy(), out=others[1:])
            rising &= others[ends] == others[firsts]
        newest = np.maximum.reduceat(ts, firsts).tolist()
        return cls(ids, ts, bounds, rising.tolist(), newest)

    def run(self, index: int) -> tuple[np.ndarray | None, np.ndarray, int]:
        """Run `index`'s ids (None: not rising), event times and newest event time."""
        first, end = int(self.bounds[index]), int(self.bounds[index + 1])
        ids = self.ids[first:end] if self.rising[index] else None
        return ids, self.ts[first:end], self.newest[index]


def _highest_int(*groups: Iterable[int | str | None]) -> int | None:
    """The largest integer key among some keys (None: no integer)."""
    return max((k for group in groups for k in group if type(k) is int), default=None)
