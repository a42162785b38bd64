"""Where this process sits in a Bytewax cluster, and the ports it may use.

Bytewax takes the process id from `-i/--process-id`, `BYTEWAX_PROCESS_ID`, or (the way
its Helm chart runs a StatefulSet) from the pod name minus the StatefulSet name. Every
process of a cluster may share a host, so each serves metrics on base port + process id.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

BYTEWAX_API_PORT = 3030  # Bytewax's default for its dataflow API (graph and /metrics)


def process_id(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    for index, arg in enumerate(argv):
        if arg in ("-i", "--process-id") and index + 1 < len(argv):
            return int(argv[index + 1])
        if arg.startswith("--process-id="):
            return int(arg.split("=", 1)[1])
    if env.get("BYTEWAX_PROCESS_ID"):
        return int(env["BYTEWAX_PROCESS_ID"])
    pod, statefulset = env.get("BYTEWAX_POD_NAME"), env.get("BYTEWAX_STATEFULSET_NAME")
    if pod and statefulset and pod.startswith(statefulset + "-"):
        return int(pod[len(statefulset) + 1 :])
    return 0


def offset_bytewax_api_port(pid: int, env: dict[str, str] | None = None) -> int | None:
    """When Bytewax's own API is enabled, move it to its base port + `pid` (set before
    the runtime starts it), so processes on one host do not collide."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    assert env is not None
    if env.get("BYTEWAX_DATAFLOW_API_ENABLED", "").lower() not in ("1", "true", "yes"):
        return None
    port = int(env.get("BYTEWAX_DATAFLOW_API_PORT", BYTEWAX_API_PORT)) + pid
    env["BYTEWAX_DATAFLOW_API_PORT"] = str(port)
    return port
