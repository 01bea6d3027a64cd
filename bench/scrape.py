"""Scrape latency of ``/metrics`` at the 5,000-series cap (issue 14), part of ``make bench``.

The server runs in its own process (``python bench/scrape.py --serve``): a registry holding the
exporter's collector with its ``FailureStore`` filled to ``max_series`` = 5,000 label sets, served
by ``serve()``, over plain HTTP and over TLS (a trustme certificate). The clients run here, on one
asyncio loop: 1, 50 and 200 concurrent clients, each on its own kept-alive connection, sending
Prometheus' own ``Accept`` and ``Accept-Encoding: gzip`` headers and reading the whole answer.
Reported: p50 and p99 latency (request sent to last byte read), scrapes/s, and each p50 as a ratio
to the one-client plain-HTTP p50 of the same run (the baseline).

Issue 22 adds two figures on the plain-HTTP server: the latency of a Prometheus scrape (every
second) while 50 other scrapers, each with its own ``name[]`` filter, scrape as fast as they are
answered (``filters``); and the server process's peak memory (VmHWM) and the kernel's TCP memory
while 1,000 clients ask for ``/metrics`` and never read it (``slow_readers``), with a Prometheus
scrape's latency meanwhile.

``run(results, quick, output)`` is the hook ``bench/run.py`` calls; ``python bench/scrape.py``
alone prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

SERIES = 5000
ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
# (concurrent clients, scrapes per client): bounded so that the whole takes about a minute.
PLAN = [(1, 40), (50, 4), (200, 2)]
QUICK_PLAN = [(1, 15), (50, 2), (200, 1)]
FILTER_CLIENTS = 50
SLOW_READERS = 1000


def serve_forever(tls_dir: Optional[str]) -> None:
    """The server process: print the port, serve until stdin closes."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    from apigee_tls_exporter.records.events import Failure
    from apigee_tls_exporter.records.stats import PairingStats
    from apigee_tls_exporter.state.counts import FailureStore
    from apigee_tls_exporter.state.metrics import ExporterCollector
    from apigee_tls_exporter.web.serve import serve
    from apigee_tls_exporter.web.webconfig import TLSServerConfig, WebConfig
    from prometheus_client import CollectorRegistry

    store = FailureStore(SERIES)
    for i in range(SERIES + 100):  # past the cap: the overflow series exists too
        store.record(
            Failure(
                org="acme",
                env=("prod", "test")[i % 2],
                api=f"api-{i % 80}",
                rev=str(i % 9),
                target=f"backend-{i}.internal.example:8443",
                reason=("bad_certificate", "certificate_unknown", "handshake_timeout")[i % 3],
                key_alias=f"alias-{i % 40}",
                timestamp=1.8e9 + i,
            )
        )
    registry = CollectorRegistry()
    registry.register(ExporterCollector(store, lambda: [], PairingStats))
    web = None
    if tls_dir:
        web = WebConfig(
            tls_server_config=TLSServerConfig(
                cert_file=f"{tls_dir}/server.crt", key_file=f"{tls_dir}/server.key"
            )
        )
    server, _thread = serve(registry, "127.0.0.1", 0, web)
    print(server.port, flush=True)
    sys.stdin.read()
    server.shutdown()
    server.server_close()


async def _client(
    port: int, context: Optional[ssl.SSLContext], scrapes: int, latencies: list[float]
) -> int:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1" if context else None
    )
    request = (
        f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {ACCEPT}\r\n"
        "Accept-Encoding: gzip\r\nUser-Agent: Prometheus/2.45.0\r\n\r\n"
    ).encode()
    size = 0
    try:
        for _ in range(scrapes):
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if not head.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            size = length
    finally:
        writer.close()
    return size


async def _round(
    port: int, context: Optional[ssl.SSLContext], clients: int, scrapes: int
) -> dict[str, Any]:
    latencies: list[float] = []
    started = time.perf_counter()
    sizes = await asyncio.gather(
        *(_client(port, context, scrapes, latencies) for _ in range(clients))
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "scrapes": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "scrapes_per_s": len(ordered) / elapsed,
        "body_bytes": max(sizes),
    }


def _answer(head_and_body: bytes) -> int:
    return int(head_and_body.split(b" ", 2)[1]) if head_and_body else 0


async def _prometheus_scrapes(port: int, seconds: float) -> list[float]:
    """One Prometheus-style scrape a second, each on a new connection: latencies in seconds."""
    latencies = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {ACCEPT}\r\n"
            "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n".encode()
        )
        status = _answer(await reader.read())
        writer.close()
        if status != 200:
            raise RuntimeError(f"a Prometheus scrape answered {status}")
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))
    return latencies


async def _filtered(port: int, index: int, until: float, counts: list[int]) -> None:
    """A scraper with a filter of its own, as fast as it is answered."""
    # The big family, and a name of its own: 50 distinct filters over 5,000 series.
    target = f"/metrics?name[]=apigee_tls_handshake_failures_total&name[]=apigee_tls_none_{index}"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < until:
            writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            counts[0] += 1
    finally:
        writer.close()


async def _filters_round(port: int, seconds: float) -> dict[str, Any]:
    until = time.monotonic() + seconds
    counts = [0]
    flood = asyncio.gather(*(_filtered(port, i, until, counts) for i in range(FILTER_CLIENTS)))
    await asyncio.sleep(1.0)  # the filtered scrapers are under way
    latencies = await _prometheus_scrapes(port, seconds - 1.0)
    await flood
    ordered = sorted(latencies)
    return {
        "clients": FILTER_CLIENTS,
        "seconds": seconds,
        "filtered_scrapes_per_s": counts[0] / seconds,
        "prometheus_scrapes": len(ordered),
        "prometheus_p50_ms": 1000 * statistics.median(ordered),
        "prometheus_max_ms": 1000 * ordered[-1],
    }


