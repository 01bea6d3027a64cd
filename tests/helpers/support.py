"""Helpers for tests that run the daemon as a real process and scrape it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Callable, Optional, TypeVar

from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

EXPORTER = [sys.executable, "-m", "apigee_tls_exporter"]


# Ports below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 and up): a port
# the kernel hands out with bind(0) is also the source port of the next outgoing connection, so a
# server started on it a moment later can find it taken ("Address already in use"). Each process
# of the test run (pytest workers, other developers' runs) walks its own slice of this range.
_PORTS = range(20000, 32000)
_next_port = [_PORTS.start + (os.getpid() * 97) % len(_PORTS)]


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, outside the ephemeral range, never the same
    one twice in a process."""
    for _ in range(len(_PORTS)):
        port = _next_port[0]
        _next_port[0] = _PORTS.start + (port + 1 - _PORTS.start) % len(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on 127.0.0.1 between 20000 and 32000")


def wait_for(
    check: Callable[[], Optional[T]],
    timeout: float = 20.0,
    what: str = "it",
    *,
    interval: float = 0.02,
    detail: Optional[Callable[[], str]] = None,
) -> T:
    """Poll ``check`` until it returns something other than None/False, or fail at the deadline.

    An OSError, ValueError or KeyError from ``check`` means "not yet" (a server still starting, a
    half-written file); the last one is named in the failure, with ``detail()`` when given.
    """
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError, KeyError) as err:
            last_error = err
        else:
            if value is not None and value is not False:
                return value
        time.sleep(interval)  # polling interval, not a wait for an outcome
    more = detail() if detail is not None else ""
    raise AssertionError(
        f"timed out after {timeout:g}s waiting for {what} (last error: {last_error}){more}"
    )


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            yield s.name, dict(s.labels), s.value


class ExporterProcess:
    """``apigee-tls-exporter run`` in a subprocess, on 127.0.0.1 and a free port."""

    def __init__(self, *args: str, env: Optional[dict[str, str]] = None) -> None:
        self.port = free_port()
        self.args = [*EXPORTER, "run", "--listen", f"127.0.0.1:{self.port}", *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: Optional[subprocess.Popen[str]] = None

    def start(self) -> ExporterProcess:
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        # Ready, not merely serving: /metrics answers while the logs are being opened, and a line
        # written before a log's end is taken as the start is not the daemon's to count.
        wait_for(lambda: self.get("/-/ready"), what=f"the daemon on port {self.port} to say ready")
        return self

    def get(self, path: str) -> str:
        """The body of ``path``; an HTTP error status raises (an OSError)."""
        if self.proc is not None and self.proc.poll() is not None:
            out = self.proc.stdout.read() if self.proc.stdout else ""
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{out}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return str(response.read().decode())

    def scrape(self) -> str:
        return self.get("/metrics")

    def value(self, name: str, **labels: str) -> Optional[float]:
        for sample, sample_labels, value in samples(self.scrape()):
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return None

    def failures(self) -> dict[tuple[str, ...], float]:
        """``apigee_tls_handshake_failures_total`` by its labels, in FAILURE_LABELS order."""
        keys = ("org", "env", "api", "rev", "target", "reason", "key_alias")
        return {
            tuple(labels[k] for k in keys): value
            for name, labels, value in samples(self.scrape())
            if name == "apigee_tls_handshake_failures_total"
        }

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, str]:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def __enter__(self) -> ExporterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
