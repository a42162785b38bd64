"""The dashboard's recent bars: closed candles, forming candles and quote bars as the
topics deliver them, merged the way a reader of the contracts must merge them.

- A closed bar (a candle or a quote bar) replaces what the series holds for its window
  only at the same or a higher `revision`: a restated candle replaces its bar, a stale
  copy (a redelivery, the lake's older revision) never moves a bar backwards.
- A forming candle (`final: false`) shows a window that has not closed; it is dropped
  once that window's candle arrives, and one arriving after it is ignored.
- The flow publishes forming candles of the base resolution only; the forming candle of
  a coarser window (the current minute) is rolled up here from the base candles in it,
  closed and forming, each time one of them changes: a view for the chart, the flow's
  own coarse candle replaces it when the window closes.

Records keep their contract form (JSON fields, epoch-ms windows), so what the page gets
is what the topics and the lake hold. Pure and thread-safe: the Kafka thread adds, the
web server's handlers read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]
CANDLE, FORMING, QUOTE_BAR = "candle", "forming", "quote_bar"
KINDS = (CANDLE, FORMING, QUOTE_BAR)


@dataclass
class _Series:
    closed: dict[int, Record] = field(default_factory=dict)  # by window_start
    forming: dict[int, Record] = field(default_factory=dict)  # open windows, by start


class RecentBars:
    """The last `keep` bars of every (kind, symbol, resolution) series. `resolutions`
    (name -> ms, the first the base) tells which forming candles to roll up."""

    def __init__(self, resolutions: dict[str, int] | None = None, keep: int = 3_000):
        self.keep = keep
        ordered = sorted((resolutions or {}).items(), key=lambda item: item[1])
        self.base = ordered[0][0] if ordered else ""
        self.coarse = ordered[1:]
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, record: Record) -> list[tuple[str, Record]]:
        """Take a record from a topic; what changed in what the series show, as (kind,
        record) pairs for the pages watching: the record itself unless it changed
        nothing, and the coarse forming candles a base candle changed."""
        series_kind = QUOTE_BAR if kind == QUOTE_BAR else CANDLE
        symbol, resolution = str(record["symbol"]), str(record["resolution"])
        with self._lock:
            series = self._series.setdefault((series_kind, symbol, resolution), _Series())
            if not _keep(series, kind, record, self.keep):
                return []
            changed = [(kind, record)]
            if series_kind == CANDLE and resolution == self.base:
                start = int(record["window_start"])
                changed += [(FORMING, bar) for bar in self._roll_up(symbol, start)]
            return changed

    def _roll_up(self, symbol: str, base_start: int) -> list[Record]:
        base = self._series[(CANDLE, symbol, self.base)]
        rolled = []
        for name, ms in self.coarse:
            start = base_start - base_start % ms
            series = self._series.setdefault((CANDLE, symbol, name), _Series())
            if start in series.closed:
                continue
            parts = {s: r for s, r in base.closed.items() if start <= s < start + ms}
            parts.update((s, r) for s, r in base.forming.items() if start <= s < start + ms)
            bar = rolled_up([parts[s] for s in sorted(parts)], name, start, ms)
            series.forming[start] = bar
            _trim_forming(series)
            rolled.append(bar)
        return rolled

    def closed(self, kind: str, symbol: str, resolution: str) -> list[Record]:
        with self._lock:
            series = self._series.get((kind, symbol, resolution))
            return [] if series is None else [series.closed[s] for s in sorted(series.closed)]

    def forming(self, symbol: str, resolution: str) -> list[Record]:
        with self._lock:
            series = self._series.get((CANDLE, symbol, resolution))
            return [] if series is None else [series.forming[s] for s in sorted(series.forming)]

    def symbols(self) -> set[str]:
        with self._lock:
            return {symbol for _, symbol, _ in self._series}


def _keep(series: _Series, kind: str, record: Record, keep: int) -> bool:
    """Put the record in its series; whether it changed anything."""
    start = int(record["window_start"])
    if kind == FORMING:
        if start in series.closed:
            return False  # its window's candle is here already
        series.forming[start] = record
        _trim_forming(series)
        return True
    current = series.closed.get(start)
    if current is not None and int(current["revision"]) > int(record["revision"]):
        return False
    series.closed[start] = record
    series.forming.pop(start, None)
    if len(series.closed) > keep:
        for old in sorted(series.closed)[: len(series.closed) - keep]:
            del series.closed[old]
    return True


def _trim_forming(series: _Series) -> None:
    while len(series.forming) > 4:  # only the newest windows can be open
        del series.forming[min(series.forming)]


def rolled_up(parts: list[Record], resolution: str, start: int, ms: int) -> Record:
    """A coarse forming candle from the base candles in its window (in window order)."""
    first, last = parts[0], parts[-1]
    volume = sum(float(p["volume"]) for p in parts)
    notional = sum(float(p["volume"]) * float(p["vwap"] or 0.0) for p in parts)
    return {
        "symbol": first["symbol"],
        "resolution": resolution,
        "window_start": start,
        "window_end": start + ms,
        "open": first["open"],
        "high": max(float(p["high"]) for p in parts),
        "low": min(float(p["low"]) for p in parts),
        "close": last["close"],
        "volume": volume,
        "vwap": notional / volume if volume > 0 else None,
        "trade_count": sum(int(p["trade_count"]) for p in parts),
        "bar_id": f"{first['symbol']}:{resolution}:{start}",
        "revision": 0,
        "final": False,
    }


def merged(history: Iterable[Record], recent: Iterable[Record], limit: int) -> list[Record]:
    """The lake's bars and the recent ones from the topics as one series: per window the
    highest revision (the topic's copy on a tie: it is the newer), the last `limit`."""
    bars: dict[int, Record] = {}
    for record in (*history, *recent):
        start = int(record["window_start"])
        current = bars.get(start)
        if current is None or int(record["revision"]) >= int(current["revision"]):
            bars[start] = record
    return [bars[s] for s in sorted(bars)[-limit:]]
