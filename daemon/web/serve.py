"""The HTTP endpoint: ``/metrics`` for Prometheus, ``/-/healthy`` and ``/-/ready``, the status
page at ``/``; 404 elsewhere.

``serve()`` binds, starts a thread running the server and returns ``(server, thread)``; stop it
with ``server.shutdown(); server.server_close(); thread.join()``.

One asyncio event loop serves every connection, so that a waiting connection costs a socket and a
few hundred bytes, not a thread: hundreds of idle or slow clients cannot take the place of a
scrape. Every stage has a deadline of its own, whatever the pace of the bytes: the TLS handshake
(``HANDSHAKE_TIMEOUT``), the whole request head from its first byte (``HEADER_TIMEOUT``; from the
connection for the first request), the wait for the next request on a kept-alive connection
(``IDLE_TIMEOUT``) and the client reading the answer (``WRITE_TIMEOUT``). When the connection
limit is reached, the connection that has been waiting longest without a complete request makes
room for the new one.

Basic auth: a credential verified recently is accepted at once (``BasicAuth.cached``). Anything
else needs bcrypt, which runs on ``BCRYPT_WORKERS`` threads, queued by priority: sources with the
fewest failed logins first, so that a fresh login from a clean address is not queued behind a
flood. A source that keeps failing gets 401 at once for a while (``SourceLimiter``), and at most
``PER_SOURCE_PENDING`` of its checks wait at a time. No connection is held "in a slot" meanwhile:
waiting is a suspended coroutine.

Repeated events of one kind (refused connections, failed logins, TLS errors) are logged once per
``SUMMARY_INTERVAL`` and then summarised with a count (``LogSummary``), and counted in
``apigee_tls_http_requests_total{code}`` and ``apigee_tls_http_rejected_total{reason}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import heapq
import ipaddress
import itertools
import resource
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Callable, NamedTuple, Optional
from urllib.parse import parse_qs, urlsplit

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

from . import status as status_page
from .webconfig import BasicAuth, WebConfig, build_ssl_context

__all__ = [
    "BootTimeProcessCollector",
    "LogSummary",
    "MetricsServer",
    "SourceLimiter",
    "serve",
]

_log = structlog.get_logger(__name__)

REALM = "apigee-tls-exporter"
HANDSHAKE_TIMEOUT = 5.0  # seconds for the TLS handshake
HEADER_TIMEOUT = 5.0  # seconds for a whole request head
IDLE_TIMEOUT = 120.0  # seconds a kept-alive connection may wait for its next request
WRITE_TIMEOUT = 30.0  # seconds for a client to take an answer
MAX_HEAD_BYTES = 16 * 1024  # request line and headers
MAX_CONNECTIONS = 1000  # lowered to fit RLIMIT_NOFILE
RENDER_WORKERS = 4  # threads that encode /metrics and render the status page
BCRYPT_WORKERS = 2  # bcrypt checks at once: a flood of wrong passwords takes at most 2 CPUs
PER_SOURCE_PENDING = 2  # bcrypt checks of one source address waiting or running
MAX_PENDING = 256  # bcrypt checks waiting or running in all
SUMMARY_INTERVAL = 60.0  # seconds between summaries of repeated events

# Phases of the daemon's start (``phase`` callable): /metrics answers 503 while restoring (the
# counters would read 0, a reset to Prometheus); /-/ready answers 200 only when ready.
RESTORING = "restoring the checkpoint"
OPENING = "opening the logs"
READY = "ready"

HEALTH_PATHS = ("/-/healthy", "/-/ready")
# A route the wiring registers (``/probe``, ``/sd``): (query parameters, lower-cased request
# headers) -> (status, content type, body); blocking, so it runs in a thread; behind the same auth.
Handler = Callable[[Mapping[str, list[str]], Mapping[str, str]], tuple[int, str, bytes]]
REJECT_REASONS = (
    "busy",  # the connection limit was reached and no waiting connection could make room
    "evicted",  # a waiting connection closed to make room for a new one
    "tls_handshake",  # the handshake failed or took longer than HANDSHAKE_TIMEOUT
    "header_timeout",  # the request head was not complete within HEADER_TIMEOUT
    "write_timeout",  # the client did not take the answer within WRITE_TIMEOUT
    "bad_request",  # not HTTP/1.x, a malformed request line or header
    "head_too_large",  # request line and headers over MAX_HEAD_BYTES
    "auth_failed",  # wrong user or password (after bcrypt), or a malformed Authorization
    "auth_backoff",  # 401 at once: the source failed too often recently
    "auth_busy",  # 401 at once: too many checks of this source (or in all) already waiting
)
# What each summarised event is logged as, and at which level.
_EVENTS = {
    "busy": ("http connection refused", "warning"),
    "evicted": ("http waiting connection closed for a new one", "info"),
    "tls_handshake": ("tls handshake failed", "info"),
    "header_timeout": ("http request head timed out", "info"),
    "write_timeout": ("http client did not read its answer", "info"),
    "bad_request": ("http bad request", "info"),
    "head_too_large": ("http request head too large", "info"),
    "auth_failed": ("http login failed", "warning"),
    "auth_backoff": ("http login refused, source failing", "warning"),
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
        message, level = _EVENTS.get(kind, (kind, "info"))
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
            message, level = _EVENTS.get(kind, (kind, "info"))
            getattr(self._logger, level)(
                message + " (repeated)", count=count, seconds=round(self._interval)
            )
        self._suppressed.clear()
        now = self._clock()
        for kind in [k for k, at in self._logged.items() if now - at >= self._interval]:
            del self._logged[kind]


@dataclass
class _Source:
    failures: int = 0  # consecutive failed logins since the last backoff
    strikes: int = 0  # backoffs so far: each doubles the next one
    blocked_until: float = 0.0
    pending: int = 0


class SourceLimiter:
    """Failed logins per source address (IPv6 per /64), with a backoff after ``threshold``
    consecutive failures: ``backoff`` seconds, doubling at each repeat up to ``max_backoff``.
    A success clears the source. At most ``max_sources`` are remembered (least recently seen
    forgotten first), so memory stays bounded whatever the number of addresses."""

    def __init__(
        self,
        threshold: int = 5,
        backoff: float = 30.0,
        max_backoff: float = 300.0,
        max_sources: int = 4096,
        max_pending: int = PER_SOURCE_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_sources = max_sources
        self.max_pending = max_pending
        self._clock = clock
        self._sources: collections.OrderedDict[str, _Source] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def blocked(self, source: str) -> bool:
        entry = self._sources.get(source)
        return entry is not None and self._clock() < entry.blocked_until

    def priority(self, source: str) -> int:
        """Lower goes first: the failures of this source so far."""
        entry = self._sources.get(source)
        return 0 if entry is None else entry.strikes * self.threshold + entry.failures

    def begin(self, source: str) -> bool:
        """A check of this source starts waiting; False (do not check) when it has too many."""
        entry = self._entry(source)
        if entry.pending >= self.max_pending:
            return False
        entry.pending += 1
        return True

    def end(self, source: str, ok: Optional[bool]) -> None:
        """The check ended: ok True/False, or None when it was abandoned."""
        entry = self._sources.get(source)
        if entry is None:
            return
        entry.pending = max(0, entry.pending - 1)
        if ok is True:
            entry.failures = entry.strikes = 0
            entry.blocked_until = 0.0
        elif ok is False:
            entry.failures += 1
            if entry.failures >= self.threshold:
                entry.strikes += 1
                entry.failures = 0
                delay = min(self.backoff * 2 ** (entry.strikes - 1), self.max_backoff)
                entry.blocked_until = self._clock() + delay

    def _entry(self, source: str) -> _Source:
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source()
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        return entry


def source_of(peer: Any) -> str:
    """The address a client is limited by: IPv4 as is, IPv6 by its /64 (one host's share)."""
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except (ValueError, TypeError, IndexError):
        return str(peer)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class _PrioritySlots:
    """``size`` slots handed out lowest priority first (then first come); for bcrypt."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed over just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class _Request(NamedTuple):
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names
    keep_alive: bool


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False

    def encode(self, head_only: bool, keep_alive: bool) -> bytes:
        phrase = HTTPStatus(self.status).phrase
        lines = [
            f"HTTP/1.1 {self.status} {phrase}",
            f"Server: {REALM}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers),
            "Connection: keep-alive" if keep_alive else "Connection: close",
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def _text(status: int, text: str, **kw: Any) -> _Response:
    return _Response(status, text.encode(), **kw)


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_head(head: bytes) -> _Request:
    """The request line and headers (without the blank line); _BadRequest when malformed."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise _BadRequest(400, "bad_request") from None
    request_line, *header_lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise _BadRequest(400, "bad_request")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise _BadRequest(505, "bad_request")
        raise _BadRequest(400, "bad_request")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[:1] in (" ", "\t"):
            raise _BadRequest(400, "bad_request")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    if "transfer-encoding" in headers:
        keep_alive = False  # a body we do not read: answer and close
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise _BadRequest(400, "bad_request")
        if int(length) > 0:
            keep_alive = False
    return _Request(method.upper(), target, version, headers, keep_alive)


class _HttpStats(Collector):
    """The server's own counters, collected at scrape time."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter(
            {r: 0 for r in REJECT_REASONS}
        )
        self.connections = 0
        self.opened = 0

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "apigee_tls_http_requests", "HTTP requests answered, by status code.", labels=["code"]
        )
        for code, value in sorted(dict(self.requests).items()):
            requests.add_metric([code], value)
        yield requests
        rejected = CounterMetricFamily(
            "apigee_tls_http_rejected",
            "Connections and requests the HTTP server refused or cut short, by reason.",
            labels=["reason"],
        )
        for reason, value in sorted(dict(self.rejected).items()):
            rejected.add_metric([reason], value)
        yield rejected
        yield GaugeMetricFamily(
            "apigee_tls_http_connections", "Open HTTP connections.", value=self.connections
        )
        yield CounterMetricFamily(
            "apigee_tls_http_connections_opened",
            "HTTP connections accepted (fewer than requests when clients keep them alive).",
            value=self.opened,
        )


class _WebState(NamedTuple):
    ssl_context: Optional[ssl.SSLContext]
    basic_auth: Optional[BasicAuth]
    health_open: bool


class MetricsServer:
    """The HTTP server for one registry; TLS and basic auth from an optional WebConfig.

    ``phase`` says how far the daemon's start has come (``RESTORING``, ``OPENING``, ``READY``;
    always ready without it); ``status`` gives the status page's data.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        web_config: Optional[WebConfig] = None,
        *,
        phase: Optional[Callable[[], str]] = None,
        status: Optional[Callable[[], status_page.Status]] = None,
        limiter: Optional[SourceLimiter] = None,
        routes: Optional[Mapping[str, Handler]] = None,
    ) -> None:
        self.registry = registry
        self.routes = dict(routes or {})
        self.phase = phase or (lambda: READY)
        self.status = status
        self._web = _WebState(None, None, False)
        self.set_web_config(web_config)
        self.limiter = limiter or SourceLimiter()
        self.max_connections = _connection_limit()
        self.stats = _HttpStats()
        self.summary = LogSummary(_log)
        self.connections: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self.waiting: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._stop_requested = False
        self._serving = threading.Event()
        self._done = threading.Event()
        self._bcrypt = _PrioritySlots(BCRYPT_WORKERS)
        self._encoding: dict[Any, asyncio.Future[tuple[bytes, str]]] = {}
        self._summary_timer: Optional[asyncio.TimerHandle] = None
        self._render_pool: Optional[ThreadPoolExecutor] = None
        self._bcrypt_pool: Optional[ThreadPoolExecutor] = None
        family, address = _bind_address(host, port)
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and address[0] == "::":
                # "all interfaces" means IPv4 too, whatever net.ipv6.bindv6only says.
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.socket.bind(address)
            self.socket.listen(128)
            self.socket.setblocking(False)
            self.server_address: tuple[Any, ...] = self.socket.getsockname()
            registry.register(self.stats)
        except (OSError, ValueError):
            self.socket.close()
            raise

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        return int(self.server_address[1])

    @property
    def scheme(self) -> str:
        """ "https" when serving TLS, else "http"."""
        return "https" if self._web.ssl_context is not None else "http"

    @property
    def ssl_context(self) -> Optional[ssl.SSLContext]:
        return self._web.ssl_context

    @property
    def basic_auth(self) -> Optional[BasicAuth]:
        return self._web.basic_auth

    def set_web_config(self, web_config: Optional[WebConfig]) -> None:
        """Apply a (new) web config to the following connections, e.g. after SIGHUP.

        Builds everything first, so an exception leaves the previous config in force.
        """
        context = None
        auth = None
        health_open = False
        if web_config is not None:
            if web_config.tls_server_config is not None:
                context = build_ssl_context(web_config.tls_server_config)
            if web_config.basic_auth_users:
                auth = BasicAuth(web_config.basic_auth_users)
            health_open = web_config.apigee_tls_exporter.health_without_auth
        self._web = _WebState(context, auth, health_open)

    # --- running and stopping ---------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until ``shutdown()``; ``poll_interval`` is accepted for socketserver's sake."""
        self._serving.set()
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_error)
        self._render_pool = ThreadPoolExecutor(RENDER_WORKERS, thread_name_prefix="http-render")
        self._bcrypt_pool = ThreadPoolExecutor(BCRYPT_WORKERS, thread_name_prefix="http-bcrypt")
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._render_pool.shutdown(wait=False, cancel_futures=True)
                self._bcrypt_pool.shutdown(wait=False, cancel_futures=True)
                self._done.set()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        stop = asyncio.Event()
        with self._lock:
            self._loop, self._stop = loop, stop
            if self._stop_requested:
                return
        server = await loop.create_server(lambda: _Connection(self), sock=self.socket)
        self._summary_timer = loop.call_later(SUMMARY_INTERVAL, self._summarise)
        try:
            await stop.wait()
        finally:
            self._summary_timer.cancel()
            server.close()
            for connection in list(self.connections):
                connection.abort()
            await server.wait_closed()
            tasks = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.summary.flush()

    def _summarise(self) -> None:
        self.summary.flush()
        assert self._loop is not None
        self._summary_timer = self._loop.call_later(SUMMARY_INTERVAL, self._summarise)

    def shutdown(self) -> None:
        """Stop serving; returns once ``serve_forever`` has returned (if it was running)."""
        with self._lock:
            self._stop_requested = True
            loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                loop.call_soon_threadsafe(stop.set)
        if self._serving.is_set():
            self._done.wait()

    def server_close(self) -> None:
        """Close the listening socket and take the server's metrics off the registry."""
        self.socket.close()
        with contextlib.suppress(KeyError):  # closed twice
            self.registry.unregister(self.stats)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        self.summary.event(
            "loop_error",
            detail=str(context.get("message", "")),
            error=type(error).__name__ if error else None,
        )

    # --- connections ------------------------------------------------------------------------
    def reject(self, reason: str, peer: Any, **context: Any) -> None:
        self.stats.rejected[reason] += 1
        self.summary.event(reason, client=_client(peer), **context)

    def opened(self, connection: _Connection) -> bool:
        """Admit a new connection, making room when at the limit; False to refuse it."""
        if len(self.connections) >= self.max_connections:
            if not self.waiting:
                self.reject("busy", connection.peer)
                return False
            oldest = next(iter(self.waiting))
            self.reject("evicted", oldest.peer)
            oldest.abort()
        self.connections[connection] = None
        self.stats.connections = len(self.connections)
        self.stats.opened += 1
        return True

    def closed(self, connection: _Connection) -> None:
        self.connections.pop(connection, None)
        self.waiting.pop(connection, None)
        self.stats.connections = len(self.connections)

    # --- requests ---------------------------------------------------------------------------
    async def respond(self, request: _Request, source: str, peer: Any) -> _Response:
        if request.method not in ("GET", "HEAD"):
            return _text(405, "Method Not Allowed\n", headers=[("Allow", "GET, HEAD")], close=True)
        url = urlsplit(request.target)
        path = url.path
        web = self._web
        auth = web.basic_auth
        needs_auth = auth is not None and not (web.health_open and path in HEALTH_PATHS)
        if needs_auth and not await self._authorized(auth, request, source, peer):
            challenge = ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
            return _text(401, "Unauthorized\n", headers=[challenge])
        if path == "/-/healthy":
            return _text(200, "Healthy.\n")
        if path == "/-/ready":
            phase = self.phase()
            if phase == READY:
                return _text(200, "Ready.\n")
            return _text(503, f"Not ready: {phase}.\n")
        if path == "/metrics":
            if self.phase() == RESTORING:
                return _text(503, f"Not ready: {RESTORING}.\n")
            return await self._metrics(parse_qs(url.query), request.headers)
        if path == "/":
            return await self._in_pool(self._status_page)
        handler = self.routes.get(path)
        if handler is not None:
            loop = asyncio.get_running_loop()
            query = parse_qs(url.query)
            status, content_type, body = await loop.run_in_executor(
                None, handler, query, request.headers
            )
            return _Response(status, body, content_type)
        return _text(404, "Not Found\n")

    async def _authorized(
        self, auth: Optional[BasicAuth], request: _Request, source: str, peer: Any
    ) -> bool:
        assert auth is not None
        header = request.headers.get("authorization")
        cached = auth.cached(header)
        if cached is not None:
            if not cached and header is not None:
                self.reject("auth_failed", peer, detail="malformed Authorization header")
            return cached
        if self.limiter.blocked(source):
            self.reject("auth_backoff", peer)
            return False
        if self._bcrypt.waiting >= MAX_PENDING or not self.limiter.begin(source):
            self.reject("auth_busy", peer)
            return False
        ok: Optional[bool] = None
        try:
            await self._bcrypt.acquire(self.limiter.priority(source))
            try:
                assert self._bcrypt_pool is not None
                loop = asyncio.get_running_loop()
                ok = await loop.run_in_executor(self._bcrypt_pool, auth.verify, header)
            finally:
                self._bcrypt.release()
        finally:
            self.limiter.end(source, ok)
        if not ok:
            self.reject("auth_failed", peer)
        return bool(ok)

    async def _in_pool(self, function: Callable[..., _Response], *args: Any) -> _Response:
        assert self._render_pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._render_pool, function, *args)

    async def _metrics(self, params: dict[str, list[str]], headers: dict[str, str]) -> _Response:
        """The exposition. Concurrent scrapes asking for the same thing share one encoding (a
        scrape arriving while it runs takes its result): 200 scrapers cost one collection, not
        200, at 5,000 series about 90 ms each."""
        names = tuple(params.get("name[]", ()))
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        compress = gzip_accepted(headers.get("accept-encoding", ""))
        key = (content_type, names, compress)
        future = self._encoding.get(key)
        if future is None:
            assert self._render_pool is not None
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._render_pool, self._encode, names, encoder, compress)
            self._encoding[key] = future

            def done(finished: asyncio.Future[tuple[bytes, str]], key: Any = key) -> None:
                if self._encoding.get(key) is finished:
                    del self._encoding[key]

            future.add_done_callback(done)
        body, error = await asyncio.shield(future)
        if error:
            self.summary.event("collect_failed", error=error)
            return _text(500, "metrics collection failed\n")
        extra = [("Content-Encoding", "gzip")] if compress else []
        return _Response(200, body, content_type, extra)

    def _encode(
        self, names: tuple[str, ...], encoder: Callable[[Any], bytes], compress: bool
    ) -> tuple[bytes, str]:
        """(body, "") or (b"", what went wrong); runs in a render thread."""
        registry: Any = self.registry
        if names:
            registry = registry.restricted_registry(list(names))
        try:
            body = encoder(registry)
        except Exception as err:  # a collector raised: answer 500 and keep serving
            return b"", f"{type(err).__name__}: {err}"
        return (gzip.compress(body, compresslevel=6) if compress else body), ""

    def _status_page(self) -> _Response:
        report = self.status() if self.status is not None else None
        page = status_page.render(report, phase=self.phase(), http=self._http_summary())
        return _Response(
            200,
            page.encode("utf-8"),
            "text/html; charset=utf-8",
            [
                # Inline style only, nothing fetched, nothing run.
                ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
            ],
        )

    def _http_summary(self) -> status_page.HttpSummary:
        return status_page.HttpSummary(
            connections=self.stats.connections,
            requests=dict(self.stats.requests),
            rejected={k: v for k, v in dict(self.stats.rejected).items() if v},
        )


