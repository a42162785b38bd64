"""Which shard a symbol belongs to, the key that routes the shard, and a batch split by shard.

The trade steps after decode (dedupe, the fat-finger guard, candles) are keyed by shard,
a fixed set of symbols, not by symbol: a step per symbol costs tens of microseconds of
Bytewax and Python whatever its size, and a live poll of a whole exchange touches
hundreds of symbols with a few trades each, while one step of a shard does the work of
all its symbols at once (`operators.candles.ShardCandles` in the same vectorised
operations; dedupe and the guard walking the symbols' runs, `SymbolRuns`). A symbol
belongs to exactly one shard (CRC-32 of its name modulo the number of shards), so its
state lives in one place, on one worker, as with a key per symbol.

Bytewax 0.21 sends a key to worker `SipHash-1-3(key's UTF-8 bytes + 0xFF) % workers`
(Rust's `DefaultHasher` of the key string). Plain keys land unevenly: "shard-0" to
"shard-7" went 6 and 2 on two workers. So the key of shard `i` is the first of
`shard-{i}`, `shard-{i}.1`, `shard-{i}.2`, ... whose hash is `i` modulo 840, which every
number from 1 to 8 divides: shard `i` goes to worker `i % W` for any such `W` (and any
other divisor of 840), so `N` shards spread evenly over `W` workers whenever `W` divides
`N`. Were Bytewax to hash otherwise, shards would only spread less evenly; a symbol
still has one shard.
"""

from __future__ import annotations

import functools
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

_SPREAD = 840  # divisible by every worker count from 1 to 8
_MASK = (1 << 64) - 1


@functools.lru_cache(maxsize=65_536)
def shard_of(symbol: str, shards: int) -> int:
    """The shard of a symbol: the same in every process and every run."""
    return zlib.crc32(symbol.encode()) % shards


@functools.cache
def shard_keys(shards: int) -> tuple[str, ...]:
    """The state key of each shard (see the module's docstring for how they are chosen)."""
    return tuple(_key_of(i) for i in range(shards))


def shard_key(symbol: str, shards: int) -> str:
    """The state key of the symbol's shard."""
    return shard_keys(shards)[shard_of(symbol, shards)]


def of_earlier_version(what: str) -> ValueError:
    """The error for a recovery snapshot of one symbol's `what` (the candles, the
    duplicate filter, the price history), as versions before the steps were keyed by
    shard kept them: this version cannot resume it. Each step's state raises it; the
    step stops the flow with its one line."""
    return ValueError(
        f"this recovery snapshot holds {what} of one symbol, as earlier versions of "
        "candlewax kept them; it cannot be resumed: finish the run with the version that "
        "wrote it, then start with a new recovery store (CHANGELOG, 'Unreleased')"
    )


def check_by_symbol(state: object, kind: type, what: str) -> None:
    """A resumed state of a shard's step is None or each symbol's `kind` by symbol;
    anything else is one symbol's, of an earlier version (`of_earlier_version`)."""
    if state is None:
        return
    if not isinstance(state, dict) or not all(isinstance(v, kind) for v in state.values()):
        raise of_earlier_version(what)


@dataclass(frozen=True)
class SymbolRuns:
    """A frame of rows of several symbols as runs: each symbol's rows together, in their
    order of arrival. What a step of a shard walks, symbol by symbol, with slices."""

    frame: pl.DataFrame
    symbols: list[str]
    bounds: np.ndarray  # run i is rows bounds[i]:bounds[i + 1] of `frame`

    def __iter__(self) -> Iterator[tuple[str, int, int]]:
        """(symbol, first row, end row) of each run."""
        bounds = self.bounds.tolist()
        return zip(self.symbols, bounds[:-1], bounds[1:], strict=True)


