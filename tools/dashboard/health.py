"""Pipeline health for the dashboard's strip, read from the flow's `/metrics` endpoints.

A flow of several processes serves one endpoint per process; the dashboard scrapes them
all and adds the samples up (counters, gauges and histogram buckets alike add across
processes), then turns two scrapes into rates: messages per second by outcome, rejects
by reason, drift alerts, the consumer lag and the 99th percentile of the candle delay
over the last interval (`histogram_quantile` as Prometheus computes it).
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SampleKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


@dataclass(frozen=True)
class Scrape:
    """The samples of every endpoint, added up, at one moment (`time.monotonic()`)."""

    at: float
    samples: dict[SampleKey, float]
    endpoints: int
    up: int
    errors: tuple[str, ...] = ()

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= set(ls))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        values: dict[str, float] = {}
        for (n, labels), value in self.samples.items():
            if n == name:
                key = dict(labels).get(label, "")
                values[key] = values.get(key, 0.0) + value
        return values


def parse_samples(text: str, into: dict[SampleKey, float] | None = None) -> dict[SampleKey, float]:
    """The samples of a Prometheus text exposition, added to `into`."""
    samples = {} if into is None else into
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = samples.get(key, 0.0) + float(sample.value)
    return samples


def scrape(urls: Sequence[str], timeout_s: float = 1.0) -> Scrape:
    """Read every endpoint; one that cannot be read is reported, not fatal."""
    samples: dict[SampleKey, float] = {}
    errors: list[str] = []
    up = 0
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                parse_samples(response.read().decode("utf-8", "replace"), samples)
            up += 1
        except (OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
    return Scrape(time.monotonic(), samples, len(urls), up, tuple(errors))


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram given as (upper bound, cumulative count) pairs, by
    linear interpolation inside the bucket, as Prometheus's `histogram_quantile` does;
    None without observations. In the +Inf bucket it is the highest finite bound."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class Health:
    """What the strip shows; `as_json()` is what the page receives."""

    processes_up: int = 0
    processes: int = 0
    trades_per_s: dict[str, float] = field(default_factory=dict)
    quotes_per_s: dict[str, float] = field(default_factory=dict)
    consumer_lag: float | None = None
    rejected: dict[str, float] = field(default_factory=dict)
    rejected_per_s: float = 0.0
    drift_alerts: float = 0.0
    drift_alerts_per_s: float = 0.0
    candle_delay_p99_s: float | None = None
    restated: float = 0.0
    errors: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "processes_up": self.processes_up,
            "processes": self.processes,
            "trades_per_s": self.trades_per_s,
            "quotes_per_s": self.quotes_per_s,
            "consumer_lag": self.consumer_lag,
            "rejected": self.rejected,
            "rejected_per_s": self.rejected_per_s,
            "drift_alerts": self.drift_alerts,
            "drift_alerts_per_s": self.drift_alerts_per_s,
            "candle_delay_p99_s": self.candle_delay_p99_s,
            "restated": self.restated,
            "errors": list(self.errors),
        }


def health(previous: Scrape | None, current: Scrape) -> Health:
    """The health between two scrapes (rates need both; totals only the current one)."""
    seconds = current.at - previous.at if previous is not None else 0.0

    def rates(name: str, label: str) -> dict[str, float]:
        now = current.by_label(name, label)
        if previous is None or seconds <= 0:
            return {key: 0.0 for key in now}
        before = previous.by_label(name, label)
        # A restarted process starts its counters again: never a negative rate.
        return {k: max(0.0, v - before.get(k, 0.0)) / seconds for k, v in now.items()}

    def rate(name: str) -> float:
        if previous is None or seconds <= 0:
            return 0.0
        return max(0.0, current.total(name) - previous.total(name)) / seconds

    lag_samples = current.by_label("candlewax_kafka_consumer_lag", "topic")
    return Health(
        processes_up=current.up,
        processes=current.endpoints,
        trades_per_s=rates("candlewax_messages_total", "outcome"),
        quotes_per_s=rates("candlewax_quotes_total", "outcome"),
        consumer_lag=sum(lag_samples.values()) if lag_samples else None,
        rejected={k: v for k, v in current.by_label("candlewax_rejected_total", "reason").items()},
        rejected_per_s=rate("candlewax_rejected_total"),
        drift_alerts=current.total("candlewax_drift_alerts_total"),
        drift_alerts_per_s=rate("candlewax_drift_alerts_total"),
        candle_delay_p99_s=_delay_p99(previous, current),
        restated=current.total("candlewax_candles_restated_total"),
        errors=current.errors,
    )


def _delay_p99(previous: Scrape | None, current: Scrape) -> float | None:
    """The p99 of the base candles' delay over the last interval, or over the whole run
    when the interval saw no candle."""
    name = "candlewax_candle_delay_seconds_bucket"
    now = current.by_label(name, "le")
    recent = now
    if previous is not None:
        before = previous.by_label(name, "le")
        recent = {le: count - before.get(le, 0.0) for le, count in now.items()}
    for counts in (recent, now):
        value = histogram_quantile(0.99, ((float(le), c) for le, c in counts.items()))
        if value is not None:
            return value
    return None
