"""Metrics are served over HTTP in the Prometheus text format."""

from __future__ import annotations

import urllib.request

from candlewax.metrics import FlowMetrics, serve_metrics
from tools.broker import free_port


def test_counters_are_served_on_the_metrics_port():
    metrics = FlowMetrics()
    metrics.received.inc(5)
    metrics.count("accepted", 4)
    metrics.count("rejected", 1)
    metrics.rejected.labels("invalid_json").inc()
    port = serve_metrics(free_port(), metrics.registry)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "candlewax_messages_received_total 5.0" in body
    assert 'candlewax_messages_total{outcome="accepted"} 4.0' in body
    assert 'candlewax_rejected_total{reason="invalid_json"} 1.0' in body


def test_a_taken_port_does_not_stop_the_flow():
    port = free_port()
    first = serve_metrics(port, FlowMetrics().registry)
    assert first == port
    assert serve_metrics(port, FlowMetrics().registry) is None
