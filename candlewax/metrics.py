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

from prometheus_client import REGISTRY, CollectorRegistry, Counter, start_http_server

OUTCOMES = ("accepted", "duplicate", "filtered", "rejected", "late")
log = logging.getLogger("candlewax")


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
            "Candles emitted, by resolution.",
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
            ["resolution"],
            registry=r,
        )
        self.late_expired = Counter(
            "candlewax_late_expired",
            "Late trades older than the drift retention: in the lake, flagged; no drift record.",
            registry=r,
        )
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)

    @classmethod
    def default(cls) -> FlowMetrics:
        """Metrics in the process-wide registry, next to Bytewax's own."""
        return cls(REGISTRY)

    def count(self, outcome: str, amount: int = 1) -> None:
        if amount:
            self.outcomes.labels(outcome).inc(amount)

    def summary(self) -> dict[str, object]:
        """Counts so far, as plain numbers (what the end-of-run log shows)."""
        outcomes = {o: int(self.outcomes.labels(o)._value.get()) for o in OUTCOMES}
        return {
            "received": int(self.received._value.get()),
            **outcomes,
            "rejected_by_reason": _by_label(self.rejected, "reason"),
            "candles_by_resolution": _by_label(self.candles, "resolution"),
            "drift_records": sum(_by_label(self.drift_records, "resolution").values()),
            "drift_alerts": sum(_by_label(self.drift_alerts, "resolution").values()),
            "late_expired": int(self.late_expired._value.get()),
        }

    def log_summary(self) -> None:
        s = self.summary()
        total = sum(int(s[o]) for o in OUTCOMES)  # type: ignore[call-overload]
        balance = "they add up" if total == s["received"] else f"MISMATCH: outcomes sum to {total}"
        log.info(
            "run summary: received=%s accepted=%s duplicate=%s filtered=%s rejected=%s late=%s "
            "(%s); rejected by reason=%s; candles=%s; drift records=%s, alerts=%s",
            s["received"],
            s["accepted"],
            s["duplicate"],
            s["filtered"],
            s["rejected"],
            s["late"],
            balance,
            s["rejected_by_reason"],
            s["candles_by_resolution"],
            s["drift_records"],
            s["drift_alerts"],
        )


def _by_label(counter: Counter, label: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                values[sample.labels[label]] = int(sample.value)
    return values


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
