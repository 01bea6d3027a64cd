"""The systemd notify protocol (sd_notify(3)) in a few lines of our own code.

A notification is one datagram of newline-separated ``KEY=VALUE`` assignments sent to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a path, or an abstract name written with a leading
``@``). When the variable is unset, as outside systemd or under ``Type=simple``, every call is a
no-op, so the daemon sends notifications unconditionally.

Under ``NotifyAccess=main`` systemd accepts messages only from the main process: send them from
the daemon process itself (any thread), never from a child.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Callable, Optional

import structlog

__all__ = ["Notifier"]

_log = structlog.get_logger(__name__)


class Notifier:
    """Sends state changes to the service manager; a no-op without ``$NOTIFY_SOCKET``."""

    def __init__(
        self,
        environ: Optional[Mapping[str, str]] = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        env = os.environ if environ is None else environ
        self._env = env
        self._monotonic_ns = monotonic_ns  # systemd wants CLOCK_MONOTONIC, as time.monotonic
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._socket: Optional[socket.socket] = None

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured."""
        return self._address is not None

    def ready(self, status: Optional[str] = None) -> bool:
        """Startup (or a reload) is complete: ``READY=1``, optionally with a status line."""
        return self.send("READY=1", *_status_field(status))

    def status(self, text: str) -> bool:
        """A short free-form progress line shown by ``systemctl status``."""
        return self.send(*_status_field(text))

    def watchdog(self) -> bool:
        """Keep-alive ping; must arrive at least every ``watchdog_interval()`` seconds."""
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """A reload has begun; follow with ``ready()`` once the new config is in force."""
        usec = self._monotonic_ns() // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Shutdown has begun."""
        return self.send("STOPPING=1")

    def watchdog_interval(self) -> Optional[float]:
        """The watchdog timeout in seconds, or None when no watchdog is set for this process.

        Ping at half this interval or more often, as sd_watchdog_enabled(3) advises.
        """
        try:
            usec = int(self._env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        pid = self._env.get("WATCHDOG_PID", "")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None  # meant for another process, e.g. the one that exec'd us
            except ValueError:
                return None
        return usec / 1_000_000

    def send(self, *fields: str) -> bool:
        """Send the ``KEY=VALUE`` fields as one datagram; False when disabled or on failure.

        A failure is logged, never raised: losing a notification must not stop the daemon (a
        missed watchdog ping is what makes systemd act).
        """
        if self._address is None or not fields:
            return False
        message = "\n".join(fields).encode("utf-8")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(message, self._address)
        except OSError as exc:
            _log.warning("notify failed", error=exc.strerror or str(exc), field=fields[0])
            return False
        return True

    def close(self) -> None:
        """Close the socket; a later send opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(value: str) -> Optional[str]:
    """``$NOTIFY_SOCKET`` as an address for ``sendto``: a path, or "\\0name" for "@name"."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value:
        _log.warning("notify socket ignored", reason="neither a path nor an abstract name")
    return None


def _status_field(text: Optional[str]) -> tuple[str, ...]:
    """``STATUS=text`` on one line (a newline would start another assignment), or nothing."""
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.splitlines()),)
