"""The HTTP endpoint: ``/metrics`` for Prometheus, ``/-/healthy`` and ``/-/ready``, the status
page at ``/``, the routes the wiring adds; 404 elsewhere.

``serve()`` binds, starts a thread running the server and returns ``(server, thread)``; stop it
with ``server.shutdown(); server.server_close(); thread.join()``.

One asyncio event loop serves every connection (``connection``: h11, deadlines, limits), so that a
waiting connection costs a socket and a few hundred bytes, not a thread: hundreds of idle or slow
clients cannot take the place of a scrape. When the connection limit is reached, the connection
that has been waiting longest without a complete request makes room for the new one. Basic auth
goes through the ``guard`` (the bcrypt queue, failing sources, never the right password refused).

Routes: ``serve(..., routes={"/probe": handler})`` adds paths, behind the same TLS and basic auth
as ``/metrics``. A ``Handler`` takes the query parameters (``parse_qs``) and the request headers
(lower-case names) and returns ``(status, content type, body)``, the content type one of
``connection.CONTENT_TYPES`` (anything else, or an exception, is a 500 and a log line). Handlers may
block (connect elsewhere): they run on ``ROUTE_WORKERS`` threads, never on the event loop. The
built-in paths cannot be replaced.

``/metrics``: concurrent scrapes share one collection (a snapshot of the registry), whatever their
``name[]`` filters, and one answer per format, compression and filter; the answer goes out as the
client takes it, and the unsent bytes of all connections stay within ``SEND_BUDGET`` (beyond it the
connection that has been taking its answer longest is closed, ``slow_reader``).

Repeated events of one kind (refused connections, failed logins, TLS errors) are logged once per
interval and then summarised with a count (``summary``), and counted in
``apigee_tls_http_requests_total{code}`` and ``apigee_tls_http_rejected_total{reason}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import ipaddress
import resource
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple, Optional

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.core import Metric
from prometheus_client.exposition import gzip_accepted
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.registry import Collector

from ..state import families
from . import status as status_page
from .connection import (
    CONTENT_TYPES,
    HTML,
    OPENMETRICS,
    PROMETHEUS_TEXT,
    REALM,
    Connection,
    Request,
    Response,
    client_address,
    text,
)
from .guard import Guard, SourceLimiter
from .summary import SUMMARY_INTERVAL, LogSummary
from .webconfig import BasicAuth, WebConfig, build_ssl_context

__all__ = ["Handler", "MetricsServer", "serve"]

_log = structlog.get_logger(__name__)

MAX_CONNECTIONS = 1000  # lowered to fit RLIMIT_NOFILE
RENDER_WORKERS = 4  # threads that encode /metrics and render the status page (one collects)
ROUTE_WORKERS = 4  # threads that run the added routes' handlers
SEND_BUDGET = 32 * 1024 * 1024  # bytes of answers not yet taken by clients, all connections

# Phases of the daemon's start (``phase`` callable): /metrics answers 503 while restoring (the
# counters would read 0, a reset to Prometheus); /-/ready answers 200 only when ready.
RESTORING = "restoring the checkpoint"
OPENING = "opening the logs"
READY = "ready"

HEALTH_PATHS = ("/-/healthy", "/-/ready")
BUILT_IN_PATHS = ("/", "/metrics", *HEALTH_PATHS)
REJECT_REASONS = (
    "busy",  # the connection limit was reached and no waiting connection could make room
    "evicted",  # a waiting connection closed to make room for a new one
    "tls_handshake",  # the handshake failed or took longer than HANDSHAKE_TIMEOUT
    "tls_client_san",  # the client certificate has none of client_allowed_sans
    "header_timeout",  # the request head was not complete within HEADER_TIMEOUT
    "write_timeout",  # the client did not take the answer within WRITE_TIMEOUT
    "slow_reader",  # closed: the unsent answers were over SEND_BUDGET and it was the slowest
    "bad_request",  # malformed request line, header or target, or not HTTP/1.0 or 1.1
    "head_too_large",  # request line and headers over MAX_HEAD_BYTES
    "auth_failed",  # wrong user or password, or a malformed Authorization
    "auth_busy",  # 401 at once: too many checks of this source (or in all) already waiting
)

# (query parameters, request headers with lower-case names) -> (status, content type, body)
Handler = Callable[[Mapping[str, list[str]], Mapping[str, str]], "tuple[int, str, bytes]"]


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
        requests = families.HTTP_REQUESTS.new()
        for code, value in sorted(dict(self.requests).items()):
            requests.add_metric([code], value)
        yield requests
        rejected = families.HTTP_REJECTED.new()
        for reason, value in sorted(dict(self.rejected).items()):
            rejected.add_metric([reason], value)
        yield rejected
        yield families.HTTP_CONNECTIONS.new(value=self.connections)
        yield families.HTTP_CONNECTIONS_OPENED.new(value=self.opened)


class _Snapshot:
    """The registry's metrics as collected once, and their expositions: each family is encoded
    once per format and the pieces reused by every answer built from this snapshot, whatever
    its ``name[]`` filter (a family all of whose samples are asked for is a piece; one asked for
    in part is encoded for that answer alone), and by the next snapshot for a family that has
    not changed (its help, type and samples equal: the bytes would be the same)."""

    def __init__(self, metrics: list[Metric], previous: Optional[_Snapshot] = None) -> None:
        self._metrics = metrics
        self._sample_names = [frozenset(s.name for s in m.samples) for m in metrics]
        self._pieces: dict[tuple[bool, int], bytes] = {}
        self._lock = threading.Lock()  # one thread encodes a piece, the others wait for it
        # The previous collection's pieces, reused for families that have not changed since.
        self._reusable: dict[tuple[bool, str], tuple[Metric, bytes]] = {}
        if previous is not None:
            with previous._lock:
                for (openmetrics, index), piece in previous._pieces.items():
                    metric = previous._metrics[index]
                    self._reusable[(openmetrics, metric.name)] = (metric, piece)

    def exposition(self, openmetrics: bool, names: frozenset[str]) -> bytes:
        parts = []
        for index, metric in enumerate(self._metrics):
            present = self._sample_names[index]
            if not names or present <= names:
                parts.append(self._piece(openmetrics, index))
            elif not present.isdisjoint(names):
                part = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                part.samples = [s for s in metric.samples if s.name in names]
                parts.append(_encode_family(part, openmetrics))
        if openmetrics:
            parts.append(b"# EOF\n")
        return b"".join(parts)

    def _piece(self, openmetrics: bool, index: int) -> bytes:
        key = (openmetrics, index)
        with self._lock:
            piece = self._pieces.get(key)
            if piece is None:
                metric = self._metrics[index]
                earlier, earlier_piece = self._reusable.get((openmetrics, metric.name), (None, b""))
                if earlier is not None and earlier == metric:  # same help, type and samples
                    piece = earlier_piece
                else:
                    piece = _encode_family(metric, openmetrics)
                self._pieces[key] = piece
        return piece


class _OneFamily:
    """A registry of one family, for the encoders."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


