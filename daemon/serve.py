"""The HTTP endpoint: ``/metrics`` for Prometheus, a small index page at ``/``, 404 elsewhere.

``serve()`` binds, starts a thread running the server and returns ``(server, thread)``; stop it
with ``server.shutdown(); server.server_close(); thread.join()``. With a web config the endpoint
speaks TLS (the handshake runs in the connection's own thread, with a timeout, so a slow client
cannot stall the accept loop) and/or requires basic auth on every path.
"""

from __future__ import annotations

import gzip
import html
import socket
import socketserver
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional, Union
from urllib.parse import parse_qs, urlsplit

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted

from . import __version__
from .webconfig import BasicAuth, WebConfig, build_ssl_context

__all__ = ["BootTimeProcessCollector", "MetricsServer", "serve"]

_log = structlog.get_logger(__name__)

REALM = "apigee-tls-exporter"
HANDSHAKE_TIMEOUT = 10.0  # seconds for a client to complete the TLS handshake
REQUEST_TIMEOUT = 30.0  # seconds of silence before a connection is dropped
MAX_CONNECTIONS = 32  # connections served at once; more are closed at once

_Socket = Union[socket.socket, ssl.SSLSocket]


class MetricsServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threaded HTTP server for one registry; TLS and basic auth from an optional WebConfig."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        web_config: Optional[WebConfig] = None,
    ) -> None:
        self.registry = registry
        self.ssl_context: Optional[ssl.SSLContext] = None
        self.basic_auth: Optional[BasicAuth] = None
        self.set_web_config(web_config)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        family, address = _bind_address(host, port)
        self.address_family = family
        super().__init__(address, _Handler, bind_and_activate=False)
        try:
            if family == socket.AF_INET6 and address[0] == "::":
                # "all interfaces" means IPv4 too, whatever net.ipv6.bindv6only says.
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        return int(self.server_address[1])

    @property
    def scheme(self) -> str:
        """ "https" when serving TLS, else "http"."""
        return "https" if self.ssl_context is not None else "http"

    def set_web_config(self, web_config: Optional[WebConfig]) -> None:
        """Apply a (new) web config to the following connections, e.g. after SIGHUP.

        Builds everything first, so an exception leaves the previous config in force.
        """
        context = None
        auth = None
        if web_config is not None:
            if web_config.tls_server_config is not None:
                context = build_ssl_context(web_config.tls_server_config)
            if web_config.basic_auth_users:
                auth = BasicAuth(web_config.basic_auth_users)
        self.ssl_context, self.basic_auth = context, auth

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread for the connection, or close it when MAX_CONNECTIONS are busy."""
        if not self._slots.acquire(blocking=False):
            _log.warning("http connection refused", client=_client(client_address), reason="busy")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Run the TLS handshake (if any) in this connection's thread, then the handler."""
        context = self.ssl_context
        if context is not None:
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                tls_request = context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                _log.info("tls handshake failed", client=_client(client_address), error=str(exc))
                return
            try:
                _Handler(tls_request, client_address, self)
            finally:
                self.shutdown_request(tls_request)
            return
        _Handler(request, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.error("http handler failed", client=_client(client_address), exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    server_version = "apigee-tls-exporter"
    sys_version = ""
    timeout = REQUEST_TIMEOUT

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        auth = self.server.basic_auth
        if auth is not None and not auth.check(self.headers.get("Authorization")):
            _log.info(
                "http unauthorized",
                client=_client(self.client_address),
                reason="no credentials" if "Authorization" not in self.headers else "rejected",
            )
            self._send(
                HTTPStatus.UNAUTHORIZED,
                b"Unauthorized\n",
                "text/plain; charset=utf-8",
                send_body,
                [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')],
            )
            return
        url = urlsplit(self.path)
        if url.path == "/metrics":
            self._metrics(parse_qs(url.query), send_body)
        elif url.path == "/":
            self._send(HTTPStatus.OK, _index_page(), "text/html; charset=utf-8", send_body)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"Not Found\n", "text/plain; charset=utf-8", send_body)

    def _metrics(self, params: dict[str, list[str]], send_body: bool) -> None:
        registry: Any = self.server.registry
        if "name[]" in params:
            registry = registry.restricted_registry(params["name[]"])
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(registry)
        except Exception:
            # A collector raised: answer 500 and keep serving; the traceback goes to the log.
            _log.error("metrics collection failed", exc_info=True)
            body = b"metrics collection failed\n"
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, body, "text/plain", send_body)
            return
        headers = []
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        self._send(HTTPStatus.OK, body, content_type, send_body, headers)

    def do_POST(self) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"Method Not Allowed\n",
            "text/plain; charset=utf-8",
            True,
            [("Allow", "GET, HEAD")],
        )

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        send_body: bool,
        headers: Optional[list[tuple[str, str]]] = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers or []:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_request(self, code: Union[int, str] = "-", size: Union[int, str] = "-") -> None:
        _log.debug(
            "http request",
            client=_client(self.client_address),
            method=self.command,
            path=urlsplit(self.path or "").path,  # no query string: keep the line bounded
            status=int(code) if str(code).isdigit() else code,
        )

    def log_error(self, format: str, *args: Any) -> None:
        _log.debug("http bad request", client=_client(self.client_address), detail=format % args)


def serve(
    registry: CollectorRegistry,
    host: str,
    port: int,
    web_config: Optional[WebConfig] = None,
) -> tuple[MetricsServer, threading.Thread]:
    """Serve the registry on host:port in a daemon thread; returns (server, thread).

    host "" or "::" listens on all interfaces, IPv4 and IPv6; port 0 picks a free port (read it
    from ``server.port``). OSError (e.g. address in use) and WebConfigError propagate.
    """
    server = MetricsServer(registry, host, port, web_config)
    thread = threading.Thread(
        target=server.serve_forever, name="http-server", kwargs={"poll_interval": 0.25}, daemon=True
    )
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


def _index_page() -> bytes:
    version = html.escape(__version__)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>apigee-tls-exporter</title>'
        "</head><body><h1>apigee-tls-exporter</h1>"
        "<p>Southbound TLS handshake failures of the Apigee Message Processor."
        f" Version {version}.</p>"
        '<p><a href="/metrics">Metrics</a></p></body></html>\n'
    ).encode()
