"""Process ids the way Bytewax derives them, and one metrics port per process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from candlewax.cluster import offset_bytewax_api_port, process_id
from tests.processes import ROOT
from tools.broker import free_port


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["bytewax.run", "flows.ohlcv", "-i", "3", "-a", "x"], {}, 3),
        (["bytewax.run", "flows.ohlcv", "--process-id=2"], {}, 2),
        (["bytewax.run"], {"BYTEWAX_PROCESS_ID": "1"}, 1),
        (
            ["bytewax.run"],
            {"BYTEWAX_POD_NAME": "candlewax-4", "BYTEWAX_STATEFULSET_NAME": "candlewax"},
            4,
        ),
        (["bytewax.run"], {}, 0),
    ],
)
def test_process_id(argv, env, expected):
    assert process_id(argv, env) == expected


def test_bytewax_api_port_moves_only_when_enabled():
    env = {"BYTEWAX_DATAFLOW_API_ENABLED": "true"}
    assert offset_bytewax_api_port(2, env) == 3032 and env["BYTEWAX_DATAFLOW_API_PORT"] == "3032"
    assert offset_bytewax_api_port(2, {}) is None


def fetch(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()


@pytest.mark.slow
def test_two_processes_on_one_host_serve_metrics_on_their_own_ports(tmp_path):
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    base, api = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))},
        "PYTHONPATH": str(ROOT),
        "CANDLEWAX_SOURCE": "simulator",
        "CANDLEWAX_SIM_TRADES": "0",
        "CANDLEWAX_SIM_SPEED": "1",
        "CANDLEWAX_METRICS_PORT": str(base),
        "CANDLEWAX_LAKE_DIR": str(tmp_path / "lake"),
        "BYTEWAX_DATAFLOW_API_ENABLED": "true",
        "BYTEWAX_DATAFLOW_API_PORT": str(api),
    }
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "flows.ohlcv", "-i", str(i), "-a", addresses],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    expected = {
        base: "candlewax_messages_received_total",
        base + 1: "candlewax_messages_received_total",
        api: 'worker_index="0"',  # Bytewax's own metrics, of each process's worker
        api + 1: 'worker_index="1"',
    }
    try:
        deadline = time.monotonic() + 60
        seen: set[int] = set()
        while time.monotonic() < deadline and len(seen) < len(expected):
            for port, text in expected.items():
                try:
                    if text in fetch(port):
                        seen.add(port)
                except OSError:
                    pass
            time.sleep(0.2)
        assert seen == set(expected), (
            f"ports answering as expected: {sorted(seen)} of {sorted(expected)}"
        )
    finally:
        for process in running:
            process.terminate()
        for process in running:
            process.wait(10)
