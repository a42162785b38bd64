"""Reconcile a lake of >= 2 M trades: how long it takes and what it finds.

    python -m bench.reconcile [--trades 2000000]

Simulates trades with faults (late, out of order, duplicates, malformed), runs the flow
over them into a lake twice (restatement off, then on), and reconciles each lake against
its own trades. Off, the late trades show as drift; on, every bar equals the truth.
"""

from __future__ import annotations

import argparse
import shutil
import time

from bench.common import DATA, run_flow, trades_file
from config.settings import Settings
from tools.bar_truth import ReconcileScope, reconcile
from tools.reconcile import print_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trades", type=int, default=2_000_000)
    args = parser.parse_args()
    source = trades_file(
        args.trades,
        seed=3,
        duplicate_rate=0.01,
        disorder_rate=0.02,
        late_rate=0.005,
        malformed_rate=0.005,
    )
    for restatement in (False, True):
        lake = DATA / f"lake-{args.trades}-{'restated' if restatement else 'plain'}"
        shutil.rmtree(lake, ignore_errors=True)
        began = time.perf_counter()
        summary = run_flow(
            Settings(
                source="file",
                source_path=source,
                lake_dir=lake,
                kafka_brokers="",
                metrics_port=0,
                restatement=restatement,
                restatement_horizon=3_600_000,
            )
        ).summary()
        print(
            f"\nflow (restatement {'on' if restatement else 'off'}): "
            f"{time.perf_counter() - began:.1f} s, "
            f"accepted {summary['accepted']:,}, late {summary['late']:,}, "
            f"duplicate {summary['duplicate']:,}, rejected {summary['rejected']:,}"
        )
        result = reconcile(lake, ReconcileScope())
        print_summary(result.summary, result.worst[:5])


if __name__ == "__main__":
    main()