def _vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _tcp_mem_kib() -> int:
    """The kernel's TCP buffer memory (pages in /proc/net/sockstat), in KiB."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    return 0


async def _slow_readers_round(port: int, pid: int, readers: int) -> dict[str, Any]:
    before = _vm_hwm_kib(pid)
    tcp_before = _tcp_mem_kib()
    loop = asyncio.get_running_loop()
    sockets = []
    try:
        for _ in range(readers):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sockets.append(sock)
        await asyncio.sleep(3.0)  # the server writes what it can and waits
        latencies = await _prometheus_scrapes(port, 5.0)
        tcp_during = _tcp_mem_kib()
    finally:
        for sock in sockets:
            sock.close()
    return {
        "readers": readers,
        "peak_rss_before_mib": before / 1024,
        "peak_rss_mib": _vm_hwm_kib(pid) / 1024,
        "tcp_mem_mib": max(0, tcp_during - tcp_before) / 1024,
        "prometheus_p50_ms": 1000 * statistics.median(latencies),
    }


def measure(quick: bool = False) -> dict[str, Any]:
    """Both servers, every concurrency of the plan; ratios to the 1-client plain p50."""
    import resource

    import trustme

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    rows = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(f"{tmp}/server.crt")
        leaf.private_key_pem.write_to_path(f"{tmp}/server.key")
        for tls in (False, True):
            command = [sys.executable, __file__, "--serve"] + (["--tls", tmp] if tls else [])
            server = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                assert server.stdout is not None
                port = int(server.stdout.readline())
                context = None
                if tls:
                    context = ssl.create_default_context()
                    ca.configure_trust(context)
                asyncio.run(_round(port, context, 1, 3))  # warm up
                for clients, scrapes in QUICK_PLAN if quick else PLAN:
                    row = asyncio.run(_round(port, context, clients, scrapes))
                    rows.append({"tls": tls, **row})
                if not tls:  # issue 22, on the plain server
                    extra["filters"] = asyncio.run(_filters_round(port, 6.0 if quick else 15.0))
                    readers = SLOW_READERS // 4 if quick else SLOW_READERS
                    extra["slow_readers"] = asyncio.run(
                        _slow_readers_round(port, server.pid, readers)
                    )
            finally:
                if server.stdin is not None:
                    server.stdin.close()
                server.wait(timeout=30)
    base = next(r["p50_ms"] for r in rows if not r["tls"] and r["clients"] == 1)
    for row in rows:
        row["p50_ratio"] = row["p50_ms"] / base
    return {"series": SERIES, "rows": rows, **extra}


def section(scrape: dict[str, Any]) -> list[str]:
    """The report's section, in Markdown."""
    lines = [
        "",
        "## Scrape latency under concurrency (issue 14)",
        "",
        f"`/metrics` at the {scrape['series']:,}-series cap"
        f" ({scrape['rows'][0]['body_bytes']:,} bytes gzipped per answer), Prometheus' headers,"
        " every client on its own kept-alive connection; server in its own process"
        " (`bench/scrape.py`). Ratio: p50 over the 1-client plain-HTTP p50 of this run.",
        "",
        "| transport | clients | scrapes | p50 ms | p99 ms | scrapes/s | p50 ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in scrape["rows"]:
        lines.append(
            f"| {'TLS' if r['tls'] else 'HTTP'} | {r['clients']} | {r['scrapes']} |"
            f" {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['scrapes_per_s']:.1f} |"
            f" {r['p50_ratio']:.2f}x |"
        )
    filters, slow = scrape.get("filters"), scrape.get("slow_readers")
    base = next(r["p50_ms"] for r in scrape["rows"] if not r["tls"] and r["clients"] == 1)
    if filters:
        lines += [
            "",
            f"Issue 22: {filters['clients']} scrapers with distinct `name[]` filters for"
            f" {filters['seconds']:.0f} s ({filters['filtered_scrapes_per_s']:.0f} filtered"
            f" scrapes/s answered): a Prometheus scrape took {filters['prometheus_p50_ms']:.0f} ms"
            f" (median of {filters['prometheus_scrapes']}), {filters['prometheus_max_ms']:.0f} ms"
            f" at most; {filters['prometheus_p50_ms'] / base:.1f}x the 1-client p50 of this run"
            " (before issue 22: 7.6 s median).",
        ]
    if slow:
        lines += [
            "",
            f"Issue 22: {slow['readers']:,} clients asking for `/metrics` and never reading:"
            f" server peak memory {slow['peak_rss_before_mib']:.0f} -> {slow['peak_rss_mib']:.0f}"
            f" MiB, kernel TCP memory +{slow['tcp_mem_mib']:.0f} MiB, a Prometheus scrape"
            f" meanwhile {slow['prometheus_p50_ms']:.0f} ms (median) (before issue 22: 66 -> 404"
            " MiB, 1.9 GiB of TCP memory).",
        ]
    lines.append("")
    return lines


def run(results: dict[str, Any], quick: bool, output: Optional[Path] = None) -> None:
    """bench/run.py's hook: measure into ``results["scrape"]`` and append the section to the
    report at ``output`` when given; an error is recorded, not raised."""
    if output is None:
        try:
            results["scrape"] = measure(quick)
        except Exception as err:  # one failed measurement must not lose the others
            results.setdefault("errors", []).append(f"scrape: {type(err).__name__}: {err}")
        return
    if "scrape" in results:
        with open(output, "a") as f:
            f.write("\n".join(section(results["scrape"])))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tls", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve_forever(args.tls)
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        print("\n".join(section(measure(args.quick))))
