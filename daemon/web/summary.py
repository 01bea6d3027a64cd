"""Repeated events of the HTTP server, logged once per interval and then summarised with a count.

A flood of refused connections or failed logins must not become a flood of log lines: the first
event of each kind per ``SUMMARY_INTERVAL`` is logged with its context, the others are counted
and logged as one line per kind at the end of the interval (``LogSummary.flush``).
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable

__all__ = ["EVENTS", "SUMMARY_INTERVAL", "LogSummary"]

SUMMARY_INTERVAL = 60.0  # seconds between summaries of repeated events

# What each summarised event is logged as, and at which level.
EVENTS = {
    "busy": ("http connection refused", "warning"),
    "evicted": ("http waiting connection closed for a new one", "info"),
    "tls_handshake": ("tls handshake failed", "info"),
    "tls_client_san": ("tls client certificate not allowed", "warning"),
    "header_timeout": ("http request head timed out", "info"),
    "write_timeout": ("http client did not read its answer", "info"),
    "slow_reader": ("http slowest reader closed, send budget full", "warning"),
    "bad_request": ("http bad request", "info"),
    "head_too_large": ("http request head too large", "info"),
    "auth_failed": ("http login failed", "warning"),
    "auth_busy": ("http login refused, too many waiting", "warning"),
    "collect_failed": ("metrics collection failed", "error"),
    "loop_error": ("http server error", "error"),
    "handler_failed": ("http handler failed", "error"),
}


class LogSummary:
    """Logs the first event of each kind per interval with its context, counts the others, and
    at the end of the interval logs one line per kind with the count of those not logged."""

    def __init__(
        self,
        logger: Any,
        interval: float = SUMMARY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._logged: dict[str, float] = {}  # kind -> when it was last logged in full
        self._suppressed: collections.Counter[str] = collections.Counter()

    def event(self, kind: str, **context: Any) -> None:
        message, level = EVENTS.get(kind, (kind, "info"))
        now = self._clock()
        last = self._logged.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] += 1
            return
        self._logged[kind] = now
        getattr(self._logger, level)(message, **context)

    def flush(self) -> None:
        """One line per kind of the events counted but not logged; call every interval."""
        for kind, count in sorted(self._suppressed.items()):
            message, level = EVENTS.get(kind, (kind, "info"))
            getattr(self._logger, level)(
                message + " (repeated)", count=count, seconds=round(self._interval)
            )
        self._suppressed.clear()
        now = self._clock()
        for kind in [k for k, at in self._logged.items() if now - at >= self._interval]:
            del self._logged[kind]