def _encode_family(metric: Metric, openmetrics: bool) -> bytes:
    """One family in the text format or in OpenMetrics (without its ``# EOF``)."""
    if openmetrics:
        body = openmetrics_format.generate_latest(_OneFamily(metric))  # type: ignore[no-untyped-call]
        return bytes(body[: -len(b"# EOF\n")])
    return text_format.generate_latest(_OneFamily(metric))


class _WebState(NamedTuple):
    ssl_context: Optional[ssl.SSLContext]
    basic_auth: Optional[BasicAuth]
    health_open: bool
    headers: tuple[tuple[str, str], ...]  # http_server_config.headers, on every answer
    allowed_sans: frozenset[str]  # client_allowed_sans; empty: any verified client


class MetricsServer:
    """The HTTP server for one registry; TLS and basic auth from an optional WebConfig.

    ``phase`` says how far the daemon's start has come (``RESTORING``, ``OPENING``, ``READY``;
    always ready without it); ``status`` gives the status page's data; ``routes`` adds paths.
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
        routes: Optional[Mapping[str, Handler]] = None,
        limiter: Optional[SourceLimiter] = None,
    ) -> None:
        self.registry = registry
        self.phase = phase or (lambda: READY)
        self.status = status
        self.routes = dict(routes or {})
        for path in self.routes:
            if path in BUILT_IN_PATHS or not path.startswith("/"):
                raise ValueError(f"route {path!r}: a built-in path or not starting with '/'")
        self._web = _WebState(None, None, False, (), frozenset())
        self.set_web_config(web_config)
        self.guard = Guard(limiter)
        self.max_connections = _connection_limit()
        self.stats = _HttpStats()
        self.summary = LogSummary(_log)
        self.connections: collections.OrderedDict[Connection, None] = collections.OrderedDict()
        self.waiting: collections.OrderedDict[Connection, None] = collections.OrderedDict()
        self._unsent: dict[Connection, int] = {}
        self._unsent_total = 0
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._stop_requested = False
        self._serving = threading.Event()
        self._done = threading.Event()
        self._collecting: Optional[asyncio.Future[tuple[Optional[_Snapshot], str]]] = None
        self._answers: dict[Any, asyncio.Future[tuple[bytes, str]]] = {}
        self._summary_timer: Optional[asyncio.TimerHandle] = None
        self._render_pool: Optional[ThreadPoolExecutor] = None
        self._collect_pool: Optional[ThreadPoolExecutor] = None
        self._last_snapshot: Optional[_Snapshot] = None  # read and written by the collect thread
        self._route_pool: Optional[ThreadPoolExecutor] = None
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

    @property
    def extra_headers(self) -> tuple[tuple[str, str], ...]:
        return self._web.headers

    def set_web_config(self, web_config: Optional[WebConfig]) -> None:
        """Apply a (new) web config to the following connections, e.g. after SIGHUP.

        Builds everything first, so an exception leaves the previous config in force. The
        same users keep their ``BasicAuth`` (and its remembered logins).
        """
        context = None
        auth = None
        health_open = False
        headers: tuple[tuple[str, str], ...] = ()
        sans: frozenset[str] = frozenset()
        if web_config is not None:
            tls = web_config.tls_server_config
            if tls is not None:
                context = build_ssl_context(tls)
                sans = frozenset(_normal_san(s) for s in tls.client_allowed_sans or ())
            users = web_config.basic_auth_users
            if users:
                old = self._web.basic_auth
                auth = old if old is not None and old.users == users else BasicAuth(users)
            health_open = web_config.apigee_tls_exporter.health_without_auth
            headers = tuple(sorted(web_config.http_server_config.headers.items()))
        self._web = _WebState(context, auth, health_open, headers, sans)

    def client_certificate_problem(self, ssl_object: Any) -> str:
        """ "" when the TLS client may go on, else why not (client_allowed_sans)."""
        allowed = self._web.allowed_sans
        if not allowed:
            return ""
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        found = {_normal_san(value) for _, value in (cert or {}).get("subjectAltName", ())}
        if found & allowed:
            return ""
        return "no SAN in client_allowed_sans: " + (", ".join(sorted(found)) or "(none)")

    # --- running and stopping ---------------------------------------------------------------
    def serve_forever(self) -> None:
        """Serve until ``shutdown()``."""
        self._serving.set()
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_error)
        self._render_pool = ThreadPoolExecutor(RENDER_WORKERS, thread_name_prefix="http-render")
        self._collect_pool = ThreadPoolExecutor(1, thread_name_prefix="http-collect")
        self._route_pool = ThreadPoolExecutor(ROUTE_WORKERS, thread_name_prefix="http-route")
        self.guard.start()
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._render_pool.shutdown(wait=False, cancel_futures=True)
                self._collect_pool.shutdown(wait=False, cancel_futures=True)
                self._route_pool.shutdown(wait=False, cancel_futures=True)
                self.guard.stop()
                self._done.set()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        stop = asyncio.Event()
        with self._lock:
            self._loop, self._stop = loop, stop
            if self._stop_requested:
                return
        server = await loop.create_server(lambda: Connection(self), sock=self.socket)
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
        self.summary.event(reason, client=client_address(peer), **context)

    def opened(self, connection: Connection) -> bool:
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

    def closed(self, connection: Connection) -> None:
        self.connections.pop(connection, None)
        self.waiting.pop(connection, None)
        self.unsent_changed(connection, 0)
        self.stats.connections = len(self.connections)

    def unsent_changed(self, connection: Connection, unsent: int) -> None:
        """A connection's answer bytes not yet taken; over SEND_BUDGET in all, the connection
        that has been taking its answer longest is closed."""
        self._unsent_total += unsent - self._unsent.pop(connection, 0)
        if unsent:
            self._unsent[connection] = unsent
        while self._unsent_total > SEND_BUDGET and self._unsent:
            slowest = min(self._unsent, key=lambda c: c.writing_since or 0.0)
            self.reject("slow_reader", slowest.peer)
            self._unsent_total -= self._unsent.pop(slowest)
            slowest.abort()

    # --- requests ---------------------------------------------------------------------------
    async def respond(self, request: Request, connection: Connection) -> Response:
        if request.method not in ("GET", "HEAD"):
            return text(405, "Method Not Allowed\n", headers=(("Allow", "GET, HEAD"),), close=True)
        path = request.path
        web = self._web
        auth = web.basic_auth
        if auth is not None and not (web.health_open and path in HEALTH_PATHS):
            verdict = await self.guard.check(
                auth, request.headers.get("authorization"), connection.source
            )
            if verdict.reason:
                self.reject(verdict.reason, connection.peer)
                challenge = ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
                return text(401, "Unauthorized\n", headers=(challenge,), delay=verdict.delay)
        if path == "/-/healthy":
            return text(200, "Healthy.\n")
        if path == "/-/ready":
            phase = self.phase()
            if phase == READY:
                return text(200, "Ready.\n")
            return text(503, f"Not ready: {phase}.\n")
        if path == "/metrics":
            if self.phase() == RESTORING:
                return text(503, f"Not ready: {RESTORING}.\n")
            return await self._metrics(request)
        if path == "/":
            return await self._in_pool(self._render_pool, self._status_page)
        handler = self.routes.get(path)
        if handler is not None:
            return await self._in_pool(self._route_pool, self._route, handler, request)
        return text(404, "Not Found\n")

    async def _in_pool(
        self, pool: Optional[ThreadPoolExecutor], function: Callable[..., Response], *args: Any
    ) -> Response:
        assert pool is not None
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

    def _route(self, handler: Handler, request: Request) -> Response:
        """A handler's answer; runs in a route thread."""
        try:
            status, content_type, body = handler(request.query, request.headers)
            if content_type not in CONTENT_TYPES or not 200 <= int(status) <= 599:
                raise ValueError(f"answer ({status}, {content_type!r}) not allowed")
            return Response(int(status), bytes(body), content_type)
        except Exception as err:  # a handler's bug: answer 500, keep serving, say what it was
            self.summary.event("handler_failed", path=request.path, error=repr(err))
            return text(500, "Internal Server Error\n")

    async def _metrics(self, request: Request) -> Response:
        """The exposition. Concurrent scrapes asking for the same format and filter share one
        answer; all concurrent scrapes share one collection, whatever their filters."""
        names = tuple(sorted(set(request.query.get("name[]", ()))))
        openmetrics = _wants_openmetrics(request.headers.get("accept", ""))
        compress = gzip_accepted(request.headers.get("accept-encoding", ""))
        key = (openmetrics, compress, names)
        task = self._answers.get(key)
        if task is None:
            task = asyncio.ensure_future(self._exposition(openmetrics, compress, names))
            self._answers[key] = task

            def done(finished: asyncio.Future[tuple[bytes, str]], key: Any = key) -> None:
                if self._answers.get(key) is finished:
                    del self._answers[key]

            task.add_done_callback(done)
        body, error = await asyncio.shield(task)
        if error:
            self.summary.event("collect_failed", error=error)
            return text(500, "metrics collection failed\n")
        extra = (("Content-Encoding", "gzip"),) if compress else ()
        return Response(200, body, OPENMETRICS if openmetrics else PROMETHEUS_TEXT, extra)

    async def _exposition(
        self, openmetrics: bool, compress: bool, names: tuple[str, ...]
    ) -> tuple[bytes, str]:
        """(body, "") or (b"", what went wrong)."""
        snapshot, error = await self._snapshot()
        if snapshot is None:
            return b"", error
        assert self._render_pool is not None
        body = await asyncio.get_running_loop().run_in_executor(
            self._render_pool, _encode, snapshot, openmetrics, compress, names
        )
        return body, ""

    async def _snapshot(self) -> tuple[Optional[_Snapshot], str]:
        """One collection of the registry, shared by the scrapes that arrive while it runs; on
        a thread of its own, never queued behind encodings."""
        future = self._collecting
        if future is None:
            assert self._collect_pool is not None
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._collect_pool, self._collect)
            self._collecting = future

            def done(finished: asyncio.Future[Any]) -> None:
                if self._collecting is finished:
                    self._collecting = None

            future.add_done_callback(done)
        return await asyncio.shield(future)

    def _collect(self) -> tuple[Optional[_Snapshot], str]:
        """(snapshot, "") or (None, what went wrong); runs in the collect thread."""
        try:
            snapshot = _Snapshot(list(self.registry.collect()), self._last_snapshot)
        except Exception as err:  # a collector raised: answer 500 and keep serving
            return None, f"{type(err).__name__}: {err}"
        self._last_snapshot = snapshot
        return snapshot, ""

    def _status_page(self) -> Response:
        report = self.status() if self.status is not None else None
        page = status_page.render(report, phase=self.phase(), http=self._http_summary())
        return Response(
            200,
            page.encode("utf-8"),
            HTML,
            (
                # Inline style only, nothing fetched, nothing run.
                ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
            ),
        )

    def _http_summary(self) -> status_page.HttpSummary:
        return status_page.HttpSummary(
            connections=self.stats.connections,
            requests=dict(self.stats.requests),
            rejected={k: v for k, v in dict(self.stats.rejected).items() if v},
        )


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
        address=client_address(server.server_address),
        tls=server.ssl_context is not None,
        basic_auth=server.basic_auth is not None,
    )
    return server, thread


def _encode(
    snapshot: _Snapshot, openmetrics: bool, compress: bool, names: tuple[str, ...]
) -> bytes:
    """An answer's body from a snapshot; runs in a render thread."""
    body = snapshot.exposition(openmetrics, frozenset(names))
    return gzip.compress(body, compresslevel=6) if compress else body


def _wants_openmetrics(accept: str) -> bool:
    """OpenMetrics 1.0 when the client lists it; the content type is ours, never the client's."""
    return any(
        part.split(";")[0].strip().lower() == "application/openmetrics-text"
        for part in accept.split(",")
    )


def _normal_san(value: str) -> str:
    """A SAN as compared: IP addresses in their canonical form, names as they are."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip()


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
