"""The HTTP endpoint over plain HTTP: routes, exposition formats, binding, shutdown."""

from __future__ import annotations

import gzip
import http.client
import os
import re
import resource
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import structlog
import structlog.testing
from apigee_tls_exporter.config import parse_listen
from apigee_tls_exporter.web import connection, guard
from apigee_tls_exporter.web import serve as serve_module
from apigee_tls_exporter.web import summary as web_summary
from apigee_tls_exporter.web.process import BootTimeProcessCollector
from apigee_tls_exporter.web.serve import MetricsServer, serve
from helpers.http_load import start_load, timed_scrapes
from helpers.support import ExporterProcess, wait_for
from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.registry import Collector

Start = Callable[..., MetricsServer]


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry with one counter at 3."""
    registry = CollectorRegistry()
    counter = Counter("apigee_tls_test_total", "A test counter.", registry=registry)
    counter.inc(3)
    return registry


def get(
    server: MetricsServer,
    path: str,
    headers: Optional[dict[str, str]] = None,
    method: str = "GET",
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One request; returns status, headers (lower-case names) and body."""
    connection = http.client.HTTPConnection(host, server.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def test_metrics_in_prometheus_text_format(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """GET /metrics returns the registry in the Prometheus text format."""
    server = start_server(registry)

    status, headers, body = get(server, "/metrics")

    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"apigee_tls_test_total 3.0\n" in body


def test_metrics_in_openmetrics_when_accepted(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """An Accept header asking for OpenMetrics gets OpenMetrics, with its # EOF terminator."""
    server = start_server(registry)

    status, headers, body = get(
        server, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )

    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_metrics_gzip_when_accepted(registry: CollectorRegistry, start_server: Start) -> None:
    """Accept-Encoding: gzip gets a gzip body that decompresses to the metrics."""
    server = start_server(registry)

    status, headers, body = get(server, "/metrics", {"Accept-Encoding": "gzip"})

    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert b"apigee_tls_test_total 3.0" in gzip.decompress(body)


def test_metrics_name_filter(registry: CollectorRegistry, start_server: Start) -> None:
    """name[]= restricts the output to the named metrics, as prometheus_client does."""
    Counter("other_total", "Another counter.", registry=registry)
    server = start_server(registry)

    _, _, body = get(server, "/metrics?name[]=other_total")

    assert b"other_total" in body
    assert b"apigee_tls_test_total" not in body


def test_index_page_links_to_metrics(registry: CollectorRegistry, start_server: Start) -> None:
    """GET / returns a small HTML page that links to /metrics."""
    server = start_server(registry)

    status, headers, body = get(server, "/")

    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b'<a href="/metrics">' in body


def test_other_paths_are_404(registry: CollectorRegistry, start_server: Start) -> None:
    """Any path other than / and /metrics is 404."""
    server = start_server(registry)

    assert [get(server, "/metrics/x")[0], get(server, "/favicon.ico")[0]] == [404, 404]


def test_head_has_headers_but_no_body(registry: CollectorRegistry, start_server: Start) -> None:
    """HEAD /metrics answers 200 with a Content-Length and an empty body."""
    server = start_server(registry)

    status, headers, body = get(server, "/metrics", method="HEAD")

    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0


def test_post_is_405(registry: CollectorRegistry, start_server: Start) -> None:
    """Methods other than GET and HEAD are 405 with an Allow header."""
    server = start_server(registry)

    status, headers, _ = get(server, "/metrics", method="POST")

    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_server_header_does_not_reveal_python_version(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """The Server header names the exporter only, not the Python version."""
    server = start_server(registry)

    _, headers, _ = get(server, "/")

    assert headers["server"] == "apigee-tls-exporter"


def test_failing_collector_is_500_and_server_keeps_serving(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """A collector that raises gives a 500 for that scrape; the next request is served."""

    class Broken(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    broken = Broken()
    registry.register(broken)
    server = start_server(registry)

    assert get(server, "/metrics")[0] == 500
    registry.unregister(broken)
    assert get(server, "/metrics")[0] == 200


def test_port_zero_binds_a_free_port(registry: CollectorRegistry, start_server: Start) -> None:
    """Port 0 binds an ephemeral port, readable from server.port and server.server_address."""
    server = start_server(registry)

    assert server.port > 0
    assert server.port == server.server_address[1]


def test_all_interfaces_serves_ipv4_and_ipv6(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """Host "" listens on all interfaces: both 127.0.0.1 and ::1 reach it."""
    server = start_server(registry, host="")

    assert get(server, "/", host="127.0.0.1")[0] == 200
    assert get(server, "/", host="::1")[0] == 200


def test_ipv6_loopback(registry: CollectorRegistry, start_server: Start) -> None:
    """An IPv6 host binds that address."""
    server = start_server(registry, host="::1")

    assert get(server, "/metrics", host="::1")[0] == 200


def test_shutdown_stops_thread_and_frees_port(registry: CollectorRegistry) -> None:
    """shutdown() plus server_close() ends the thread and closes the listening socket."""
    server, thread = serve(registry, "127.0.0.1", 0)
    port = server.port
    assert get(server, "/")[0] == 200

    server.shutdown()
    server.server_close()
    thread.join(timeout=5)

    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_port_in_use_raises_oserror(registry: CollectorRegistry, start_server: Start) -> None:
    """Binding a port already in use raises OSError (for the CLI to report in one line)."""
    server = start_server(registry)

    with pytest.raises(OSError):
        MetricsServer(registry, "127.0.0.1", server.port)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (":9847", ("", 9847)),
        ("127.0.0.1:9847", ("127.0.0.1", 9847)),
        ("[::1]:9847", ("::1", 9847)),
        ("[::]:9847", ("", 9847)),
        ("localhost:0", ("localhost", 0)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_parse_listen_accepts(value: str, expected: tuple[str, int]) -> None:
    """parse_listen splits HOST:PORT, IPv6 in brackets; an empty host or :: means all."""
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9847", "expected HOST:PORT"),
        ("127.0.0.1:", "port must be a number"),
        ("127.0.0.1:http", "port must be a number"),
        ("127.0.0.1:65536", "port must be a number 0-65535"),
        ("::1:9847", "put an IPv6 address in brackets"),
        ("[::1]9847", "expected [IPV6]:PORT"),
        ("[]:9847", "expected [IPV6]:PORT"),
    ],
)
def test_parse_listen_rejects(value: str, message: str) -> None:
    """A malformed listen address raises ValueError quoting it, with what was expected."""
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        parse_listen(value)

    assert repr(value) in str(info.value)


def test_process_metrics_without_proc_stat(tmp_path: Path) -> None:
    """BootTimeProcessCollector exports process metrics where /proc/stat is hidden (ProcSubset=pid),
    with a start time matching the real one."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "self").symlink_to("/proc/self")  # per-process files only, no proc/stat
    registry = CollectorRegistry()
    stock = CollectorRegistry()

    BootTimeProcessCollector(proc=str(proc), registry=registry)
    ProcessCollector(registry=stock)

    start = registry.get_sample_value("process_start_time_seconds")
    expected = stock.get_sample_value("process_start_time_seconds")
    assert start is not None and expected is not None
    assert abs(start - expected) < 2.0
    assert registry.get_sample_value("process_open_fds") is not None


# ---------------------------------------------------------------------------------------------
# HTTP/1.1: keep-alive, pipelining, malformed requests


def raw_exchange(server: MetricsServer, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes; everything it sent."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_keep_alive_serves_requests_on_one_connection(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """HTTP/1.1 requests are answered with HTTP/1.1 on a persistent connection (the default in
    1.1, no Connection header needed): three scrapes, one socket."""
    server = start_server(registry)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        answers = []
        sockets = []
        for _ in range(3):
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            answers.append((response.status, response.version, response.getheader("Connection")))
            response.read()
            sockets.append(connection.sock)
    finally:
        connection.close()

    assert answers == [(200, 11, None)] * 3
    assert sockets[0] is not None and sockets[0] is sockets[1] is sockets[2]
    assert registry.get_sample_value("apigee_tls_http_requests_total", {"code": "200"}) == 3


def test_pipelined_requests_are_answered_in_order(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """Two requests sent in one write get two answers, in order; Connection: close on the
    second ends the connection."""
    server = start_server(registry)

    data = raw_exchange(
        server,
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )

    statuses = re.findall(rb"^HTTP/1\.1 (\d{3}) ", data, re.MULTILINE)
    assert statuses == [b"200", b"404"]
    assert data.rstrip().endswith(b"Not Found")


def test_http10_closes_unless_keep_alive_is_asked(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """An HTTP/1.0 request is answered and the connection closed (no keep-alive asked)."""
    server = start_server(registry)

    data = raw_exchange(server, b"GET /-/healthy HTTP/1.0\r\n\r\n")

    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in data


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"NOT-HTTP\r\n\r\n", b"400", "bad_request"),
        (b"GET / HTTP/2.0\r\n\r\n", b"505", "bad_request"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400", "bad_request"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", b"431", "head_too_large"),
    ],
)
def test_malformed_requests_are_refused(
    registry: CollectorRegistry,
    start_server: Start,
    request_bytes: bytes,
    status: bytes,
    reason: str,
) -> None:
    """A malformed request line or header, another HTTP version or an oversized head gets its
    4xx/5xx and the connection is closed; the refusal is counted by reason."""
    server = start_server(registry)

    data = raw_exchange(server, request_bytes)

    assert data.split(b" ", 2)[1] == status
    assert b"Connection: close" in data
    assert registry.get_sample_value("apigee_tls_http_rejected_total", {"reason": reason}) == 1


def test_request_head_has_a_deadline_whatever_the_pace(
    registry: CollectorRegistry, start_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending its head a byte at a time is cut off at the head deadline even though
    it never stops sending (a per-read timeout would never fire)."""
    monkeypatch.setattr(connection, "HEADER_TIMEOUT", 1.0)
    server = start_server(registry)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
    sock.settimeout(0.1)  # the client's pace: one byte per 0.1 s, for up to 10 s
    started = time.monotonic()
    closed = False
    try:
        for _ in range(100):
            try:
                sock.sendall(b"a")
                closed = sock.recv(1) == b""
            except socket.timeout:
                continue
            except OSError:
                closed = True
            if closed:
                break
    finally:
        sock.close()
    elapsed = time.monotonic() - started

    assert closed and elapsed < 5.0
    assert (
        registry.get_sample_value("apigee_tls_http_rejected_total", {"reason": "header_timeout"})
        == 1
    )


# ---------------------------------------------------------------------------------------------
# Health endpoints


def test_healthy_and_ready_through_start_up(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """/-/healthy is 200 from the start; /-/ready is 503 (naming the phase) until the daemon is
    ready; /metrics is 503 only while the checkpoint is being restored (its counters would
    read 0, a reset to Prometheus)."""
    phase = [serve_module.RESTORING]
    server = start_server(registry, phase=lambda: phase[0])
    seen = []
    for step in (serve_module.RESTORING, serve_module.OPENING, serve_module.READY):
        phase[0] = step
        seen.append(
            (
                get(server, "/-/healthy")[0],
                get(server, "/-/ready")[:3:2],
                get(server, "/metrics")[0],
            )
        )

    assert seen == [
        (200, (503, b"Not ready: restoring the checkpoint.\n"), 503),
        (200, (503, b"Not ready: opening the logs.\n"), 200),
        (200, (200, b"Ready.\n"), 200),
    ]


def test_daemon_with_a_fifo_as_state_file_is_healthy_and_ready(tmp_path: Path) -> None:
    """The real daemon with a FIFO where its state file should be: the restore does not block on
    it (it is said what it is, and the daemon starts fresh), /-/healthy, /-/ready and /metrics
    answer 200, the status page lists the log, and the FIFO is left as it is. (The 503s while
    restoring and opening are in the test above, driven step by step.)"""
    log = tmp_path / "system.log"
    log.touch()
    state = tmp_path / "state.json"
    os.mkfifo(state)
    daemon = ExporterProcess("--log", str(log), "--state-file", str(state))

    def status(path: str) -> int:
        url = f"http://127.0.0.1:{daemon.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    daemon.proc = subprocess.Popen(
        daemon.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: status("/-/ready") == 200, what="/-/ready")
        ready = (status("/-/healthy"), status("/metrics"))
        url = f"http://127.0.0.1:{daemon.port}/"
        with urllib.request.urlopen(url, timeout=5) as response:
            page = response.read().decode()
    finally:
        code, out = daemon.stop()

    assert (ready, code) == ((200, 200), 0), out
    assert "state file is not a regular file, starting fresh" in out
    assert stat.S_ISFIFO(os.stat(state).st_mode)
    assert f"<td>{log}</td>" in page  # the status page lists the followed log


# ---------------------------------------------------------------------------------------------
# Many connections


def test_full_server_closes_the_longest_waiting_connection_for_a_new_one(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """At the connection limit a new connection is served: the connection waiting longest
    without a complete request is closed for it (counted as evicted)."""
    server = start_server(registry)
    server.max_connections = 4
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(4)]
    try:
        wait_for(lambda: server.stats.connections == 4, 10, "four open connections")

        status = get(server, "/metrics")[0]

        idle[0].settimeout(10)
        assert (status, idle[0].recv(1)) == (200, b"")  # the oldest was closed
    finally:
        for sock in idle:
            sock.close()
    assert registry.get_sample_value("apigee_tls_http_rejected_total", {"reason": "evicted"}) == 1


def _raise_nofile(minimum: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < minimum:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(minimum, hard), hard))


@pytest.mark.slow
def test_slowloris_does_not_delay_scrapes(registry: CollectorRegistry, start_server: Start) -> None:
    """200 connections sending their heads a byte a second (cut off at the head deadline and
    coming back): a scrape every 0.5 s for 12 s, each on a new connection, is answered within
    1 s every time. (The thread-per-connection server refused every scrape: its 32 slots were
    held forever.)"""
    _raise_nofile(2048)
    server = start_server(registry)
    with structlog.testing.capture_logs() as logs:
        attack = start_load("slowloris", server.port, 200, 16)
        try:
            results = timed_scrapes(lambda: get(server, "/metrics")[0], 24)
        finally:
            attack.terminate()
            attack.wait(timeout=10)

    assert [status for status, _ in results] == [200] * 24
    assert max(seconds for _, seconds in results) < 1.0
    assert (
        registry.get_sample_value("apigee_tls_http_rejected_total", {"reason": "header_timeout"})
        or 0
    ) >= 200  # the attack ran: every slow head was cut off at least once
    # ... and logged once (the others are summed up at the end of the minute), not 200+ times.
    assert [e["event"] for e in logs].count("http request head timed out") == 1


# ---------------------------------------------------------------------------------------------
# Logs that cannot flood; the login limiter


class ListLogger:
    """A logger that keeps (level, event, context) of each call."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **kw: self.lines.append((level, event, kw))


def test_log_summary_logs_once_per_interval_then_counts() -> None:
    """1,000 events of one kind in an interval: the first logged with its context, the others
    summed up in one line at the flush; the next interval logs its first event again."""
    logger = ListLogger()
    now = [0.0]
    summary = web_summary.LogSummary(logger, interval=60, clock=lambda: now[0])

    for i in range(1000):
        summary.event("auth_failed", client=f"127.0.0.1:{i}")
    summary.event("tls_handshake", client="127.0.0.1:1", error="unknown ca")
    now[0] = 60.0
    summary.flush()
    summary.event("auth_failed", client="127.0.0.1:5")

    assert logger.lines == [
        ("warning", "http login failed", {"client": "127.0.0.1:0"}),
        ("info", "tls handshake failed", {"client": "127.0.0.1:1", "error": "unknown ca"}),
        ("warning", "http login failed (repeated)", {"count": 999, "seconds": 60}),
        ("warning", "http login failed", {"client": "127.0.0.1:5"}),
    ]


def test_limiter_delays_a_failing_source_and_doubles() -> None:
    """Below five consecutive failures a 401 goes out at once; from five it waits 1 s, from ten
    2 s, up to 8 s; other sources are not affected; a success clears the source and its
    priority."""
    limiter = guard.SourceLimiter(threshold=5, backoff=1.0, max_backoff=8.0)

    def fail(source: str, times: int) -> None:
        for _ in range(times):
            assert limiter.begin(source)
            limiter.end(source, False)

    delays = []
    for _ in range(5):
        fail("10.0.0.1", 4)
        delays.append(limiter.delay("10.0.0.1"))
        fail("10.0.0.1", 1)
        delays.append(limiter.delay("10.0.0.1"))
    other = limiter.delay("10.0.0.2")
    assert limiter.begin("10.0.0.1")
    limiter.end("10.0.0.1", True)

    assert delays == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0, 8.0]
    assert other == 0.0
    assert (limiter.delay("10.0.0.1"), limiter.priority("10.0.0.1")) == (0.0, 0)


def test_limiter_memory_is_bounded_and_pending_capped() -> None:
    """However many addresses fail, at most max_sources are remembered; a source has at most
    max_pending checks waiting."""
    limiter = guard.SourceLimiter(max_sources=100, max_pending=2)
    for i in range(10_000):
        limiter.begin(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")

    assert len(limiter) == 100
    assert [limiter.begin("192.0.2.1") for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(
    ("peer", "source"),
    [
        (("192.0.2.7", 5000), "192.0.2.7"),
        (("2001:db8:1:2:aaaa::1", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("::ffff:192.0.2.7", 5000, 0, 0), "192.0.2.7"),
    ],
)
def test_source_of_groups_ipv6_by_64(peer: tuple[Any, ...], source: str) -> None:
    """IPv4 sources are limited per address, IPv6 per /64 (one host's share), mapped IPv4 as
    IPv4."""
    assert guard.source_of(peer) == source


def test_priority_slots_serve_the_lowest_priority_first() -> None:
    """With the slots taken, waiters get them lowest priority first, the latest first among
    equals."""
    import asyncio

    order: list[str] = []

    async def main() -> None:
        slots = guard.PrioritySlots(1)
        await slots.acquire(0)

        async def waiter(name: str, priority: int) -> None:
            await slots.acquire(priority)
            order.append(name)
            slots.release()

        tasks = [
            asyncio.ensure_future(waiter(n, p))
            for n, p in (("flood-a", 5), ("fresh", 0), ("flood-b", 5), ("second", 1))
        ]
        await asyncio.sleep(0)  # let them queue
        slots.release()
        await asyncio.gather(*tasks)

    asyncio.run(main())

    assert order == ["fresh", "second", "flood-b", "flood-a"]


def test_request_then_half_close_still_gets_its_answer(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """A client that sends its request and shuts down its side (as ``nc -N`` does) gets the
    answer, then the connection closes."""
    server = start_server(registry)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk

    assert data.startswith(b"HTTP/1.1 200 OK\r\n")  # and recv returned b"": closed after it
    assert data.endswith(b"Healthy.\n")
