"""One line when Kafka becomes unreachable, one when it is back; librdkafka's own chatter
(hundreds of `FAIL` lines a minute during an outage) at DEBUG only.

Every Kafka client the flow makes (consumer, producer, admin) takes `client_config()`,
which routes librdkafka's log lines to the `candlewax.librdkafka` logger at DEBUG and its
error callbacks here. librdkafka retries by itself; what the operator needs is to know
what is unreachable, once, and when it recovers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from candlewax.failures import redact

log = logging.getLogger("candlewax")
_librdkafka_log = logging.getLogger("candlewax.librdkafka")

_UNREACHABLE = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
}


class _QuietLogger:
    """What librdkafka logs, at DEBUG: the line that matters comes from `KafkaHealth`."""

    def log(self, level: int, message: str, *args: Any) -> None:
        if _librdkafka_log.isEnabledFor(logging.DEBUG):
            _librdkafka_log.debug(redact(message % args if args else message))


class KafkaHealth:
    """Reachability of the brokers, as one client (`role`) sees it."""

    def __init__(self, role: str, brokers: str):
        self.role = role
        self.brokers = brokers
        self.down_since: float | None = None
        self.changed_at = -math.inf  # monotonic time it last went down or came back
        self.fatal: KafkaError | None = None
        self._lock = threading.Lock()

    def client_config(self) -> dict[str, Any]:
        return {"error_cb": self.on_error, "logger": _QuietLogger()}

    def helper_config(self) -> dict[str, Any]:
        """For a helper client whose answers the caller judges itself (a partition's
        question client, idle between questions): its errors at DEBUG only. An idle
        connection the broker closes (`connections.max.idle.ms`) says nothing about the
        flow's reading, and would log an outage that is not there."""

        def on_error(error: KafkaError) -> None:
            self.on_error(error, outage=False, quietly_as="helper client")

        return {"error_cb": on_error, "logger": _QuietLogger()}

    def producer_config(self, pending: Callable[[], int]) -> dict[str, Any]:
        """For a producer: an outage matters to it only while it has messages to deliver
        (`pending()`). An idle one (the dead-letter queue of a clean stream) would say
        "unreachable" and never "reachable again", since only a delivery shows that, and
        it serves the callbacks of a past outage at its next flush, even at the end of a
        run once the brokers are long back. Its errors meanwhile at DEBUG only."""

        def on_error(error: KafkaError) -> None:
            self.on_error(error, outage=pending() > 0, quietly_as="idle")

        return {"error_cb": on_error, "logger": _QuietLogger()}

    def on_error(self, error: KafkaError, outage: bool = True, quietly_as: str = "") -> None:
        """librdkafka's error callback: a fatal error is kept (the flow stops on it); one
        that says the brokers are unreachable is an outage if `outage`; the rest, and
        those, at DEBUG (`quietly_as` says which client)."""
        if error.fatal():
            self.fatal = error
        if outage and error.code() in _UNREACHABLE:
            self.unreachable(error.str())
        else:
            client = f" ({quietly_as})" if quietly_as else ""
            log.debug("Kafka %s%s: %s", self.role, client, redact(error.str()))

    def unreachable(self, cause: str) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = self.changed_at = time.monotonic()
        log.warning(
            "Kafka at %s is unreachable for the %s (%s); retrying quietly",
            self.brokers,
            self.role,
            redact(cause),
        )

    def reachable(self) -> None:
        with self._lock:
            since, self.down_since = self.down_since, None
            if since is not None:
                self.changed_at = time.monotonic()
        if since is not None:
            log.warning(
                "Kafka at %s is reachable again for the %s, after %.1f s",
                self.brokers,
                self.role,
                time.monotonic() - since,
            )
