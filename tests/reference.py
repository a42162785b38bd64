"""An independent batch computation of what the flow must produce, written plainly.

It reads the whole input at once (Python's json, then polars over all trades), so it
shares no code with the streaming engine: validation by direct checks, dedupe as "first
occurrence wins", lateness from the whole-input running maximum per symbol, and every
resolution grouped straight from the trades (not rolled up).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import deque
from collections.abc import Sequence

import polars as pl

SYMBOL = re.compile(r"^[A-Za-z0-9._:/\-]{1,32}$")


def valid_trade(message: bytes | None, ts_min: int, ts_max: int) -> dict | None:
    if not message:
        return None
    try:
        obj = json.loads(message)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("type", "trade") != "trade":
        return None

    def number(v):
        return (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        )

    ok = (
        isinstance(obj.get("symbol"), str)
        and SYMBOL.match(obj["symbol"])
        and number(obj.get("price"))
        and number(obj.get("size"))
        and type(obj.get("ts")) is int
        and ts_min <= obj["ts"] <= ts_max
        and (obj.get("trade_id") is None or type(obj["trade_id"]) in (int, str))
    )
    return obj if ok else None


def screened_trades(
    messages: Sequence[bytes | None],
    ts_min: int = 946_684_800_000,
    ts_max: int = 2**62,
    outlier_threshold: float = 0.1,
    outlier_trades: int = 50,
) -> tuple[list[tuple], list[tuple]]:
    """Valid, deduplicated trades in arrival order as `(arrival, symbol, ts, price, size)`,
    minus the price outliers, and the outliers as `(arrival, symbol, price, reference)`:
    the median of the symbol's previous trades (outliers included), from ten on."""
    rows, outliers = [], []
    seen: set[tuple[str, str]] = set()
    recent: dict[str, deque[float]] = {}
    for arrival, message in enumerate(messages):
        obj = valid_trade(message, ts_min, ts_max)
        if obj is None:
            continue
        if obj.get("trade_id") is not None:
            key = (obj["symbol"], str(obj["trade_id"]))
            if key in seen:
                continue
            seen.add(key)
        price = float(obj["price"])
        window = recent.setdefault(obj["symbol"], deque(maxlen=outlier_trades))
        reference = statistics.median(window) if len(window) >= 10 else None
        window.append(price)
        if outlier_threshold and reference and abs(price / reference - 1) > outlier_threshold:
            outliers.append((arrival, obj["symbol"], price, reference))
            continue
        rows.append((arrival, obj["symbol"], obj["ts"], price, float(obj["size"])))
    return rows, outliers


def reference_trades(
    messages: Sequence[bytes | None],
    lateness_ms: int,
    base_ms: int,
    ts_min: int = 946_684_800_000,
    ts_max: int = 2**62,
    restatement_horizon_ms: int = 0,
    outlier_threshold: float = 0.1,
) -> pl.DataFrame:
    """Valid, deduplicated trades that are no price outliers, in arrival order, with a
    `late` flag, and `restated`: a late trade whose window ended less than the horizon
    before the watermark."""
    rows, _ = screened_trades(messages, ts_min, ts_max, outlier_threshold)
    frame = pl.DataFrame(rows, schema=["arrival", "symbol", "ts", "price", "size"], orient="row")
    newest_before = pl.col("ts").cum_max().shift(1).over("symbol")
    window_end = pl.col("ts") - pl.col("ts") % base_ms + base_ms
    watermark = newest_before - lateness_ms
    return frame.with_columns(
        late=(window_end <= watermark).fill_null(False),
        restated=(
            (window_end <= watermark) & (window_end > watermark - restatement_horizon_ms)
        ).fill_null(False),
    )


def candles_of(trades: pl.DataFrame, resolution_ms: int, name: str) -> pl.DataFrame:
    """OHLCV per (symbol, window) straight from trades: bar_id, open..trade_count."""
    start = pl.col("ts") - pl.col("ts") % resolution_ms
    return (
        trades.sort("ts", "arrival")
        .group_by("symbol", start.alias("window_start"))
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("size").sum().alias("volume"),
            ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap"),
            pl.len().cast(pl.Int64).alias("trade_count"),
        )
        .with_columns(
            bar_id=pl.concat_str("symbol", pl.lit(f":{name}:"), "window_start"),
        )
        .sort("bar_id")
    )


def reference_candles(
    messages: Sequence[bytes | None], lateness_ms: int, resolutions: dict[str, int], **bounds: float
) -> pl.DataFrame:
    base = min(resolutions.values())
    trades = reference_trades(messages, lateness_ms, base, **bounds).filter(~pl.col("late"))
    return pl.concat([candles_of(trades, ms, name) for name, ms in resolutions.items()]).sort(
        "bar_id"
    )


def assert_candles_match(candles: Sequence, expected: pl.DataFrame, rel: float = 1e-9) -> None:
    """Bar by bar: the same bar ids, and every field equal (float sums to `rel`)."""
    got = {c.bar_id: c for c in candles}
    assert len(got) == len(candles), "a bar_id was emitted twice"
    want = {row["bar_id"]: row for row in expected.iter_rows(named=True)}
    assert sorted(got) == sorted(want), (
        f"missing: {sorted(set(want) - set(got))[:5]}, extra: {sorted(set(got) - set(want))[:5]}"
    )
    for bar, row in want.items():
        candle = got[bar]
        assert (candle.open, candle.high, candle.low, candle.close, candle.trade_count) == (
            row["open"],
            row["high"],
            row["low"],
            row["close"],
            row["trade_count"],
        ), bar
        assert math.isclose(candle.volume, row["volume"], rel_tol=rel), bar
        assert math.isclose(candle.vwap, row["vwap"], rel_tol=rel), bar


