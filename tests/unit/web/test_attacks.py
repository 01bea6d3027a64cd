"""Issue 22's attack rows, each against a running server on 127.0.0.1: malformed heads over raw
sockets, generated heads (Hypothesis), a real guesser beside a real scraper, a flood of guessing
addresses, slow readers, many scrapers with distinct filters."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import bcrypt
import pytest
import yaml
from apigee_tls_exporter.web import serve as serve_module
from apigee_tls_exporter.web.connection import CONTENT_TYPES, OPENMETRICS, PROMETHEUS_TEXT
from apigee_tls_exporter.web.serve import MetricsServer
from apigee_tls_exporter.web.webconfig import WebConfig
from helpers.http_load import start_load
from helpers.support import ExporterProcess, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Start = Callable[..., MetricsServer]
PASSWORD = "s3cret-scrape"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("apigee_tls_test_total", "A test counter.", registry=registry).inc(3)
    return registry


def exchange(server: Any, data: bytes, source: str = "127.0.0.1") -> bytes:
    """Send raw bytes to ``server.port``, half-close, read until the server closes: everything
    it sent."""
    with socket.create_connection(
        ("127.0.0.1", server.port), timeout=10, source_address=(source, 0)
    ) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def responses(data: bytes) -> Iterator[tuple[int, list[bytes], bytes]]:
    """The answers in what a server sent: (status, header lines, body); asserts each head is
    well formed: a status line, then lines ended by CRLF with no other CR or LF in them."""
    while data:
        end = data.find(b"\r\n\r\n")
        assert end > 0, data[:200]
        head, data = data[:end], data[end + 4 :]
        status_line, *lines = head.split(b"\r\n")
        assert re.fullmatch(rb"HTTP/1\.1 [1-5]\d\d [A-Za-z -]+", status_line), status_line
        assert not any(b"\r" in line or b"\n" in line for line in lines)
        fields = dict(line.split(b": ", 1) for line in lines)
        length = int(fields[b"Content-Length"])
        body, data = data[:length], data[length:]
        yield int(status_line.split()[1]), lines, body


def headers_of(lines: list[bytes]) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in (line.split(b": ", 1) for line in lines)}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------------------------------------
# Parsing and response splitting


def test_bare_lf_in_accept_cannot_split_the_answer(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """The reported splitting: ``version=2.`` then a bare LF and a header of the attacker's in
    Accept. The head is refused (400) and nothing of the request reaches an answer's head."""
    server = start_server(registry)

    data = exchange(
        server,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
        b"Accept: application/openmetrics-text; version=2.\nX-Injected: yes\r\n\r\n",
    )

    [(status, _, _)] = list(responses(data))
    assert status == 400
    assert b"X-Injected" not in data


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=2.0.0",
        "application/openmetrics-text; version=abc",
        "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
        "text/plain; version=1.0.0; escaping=values",
    ],
)
def test_content_type_comes_from_a_fixed_set_never_from_accept(
    registry: CollectorRegistry, start_server: Start, accept: str
) -> None:
    """Whatever version or escaping Accept asks for, /metrics answers 200 in one of our two
    formats, with our own Content-Type (``version=abc`` was a 500 before auth)."""
    server = start_server(registry)

    data = exchange(
        server, f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode()
    )

    [(status, lines, body)] = list(responses(data))
    content_type = headers_of(lines)["content-type"]
    assert (status, content_type in (OPENMETRICS, PROMETHEUS_TEXT)) == (200, True)
    assert b"apigee_tls_test_total" in body


