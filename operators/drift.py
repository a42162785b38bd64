"""How far an emitted candle strays from the truth once late trades are counted.

The drift of a field is its relative change, `|corrected - emitted| / |emitted|`; a bar
that was never emitted (its window closed with no trades) has drifted by 1.0 (100 %) in
every field. A record is an alert when any watched field drifts beyond the threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from candlewax.records import (
    DEFAULT_ALERT_FIELDS,
    DRIFT_FIELDS,
    QUOTE_ALERT_FIELDS,
    QUOTE_DRIFT_FIELDS,
    DriftRecord,
    QuoteBarBatch,
    QuoteDriftRecord,
    bar_id,
    quote_bar_frame,
)
from operators.bars import Bar


def relative_drift(emitted: float | None, corrected: float) -> float:
    if emitted is None:
        return 1.0
    if emitted == corrected:
        return 0.0
    if emitted == 0:
        return 1.0
    return abs(corrected - emitted) / abs(emitted)


def bar_fields(bar: Bar) -> dict[str, float | int]:
    return {
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "vwap": bar.vwap,
        "trade_count": bar.trade_count,
    }


@dataclass(frozen=True)
class DriftPolicy:
    """When drift is an alert: above `threshold` on any of `fields`."""

    threshold: float = 0.005
    fields: tuple[str, ...] = DEFAULT_ALERT_FIELDS

    def drifted(self, drifts: dict[str, float]) -> list[str]:
        return [f for f in self.fields if drifts[f] > self.threshold]


def drift_record(
    *,
    symbol: str,
    resolution: str,
    window_start: int,
    window_ms: int,
    emitted: Bar | None,
    corrected: Bar,
    revision: int,
    late_trades: int,
    max_lateness_ms: int,
    detected_event_ts: int,
    policy: DriftPolicy,
) -> DriftRecord:
    """The drift record of one bar, comparing what was emitted with the corrected bar."""
    return DriftRecord(
        bar_id=bar_id(symbol, resolution, window_start),
        symbol=symbol,
        resolution=resolution,
        window_start=window_start,
        window_end=window_start + window_ms,
        revision=revision,
        late_trades=late_trades,
        max_lateness_ms=max_lateness_ms,
        detected_event_ts=detected_event_ts,
        **_drift_columns(
            bar_fields(emitted) if emitted is not None else None,
            bar_fields(corrected),
            DRIFT_FIELDS,
            policy,
        ),
    )


def quote_bar_fields(row: np.ndarray) -> dict[str, float | int]:
    """The drift-measured fields of one quote bar row (`QUOTE_BAR_ROW`, one row)."""
    frame = quote_bar_frame([QuoteBarBatch.of_symbol("", row, ((int(row["res"][0]), ""),))])
    return {name: frame.get_column(name)[0] for name in QUOTE_DRIFT_FIELDS}


def quote_drift_record(
    *,
    symbol: str,
    resolution: str,
    window_start: int,
    window_ms: int,
    emitted: np.ndarray | None,
    corrected: np.ndarray,
    revision: int,
    late_quotes: int,
    max_lateness_ms: int,
    detected_event_ts: int,
    threshold: float,
) -> QuoteDriftRecord:
    """The drift record of one quote bar: its published row against its full view."""
    return QuoteDriftRecord(
        bar_id=bar_id(symbol, resolution, window_start),
        symbol=symbol,
        resolution=resolution,
        window_start=window_start,
        window_end=window_start + window_ms,
        revision=revision,
        late_quotes=late_quotes,
        max_lateness_ms=max_lateness_ms,
        detected_event_ts=detected_event_ts,
        **_drift_columns(
            quote_bar_fields(emitted) if emitted is not None else None,
            quote_bar_fields(corrected),
            QUOTE_DRIFT_FIELDS,
            DriftPolicy(threshold, QUOTE_ALERT_FIELDS),
        ),
    )


def _drift_columns(
    before: Mapping[str, float | int] | None,
    after: Mapping[str, float | int],
    fields: tuple[str, ...],
    policy: DriftPolicy,
) -> dict[str, Any]:
    """A drift record's measured columns: each field emitted, corrected and its drift,
    the largest drift of the watched fields, and whether it is an alert."""
    drifts = {f: relative_drift(None if before is None else before[f], after[f]) for f in fields}
    drifted = policy.drifted(drifts)
    return {
        "emitted_missing": before is None,
        **_prefixed("emitted_", before, fields),
        **_prefixed("corrected_", after, fields),
        **_prefixed("drift_", drifts, fields),
        "max_drift": max(drifts[f] for f in policy.fields) if policy.fields else 0.0,
        "drifted_fields": ",".join(drifted),
        "alert": bool(drifted),
    }


def _prefixed(
    prefix: str, values: Mapping[str, float | int] | None, names: Iterable[str]
) -> dict[str, Any]:
    return {f"{prefix}{f}": (None if values is None else values[f]) for f in names}