# --- quotes ------------------------------------------------------------------------------
def valid_quote(
    message: bytes | None, ts_min: int, ts_max: int, accept_locked: bool
) -> dict | None:
    if not message:
        return None
    try:
        obj = json.loads(message)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("type", "quote") != "quote":
        return None

    def number(v, minimum_ok=False):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return v >= 0 if minimum_ok else v > 0

    ok = (
        isinstance(obj.get("symbol"), str)
        and SYMBOL.match(obj["symbol"])
        and number(obj.get("bid"))
        and number(obj.get("ask"))
        and all(obj.get(f) is None or number(obj[f], True) for f in ("bid_size", "ask_size"))
        and type(obj.get("ts")) is int
        and ts_min <= obj["ts"] <= ts_max
        and (obj.get("quote_id") is None or type(obj["quote_id"]) in (int, str))
        and (obj["bid"] < obj["ask"] or (accept_locked and obj["bid"] == obj["ask"]))
    )
    return obj if ok else None


def reference_quotes(
    messages: Sequence[bytes | None],
    lateness_ms: int,
    base_ms: int,
    ts_min: int = 946_684_800_000,
    ts_max: int = 2**62,
    accept_locked: bool = False,
) -> list[dict]:
    """Valid, deduplicated quotes in arrival order, each with `arrival` and `late`."""
    quotes, seen, newest = [], set(), {}
    for arrival, message in enumerate(messages):
        obj = valid_quote(message, ts_min, ts_max, accept_locked)
        if obj is None:
            continue
        if obj.get("quote_id") is not None:
            key = (obj["symbol"], str(obj["quote_id"]))
            if key in seen:
                continue
            seen.add(key)
        symbol, ts = obj["symbol"], obj["ts"]
        before = newest.get(symbol)
        end = ts - ts % base_ms + base_ms
        late = before is not None and end <= before - lateness_ms
        newest[symbol] = ts if before is None else max(before, ts)
        quotes.append({**obj, "arrival": arrival, "late": late})
    return quotes


def quote_bars_of(quotes: Sequence[dict], resolution_ms: int, name: str) -> dict[str, dict]:
    """Quote bars by bar_id straight from quotes (all of them: filter first for a view):
    each quote is in force from its time until the symbol's next quote."""
    bars: dict[str, dict] = {}
    by_symbol: dict[str, list[dict]] = {}
    for q in quotes:
        by_symbol.setdefault(q["symbol"], []).append(q)
    for symbol, qs in by_symbol.items():
        qs = sorted(qs, key=lambda q: (q["ts"], q["arrival"]))
        windows: dict[int, list[int]] = {}
        for k, q in enumerate(qs):
            windows.setdefault(q["ts"] - q["ts"] % resolution_ms, []).append(k)
        for start, members in windows.items():
            end = start + resolution_ms
            inside = [qs[k] for k in members]
            mids = [q["bid"] / 2 + q["ask"] / 2 for q in inside]
            spreads = [q["ask"] - q["bid"] for q in inside]
            weighted = covered = 0.0
            for k in range(members[0] - 1 if members[0] > 0 else 0, members[-1] + 1):
                since = max(qs[k]["ts"], start)
                until = min(qs[k + 1]["ts"] if k + 1 < len(qs) else end, end)
                if until > since:
                    weighted += (qs[k]["ask"] - qs[k]["bid"]) * (until - since)
                    covered += until - since
            bar_id = f"{symbol}:{name}:{start}"
            bars[bar_id] = {
                "open": mids[0],
                "high": max(mids),
                "low": min(mids),
                "close": mids[-1],
                "bid_close": inside[-1]["bid"],
                "ask_close": inside[-1]["ask"],
                "spread_min": min(spreads),
                "spread_max": max(spreads),
                "spread_mean": sum(spreads) / len(spreads),
                "spread_twa": weighted / covered,
                "quote_count": len(inside),
            }
    return bars


def reference_quote_bars(
    messages: Sequence[bytes | None],
    lateness_ms: int,
    resolutions: dict[str, int],
    *,
    full: bool = False,
    **bounds: object,
) -> dict[str, dict]:
    """The bars of the quotes that came on time (what the flow publishes), or of every
    valid quote (`full`: what drift records correct toward)."""
    base = min(resolutions.values())
    quotes = reference_quotes(messages, lateness_ms, base, **bounds)  # type: ignore[arg-type]
    if not full:
        quotes = [q for q in quotes if not q["late"]]
    bars: dict[str, dict] = {}
    for name, ms in resolutions.items():
        bars.update(quote_bars_of(quotes, ms, name))
    return bars


def assert_quote_bars_match(bars: dict[str, dict], expected: dict[str, dict]) -> None:
    """Bar by bar: the same bar ids; prices exact, spread means to 1e-9."""
    assert sorted(bars) == sorted(expected), (
        f"missing: {sorted(set(expected) - set(bars))[:5]}, "
        f"extra: {sorted(set(bars) - set(expected))[:5]}"
    )
    for bar_id, want in expected.items():
        got = bars[bar_id]
        for name, value in want.items():
            if name in ("spread_mean", "spread_twa"):
                assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-12), (bar_id, name)
            else:
                assert got[name] == value, (bar_id, name, got[name], value)