@pytest.mark.parametrize(
    "head",
    [
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: one\ntwo\r\n\r\n",  # bare LF in a value
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: one\rtwo\r\n\r\n",  # bare CR in a value
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: one\x00two\r\n\r\n",  # NUL in a value
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX\x00A: one\r\n\r\n",  # NUL in a name
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX A: one\r\n\r\n",  # space in a name
        b"GET /met\x01rics HTTP/1.1\r\nHost: x\r\n\r\n",  # control character in the target
        b"GET /met\trics HTTP/1.1\r\nHost: x\r\n\r\n",  # TAB in the target
        b"GET /met\rrics HTTP/1.1\r\nHost: x\r\n\r\n",  # CR in the target
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n",  # Latin-1 digit
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n",
        b"GET http://[::1/metrics HTTP/1.1\r\nHost: x\r\n\r\n",  # urlsplit cannot read it
        b"GET /metrics HTTP/1.1\r\n\r\n",  # no Host
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",  # two Hosts
        b"GET /metrics HTTP/1.1\nHost: x\n\n",  # bare LF line ends
    ],
)
def test_malformed_heads_are_400_and_never_an_error(
    registry: CollectorRegistry,
    start_server: Start,
    head: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every malformed head of the issue is a 400, counted as bad_request, with no error-level
    log line (before: served, or no answer and an error log, or a 500)."""
    server = start_server(registry)

    data = exchange(server, head)

    assert [s for s, _, _ in responses(data)] == [400]
    assert registry.get_sample_value("apigee_tls_http_rejected_total", {"reason": "bad_request"})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_unsupported_version_is_505(registry: CollectorRegistry, start_server: Start) -> None:
    """HTTP/2.0 in a request line (h11 would read it) is refused with 505."""
    server = start_server(registry)

    data = exchange(server, b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n")

    assert [s for s, _, _ in responses(data)] == [505]


def test_empty_lines_before_a_request_are_ignored(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """CRLFs before a request line are skipped (RFC 9112 2.2), also between pipelined
    requests."""
    server = start_server(registry)

    data = exchange(
        server,
        b"\r\n\r\nGET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
        b"\r\nGET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )

    assert [s for s, _, _ in responses(data)] == [200, 200]


def test_a_big_head_in_one_read_is_431(registry: CollectorRegistry, start_server: Start) -> None:
    """A head over MAX_HEAD_BYTES arriving whole is refused (h11 checks only across reads)."""
    server = start_server(registry)
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17_000 + b"\r\n\r\n"

    data = exchange(server, big)

    assert [s for s, _, _ in responses(data)] == [431]


_TOKEN = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=255), min_size=0, max_size=12
).map(lambda t: t.encode("latin-1"))
_LINE_END = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n\r\n"])


@st.composite
def heads(draw: Any) -> bytes:
    """Request heads near the real thing: a method, a target, a version and headers, any of
    them replaced with arbitrary Latin-1 bytes, with CRLF, bare LF or bare CR line ends."""
    method = draw(st.one_of(st.sampled_from([b"GET", b"HEAD", b"POST", b"get"]), _TOKEN))
    target = draw(
        st.one_of(
            st.sampled_from([b"/metrics", b"/", b"/-/ready", b"/metrics?name[]=a&name[]=b"]),
            _TOKEN.map(lambda t: b"/" + t),
        )
    )
    version = draw(st.one_of(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2"]), _TOKEN))
    lines = [method + b" " + target + b" " + version]
    names = st.one_of(
        st.sampled_from(
            [b"Host", b"Accept", b"Content-Length", b"Transfer-Encoding", b"Connection"]
        ),
        _TOKEN,
    )
    values = st.one_of(
        st.sampled_from(
            [
                b"x",
                b"application/openmetrics-text; version=2.",
                b"0",
                b"5",
                b"chunked",
                b"close",
                b"\xb2",
            ]
        ),
        _TOKEN,
    )
    for name, value in draw(st.lists(st.tuples(names, values), max_size=6)):
        lines.append(name + b":" + draw(st.sampled_from([b" ", b"", b"\t"])) + value)
    ends = [draw(_LINE_END) for _ in lines]
    return b"".join(line + end for line, end in zip(lines, ends)) + b"\r\n"


def test_generated_heads_never_500_never_an_error_never_split(
    registry: CollectorRegistry, start_server: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """Generated request heads: every answer is well formed (no CR or LF inside a header, a
    Content-Type from the fixed set), none is a 500, no error-level log line."""
    server = start_server(registry)

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(head=heads())
    def check(head: bytes) -> None:
        for status, lines, _ in responses(exchange(server, head)):
            assert status != 500
            assert headers_of(lines)["content-type"] in CONTENT_TYPES

    check()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---------------------------------------------------------------------------------------------
# Routes added by the wiring


def test_added_route_is_served_off_the_loop_behind_auth(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """A route's handler gets the query and lower-cased headers and answers (status, type,
    body); it runs on its own threads (a blocked handler does not stop /-/healthy), behind the
    same basic auth as /metrics."""
    release = threading.Event()
    seen: list[tuple[dict[str, list[str]], str]] = []

    def probe(query: Any, headers: Any) -> tuple[int, str, bytes]:
        seen.append((dict(query), headers.get("x-probe", "")))
        if query.get("block"):
            release.wait(10)
        return 200, "application/json", b'{"ok": true}'

    config = WebConfig.model_validate({"basic_auth_users": {"prometheus": HASH}})
    server = start_server(registry, web_config=config, routes={"/probe": probe})
    good = basic("prometheus", PASSWORD)
    blocked: list[bytes] = []
    thread = threading.Thread(
        target=lambda: blocked.append(
            exchange(
                server,
                f"GET /probe?block=1 HTTP/1.1\r\nHost: x\r\nAuthorization: {good}\r\n\r\n".encode(),
            )
        )
    )
    thread.start()
    try:
        wait_for(lambda: len(seen) == 1, 10, "the blocking handler to start")
        healthy = exchange(
            server, f"GET /-/healthy HTTP/1.1\r\nHost: x\r\nAuthorization: {good}\r\n\r\n".encode()
        )
        anonymous = exchange(server, b"GET /probe?target=a HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = exchange(
            server,
            f"GET /probe?target=a&target=b HTTP/1.1\r\nHost: x\r\nX-Probe: yes\r\n"
            f"Authorization: {good}\r\n\r\n".encode(),
        )
    finally:
        release.set()
        thread.join(10)

    assert [s for s, _, _ in responses(healthy)] == [200]
    assert [s for s, _, _ in responses(anonymous)] == [401]
    [(status, lines, body)] = list(responses(answered))
    assert (status, headers_of(lines)["content-type"], body) == (
        200,
        "application/json",
        b'{"ok": true}',
    )
    assert seen[-1] == ({"target": ["a", "b"]}, "yes")
    assert [s for s, _, _ in responses(blocked[0])] == [200]


def test_route_answering_outside_the_fixed_set_is_500(
    registry: CollectorRegistry, start_server: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that raises, or answers a content type of its own (with a CR LF in it), gives
    a 500 with our own plain-text head; the server keeps serving."""

    def raises(query: Any, headers: Any) -> tuple[int, str, bytes]:
        raise RuntimeError("boom")

    def injects(query: Any, headers: Any) -> tuple[int, str, bytes]:
        return 200, "text/plain\r\nX-Injected: yes", b"x"

    server = start_server(registry, routes={"/raises": raises, "/injects": injects})

    data = exchange(
        server,
        b"GET /raises HTTP/1.1\r\nHost: x\r\n\r\nGET /injects HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n",
    )

    assert [s for s, _, _ in responses(data)] == [500, 500, 200]
    assert b"X-Injected" not in data


