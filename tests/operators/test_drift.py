"""The drift formula and the alert threshold."""

from __future__ import annotations

import math

import pytest

from candlewax.records import DRIFT_FIELDS
from operators.bars import Bar
from operators.drift import DriftPolicy, drift_record, relative_drift
from tests.factories import T0


def test_relative_drift():
    assert relative_drift(100.0, 100.5) == pytest.approx(0.005)
    assert relative_drift(100.0, 99.0) == pytest.approx(0.01)
    assert relative_drift(2.0, 2.0) == 0.0
    assert relative_drift(None, 5.0) == 1.0


def record(emitted: Bar | None, corrected: Bar, threshold: float = 0.005, fields=None):
    policy = DriftPolicy(threshold=threshold, **({"fields": fields} if fields else {}))
    return drift_record(
        symbol="A",
        resolution="1s",
        window_start=T0,
        window_ms=1000,
        emitted=emitted,
        corrected=corrected,
        revision=0,
        late_trades=1,
        max_lateness_ms=1500,
        detected_event_ts=T0 + 3000,
        policy=policy,
    )


def test_a_late_trade_moving_the_close_by_a_tenth_of_a_percent_is_not_an_alert():
    emitted = Bar.of_trade(T0, 0, 1000.0, 1000.0)
    late = Bar.of_trade(T0 + 1, 1, 1001.0, 0.001)
    result = record(emitted, emitted.merged(late))
    assert result.drift_close == pytest.approx(0.001)
    assert result.drift_trade_count == pytest.approx(1.0)
    # the trade count doubles (1 -> 2), but by default it raises no alert: prices moved 0.1 %
    assert result.drifted_fields == ""
    assert not result.alert
    counted = record(emitted, emitted.merged(late), fields=DRIFT_FIELDS)
    assert counted.alert and counted.drifted_fields == "trade_count"


def test_alert_fields_and_threshold_are_policy():
    emitted = Bar.of_trade(T0, 0, 1000.0, 1000.0)
    corrected = emitted.merged(Bar.of_trade(T0 + 1, 1, 1001.0, 0.001))
    quiet = record(emitted, corrected, fields=("close", "vwap"))
    assert not quiet.alert and quiet.drifted_fields == ""
    assert record(emitted, corrected, threshold=0.0005).drifted_fields == "high,close"


def test_a_bar_that_was_never_emitted_drifts_by_100_percent():
    late = Bar.of_trade(T0, 0, 10.0, 2.0)
    result = record(None, late)
    assert result.emitted_missing and result.alert
    assert result.max_drift == 1.0
    assert result.emitted_open is None and result.corrected_open == 10.0
    assert math.isclose(result.corrected_vwap, 10.0)