def symbol_runs(frame: pl.DataFrame) -> SymbolRuns:
    """`frame` as runs of one symbol each. A frame split by `split_by_shard` is runs
    already; a step that took several of them at once gets them sorted stably by symbol."""
    symbols, lengths = run_lengths(frame.get_column("symbol"))
    if len(set(symbols)) < len(symbols):  # a symbol in two runs: its rows brought together
        frame = frame.sort("symbol", maintain_order=True)
        symbols, lengths = run_lengths(frame.get_column("symbol"))
    bounds = np.zeros(len(symbols) + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    return SymbolRuns(frame, symbols, bounds)


def run_lengths(symbols: pl.Series) -> tuple[list[str], np.ndarray]:
    """The runs of equal symbols, in order: each one's symbol and length, found where a
    row's symbol differs from the one before. A live poll's few hundred rows compare in
    numpy (~10 us; `Series.rle` costs ~125 us whatever the size, a lazy query); past
    `_SMALL_SPLIT_ROWS`, in polars, the column against itself one row on, on this thread
    (25,000 rows ~60 us, where `rle` took 160 us alone and up to 1 ms while the read
    ahead kept polars' threads busy)."""
    n = len(symbols)
    if n == 0:
        return [], np.empty(0, dtype=np.int64)
    if n <= _SMALL_SPLIT_ROWS:
        values = symbols.to_numpy()
        starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
        return values[starts].tolist(), np.diff(np.append(starts, n))
    if symbols.null_count():
        runs = symbols.rle()
        return runs.struct.field("value").to_list(), runs.struct.field("len").to_numpy()
    changes = (symbols.slice(1) != symbols.slice(0, n - 1)).to_numpy()
    starts = np.concatenate(([0], np.flatnonzero(changes) + 1))
    return _symbols_at(symbols, starts), np.diff(np.append(starts, n))


def _symbols_at(symbols: pl.Series, rows: np.ndarray) -> list[str]:
    """The symbols at some rows: one by one up to `_ONE_BY_ONE` (~0.4 us each), else in
    one gather (~80 us whatever their number)."""
    if len(rows) <= _ONE_BY_ONE:
        return [symbols[i] for i in rows.tolist()]
    return symbols.gather(rows).to_list()


_ONE_BY_ONE = 200


def split_by_symbol(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """The frame's rows by symbol, in arrival order within each, the symbols in the
    order of their first row (as `partition_by(maintain_order=True)`)."""
    if frame.height > _SMALL_SPLIT_ROWS:
        parts = frame.partition_by("symbol", as_dict=True, maintain_order=True)
        return [(str(key[0]), part) for key, part in parts.items()]
    sorted_ = _sorted_by_symbol(frame)
    if sorted_ is None:
        return [(str(frame.get_column("symbol")[0]), frame)]
    order, names, starts, ends = sorted_
    ordered = frame[order]
    # A stable sort keeps each symbol's first row first: `order[start]` is where it was.
    runs = sorted(zip(order[starts].tolist(), starts.tolist(), ends.tolist(), strict=True))
    return [(names[first], ordered.slice(a, b - a)) for first, a, b in runs]


def split_by_shard(frame: pl.DataFrame, shards: int) -> list[tuple[str, pl.DataFrame]]:
    """The frame's rows by shard of symbols, keyed by the shard's key: in each, every
    symbol's rows are one run, in arrival order (`symbol_runs` takes them as they are)."""
    if frame.height > _SMALL_SPLIT_ROWS:
        return _split_large(frame, shards)
    sorted_ = _sorted_by_symbol(frame)
    if sorted_ is None:
        return [(shard_key(str(frame.get_column("symbol")[0]), shards), frame)]
    order, names, starts, ends = sorted_
    run_shard = np.fromiter(
        (shard_of(names[first], shards) for first in order[starts].tolist()),
        np.int64,
        len(starts),
    )
    # Runs ordered by shard (stably: by symbol within one), then the rows of each.
    row_shard = np.repeat(run_shard, ends - starts)
    by_shard = np.argsort(row_shard, kind="stable")
    ordered = frame[order[by_shard]]
    present, first_rows, counts = np.unique(
        row_shard[by_shard], return_index=True, return_counts=True
    )
    keys = shard_keys(shards)
    return [
        (keys[shard], ordered.slice(a, n))
        for shard, a, n in zip(present.tolist(), first_rows.tolist(), counts.tolist(), strict=True)
    ]


def _split_large(frame: pl.DataFrame, shards: int) -> list[tuple[str, pl.DataFrame]]:
    """`split_by_shard` of a large batch: the rows in one gather, ordered by shard, then by
    symbol (in the order of their first rows), then as they came. Each row's symbol is
    numbered in that order (`symbol_numbers`) and the numbers sorted stably (a radix sort
    of small integers); 100,000 rows of 500 symbols in ~8 ms with polars' numbering,
    where `partition_by` (a frame built anew per symbol, then one per shard) took ~29 ms."""
    names, number = symbol_numbers(frame.get_column("symbol"))
    shard = np.fromiter((shard_of(s, shards) for s in names), np.int64, len(names))
    by_shard = np.argsort(shard, kind="stable")  # the symbols' order in the result
    rank = np.empty(len(names), dtype=np.int32)
    rank[by_shard] = np.arange(len(names), dtype=np.int32)
    row_rank = rank[number]
    small = np.int16 if len(names) <= np.iinfo(np.int16).max else np.int32
    ordered = frame[np.argsort(row_rank.astype(small), kind="stable")]
    rows_of_rank = np.bincount(row_rank, minlength=len(names))
    rows = np.bincount(shard[by_shard], weights=rows_of_rank, minlength=shards).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(rows)[:-1]))
    keys = shard_keys(shards)
    return [
        (keys[i], ordered.slice(start, count))
        for i, (start, count) in enumerate(zip(starts.tolist(), rows.tolist(), strict=True))
        if count
    ]