def test_routes_cannot_replace_built_in_paths(registry: CollectorRegistry) -> None:
    """/metrics, /, /-/healthy and /-/ready are the server's own."""
    with pytest.raises(ValueError, match="/metrics"):
        MetricsServer(registry, "127.0.0.1", 0, routes={"/metrics": lambda q, h: (200, "", b"")})


# ---------------------------------------------------------------------------------------------
# Basic auth under attack


async def _get(port: int, source: str, authorization: str, timeout: float) -> tuple[int, float]:
    """One GET /metrics on a new connection: (status, seconds); status 0 when no answer."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout
        )
    except (OSError, asyncio.TimeoutError):
        return 0, time.monotonic() - started
    try:
        writer.write(
            f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = await asyncio.wait_for(reader.read(), timeout)
        return int(data.split(b" ", 2)[1]), time.monotonic() - started
    except (OSError, asyncio.TimeoutError, IndexError, ValueError):
        return 0, time.monotonic() - started
    finally:
        writer.close()


def test_right_password_beside_a_guesser_on_the_same_address_is_answered(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """A guesser sending a new wrong password every 0.2 s without waiting for the answers, and
    a scraper with the right password on the same address, no login cached (a fresh start, a
    reload with other users, a minute later): each of 6 scrapes is 200 within 10 s (before: 0
    of 6 answered 200 in 25 s, the back-off answered 401 without checking)."""
    users = {"prometheus": HASH}
    server = start_server(
        registry, web_config=WebConfig.model_validate({"basic_auth_users": users})
    )
    source = "127.0.0.5"
    good = basic("prometheus", PASSWORD)

    async def main() -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        guesses: list[asyncio.Task[tuple[int, float]]] = []

        async def guesser() -> None:
            for i in range(120):  # at most 24 s
                bad = basic("prometheus", f"guess-{i}")
                guesses.append(asyncio.ensure_future(_get(server.port, source, bad, 15)))
                await asyncio.sleep(0.2)

        flood = asyncio.ensure_future(guesser())
        await asyncio.sleep(2.0)  # the source is failing: its 401s are slowed
        scrapes = []
        for i in range(6):
            if i % 2 == 1:  # a reload with other users: no cached login
                users[f"other{i}"] = HASH
                server.set_web_config(WebConfig.model_validate({"basic_auth_users": users}))
            scrapes.append(await _get(server.port, source, good, 10))
            await asyncio.sleep(1.0)
        flood.cancel()
        return scrapes, [await g for g in guesses]

    scrapes, guessed = asyncio.run(main())

    assert [s for s, _ in scrapes] == [200] * 6, scrapes
    assert max(t for _, t in scrapes) < 10.0, scrapes
    assert len(guessed) >= 30 and {s for s, _ in guessed} <= {401, 0}
    assert registry.get_sample_value("apigee_tls_http_rejected_total", {"reason": "auth_failed"})


@pytest.mark.slow
def test_first_login_from_a_fresh_address_beside_240_guessing_addresses(
    registry: CollectorRegistry, start_server: Start
) -> None:
    """240 addresses guessing passwords as fast as they are answered: the first right login
    from a fresh address (no cached login) is answered 200 within Prometheus's 10 s timeout,
    three times (before: no answer in 12 s, 3 of 3 runs)."""
    users = {"prometheus": HASH}
    server = start_server(
        registry, web_config=WebConfig.model_validate({"basic_auth_users": users})
    )
    attack = start_load("wrong-password", server.port, 240, 30, "--spread")
    try:
        wait_for(
            lambda: (
                sum(
                    registry.get_sample_value("apigee_tls_http_rejected_total", {"reason": r}) or 0
                    for r in ("auth_failed", "auth_busy")
                )
                >= 240
            ),
            20,
            "the flood to be under way",
        )
        results = []
        for i in range(3):
            users[f"fresh{i}"] = HASH  # a user never verified: bcrypt must run
            server.set_web_config(WebConfig.model_validate({"basic_auth_users": users}))
            results.append(
                asyncio.run(_get(server.port, f"127.0.5.{i + 2}", basic(f"fresh{i}", PASSWORD), 12))
            )
    finally:
        attack.terminate()
        attack.wait(timeout=10)

    assert [s for s, _ in results] == [200] * 3, results
    assert max(t for _, t in results) < 10.0, results


# ---------------------------------------------------------------------------------------------
# Exhaustion: slow readers, many scrapers


class _Series(Collector):
    """``count`` gauge series with long labels; counts its collections; may block in them."""

    def __init__(self, count: int, gate: Optional[threading.Event] = None) -> None:
        self.count = count
        self.gate = gate
        self.collections = 0

    def collect(self) -> Iterator[Metric]:
        self.collections += 1
        if self.gate is not None:
            self.gate.wait(10)
        for family in range(50):
            gauge = GaugeMetricFamily(f"apigee_tls_big_{family}", "Big.", labels=["target"])
            for i in range(self.count // 50):
                gauge.add_metric([f"backend-{i:06d}.internal.example.com:8443/{'x' * 120}"], i)
            yield gauge


def test_slow_readers_stay_within_the_send_budget(
    start_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 clients ask for a ~1.8 MB /metrics and never read it: the bytes waiting for them
    stay within the send budget (the slowest closed and counted, slow_reader), and a scrape
    that reads is still answered in full."""
    monkeypatch.setattr(serve_module, "SEND_BUDGET", 2 * 1024 * 1024)
    registry = CollectorRegistry()
    registry.register(_Series(10_000))
    server = start_server(registry)
    peak = [0]
    changed = server.unsent_changed

    def watch(connection: Any, unsent: int) -> None:
        changed(connection, unsent)
        peak[0] = max(peak[0], server._unsent_total)

    monkeypatch.setattr(server, "unsent_changed", watch)
    attack = start_load("slow-reader", server.port, 200, 20)
    try:
        wait_for(
            lambda: registry.get_sample_value(
                "apigee_tls_http_rejected_total", {"reason": "slow_reader"}
            ),
            20,
            "a slow reader to be closed",
        )
        data = exchange(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        attack.terminate()
        attack.wait(timeout=10)

    [(status, _, body)] = list(responses(data))
    assert (status, body.count(b"\napigee_tls_big_")) == (200, 10_000)
    assert peak[0] <= 2 * 1024 * 1024


def test_scrapers_with_distinct_filters_share_one_collection(start_server: Start) -> None:
    """50 scrapes with 50 different name[] filters, all arriving while a collection runs, are
    answered from that one collection, each with its own series only."""
    gate = threading.Event()
    series = _Series(100, gate)
    registry = CollectorRegistry()
    registry.register(series)
    server = start_server(registry)
    answers: dict[int, bytes] = {}

    def scrape(i: int) -> None:
        answers[i] = exchange(
            server,
            f"GET /metrics?name[]=apigee_tls_big_{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        )

    threads = [threading.Thread(target=scrape, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    try:
        wait_for(
            lambda: sum(c.state == "busy" for c in list(server.connections)) == 50,
            20,
            "50 scrapes waiting for the collection",
        )
    finally:
        gate.set()
        for thread in threads:
            thread.join(10)

    assert series.collections == 1
    for i, data in answers.items():
        [(status, _, body)] = list(responses(data))
        names = set(re.findall(rb"^(apigee_tls_big_\d+)\{", body, re.MULTILINE))
        assert (status, names) == (200, {f"apigee_tls_big_{i}".encode()})


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
def test_answers_built_from_pieces_are_what_prometheus_client_writes(
    start_server: Start, accept: str
) -> None:
    """Whole, filtered, and after a change: each answer is byte for byte what prometheus_client
    itself writes for the registry at that moment (a family's encoding is reused only while it
    is unchanged)."""
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

    registry = CollectorRegistry()
    counter = Counter("apigee_tls_a", "A.", ["target"], registry=registry)
    counter.labels("x").inc()
    Counter("apigee_tls_b", "B.", registry=registry).inc(2)
    server = start_server(registry)
    own = openmetrics_latest if accept else generate_latest

    def scrape(query: str = "") -> bytes:
        [(_, _, body)] = list(
            responses(
                exchange(
                    server,
                    f"GET /metrics{query} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode(),
                )
            )
        )
        return body

    def expected(names: Optional[list[str]] = None) -> bytes:
        source = registry.restricted_registry(names) if names else registry
        return own(source)

    def mine(body: bytes) -> bytes:  # without the server's own counters, which a scrape moves
        return b"".join(
            line for line in body.splitlines(keepends=True) if b"apigee_tls_http_" not in line
        )

    first = (mine(scrape()), mine(expected()))
    counter.labels("y").inc(5)
    second = (mine(scrape()), mine(expected()))
    names = ["apigee_tls_a_total", "apigee_tls_b_created"]
    filtered = (scrape("?name[]=apigee_tls_a_total&name[]=apigee_tls_b_created"), expected(names))

    assert first[0] == first[1]
    assert second[0] == second[1] and second[0] != first[0]
    # prometheus_client's restricted registry walks a set: the same lines, its own order
    assert sorted(filtered[0].splitlines()) == sorted(filtered[1].splitlines())


# ---------------------------------------------------------------------------------------------
# The same against the real daemon (`run`), with and without a web config


def test_the_daemon_answers_the_right_password_beside_a_guesser_across_sighup(
    tmp_path: Path,
) -> None:
    """``run`` with a web config: a guesser (a new wrong password every 0.2 s, not waiting for
    answers) and a scraper on one address; between scrapes a SIGHUP applies a web config with
    one more user (nothing cached any more). Each of 6 scrapes is 200 within 10 s."""
    log = tmp_path / "system.log"
    log.touch()
    web = tmp_path / "web.yml"
    users = {"prometheus": HASH}

    def write_web() -> None:
        web.write_text(
            yaml.safe_dump(
                {
                    "basic_auth_users": users,
                    "apigee_tls_exporter": {"health_without_auth": True},
                }
            )
        )

    write_web()
    daemon = ExporterProcess(
        "--log", str(log), "--state-file", str(tmp_path / "state.json"), "--web-config", str(web)
    )
    good = basic("prometheus", PASSWORD)

    async def main() -> list[tuple[int, float]]:
        guesses: list[asyncio.Task[tuple[int, float]]] = []

        async def guesser() -> None:
            for i in range(120):
                bad = basic("prometheus", f"guess-{i}")
                guesses.append(asyncio.ensure_future(_get(daemon.port, "127.0.0.5", bad, 15)))
                await asyncio.sleep(0.2)

        flood = asyncio.ensure_future(guesser())
        await asyncio.sleep(2.0)
        scrapes = []
        for i in range(6):
            if i % 2 == 1:
                users[f"other{i}"] = HASH
                write_web()
                assert daemon.proc is not None
                daemon.proc.send_signal(signal.SIGHUP)
                await asyncio.sleep(0.5)  # the reload is applied between two reads of the loop
            scrapes.append(await _get(daemon.port, "127.0.0.5", good, 10))
            await asyncio.sleep(1.0)
        flood.cancel()
        await asyncio.gather(*guesses)
        return scrapes

    with daemon:
        scrapes = asyncio.run(main())
        code, out = daemon.stop()

    assert [s for s, _ in scrapes] == [200] * 6, (scrapes, out[-2000:])
    assert max(t for _, t in scrapes) < 10.0, scrapes
    assert out.count("config reloaded") == 3 and code == 0


def test_the_daemon_without_a_web_config_cannot_be_made_to_split_its_answer(
    tmp_path: Path,
) -> None:
    """``run`` without a web config (no auth in the way): the reported Accept with a bare LF is
    a 400, and a well-formed Accept asking for another version gets our own Content-Type."""
    log = tmp_path / "system.log"
    log.touch()
    with ExporterProcess("--log", str(log), "--state-file", str(tmp_path / "state.json")) as daemon:
        server = _Port(daemon.port)
        split = exchange(
            server,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            b"Accept: application/openmetrics-text; version=2.\nX-Injected: yes\r\n\r\n",
        )
        other = exchange(
            server,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
            b"Accept: application/openmetrics-text; version=abc\r\n\r\n",
        )

    assert [s for s, _, _ in responses(split)] == [400]
    [(status, lines, _)] = list(responses(other))
    assert (status, headers_of(lines)["content-type"]) == (200, OPENMETRICS)


class _Port:
    """Just the port of a server, for ``exchange``."""

    def __init__(self, port: int) -> None:
        self.port = port
