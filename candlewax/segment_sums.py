"""Exactly rounded sums of many short segments of an array, vectorised.

A candle's volume and notional are the exactly rounded sums of its trades' terms
(`math.fsum`): the same bits whichever batches, workers or order the trades came in.
Called once per segment, `fsum` costs ~0.4 us a candle in the interpreter, where a
dense tape has a candle every few trades. `segment_fsum` sums all the short segments at
once instead, position by position (the segments sorted by length, so those still
running are one slice), with error-free transformations (TwoSum): each segment's sum is
carried as a float plus the exact sum of what each addition rounded away, itself carried
the same way with a bound on what that rounded away. Where that bound proves the final
rounding exact — all but a vanishing fraction of segments — the result is the exactly
rounded sum, the same bits as `fsum`; every other segment (a tie or near-tie, an
overflow, an infinity or NaN, a long segment) is summed by `fsum` itself.
"""

from __future__ import annotations

import math

import numpy as np

# Measured costs (us): a step of the vectorised sums (one position of every segment still
# running) costs ~7.6 whatever its width plus ~0.006 a term; `fsum` costs ~0.3 a segment
# plus ~0.03 a term. The segments summed together are the shortest ones, up to the length
# where what they save no longer pays for the steps (`segment_fsum`).
_STEP_US = 7.6
_SEGMENT_US = 0.3
_TERM_SAVED_US = 0.024


def segment_fsum(values: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """The exactly rounded sum (as `math.fsum`) of `values[first : last + 1]` for each
    segment (`firsts`, `lasts`: int arrays, each segment non-empty)."""
    if len(firsts) * _SEGMENT_US < _STEP_US:  # too few to pay for a step (a live poll's)
        return _fsum_each(values, firsts, lasts)
    values = np.ascontiguousarray(values, dtype=np.float64)
    lengths = lasts - firsts + 1
    sums = np.empty(len(firsts), dtype=np.float64)
    fallback = np.ones(len(firsts), dtype=bool)
    order = np.argsort(lengths, kind="stable")
    ascending = lengths[order]
    # What summing the shortest i + 1 segments together saves, less its steps (as many
    # as the longest of them is long); the best cut, if it saves anything.
    saved = np.cumsum(_SEGMENT_US + _TERM_SAVED_US * ascending) - _STEP_US * ascending
    best = int(np.argmax(saved))
    cut = best + 1 if saved[best] > 0 else 0  # the last of equal lengths: they save most
    together = order[:cut]
    if len(together):
        sums[together], exact = _lockstep_sums(values, firsts[together], lengths[together])
        fallback[together[exact]] = False
    alone = np.flatnonzero(fallback)
    sums[alone] = _fsum_each(values, firsts[alone], lasts[alone])
    return sums


def _fsum_each(values: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """`math.fsum` of each segment, one call each (a slice at a time: a few segments of
    a large array need not make all of it Python floats)."""
    fsum = math.fsum
    ends = zip(firsts.tolist(), lasts.tolist(), strict=True)
    return np.array([fsum(values[a : b + 1].tolist()) for a, b in ends], dtype=np.float64)


def _lockstep_sums(
    values: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each segment's (in ascending order of length) sum rounded once, and whether that
    rounding is proven exact (else the sum must come from `fsum`)."""
    s = values[starts]  # the running sum
    e = np.zeros(len(starts))  # the sum of what each addition to `s` rounded away
    lost = np.zeros(len(starts))  # a bound on what the additions to `e` rounded away
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(1, int(lengths[-1]) if len(lengths) else 0):
            first = int(np.searchsorted(lengths, k, side="right"))  # still running
            x = values[starts[first:] + k]
            s_k, e_k = s[first:], e[first:]
            total, error = _two_sum(s_k, x)
            s[first:] = total
            e_total, e_error = _two_sum(e_k, error)
            e[first:] = e_total
            lost[first:] += np.abs(e_error)
        # s + e + (what `lost` bounds) is the exact sum: round s + e once (to nearest,
        # ties to even, as `fsum`) and keep the result where nothing was lost or no
        # value within the bound rounds elsewhere.
        rounded, residual = _two_sum(s, e)
        mantissa, _ = np.frexp(rounded)
        # Half the gap to the next float, towards zero at a power of two (half as wide).
        half = np.spacing(np.abs(rounded)) * np.where(np.abs(mantissa) == 0.5, 0.25, 0.5)
        # (A zero comes out +0.0, as from `fsum`: `e` starts at +0.0.)
        exact = np.isfinite(rounded) & ((lost == 0) | (np.abs(residual) + 2 * lost < half))
    return rounded, exact


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a + b as the rounded sum and its exact error (Knuth's TwoSum, any magnitudes)."""
    total = a + b
    b_part = total - a
    error = (a - (total - b_part)) + (b - b_part)
    return total, error