def symbol_numbers(symbols: pl.Series) -> tuple[list[str], np.ndarray]:
    """The distinct symbols in the order of their first rows, and each row's symbol as
    its index among them (int32). Symbols of up to 12 bytes (tickers, most pairs) are
    held whole in their Arrow views, 16 bytes a row: those are numbered in numpy from a
    hash of the views (`_view_numbers`, ~1 ms a 100,000-row batch); any others by
    polars' `unique` and `replace_strict` (~5 ms of CPU, on polars' threads, which the
    read ahead keeps busy)."""
    numbered = _view_numbers(symbols)
    if numbered is not None:
        return numbered
    names = symbols.unique(maintain_order=True)
    number = symbols.replace_strict(
        names, pl.Series(np.arange(len(names), dtype=np.int32)), return_dtype=pl.Int32
    )
    return names.to_list(), number.to_numpy()


# A row's view hashes to one of this many slots; rows whose slot holds another symbol
# try again with the next multipliers (500 symbols: ~2 such pairs a batch).
_SLOT_BITS = 16
_MULTIPLIERS = tuple(
    (np.uint64(a), np.uint64(b))
    for a, b in (
        (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F),
        (0xD6E8FEB86659FD93, 0xA0761D6478BD642F),
        (0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3),
    )
)
_INLINE_BYTES = 12  # a string view holds a string this long within itself


def _view_numbers(symbols: pl.Series) -> tuple[list[str], np.ndarray] | None:
    """`symbol_numbers` from the Arrow views, or None where a symbol is longer than a
    view holds (or null). A view of a short string is its length and its bytes, so two
    rows hold the same symbol exactly when their views are equal: each row is compared
    with the first row of its hash slot (`np.minimum.at`), and the rows whose slot's
    first row holds another symbol go round again with other multipliers."""
    n = len(symbols)
    # (The length is read as the low 32 bits of a view's first word: little-endian.)
    if n == 0 or symbols.null_count() or sys.byteorder != "little":
        return None
    array = symbols.to_arrow(compat_level=pl.CompatLevel.newest())
    if not pa.types.is_string_view(array.type):
        return None
    views = np.frombuffer(array.buffers()[1], dtype=np.uint64).reshape(-1, 2)
    views = views[array.offset : array.offset + n]
    head, tail = views[:, 0], views[:, 1]  # length and first 4 bytes; the next 8
    if int((head & np.uint64(0xFFFFFFFF)).max()) > _INLINE_BYTES:
        return None
    rows = np.arange(n)
    first = np.empty(n, dtype=np.int64)  # each row's first row of the same symbol
    pending = rows
    shift = np.uint64(64 - _SLOT_BITS)
    for low, high in _MULTIPLIERS:
        slot = ((head[pending] * low ^ tail[pending] * high) >> shift).astype(np.intp)
        table = np.full(1 << _SLOT_BITS, n, dtype=np.int64)
        np.minimum.at(table, slot, pending)
        candidate = table[slot]
        same = (head[candidate] == head[pending]) & (tail[candidate] == tail[pending])
        first[pending[same]] = candidate[same]
        pending = pending[~same]
        if not len(pending):
            break
    else:
        return None
    is_first = first == rows
    index_of_first = np.cumsum(is_first, dtype=np.int64) - 1
    names = _symbols_at(symbols, np.flatnonzero(is_first))
    return names, index_of_first[first].astype(np.int32)


