"""One HTTP/1.1 connection: h11 parses the requests and writes the answers; this module does the
I/O on the server's asyncio loop, the deadlines and the limits (the split of hypercorn's
``protocol/h11.py`` and ``asyncio/tcp_server.py``).

h11 refuses every malformed head (bad request line, control characters or a bare CR in the
target or a header, a bad ``Content-Length``, a missing or doubled ``Host`` in HTTP/1.1, an
unsupported version) and refuses to write a header value holding a CR or LF. Around it, our own
rules: a request head of at most ``MAX_HEAD_BYTES`` (h11 enforces its limit only across reads), no
bare LF in it (h11 would read it as a line end), a target that ``urlsplit`` can read, and a
``Content-Type`` from ``CONTENT_TYPES`` only, never from the request.

Deadlines, each whatever the pace of the bytes: the TLS handshake (``HANDSHAKE_TIMEOUT``), the
whole request head from its first byte (``HEADER_TIMEOUT``; from the connection for the first
request), the wait for the next request on a kept-alive connection (``IDLE_TIMEOUT``) and the
client reading the whole answer (``WRITE_TIMEOUT``). Answers go out ``CHUNK`` bytes at a time as
the client takes them, so that a slow reader holds a share of the body (shared with the other
scrapes), not a copy of it; the server keeps the unsent bytes of all connections within a budget.
A request with a body is answered, then the connection is closed (the body is never read).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import socket
import ssl
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Optional, Protocol
from urllib.parse import parse_qs, urlsplit

import h11

from .guard import source_of
from .summary import LogSummary

__all__ = [
    "CONTENT_TYPES",
    "HTML",
    "JSON",
    "OPENMETRICS",
    "PROMETHEUS_TEXT",
    "TEXT",
    "Connection",
    "Request",
    "Response",
]

HANDSHAKE_TIMEOUT = 5.0  # seconds for the TLS handshake
HEADER_TIMEOUT = 5.0  # seconds for a whole request head
IDLE_TIMEOUT = 120.0  # seconds a kept-alive connection may wait for its next request
WRITE_TIMEOUT = 30.0  # seconds for a client to take a whole answer
MAX_HEAD_BYTES = 16 * 1024  # request line and headers
CHUNK = 64 * 1024  # bytes of an answer handed to the transport at a time
SEND_BUFFER = 128 * 1024  # the kernel's send buffer per connection (SO_SNDBUF)
REALM = "apigee-tls-exporter"

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
JSON = "application/json"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
CONTENT_TYPES = frozenset({TEXT, HTML, JSON, PROMETHEUS_TEXT, OPENMETRICS})

_BARE_LINE_END = re.compile(rb"(?<!\r)\n|\r(?!\n)")
_HEAD_END = re.compile(rb"\n\r?\n")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; a repeated header's values joined with ", "


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = TEXT  # one of CONTENT_TYPES
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False  # close the connection after it
    delay: float = 0.0  # seconds to wait before sending it (a failing login); evictable then


def text(status: int, body: str, **kw: Any) -> Response:
    return Response(status, body.encode(), **kw)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Requests(Protocol):
    requests: collections.Counter[str]


class Server(Protocol):
    """What a connection needs of the server that accepted it (``serve.MetricsServer``)."""

    waiting: collections.OrderedDict[Connection, None]
    summary: LogSummary

    @property
    def ssl_context(self) -> Optional[ssl.SSLContext]: ...
    @property
    def extra_headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def stats(self) -> Requests: ...
    def opened(self, connection: Connection) -> bool: ...
    def closed(self, connection: Connection) -> None: ...
    def reject(self, reason: str, peer: Any, **context: Any) -> None: ...
    def unsent_changed(self, connection: Connection, unsent: int) -> None: ...
    def client_certificate_problem(self, ssl_object: Any) -> str: ...
    async def respond(self, request: Request, connection: Connection) -> Response: ...


class Connection(asyncio.Protocol):
    """One client connection: TLS handshake, then requests one after the other (keep-alive)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: Optional[asyncio.Transport] = None
        self.peer: Any = None
        self.source = ""
        self.state = "new"  # handshake, head, idle (between requests), busy, closed
        self.writing_since: Optional[float] = None  # when its current answer began to go out
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._head = bytearray()  # the bytes of the request being read, up to MAX_HEAD_BYTES + 1
        self._early = bytearray()  # bytes received during the TLS handshake
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
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        transport.set_write_buffer_limits(high=CHUNK)
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
        if self.state == "handshake":
            self._early += data  # the request, sent just after the handshake
            return
        self._h11.receive_data(data)
        if self.state in ("head", "idle"):
            self._head += data[: MAX_HEAD_BYTES + 1 - len(self._head)]
        if self.state == "idle":  # the first byte of the next request: its deadline starts
            self._await_request(HEADER_TIMEOUT, "head")
        elif self.state == "head":
            self._parse()
        elif len(self._h11.trailing_data[0]) > MAX_HEAD_BYTES:  # busy: pipelined requests
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
        problem = self.server.client_certificate_problem(transport.get_extra_info("ssl_object"))
        if problem:
            self.server.reject("tls_client_san", self.peer, error=problem)
            self.abort()
            return
        self.state = "head"
        early, self._early = bytes(self._early), bytearray()
        self._await_request(HEADER_TIMEOUT, "head")
        if early:
            self.data_received(early)

    def _await_request(self, timeout: float, state: str) -> None:
        self._cancel_timer()
        self.state = state
        self.server.waiting[self] = None
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(timeout, self._timed_out)
        if state == "head" and self._head:
            self._parse()

    def _timed_out(self) -> None:
        if self.state == "head":
            self.server.reject("header_timeout", self.peer)
        self.abort()

    def _parse(self) -> None:
        try:
            request = self._next_request()
        except _Refused as err:
            self._refuse(err)
            return
        if request is None:
            return
        self._cancel_timer()
        self.state = "busy"
        self.server.waiting.pop(self, None)
        self._task = asyncio.get_running_loop().create_task(self._serve(request))

    def _next_request(self) -> Optional[tuple[Request, bool]]:
        """The next complete request head and whether the connection can stay open after it;
        None while incomplete; _Refused when malformed."""
        while self._head[:2] == b"\r\n" and self._h11.their_state is h11.IDLE:
            # empty lines before a request are allowed (RFC 9112 2.2)
            del self._head[:2]
            data, _ = self._h11.trailing_data
            self._h11 = _restart(data[2:])
        end = _HEAD_END.search(self._head)
        if (end.end() if end else len(self._head)) > MAX_HEAD_BYTES:
            raise _Refused(431, "head_too_large")
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as err:
            if err.error_status_hint == 431:
                raise _Refused(431, "head_too_large") from None
            raise _Refused(err.error_status_hint, "bad_request") from None
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):
            raise _Refused(400, "bad_request")
        if event.http_version not in (b"1.0", b"1.1"):
            raise _Refused(505, "bad_request")
        if end is None:  # h11 found the end of the head in bytes we did not keep
            raise _Refused(431, "head_too_large")
        if _BARE_LINE_END.search(self._head, 0, end.end()):
            raise _Refused(400, "bad_request")
        target = event.target.decode("latin-1")  # h11 lets visible characters only through
        try:
            url = urlsplit(target)
            query = parse_qs(url.query)
        except ValueError:
            raise _Refused(400, "bad_request") from None
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text_value = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text_value}" if key in headers else text_value
        # a body follows when the request does not end here: never read, close after
        with contextlib.suppress(h11.RemoteProtocolError):
            self._h11.next_event()
        keep_alive = self._h11.their_state is h11.DONE
        self._head.clear()
        method = event.method.decode("latin-1").upper()
        return Request(method, url.path, query, headers), keep_alive

    def _refuse(self, err: _Refused) -> None:
        self.server.reject(err.reason, self.peer)
        self._cancel_timer()
        self.state = "busy"
        self.server.waiting.pop(self, None)
        response = text(err.status, HTTPStatus(err.status).phrase + "\n", close=True)
        self._task = asyncio.get_running_loop().create_task(self._send(response, "GET", False))

    async def _serve(self, parsed: tuple[Request, bool]) -> None:
        request, keep_alive = parsed
        try:
            response = await self.server.respond(request, self)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug: answer 500, keep serving, say what it was
            self._failed(err)
            response = text(500, "Internal Server Error\n", close=True)
        if response.delay > 0:  # a failing login: the answer waits, the connection is evictable
            self.server.waiting[self] = None
            await asyncio.sleep(response.delay)
            if self.state == "closed":
                return
            self.server.waiting.pop(self, None)
        await self._send(response, request.method, keep_alive and not response.close)

    async def _send(self, response: Response, method: str, keep_alive: bool) -> None:
        if self.state == "closed" or self.transport is None:
            return
        try:
            head = self._h11.send(_h11_response(response, keep_alive, self.server.extra_headers))
        except (h11.LocalProtocolError, ValueError) as err:  # a header we will not write
            self._failed(err)
            response = text(500, "Internal Server Error\n", close=True)
            keep_alive = False
            try:
                head = self._h11.send(_h11_response(response, False, ()))
            except h11.LocalProtocolError:
                self.abort()
                return
        self.server.stats.requests[str(response.status)] += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_TIMEOUT
        self.writing_since = loop.time()
        try:
            if not await self._write(head or b"", deadline):
                return
            if method != "HEAD":
                view = memoryview(response.body)
                for start in range(0, len(view), CHUNK):
                    data = self._h11.send(h11.Data(data=bytes(view[start : start + CHUNK])))
                    if not await self._write(data or b"", deadline):
                        return
            self._h11.send(h11.EndOfMessage())
        finally:
            self.writing_since = None
            self.server.unsent_changed(self, 0)
        if not keep_alive or self._h11.our_state is not h11.DONE:
            self.close()
            return
        try:
            self._h11.start_next_cycle()
        except h11.LocalProtocolError:
            self.close()
            return
        self._head = bytearray(self._h11.trailing_data[0][: MAX_HEAD_BYTES + 1])
        self._await_request(IDLE_TIMEOUT, "idle")
        if self.state == "idle" and self._head:
            self._await_request(HEADER_TIMEOUT, "head")  # a pipelined request: read it now
        if self._eof and self.state in ("idle", "head"):  # half-closed: no more will come
            self.close()
        if self.state != "closed":
            self.transport.resume_reading()

    async def _write(self, data: bytes, deadline: float) -> bool:
        """Hand data to the transport and wait until it has room again; False when the
        connection closed or the client is too slow."""
        if self.state == "closed" or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        self.server.unsent_changed(self, self.transport.get_write_buffer_size())
        if self._writable.is_set():
            return self.state != "closed"
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(self._writable.wait(), max(remaining, 0.0))
        except asyncio.TimeoutError:
            self.server.reject("write_timeout", self.peer)
            self.abort()
            return False
        if self.transport is not None:
            self.server.unsent_changed(self, self.transport.get_write_buffer_size())
        return self.state != "closed"

    def _failed(self, err: Exception) -> None:
        self.server.summary.event(
            "handler_failed", client=client_address(self.peer), error=repr(err)
        )

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
        self._writable.set()
        self._cancel_timer()
        self.server.closed(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _restart(data: bytes) -> h11.Connection:
    """A fresh h11 connection holding ``data`` (after empty lines were dropped)."""
    fresh = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    fresh.receive_data(data)
    return fresh


def _h11_response(
    response: Response, keep_alive: bool, extra: tuple[tuple[str, str], ...]
) -> h11.Response:
    if response.content_type not in CONTENT_TYPES:
        raise ValueError(f"content type not in CONTENT_TYPES: {response.content_type!r}")
    headers = [
        ("Server", REALM),
        ("Date", formatdate(usegmt=True)),
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        *extra,
        *response.headers,
    ]
    if not keep_alive:
        headers.append(("Connection", "close"))
    phrase = HTTPStatus(response.status).phrase
    return h11.Response(status_code=response.status, headers=headers, reason=phrase)


def client_address(address: Any) -> str:
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
