"""Child processes that never outlive the tool that started them."""

from __future__ import annotations

import signal
import sys


def stop_with_parent() -> None:
    """A `preexec_fn`: in the child, before it runs, ask Linux to send it SIGTERM when its
    parent dies, even by SIGKILL, so no orphan keeps running (a broker holding its port,
    a flow tailing a topic). Call it only before the parent starts threads."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