# Up to this many rows a batch is split by a stable sort and slices: `partition_by`
# builds each part's columns anew, ~25 us a symbol, which is most of what a live poll of
# a few trades each of hundreds of symbols costs. Past it, on few symbols,
# `partition_by` is the faster (measured: 100 rows of 78 symbols 2.1 ms by
# `partition_by`, 0.4 ms sorted; 30 k rows of 4 symbols 1.5 ms and 9 ms).
_SMALL_SPLIT_ROWS = 4_096


def _sorted_by_symbol(
    frame: pl.DataFrame,
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray] | None:
    """The stable order of the rows by symbol, each row's symbol, and where each symbol's
    run starts and ends in that order; None when the frame has one symbol only."""
    symbols = frame.get_column("symbol").to_numpy()
    order = np.argsort(symbols, kind="stable")
    ordered_symbols = symbols[order]
    cuts = np.flatnonzero(ordered_symbols[1:] != ordered_symbols[:-1]) + 1
    if len(cuts) == 0:
        return None
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(symbols)]))
    return order, symbols.tolist(), starts, ends


def bytewax_worker(key: str, workers: int) -> int:
    """The worker Bytewax 0.21 routes a state key to."""
    return _siphash13(key.encode() + b"\xff") % workers


# The salt of shard `i`'s key (`_search_key(i)`) for the first 64 shards, found once:
# searching costs ~17 us a hash in Python, ~840 hashes a shard (57 ms of a flow's first
# batch with the default 4 shards). A test checks them against the search.
# fmt: off
_SALTS = (
    276, 891, 343, 623, 427, 88, 294, 11, 1703, 97, 697, 1872, 1042, 347, 1464, 840,
    989, 1485, 1627, 1256, 499, 409, 1473, 27, 2133, 142, 321, 1095, 1652, 860, 1633,
    1762, 330, 376, 317, 145, 218, 316, 713, 995, 1514, 652, 113, 84, 383, 722, 3, 363,
    1830, 54, 83, 2207, 833, 1247, 5449, 608, 428, 198, 3743, 1090, 133, 70, 1231, 2254,
)
# fmt: on


def _key_of(shard: int) -> str:
    return _key(shard, _SALTS[shard]) if shard < len(_SALTS) else _search_key(shard)


def _key(shard: int, salt: int) -> str:
    return f"shard-{shard}" if salt == 0 else f"shard-{shard}.{salt}"


def _search_key(shard: int) -> str:
    salt = 0
    while True:
        key = _key(shard, salt)
        if _siphash13(key.encode() + b"\xff") % _SPREAD == shard % _SPREAD:
            return key
        salt += 1


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def _siphash13(data: bytes) -> int:
    """SipHash-1-3 with the zero key: what Rust's `DefaultHasher::new()` computes."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    n = len(data)
    whole = n - n % 8
    for i in range(0, whole, 8):
        word = int.from_bytes(data[i : i + 8], "little")
        v3 ^= word
        sip_round()
        v0 ^= word
    last = ((n & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= last
    sip_round()
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        sip_round()
    return v0 ^ v1 ^ v2 ^ v3
