"""Exactly rounded sums of many segments of an array, vectorised.

A candle's volume and notional are the exactly rounded sums of its trades' terms
(`math.fsum`): the same bits whichever batches, workers or order the trades came in.
Called once per segment, `fsum` costs ~0.3 us a candle plus ~0.03 a term in the
interpreter, where a dense tape has a candle every few trades and a busy symbol
hundreds of trades a candle. `segment_fsum` sums every segment at once instead,
position by position (the segments sorted by length, so those still running are one
slice), with error-free transformations (TwoSum): each segment's sum is carried as a
float plus the exact sum of what each addition rounded away, itself carried the same
way with a bound on what that rounded away. A segment longer than `_PIECE` terms is
summed in pieces of `_PIECE`, and the pieces' sums and errors are summed the same way
(in pieces again if they are many): a step costs ~8 us whatever its width, so no
segment takes more than a few dozen steps (a 1 s candle of 300 trades took 300 steps,
or `fsum`, 4x what the pieces cost). Where the bound proves the final rounding exact —
all but a vanishing fraction of segments — the result is the exactly rounded sum, the
same bits as `fsum`; every other segment (a near-tie within the bound, an overflow, an
infinity or NaN) is summed by `fsum` itself, and where even `fsum` overflows on the way,
exactly: past the largest float, the sum is an infinity (IEEE's rounding), not an error.
Whole numbers whose magnitudes sum to less than 2**53 (share counts: an equity tape's
volume) need none of this: every running sum is exact, so one cumulative sum gives them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

# Terms a segment is summed in per pass; a longer one goes in pieces of this many.
_PIECE = 16
# Measured costs (us): a step of the vectorised sums (one position of every segment or
# piece still running) ~8 whatever its width, plus ~0.014 a term over every pass;
# `fsum` ~0.3 a segment plus ~0.03 a term. A call takes the cheaper way for all of its
# segments: `fsum` for a live poll's few candles, the steps for a batch's many.
_STEP_US = 8.0
_VECTOR_TERM_US = 0.014
_SEGMENT_US = 0.3
_FSUM_TERM_US = 0.03


def segment_fsum(values: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """The exactly rounded sum (as `math.fsum`) of `values[first : last + 1]` for each
    segment (`firsts`, `lasts`: int arrays, each segment non-empty)."""
    return segment_fsums((values,), firsts, lasts)[0]


# Below this, every whole number is a float, and so is every sum of them.
_WHOLE_BOUND = 2.0**53
# Below this many terms (a live poll's) `fsum` costs less than the numpy calls (~10 us).
_WHOLE_FROM_TERMS = 200


def _whole_number_sums(
    values: np.ndarray, firsts: np.ndarray, lasts: np.ndarray
) -> np.ndarray | None:
    """Each segment's sum where every value is a whole number and their magnitudes sum
    to less than 2**53 (share counts on equity tape): then every running sum is a whole
    number a float holds exactly, and the difference of two of them is the exact sum,
    the same bits as `fsum` (a zero sum +0.0). None otherwise; a feed of fractional
    sizes pays one comparison (its first value)."""
    if len(values) < _WHOLE_FROM_TERMS or not float(values[0]).is_integer():
        return None
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if not np.abs(values).sum() < _WHOLE_BOUND or not (np.rint(values) == values).all():
            return None  # (an infinity or NaN fails the first test)
    running = np.empty(len(values) + 1)
    running[0] = 0.0
    np.cumsum(values, out=running[1:])
    return running[lasts + 1] - running[firsts]


def _rounded_sums(values: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """`segment_fsum` of values that are not all whole numbers (or too large)."""
    lengths = lasts - firsts + 1
    terms = int(lengths.sum())
    fsum_us = _SEGMENT_US * len(firsts) + _FSUM_TERM_US * terms
    if fsum_us <= _STEP_US * _steps(int(lengths.max(initial=0))) + _VECTOR_TERM_US * terms:
        return _fsum_each(values, firsts, lasts)
    values = np.ascontiguousarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        s, e, lost = _parts(values, firsts, lengths)
        # s + e + (what `lost` bounds) is the exact sum: round s + e once (to nearest,
        # ties to even, as `fsum`) and keep the result where nothing was lost or no
        # value within the bound rounds elsewhere.
        rounded, residual = _two_sum(s, e)
        mantissa, _ = np.frexp(rounded)
        # Half the gap to the next float, towards zero at a power of two (half as wide).
        half = np.spacing(np.abs(rounded)) * np.where(np.abs(mantissa) == 0.5, 0.25, 0.5)
        # (A zero comes out +0.0, as from `fsum`: `e` starts at +0.0.)
        exact = np.isfinite(rounded) & ((lost == 0) | (np.abs(residual) + 2 * lost < half))
    alone = np.flatnonzero(~exact)
    rounded[alone] = _fsum_each(values, firsts[alone], lasts[alone])
    return rounded


def segment_fsums(
    columns: Sequence[np.ndarray], firsts: np.ndarray, lasts: np.ndarray
) -> list[np.ndarray]:
    """`segment_fsum` of each of several columns over the same segments, in one call: a
    step costs the same whatever its width, so the columns' segments go side by side
    (a candle's volume and notional: ~30 % less time than a call each, measured on the
    bench's shapes)."""
    whole = [_whole_number_sums(column, firsts, lasts) for column in columns]
    rest = [column for column, sums in zip(columns, whole, strict=True) if sums is None]
    if len(rest) > 1:
        n = len(rest[0])
        shifts = [i * n for i in range(len(rest))]
        together = _rounded_sums(
            np.concatenate(rest),
            np.concatenate([firsts + shift for shift in shifts]),
            np.concatenate([lasts + shift for shift in shifts]),
        )
        rounded = np.split(together, len(rest))
    else:
        rounded = [_rounded_sums(column, firsts, lasts) for column in rest]
    others = iter(rounded)
    return [sums if sums is not None else next(others) for sums in whole]


def _steps(longest: int) -> int:
    """How many steps `_parts` takes when the longest segment has `longest` terms."""
    steps = 0
    while longest > _PIECE:
        steps += _PIECE
        longest = 2 * -(-longest // _PIECE)  # each piece's sum and error
    return steps + longest


def _parts(
    values: np.ndarray, firsts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each segment's sum as `s + e` within `lost` of the exact one (see `_lockstep`),
    a long one from its pieces'."""
    if int(lengths.max()) <= _PIECE:
        return _lockstep(values, firsts, lengths)
    pieces = -(-lengths // _PIECE)
    first_piece = np.cumsum(pieces) - pieces  # each segment's pieces are consecutive
    segment = np.repeat(np.arange(len(lengths)), pieces)
    within = np.arange(len(segment)) - first_piece[segment]
    piece_s, piece_e, piece_lost = _lockstep(
        values,
        firsts[segment] + within * _PIECE,
        np.minimum(_PIECE, lengths[segment] - within * _PIECE),
    )
    s, e = piece_s[first_piece], piece_e[first_piece]
    lost = np.add.reduceat(piece_lost, first_piece)
    several = np.flatnonzero(pieces > 1)
    if len(several):
        # The exact sum of a segment is the exact sum of its pieces' s and e, plus what
        # each piece's bound allows: those 2 x pieces floats, summed as segments.
        partials = np.empty(2 * len(piece_s))
        partials[0::2], partials[1::2] = piece_s, piece_e
        s[several], e[several], more_lost = _parts(
            partials, 2 * first_piece[several], 2 * pieces[several]
        )
        lost[several] += more_lost
    return s, e, lost


def _lockstep(
    values: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each segment's running sum `s`, the sum `e` of what each addition to `s` rounded
    away, and a bound `lost` on what the additions to `e` rounded away: the exact sum is
    within `lost` of `s + e` (exactly `s + e` where `lost` is 0), position by position
    over the segments still running (longest first, so they are a slice)."""
    n = len(starts)
    longest = int(lengths.max())
    order = np.argsort(-lengths, kind="stable")
    starts_sorted = starts[order]
    running = n - np.cumsum(np.bincount(lengths, minlength=longest))  # after k terms
    s = values[starts_sorted]
    e = np.zeros(n)
    lost = np.zeros(n)
    for k in range(1, longest):
        count = int(running[k])
        x = values[starts_sorted[:count] + k]
        total, error = _two_sum(s[:count], x)
        s[:count] = total
        e_total, e_error = _two_sum(e[:count], error)
        e[:count] = e_total
        lost[:count] += np.abs(e_error)
    unsorted = np.empty((3, n))
    unsorted[:, order] = s, e, lost
    return unsorted[0], unsorted[1], unsorted[2]


def _fsum_each(values: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """`math.fsum` of each segment, one call each (a slice at a time: a few segments of
    a large array need not make all of it Python floats)."""
    fsum = math.fsum
    ends = list(zip(firsts.tolist(), lasts.tolist(), strict=True))
    try:
        return np.array([fsum(values[a : b + 1].tolist()) for a, b in ends], dtype=np.float64)
    except (OverflowError, ValueError):  # rare: each again, the one that raised as IEEE
        return np.array([exact_sum(values[a : b + 1].tolist()) for a, b in ends])


def exact_sum(terms: list[float]) -> float:
    """The exactly rounded sum of `terms`: `math.fsum`, and where it raises, what IEEE
    arithmetic gives. A partial sum past the largest float (two trades of 1e308 shares
    in one candle): the exact sum if it is back within range, else an infinity of its
    sign; with an infinity or NaN among the terms, their sum (NaN for both infinities).
    A candle's sum is then defined (the lake and the topics carry one that is not finite
    as null) and the flow goes on."""
    try:
        return math.fsum(terms)
    except (OverflowError, ValueError):  # ValueError: -inf + inf
        pass
    specials = [term for term in terms if not math.isfinite(term)]
    if specials:
        return sum(specials)
    exact = sum(map(Fraction, terms), Fraction(0))
    try:
        return float(exact)
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a + b as the rounded sum and its exact error (Knuth's TwoSum, any magnitudes)."""
    total = a + b
    b_part = total - a
    error = (a - (total - b_part)) + (b - b_part)
    return total, error
