"""`flows.ohlcv` run the ways users run it, all giving the same candles for the same input:
one worker, several workers, several processes (`-i/-a`), `python -m bytewax.testing -p`,
and processes started with a StatefulSet's environment (pod names and a hostfile)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.factories import RESOLUTIONS, T0
from tests.processes import ROOT, file_env, lake_candles, lake_table, run_flow_processes
from tests.reference import reference_candles
from tools.broker import free_port

pytestmark = pytest.mark.slow


def run_testing_cli(env: dict[str, str], processes: int) -> None:
    """`python -m bytewax.testing flows.ohlcv -p P` (it picks localhost:2101...)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))}
    full.update({"PYTHONPATH": str(ROOT), "CANDLEWAX_METRICS_PORT": "0", **env})
    command = [sys.executable, "-m", "bytewax.testing", "flows.ohlcv", "-p", str(processes)]
    result = subprocess.run(command, env=full, cwd=ROOT, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]


def run_as_statefulset(env: dict[str, str], pods: int, tmp_path) -> None:
    """Each process gets what a pod of the StatefulSet gets: its pod name, the set's name
    and a hostfile of every pod's address (here loopback ports instead of pod DNS)."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("".join(f"127.0.0.1:{free_port()}\n" for _ in range(pods)))
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))}
    full.update({"PYTHONPATH": str(ROOT), "CANDLEWAX_METRICS_PORT": "0", **env})
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "flows.ohlcv"],
            env={
                **full,
                "BYTEWAX_POD_NAME": f"candlewax-{i}",
                "BYTEWAX_STATEFULSET_NAME": "candlewax",
                "BYTEWAX_HOSTFILE_PATH": str(hostfile),
            },
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(pods)
    ]
    for process in running:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out.decode()[-3000:]


MODES = {
    "1 worker": lambda env, tmp: run_flow_processes(env),
    "3 workers": lambda env, tmp: run_flow_processes(env, workers=3),
    "2 processes x 2 workers": lambda env, tmp: run_flow_processes(env, processes=2, workers=2),
    "bytewax.testing -p 2": lambda env, tmp: run_testing_cli(env, 2),
    "StatefulSet of 2 pods": lambda env, tmp: run_as_statefulset(env, 2, tmp),
}


@pytest.fixture(scope="module")
def single(trades_file, tmp_path_factory):
    path, _ = trades_file
    lake = tmp_path_factory.mktemp("single") / "lake"
    run_flow_processes(file_env(path, lake))
    return lake


@pytest.fixture(params=list(MODES))
def scaled_lake(request, trades_file, tmp_path):
    path, _ = trades_file
    MODES[request.param](file_env(path, tmp_path / "lake"), tmp_path)
    return tmp_path / "lake"


def test_every_way_of_running_it_writes_the_same_candles(single, scaled_lake, trades_file):
    assert lake_candles(scaled_lake) == lake_candles(single)
    _, messages = trades_file
    expected = reference_candles(messages, 1_000, RESOLUTIONS, ts_max=T0 + 10**9)
    assert [row[0] for row in lake_candles(scaled_lake)] == expected.get_column("bar_id").to_list()
    drift = lake_table(scaled_lake, "drift").sort("bar_id", "late_trades")
    assert drift.drop("date").equals(
        lake_table(single, "drift").sort("bar_id", "late_trades").drop("date")
    )


def test_a_run_logs_its_summary_and_the_dlq_names_positions(trades_file, tmp_path):
    path, _ = trades_file
    logs = run_flow_processes(file_env(path, tmp_path / "lake"))
    assert "run summary" in logs[0] and "they add up" in logs[0]
    dlq = lake_table(tmp_path / "lake", "dlq")
    assert dlq.height > 0 and set(dlq.columns) >= {"raw", "reason", "field", "source", "date"}
    assert all(s.startswith(f"file:{path}@") for s in dlq.get_column("source"))
