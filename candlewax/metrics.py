"""Prometheus metrics of the flow: every message outcome, candles, drift, and a run summary.

Every input message ends as exactly one outcome (accepted, duplicate, filtered, rejected
or late), so `received == sum(outcomes)` is an invariant the summary checks. A flow run
by `bytewax.run` counts in the default registry (served with Bytewax's own metrics);
tests give each flow a registry of its own.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)

OUTCOMES = ("accepted", "duplicate", "filtered", "rejected", "late")
# The largest relative field drift of a drift record, and how late late trades were.
DRIFT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LATENESS_BUCKETS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 3600.0)
DELAY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
log = logging.getLogger("candlewax")


class QuoteMetrics:
    """The quotes branch's counters: the same outcomes as trades (received == the sum of
    outcomes), rejections by reason, and quote bars by resolution."""

    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.received = Counter("candlewax_quotes_received", "Quote messages read.", registry=r)
        self.outcomes = Counter(
            "candlewax_quotes", "Quote messages by final outcome.", ["outcome"], registry=r
        )
        self.rejected = Counter(
            "candlewax_quotes_rejected",
            "Quote messages sent to the dead-letter queue, by reason.",
            ["reason"],
            registry=r,
        )
        self.bars = Counter(
            "candlewax_quote_bars_emitted",
            "Quote bars emitted (restated ones included), by resolution.",
            ["resolution"],
            registry=r,
        )
        self.restated = Counter(
            "candlewax_quote_bars_restated",
            "Quote bars emitted again because of late quotes, by resolution.",
            ["resolution"],
            registry=r,
        )
        self.drift_records = Counter(
            "candlewax_quote_drift_records",
            "Quote bar drift records written, by resolution.",
            ["resolution"],
            registry=r,
        )
        self.drift_alerts = Counter(
            "candlewax_quote_drift_alerts",
            "Quote bar drift records above the alert threshold.",
            ["symbol", "resolution"],
            registry=r,
        )
        self.late_expired = Counter(
            "candlewax_quotes_late_expired",
            "Late quotes older than the drift retention: in the lake, flagged; no drift record.",
            registry=r,
        )
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)

    def count(self, outcome: str, amount: int = 1) -> None:
        if amount:
            self.outcomes.labels(outcome).inc(amount)

    def summary(self) -> dict[str, Any]:
        outcomes = {o: int(_sample(self.outcomes, "_total", outcome=o)) for o in OUTCOMES}
        return {
            "received": int(_sample(self.received, "_total")),
            **outcomes,
            "rejected_by_reason": _by_label(self.rejected, "reason"),
            "bars_by_resolution": _by_label(self.bars, "resolution"),
            "drift_records": sum(_by_label(self.drift_records, "resolution").values()),
        }


@dataclass
class FlowMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = Counter(
            "candlewax_messages_received", "Messages read from the source.", registry=r
        )
        self.outcomes = Counter(
            "candlewax_messages", "Messages by final outcome.", ["outcome"], registry=r
        )
        self.rejected = Counter(
            "candlewax_rejected",
            "Messages sent to the dead-letter queue, by reason.",
            ["reason"],
            registry=r,
        )
        self.candles = Counter(
            "candlewax_candles_emitted",
            "Candles emitted (restated ones included), by resolution.",
            ["resolution"],
            registry=r,
        )
        self.restated = Counter(
            "candlewax_candles_restated",
            "Candles emitted again because of late trades, by resolution.",
            ["resolution"],
            registry=r,
        )
        self.drift_records = Counter(
            "candlewax_drift_records",
            "Drift records written (one per late trade and bar).",
            ["resolution"],
            registry=r,
        )
        self.drift_alerts = Counter(
            "candlewax_drift_alerts",
            "Drift records above the alert threshold.",
            ["symbol", "resolution"],
            registry=r,
        )
        self.drift_ratio = Histogram(
            "candlewax_drift_ratio",
            "Largest relative field drift of each drift record.",
            ["resolution"],
            buckets=DRIFT_BUCKETS,
            registry=r,
        )
        self.lateness = Histogram(
            "candlewax_late_trade_lateness_seconds",
            "How far behind its symbol's newest trade each late trade arrived.",
            buckets=LATENESS_BUCKETS_S,
            registry=r,
        )
        self.candle_delay = Histogram(
            "candlewax_candle_delay_seconds",
            "Live only: wall time a candle was handed to the sinks minus the wall time its"
            " window could close (window end + allowed lateness), first revisions only.",
            ["resolution"],
            buckets=DELAY_BUCKETS_S,
            registry=r,
        )
        self.late_expired = Counter(
            "candlewax_late_expired",
            "Late trades older than the drift retention: in the lake, flagged; no drift record.",
            registry=r,
        )
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)
        self.quotes = QuoteMetrics(r)

    @classmethod
    def default(cls) -> FlowMetrics:
        """Metrics in the process-wide registry, next to Bytewax's own."""
        return cls(REGISTRY)

    def count(self, outcome: str, amount: int = 1) -> None:
        if amount:
            self.outcomes.labels(outcome).inc(amount)

    def summary(self) -> dict[str, Any]:
        """Counts so far, as plain numbers (what the end-of-run log shows)."""
        outcomes = {o: int(_sample(self.outcomes, "_total", outcome=o)) for o in OUTCOMES}
        return {
            "received": int(_sample(self.received, "_total")),
            **outcomes,
            "rejected_by_reason": _by_label(self.rejected, "reason"),
            "candles_by_resolution": _by_label(self.candles, "resolution"),
            "restated_by_resolution": _by_label(self.restated, "resolution"),
            "drift_records": sum(_by_label(self.drift_records, "resolution").values()),
            "drift_alerts": sum(_by_label(self.drift_alerts, "resolution").values()),
            "drift_alerts_by_symbol": _by_label(self.drift_alerts, "symbol"),
            "late_by_lateness_s": _histogram(self.lateness),
            "late_expired": int(_sample(self.late_expired, "_total")),
        }

    def counts(self) -> str:
        """The outcome counts in one short line."""
        s = self.summary()
        return " ".join(f"{name}={s[name]}" for name in ("received", *OUTCOMES))

    def log_summary(self, title: str = "run summary") -> None:
        s = self.summary()
        total = sum(int(s[o]) for o in OUTCOMES)
        balance = "they add up" if total == s["received"] else f"MISMATCH: outcomes sum to {total}"
        log.info(
            "%s: received=%s accepted=%s duplicate=%s filtered=%s rejected=%s late=%s "
            "(%s); rejected by reason=%s; candles=%s (restated %s); drift records=%s, "
            "alerts=%s by symbol %s; late trades by lateness (s, cumulative)=%s",
            title, s["received"], s["accepted"], s["duplicate"], s["filtered"], s["rejected"],
            s["late"], balance, s["rejected_by_reason"], s["candles_by_resolution"],
            s["restated_by_resolution"], s["drift_records"], s["drift_alerts"],
            s["drift_alerts_by_symbol"], s["late_by_lateness_s"],
        )  # fmt: skip
        q = self.quotes.summary()
        if q["received"]:
            total = sum(int(q[o]) for o in OUTCOMES)
            balance = "they add up" if total == q["received"] else f"MISMATCH: {total}"
            log.info(
                "%s, quotes: received=%s accepted=%s duplicate=%s filtered=%s rejected=%s "
                "late=%s (%s); rejected by reason=%s; quote bars=%s; drift records=%s",
                title, q["received"], q["accepted"], q["duplicate"], q["filtered"],
                q["rejected"], q["late"], balance, q["rejected_by_reason"],
                q["bars_by_resolution"], q["drift_records"],
            )  # fmt: skip


def _sample(metric: Any, suffix: str, **labels: str) -> float:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix) and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                return float(sample.value)
    return 0.0


def _by_label(counter: Counter, label: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = sample.labels[label]
                values[key] = values.get(key, 0) + int(sample.value)
    return values


def _histogram(histogram: Histogram) -> dict[str, int]:
    """Cumulative counts per upper bound (`le`), as Prometheus has them."""
    return {
        sample.labels["le"]: int(sample.value)
        for family in histogram.collect()
        for sample in family.samples
        if sample.name.endswith("_bucket")
    }


def serve_metrics(port: int, registry: CollectorRegistry = REGISTRY) -> int | None:
    """Serve /metrics on `port` (0 = off). A taken port is logged, not fatal: metrics
    must never stop the candles."""
    if port == 0:
        return None
    try:
        start_http_server(port, addr="0.0.0.0", registry=registry)
    except OSError as exc:
        log.warning(
            "metrics: cannot listen on port %s (%s); continuing without /metrics", port, exc
        )
        return None
    log.info("metrics: serving http://%s:%s/metrics", socket.gethostname(), port)
    return port
