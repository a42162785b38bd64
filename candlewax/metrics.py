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
    Gauge,
    Histogram,
    start_http_server,
)

OUTCOMES = ("accepted", "duplicate", "filtered", "rejected", "late")
# The largest relative field drift of a drift record, and how late late trades were.
DRIFT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
LATENESS_BUCKETS_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 3600.0)
DELAY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
log = logging.getLogger("candlewax")

# The serving stores (`sinks.postgres`, `sinks.redis`), in the process's default registry.
SERVING_ROWS = Counter(
    "candlewax_serving_rows",
    "Records committed to a serving store (PostgreSQL: rows of committed transactions, "
    "whether or not they changed a row; Redis: records sent to the projection).",
    ["store", "table"],
)
SERVING_RETRIES = Counter(
    "candlewax_serving_retries",
    "Writes to a serving store retried after the store was unreachable or failed.",
    ["store", "table"],
)
SERVING_PENDING = Gauge(
    "candlewax_serving_pending_rows",
    "Records handed to a serving store's writer and not committed yet.",
    ["store", "table"],
)


@dataclass(frozen=True)
class BranchNames:
    """The metric names and help texts of one branch of the flow (trades, quotes)."""

    prefix: str  # `candlewax_messages`, `candlewax_quotes`
    noun: str  # what a message is: "Messages", "Quote messages"
    rejected: str
    bars: str  # what closes: `candlewax_candles`, `candlewax_quote_bars`
    bars_noun: str
    late_noun: str  # "trades", "quotes"
    drift: str  # `candlewax_drift`, `candlewax_quote_drift`
    late_expired: str


TRADE_NAMES = BranchNames(
    "candlewax_messages", "Messages", "candlewax_rejected", "candlewax_candles", "Candles",
    "trades", "candlewax_drift", "candlewax_late_expired",
)  # fmt: skip
QUOTE_NAMES = BranchNames(
    "candlewax_quotes", "Quote messages", "candlewax_quotes_rejected", "candlewax_quote_bars",
    "Quote bars", "quotes", "candlewax_quote_drift", "candlewax_quotes_late_expired",
)  # fmt: skip


class BranchMetrics:
    """The counters every branch has: messages received and their outcomes (received ==
    the sum of outcomes), rejections by reason, bars emitted and restated by resolution,
    drift records and alerts, late messages beyond the drift retention."""

    def __init__(self, registry: CollectorRegistry, names: BranchNames):
        r, n = registry, names
        self.received = Counter(f"{n.prefix}_received", f"{n.noun} read.", registry=r)
        self.outcomes = Counter(n.prefix, f"{n.noun} by final outcome.", ["outcome"], registry=r)
        self.rejected = Counter(
            n.rejected,
            f"{n.noun} sent to the dead-letter queue, by reason.",
            ["reason"],
            registry=r,
        )
        self.bars = Counter(
            f"{n.bars}_emitted",
            f"{n.bars_noun} emitted (restated ones included), by resolution.",
            ["resolution"],
            registry=r,
        )
        self.restated = Counter(
            f"{n.bars}_restated",
            f"{n.bars_noun} emitted again because of late {n.late_noun}, by resolution.",
            ["resolution"],
            registry=r,
        )
        self.drift_records = Counter(
            f"{n.drift}_records",
            "Drift records written (one per late message and bar), by resolution.",
            ["resolution"],
            registry=r,
        )
        self.drift_alerts = Counter(
            f"{n.drift}_alerts",
            "Drift records above the alert threshold.",
            ["symbol", "resolution"],
            registry=r,
        )
        self.late_expired = Counter(
            n.late_expired,
            f"Late {n.late_noun} older than the drift retention: in the lake, flagged; no "
            "drift record.",
            registry=r,
        )
        # A labelled child looked up once: `labels()` costs ~0.75 us a call, and the
        # per-symbol steps count a few times per symbol per batch.
        self._outcome = {outcome: self.outcomes.labels(outcome) for outcome in OUTCOMES}
        self._emitted: dict[str, Any] = {}  # by resolution, made on first use

    def count(self, outcome: str, amount: int = 1) -> None:
        if amount:
            self._outcome[outcome].inc(amount)

    def count_bars(self, resolution: str, amount: int) -> None:
        """Bars (candles, quote bars) emitted at `resolution`."""
        child = self._emitted.get(resolution)
        if child is None:
            child = self._emitted[resolution] = self.bars.labels(resolution)
        child.inc(amount)

    def summary(self) -> dict[str, Any]:
        """Counts so far, as plain numbers (what the end-of-run log shows)."""
        outcomes = {o: int(_sample(self.outcomes, "_total", outcome=o)) for o in OUTCOMES}
        return {
            "received": int(_sample(self.received, "_total")),
            **outcomes,
            "rejected_by_reason": _by_label(self.rejected, "reason"),
            "bars_by_resolution": _by_label(self.bars, "resolution"),
            "restated_by_resolution": _by_label(self.restated, "resolution"),
            "drift_records": sum(_by_label(self.drift_records, "resolution").values()),
            "drift_alerts": sum(_by_label(self.drift_alerts, "resolution").values()),
            "drift_alerts_by_symbol": _by_label(self.drift_alerts, "symbol"),
            "late_expired": int(_sample(self.late_expired, "_total")),
        }


class QuoteMetrics(BranchMetrics):
    """The quotes branch's counters."""

    def __init__(self, registry: CollectorRegistry):
        super().__init__(registry, QUOTE_NAMES)


@dataclass
class FlowMetrics(BranchMetrics):
    """The trades branch's counters and histograms, and the quotes branch's (`quotes`)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        super().__init__(self.registry, TRADE_NAMES)
        r = self.registry
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
        self.quotes = QuoteMetrics(r)

    @property
    def candles(self) -> Counter:
        """Candles emitted by resolution (the trades branch's bars)."""
        return self.bars

    @classmethod
    def default(cls) -> FlowMetrics:
        """Metrics in the process-wide registry, next to Bytewax's own."""
        return cls(REGISTRY)

    def summary(self) -> dict[str, Any]:
        s = super().summary()
        return {
            **s,
            "candles_by_resolution": s["bars_by_resolution"],
            "late_by_lateness_s": _histogram(self.lateness),
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
