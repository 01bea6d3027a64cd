"""The HTTP endpoint over plain HTTP: routes, exposition formats, binding, shutdown."""

from __future__ import annotations

import gzip
import http.client
import re
import socket
from pathlib import Path
from typing import Callable, Optional

import pytest
from apigee_tls_exporter.config import parse_listen
from apigee_tls_exporter.serve import BootTimeProcessCollector, MetricsServer, serve
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
