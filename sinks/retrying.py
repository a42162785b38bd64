"""Writing through an outage: the one retry loop of the sinks that wait for a store.

A write that fails in a way a retry may fix (the server restarting, a dropped
connection) is tried again with backoff (0.1 s doubling to 5 s) until it succeeds or the
outage has lasted longer than the timeout; anything else fails at once. The first
failure of an outage and its end are logged, each once, with the cause (secrets masked).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from candlewax.failures import OutputError, redact

log = logging.getLogger(__name__)


@dataclass
class Retrying:
    """How one output retries: what it is (for messages), which errors are worth another
    try, how long an outage may last, and what to do after each failed try."""

    what: str
    retryable: Callable[[BaseException], bool]
    timeout_s: float
    after_failure: Callable[[], None] = lambda: None  # drop a broken connection, say
    on_retry: Callable[[], None] = lambda: None  # count it
    sleep: Callable[[float], None] = field(default=time.sleep)

    def run(
        self, attempt: Callable[[], None], pending: str, stop: Callable[[], bool] = bool
    ) -> bool:
        """`attempt()` until it succeeds (True), or `stop()` says to give up (False).
        Raises `OutputError` for an error no retry fixes, or an outage past the timeout."""
        outage_since: float | None = None
        delay = 0.1
        while not stop():
            try:
                attempt()
            except Exception as error:
                self.after_failure()
                cause = redact(f"{type(error).__name__}: {error}".strip())
                if not self.retryable(error):
                    raise OutputError(self.what, cause) from None
                now = time.monotonic()
                if outage_since is None:
                    outage_since = now
                    log.warning(
                        "%s: %s; retrying %s (for up to %.0f s)",
                        self.what, cause, pending, self.timeout_s,
                    )  # fmt: skip
                elif now - outage_since > self.timeout_s:
                    raise OutputError(
                        self.what, f"still failing after {now - outage_since:.0f} s: {cause}"
                    ) from None
                self.on_retry()
                self.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if outage_since is not None:
                log.warning(
                    "%s: written again after %.1f s", self.what, time.monotonic() - outage_since
                )
            return True
        return False
