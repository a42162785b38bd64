"""Recovery in-process, the Bytewax way: a run interrupted twice and resumed from its
recovery directory gives the output of a run that was never interrupted, on 1 and 2
workers. (The SIGKILL test against the real broker is `tests/integration/test_recovery.py`.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from candlewax.metrics import FlowMetrics
from candlewax.records import Candle, DriftRecord, Rejection, candle_frame
from flows.ohlcv import FlowSinks, build_flow
from sources.testing import raw_batches
from tests import factories
from tests.factories import faulty_stream
from tests.flow_runs import CrashingSource, run_flow

INTERRUPT_BEFORE = (8, 14)  # batches of 1,000 messages


def run_interrupted(messages: list[bytes], workers: int, recovery: str) -> tuple[dict, list[int]]:
    """Run until the input ends, resuming after each interruption; outputs of every run
    together, and how many messages each run received."""
    batches = list(raw_batches(messages, 1_000))
    if workers == 1:  # Bytewax's own interruption: AbortExecution at these items
        items: list[Any] = list(batches)
        for at in sorted(INTERRUPT_BEFORE, reverse=True):
            items.insert(at, TestingSource.ABORT())
        source: Any = TestingSource(items)
    else:  # ABORT cannot stop the other workers: a crash does
        source = CrashingSource(batches, INTERRUPT_BEFORE)
    out: dict[str, list[Any]] = {name: [] for name in ("candles", "trades", "drift", "dlq")}
    received = []
    for _ in range(len(INTERRUPT_BEFORE) + 1):
        metrics = FlowMetrics()
        sinks = FlowSinks(**{name: [TestingSink(items)] for name, items in out.items()})
        flow = build_flow(factories.settings(), source=source, sinks=sinks, metrics=metrics)
        recovery_config = RecoveryConfig(recovery)
        try:
            if workers == 1:
                run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery_config)
            else:
                cluster_main(
                    flow,
                    [],
                    0,
                    epoch_interval=timedelta(0),
                    recovery_config=recovery_config,
                    worker_count_per_proc=workers,
                )
        except Exception as error:
            assert "planned crash" in repr(error.__cause__) or "planned crash" in str(error)
        received.append(int(metrics.summary()["received"]))
    out["candles"] = Candle.rows(candle_frame(out["candles"]))
    for name, kind in {"drift": DriftRecord, "dlq": Rejection}.items():
        out[name] = [row for frame in out[name] for row in kind.rows(frame)]
    return out, received


def test_an_interrupted_run_resumes_to_the_output_of_an_uninterrupted_one(tmp_path, workers):
    messages = faulty_stream(20_000, seed=5)
    init_db_dir(tmp_path, 2)
    out, received = run_interrupted(messages, workers, str(tmp_path))
    whole = run_flow(messages, workers=workers, batch_size=1_000)

    # Each run resumed from a snapshot: none read the input from the start again.
    assert len(received) == 3 and all(0 < r < len(messages) for r in received), received
    assert sum(received) >= len(messages)

    # Candles: every bar of the uninterrupted run, and a bar written twice is the same bar.
    def rows(candles):
        return {
            (c.bar_id, c.revision): (
                c.open,
                c.high,
                c.low,
                c.close,
                c.volume,
                c.vwap,
                c.trade_count,
            )
            for c in candles
        }

    resumed = rows(out["candles"])
    assert len(resumed) == len({(c.bar_id, c.revision) for c in out["candles"]})
    assert resumed == rows(whole.candles)
    repeats = {}
    for c in out["candles"]:
        repeats.setdefault((c.bar_id, c.revision), set()).add(c.close)
    assert all(len(v) == 1 for v in repeats.values()), "a bar re-emitted with another value"

    # Rejections: each message once or more, and none missing.
    assert {r.source for r in out["dlq"]} == {r.source for r in whole.dlq}
    assert {(d.bar_id, d.late_trades) for d in out["drift"]} == {
        (d.bar_id, d.late_trades) for d in whole.drift
    }
