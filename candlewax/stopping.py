"""A clean stop on Ctrl-C or SIGTERM (what Kubernetes sends): no traceback, lake flushed.

Bytewax turns SIGINT into a `KeyboardInterrupt` inside whichever step runs, which comes
out as a Rust panic and a traceback. The flow's command installs `stop_on_signals()`
instead: the first signal asks the sources to end their input (`stop_requested()`), so
the dataflow drains and closes like a finished run (sinks flush), while the candle step
keeps its open windows rather than closing them early (a resumed run completes them). A
second signal stops at once, the default way.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger("candlewax")

_requested = threading.Event()
_signal_name: list[str] = []


def stop_requested() -> bool:
    return _requested.is_set()


def stopped_by() -> str | None:
    """The signal that asked for the stop, if one did."""
    return _signal_name[0] if _signal_name else None


def request_stop(reason: str = "request") -> None:
    if not _requested.is_set():
        _signal_name.append(reason)
        _requested.set()


def _on_signal(number: int, frame: FrameType | None) -> None:
    name = signal.Signals(number).name
    if _requested.is_set():
        signal.default_int_handler(number, frame)
        return
    log.warning("%s: stopping after the current batch (again to stop at once)", name)
    request_stop(name)
    signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else _on_signal)


def stop_on_signals() -> None:
    """Install the handlers (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