class _Connection(asyncio.Protocol):
    """One client connection: TLS handshake, then requests one after the other (keep-alive)."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server
        self.transport: Optional[asyncio.Transport] = None
        self.peer: Any = None
        self.source = ""
        self.state = "new"  # handshake, head, idle (between requests), busy, closed
        self._buffer = bytearray()
        self._timer: Optional[asyncio.TimerHandle] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._eof = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.source = source_of(self.peer)
        if not self.server.opened(self):
            self.state = "closed"
            transport.abort()
            return
        context = self.server.ssl_context
        if context is None:
            self._await_request(HEADER_TIMEOUT, "head")
            return
        self.state = "handshake"
        self.server.waiting[self] = None
        self._task = asyncio.get_running_loop().create_task(self._start_tls(context))

    def data_received(self, data: bytes) -> None:
        if self.state == "closed":
            return
        self._buffer += data  # in "handshake": the request, sent just after the handshake
        if self.state == "handshake":
            return
        if self.state == "idle":  # the first byte of the next request: its deadline starts
            self._await_request(HEADER_TIMEOUT, "head")
        elif self.state == "head":
            self._parse()
        elif len(self._buffer) > MAX_HEAD_BYTES:  # busy: pipelined requests pile up
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> Optional[bool]:
        """The client sent all it will: answer a request already read (over plain TCP the
        socket stays open for that; asyncio's TLS cannot half-close), else close."""
        self._eof = True
        if self.state != "busy":
            self.abort()
            return False
        assert self.transport is not None
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._finish()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # the steps
    async def _start_tls(self, context: ssl.SSLContext) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self.transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as err:
            if self.state != "closed":
                self.server.reject("tls_handshake", self.peer, error=_tls_reason(err))
            self.abort()
            return
        if transport is None or self.state == "closed":
            self.abort()
            return
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._await_request(HEADER_TIMEOUT, "head")

    def _await_request(self, timeout: float, state: str) -> None:
        self._cancel_timer()
        self.state = state
        self.server.waiting[self] = None
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(timeout, self._timed_out)
        if state == "head" and self._buffer:
            self._parse()

    def _timed_out(self) -> None:
        if self.state == "head":
            self.server.reject("header_timeout", self.peer)
        self.abort()

    def _parse(self) -> None:
        while self._buffer[:2] == b"\r\n":  # empty lines before a request are allowed
            del self._buffer[:2]
        end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._refuse(_BadRequest(431, "head_too_large"))
            return
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        self._cancel_timer()
        self.state = "busy"
        self.server.waiting.pop(self, None)
        try:
            request = parse_head(head)
        except _BadRequest as err:
            self._refuse(err)
            return
        self._task = asyncio.get_running_loop().create_task(self._serve(request))

    def _refuse(self, err: _BadRequest) -> None:
        self.server.reject(err.reason, self.peer)
        self._cancel_timer()
        self.state = "busy"
        self.server.waiting.pop(self, None)
        response = _text(err.status, HTTPStatus(err.status).phrase + "\n")
        self._task = asyncio.get_running_loop().create_task(self._send(response, False, False))

    async def _serve(self, request: _Request) -> None:
        try:
            response = await self.server.respond(request, self.source, self.peer)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug: answer 500, keep serving, say what it was
            self.server.summary.event("handler_failed", client=_client(self.peer), error=repr(err))
            response = _text(500, "Internal Server Error\n", close=True)
        keep_alive = request.keep_alive and not response.close
        await self._send(response, request.method == "HEAD", keep_alive)

    async def _send(self, response: _Response, head_only: bool, keep_alive: bool) -> None:
        if self.state == "closed" or self.transport is None:
            return
        keep_alive = keep_alive and not self._eof
        self.server.stats.requests[str(response.status)] += 1
        self.transport.write(response.encode(head_only, keep_alive))
        if not self._writable.is_set():
            try:
                await asyncio.wait_for(self._writable.wait(), WRITE_TIMEOUT)
            except asyncio.TimeoutError:
                self.server.reject("write_timeout", self.peer)
                self.abort()
                return
        if not keep_alive:
            self.close()
            return
        self._await_request(IDLE_TIMEOUT, "idle")
        if self.state == "idle" and self._buffer:
            self._await_request(HEADER_TIMEOUT, "head")  # a pipelined request: read it now
        if self.state != "closed":
            self.transport.resume_reading()

    # ending
    def close(self) -> None:
        """Close after what was written has been sent."""
        if self.transport is not None:
            self.transport.close()
        self._finish()

    def abort(self) -> None:
        """Close now, dropping what was not sent."""
        if self.transport is not None:
            self.transport.abort()
        self._finish()

    def _finish(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._cancel_timer()
        self.server.closed(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def serve(
    registry: CollectorRegistry,
    host: str,
    port: int,
    web_config: Optional[WebConfig] = None,
    *,
    phase: Optional[Callable[[], str]] = None,
    status: Optional[Callable[[], status_page.Status]] = None,
    routes: Optional[Mapping[str, Handler]] = None,
) -> tuple[MetricsServer, threading.Thread]:
    """Serve the registry on host:port in a daemon thread; returns (server, thread).

    host "" or "::" listens on all interfaces, IPv4 and IPv6; port 0 picks a free port (read it
    from ``server.port``). OSError (e.g. address in use) and WebConfigError propagate.
    """
    server = MetricsServer(
        registry, host, port, web_config, phase=phase, status=status, routes=routes
    )
    thread = threading.Thread(target=server.serve_forever, name="http-server", daemon=True)
    thread.start()
    _log.info(
        "listening",
        address=_client(server.server_address),
        tls=server.ssl_context is not None,
        basic_auth=server.basic_auth is not None,
    )
    return server, thread


class BootTimeProcessCollector(ProcessCollector):
    """prometheus_client's ProcessCollector, working without /proc/stat.

    The stock collector reads the boot time from /proc/stat and exports nothing at all when it
    cannot; under the unit's ``ProcSubset=pid`` only per-process files are visible. The boot
    time is the wall clock minus CLOCK_BOOTTIME, the clock /proc/<pid>/stat start times count in.
    """

    def _boot_time(self) -> float:
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def _connection_limit() -> int:
    """MAX_CONNECTIONS, or fewer so that the process keeps file descriptors for its logs."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - 64))


def _bind_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The address family and socket address to bind for a listen host."""
    if host in ("", "::"):
        if socket.has_ipv6 and _ipv6_works():
            return socket.AF_INET6, ("::", port, 0, 0)
        return socket.AF_INET, ("0.0.0.0", port)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _ipv6_works() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


def _client(address: Any) -> str:
    """host:port of a socket address, IPv6 in brackets."""
    try:
        host, port = address[0], address[1]
    except (TypeError, IndexError):
        return str(address)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _tls_reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError) and err.reason:
        return str(err.reason).lower().replace("_", " ")
    if isinstance(err, asyncio.TimeoutError):
        return "timed out"
    return type(err).__name__
