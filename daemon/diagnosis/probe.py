"""The network probe: TLS handshakes with a backend, as the MP would make them, then one request.

``probe()`` connects to the backend with the MP's side of the handshake (``TlsSettings``: the
protocols and cipher suites of the TargetServer's ``sSLInfo``, the SNI name the MP sends) and runs:

1. a handshake without a client certificate (what the MP does when Java's key manager finds no
   alias for the server's CA names), recording the protocol version, whether the server asked for
   a certificate, the acceptable client CA names it sent, its chain and the alert received;
2. when a private key is at hand, the same with the client certificate;
3. after each completed handshake, one small HTTP request (``GET /`` with the host, read up to the
   status line, headers and the start of the body): nginx completes the handshake without an
   acceptable certificate and rejects at HTTP (400 "No required SSL certificate was sent", 403),
   and in TLS 1.3 every server judges the client certificate after the client's handshake is
   done, so its alert arrives on this read. A backend that is not HTTP is fine: the TLS answer
   still decides;
4. when the first handshake fails before the ServerHello, the same once per TLS version with the
   default cipher suites, to tell a protocol, cipher or SNI mismatch apart.

Every connection is bounded by ``timeout``; the request's answer by ``http_wait``.
"""

from __future__ import annotations

import errno
import ipaddress
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, TypeVar

from cryptography import x509
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

from ..records.reasons import ALERT_NUMBERS
from .identity import CertSummary, ClientIdentity, SigningKey, format_name

# OpenSSL verify error codes worth naming in a report.
VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
}

# Java protocol names (TargetServer sSLInfo ``protocols``) and OpenSSL's versions.
PROTOCOLS = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}
# What a JDK 11+ client enables when ``protocols`` is empty.
DEFAULT_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
TLS13_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)
# TLS 1.2 CertificateRequest certificate types, and the key type Java reads each as.
CERTIFICATE_TYPES = {1: "rsa_sign", 2: "dss_sign", 64: "ecdsa_sign"}
_SIGNATURE_SCHEMES = {
    0x0401: "rsa_pkcs1_sha256", 0x0501: "rsa_pkcs1_sha384", 0x0601: "rsa_pkcs1_sha512",
    0x0201: "rsa_pkcs1_sha1", 0x0403: "ecdsa_secp256r1_sha256", 0x0503: "ecdsa_secp384r1_sha384",
    0x0603: "ecdsa_secp521r1_sha512", 0x0203: "ecdsa_sha1", 0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384", 0x0806: "rsa_pss_rsae_sha512", 0x0807: "ed25519",
    0x0808: "ed448", 0x0809: "rsa_pss_pss_sha256", 0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512", 0x0402: "dsa_sha256", 0x0502: "dsa_sha384",
    0x0602: "dsa_sha512", 0x0202: "dsa_sha1", 0x0301: "rsa_sha224", 0x0303: "ecdsa_sha224",
    0x0302: "dsa_sha224",
}  # fmt: skip


def signature_scheme(code: int) -> str:
    """The IANA name of a signature scheme (``0x0403`` -> ``ecdsa_secp256r1_sha256``)."""
    return _SIGNATURE_SCHEMES.get(code, f"0x{code:04x}")


# Texts OpenSSL gives when the peer answers a ClientHello with something that is not TLS.
_NOT_TLS = ("wrong version number", "packet length too long", "http request", "unknown protocol")
MAX_HTTP_BYTES = 16384
RETRY_AFTER = 0.5  # seconds without a ServerHello before the retries start alongside
VERDICT_FLOOR = 0.05  # seconds to wait for a TLS 1.3 server's verdict, plus twice the handshake


def openssl_cipher(name: str) -> Optional[str]:
    """A Java/IANA TLS 1.2 cipher suite name in OpenSSL's spelling (None when it has none).

    ``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`` -> ``ECDHE-RSA-AES128-GCM-SHA256``;
    ``TLS_RSA_WITH_AES_256_CBC_SHA`` -> ``AES256-SHA``. Java's ``SSL_`` prefix is accepted.
    """
    upper = name.strip().upper()
    for prefix in ("TLS_", "SSL_"):
        if upper.startswith(prefix):
            upper = upper[len(prefix) :]
            break
    else:
        return None
    kx, sep, rest = upper.partition("_WITH_")
    if not sep:
        return None
    kx_name = {"ECDHE_RSA": "ECDHE-RSA", "ECDHE_ECDSA": "ECDHE-ECDSA", "DHE_RSA": "DHE-RSA",
               "DHE_DSS": "DHE-DSS", "RSA": ""}.get(kx)  # fmt: skip
    if kx_name is None:
        return None
    encs = {
        "AES_128_GCM": "AES128-GCM", "AES_256_GCM": "AES256-GCM", "AES_128_CBC": "AES128",
        "AES_256_CBC": "AES256", "AES_128_CCM": "AES128-CCM", "AES_256_CCM": "AES256-CCM",
        "AES_128_CCM_8": "AES128-CCM8", "AES_256_CCM_8": "AES256-CCM8",
        "CHACHA20_POLY1305": "CHACHA20-POLY1305", "3DES_EDE_CBC": "DES-CBC3",
        "CAMELLIA_128_CBC": "CAMELLIA128", "CAMELLIA_256_CBC": "CAMELLIA256",
        "ARIA_128_GCM": "ARIA128-GCM", "ARIA_256_GCM": "ARIA256-GCM",
    }  # fmt: skip
    for enc in sorted(encs, key=len, reverse=True):
        if rest == enc or rest.startswith(enc + "_"):
            enc_name, mac = encs[enc], rest[len(enc) + 1 :]
            break
    else:
        return None
    parts = [p for p in (kx_name, enc_name) if p]
    if enc_name == "CHACHA20-POLY1305" or enc_name.endswith(("CCM", "CCM8")):
        mac = ""  # OpenSSL leaves the PRF hash out of these names
    if enc_name == "DES-CBC3" and kx_name == "ECDHE-RSA":
        parts = ["ECDHE-RSA-DES-CBC3"]
    if enc_name == "DES-CBC3" and not kx_name:
        parts = ["DES-CBC3"]
    if mac:
        parts.append(mac)
    if kx_name.startswith("DHE") and enc_name.endswith(("CCM", "CCM8")):
        parts = [f"DHE-RSA-{enc_name}"]
    return "-".join(parts)


@dataclass(frozen=True)
class TlsSettings:
    """The MP's side of the handshake: Java protocol and cipher suite names (empty: the JVM's
    defaults) and the SNI name it sends (None: none, as for an IP target)."""

    protocols: tuple[str, ...] = ()
    ciphers: tuple[str, ...] = ()
    servername: Optional[str] = None

    def problems(self) -> list[str]:
        """Names this probe cannot use (unknown protocol, cipher without an OpenSSL name)."""
        out = [f"protocol {p}" for p in self.protocols if p not in PROTOCOLS]
        out += [
            f"cipher suite {c}"
            for c in self.ciphers
            if c not in TLS13_SUITES and openssl_cipher(c) is None
        ]
        return out

    @property
    def effective_protocols(self) -> tuple[str, ...]:
        """The versions the MP can use: its protocols, less any without an enabled suite."""
        protocols = tuple(p for p in (self.protocols or DEFAULT_PROTOCOLS) if p in PROTOCOLS)
        if self.ciphers:
            has13 = any(c in TLS13_SUITES for c in self.ciphers)
            has12 = any(c not in TLS13_SUITES for c in self.ciphers)
            protocols = tuple(
                p for p in protocols if (p == "TLSv1.3" and has13) or (p != "TLSv1.3" and has12)
            )
        return protocols


@dataclass(frozen=True)
class HttpAnswer:
    """The status line (and the HTML title, when the body has one) of the answer to ``GET /``."""

    status: int
    reason: str
    title: Optional[str] = None
    server: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "title": self.title,
                "server": self.server}  # fmt: skip


@dataclass(frozen=True)
class Handshake:
    """One TLS handshake attempt (and the request after it), as the client saw it."""

    completed: bool
    tls_version: Optional[str] = None
    server_hello: bool = False
    certificate_requested: bool = False
    acceptable_ca_names: tuple[str, ...] = ()
    server_chain: tuple[CertSummary, ...] = ()
    server_verify_error: Optional[str] = None  # None when verified or not checked
    alert: Optional[str] = None  # the fatal alert received
    alert_after_handshake: bool = False  # it came after our side finished (TLS 1.3)
    reset_after_handshake: bool = False  # TLS 1.3: reset before any answer (the alert was lost)
    error: Optional[str] = None
    timed_out: bool = False
    not_tls: bool = False
    sent_certificate: bool = False  # the probe's Certificate message held a certificate
    http: Optional[HttpAnswer] = None
    protocols: tuple[str, ...] = ()  # what this attempt offered
    ciphers: tuple[str, ...] = ()
    servername: Optional[str] = None  # the SNI name this attempt sent
    certificate_types: tuple[int, ...] = ()  # of the CertificateRequest (TLS 1.2)
    signature_algorithms: tuple[int, ...] = ()  # of the CertificateRequest
    closed_after_handshake: bool = False  # TLS 1.3: closed, no alert, no answer, cert requested
    post_handshake_request: bool = False  # a CertificateRequest after the handshake (TLS 1.3)

    @property
    def tls_rejected(self) -> bool:
        """The handshake failed, or a fatal alert (a reset, a close) came right after it."""
        return (
            not self.completed
            or self.alert is not None
            or self.reset_after_handshake
            or self.closed_after_handshake
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "tls_version": self.tls_version,
            "certificate_requested": self.certificate_requested,
            "sent_certificate": self.sent_certificate,
            "alert": self.alert,
            "alert_after_handshake": self.alert_after_handshake,
            "error": self.error,
            "closed_after_handshake": self.closed_after_handshake,
            "post_handshake_certificate_request": self.post_handshake_request,
            "certificate_types": [CERTIFICATE_TYPES.get(t, str(t)) for t in self.certificate_types],
            "signature_algorithms": [signature_scheme(a) for a in self.signature_algorithms],
            "http": self.http.to_json() if self.http else None,
            "protocols": list(self.protocols),
            "ciphers": list(self.ciphers),
            "servername": self.servername,
        }


@dataclass(frozen=True)
class ProbeResult:
    """Everything ``probe()`` saw of the backend."""

    target: str
    settings: TlsSettings
    reachable: bool
    connect_error: Optional[str] = None
    server_chain_checked: bool = False
    without_certificate: Optional[Handshake] = None
    with_certificate: Optional[Handshake] = None
    retries: tuple[Handshake, ...] = ()  # after a close before the ServerHello
    post_handshake: Optional[Handshake] = None  # offering post-handshake authentication

    @property
    def servername(self) -> Optional[str]:
        return self.settings.servername

    @property
    def host(self) -> str:
        return parse_target(self.target)[0]


def parse_target(target: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` to ``(host, port)``; ValueError otherwise."""
    host, sep, port_text = target.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"target must be HOST:PORT, got {target!r}")
    return host, int(port_text)


class _Timeout(Exception):
    pass


def _wait(sock: socket.socket, write: bool, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Timeout
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE if write else selectors.EVENT_READ)
        if not selector.select(remaining):
            raise _Timeout


T = TypeVar("T")


def _drive(sock: socket.socket, op: Callable[[], T], deadline: float) -> T:
    """Run a pyOpenSSL call on a non-blocking socket until done or the deadline passes."""
    while True:
        try:
            return op()
        except SSL.WantReadError:
            _wait(sock, False, deadline)
        except SSL.WantWriteError:
            _wait(sock, True, deadline)


class _Recorder:
    """Collects what OpenSSL's callbacks report during one handshake.

    The message callback sees every handshake message in clear (TLS 1.3's encrypted ones too):
    the server's CertificateRequest (certificate types, signature algorithms), the client's own
    Certificate message (was a certificate in it, or was it empty) and a CertificateRequest that
    comes after the handshake (TLS 1.3 post-handshake authentication).
    """

    def __init__(self) -> None:
        self.certificate_requested = False
        self.server_hello = False
        self.ticket = False
        self.alert: Optional[str] = None
        self.verify_error: Optional[str] = None
        self.certificate_types: tuple[int, ...] = ()
        self.signature_algorithms: tuple[int, ...] = ()
        self.sent_certificate: Optional[bool] = None  # None: no Certificate message written
        self.handshake_done = False
        self.post_handshake_request = False
        self.answered = threading.Event()  # a ServerHello came, or the attempt ended
        self._callback: Any = None

    def watch(self, ctx: SSL.Context) -> None:
        """Install the message callback on ``ctx`` (kept alive by this recorder)."""
        self._callback = _ffi.callback(
            "void(int, int, int, void *, size_t, SSL *, void *)", self._message
        )
        _lib.SSL_CTX_set_msg_callback(ctx._context, self._callback)

    def _message(
        self, write_p: int, version: int, content_type: int, buf: Any, size: int, ssl: Any,
        arg: Any,
    ) -> None:  # fmt: skip
        if content_type != _HANDSHAKE or size < 4:
            return
        try:
            data = bytes(_ffi.buffer(buf, size))
            kind, body = data[0], data[4:]
            tls13 = version == SSL.TLS1_3_VERSION
            if kind == _CERTIFICATE_REQUEST and not write_p:
                if self.handshake_done:
                    self.post_handshake_request = True
                else:
                    self.certificate_requested = True
                    types, algorithms = parse_certificate_request(body, tls13)
                    self.certificate_types, self.signature_algorithms = types, algorithms
            elif kind == _CERTIFICATE and write_p:
                self.sent_certificate = _certificate_count(body, tls13) > 0
        except (IndexError, ValueError):  # a message too short to parse: record nothing of it
            pass

    def info(self, conn: SSL.Connection, where: int, ret: int) -> None:
        if where & SSL.SSL_CB_LOOP:
            state = conn.get_state_string().decode("ascii", "replace").lower()
            if "read server hello" in state:
                self.server_hello = True
                self.answered.set()
            elif "read server certificate request" in state:
                self.certificate_requested = True
            elif "read server session ticket" in state:
                self.ticket = True
        if where & SSL.SSL_CB_READ_ALERT == SSL.SSL_CB_READ_ALERT:
            level, code = ret >> 8, ret & 0xFF
            if code != 0 and level == 2 and self.alert is None:
                self.alert = ALERT_NUMBERS.get(code, f"alert_{code}")

    def verify(self, conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
        if not ok and self.verify_error is None:
            text = VERIFY_ERRORS.get(errno, f"verify error {errno}")
            self.verify_error = f"{text} (depth {depth})"
        return True  # keep going: the CA list and the alert are what we came for


_HANDSHAKE = 22
_CERTIFICATE = 11
_CERTIFICATE_REQUEST = 13
_SIGNATURE_ALGORITHMS = 13  # the TLS 1.3 CertificateRequest extension


def _vector(data: bytes, at: int, width: int) -> tuple[bytes, int]:
    """A length-prefixed vector at ``at``: its bytes and the offset after it."""
    size = int.from_bytes(data[at : at + width], "big")
    end = at + width + size
    if len(data) < end:
        raise ValueError("truncated")
    return data[at + width : end], end


def parse_certificate_request(body: bytes, tls13: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A CertificateRequest's certificate types (TLS 1.2 only) and signature algorithms.

    TLS 1.2: ``certificate_types<1..255>``, ``supported_signature_algorithms<2..2^16-2>``, the
    CA names. TLS 1.3: ``certificate_request_context<0..255>`` and extensions, of which
    ``signature_algorithms`` (13) is the one Java chooses the key by.
    """
    if not tls13:
        types, at = _vector(body, 0, 1)
        algorithms, _ = _vector(body, at, 2)
        return tuple(types), _pairs(algorithms)
    _, at = _vector(body, 0, 1)
    extensions, _ = _vector(body, at, 2)
    at = 0
    while at + 4 <= len(extensions):
        kind = int.from_bytes(extensions[at : at + 2], "big")
        value, at = _vector(extensions, at + 2, 2)
        if kind == _SIGNATURE_ALGORITHMS:
            return (), _pairs(_vector(value, 0, 2)[0])
    return (), ()


def _pairs(data: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2))


def _certificate_count(body: bytes, tls13: bool) -> int:
    """How many bytes of certificates a Certificate message carries (0: an empty one)."""
    at = _vector(body, 0, 1)[1] if tls13 else 0
    return int.from_bytes(body[at : at + 3], "big")


def _alert_from_error(exc: Exception) -> Optional[str]:
    text = str(exc).lower()
    for marker in ("sslv3 alert ", "tlsv1 alert ", "tlsv13 alert "):
        if marker in text:
            rest = text.split(marker, 1)[1]
            return rest.split("'", 1)[0].split(")", 1)[0].strip().replace(" ", "_")
    if "tlsv1 unrecognized name" in text:
        return "unrecognized_name"
    return None


def _error_text(exc: Exception) -> str:
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        reasons = [str(item[-1]) for item in exc.args[0] if isinstance(item, tuple) and item]
        if reasons:
            return "; ".join(reasons)
    return str(exc) or type(exc).__name__


# pyOpenSSL before 25.2 has no ``as_cryptography`` and takes only its own X509/PKey types.
_SHORT_NAMES = {"emailAddress": "EMAILADDRESS", "serialNumber": "SERIALNUMBER", "street": "STREET"}


def _client_ca_names(conn: SSL.Connection) -> tuple[str, ...]:
    """The acceptable client CA names of the server's CertificateRequest, Java style."""
    try:
        names = conn.get_client_ca_list(as_cryptography=True)
    except TypeError:
        legacy = []
        for name in conn.get_client_ca_list():
            parts = [
                _SHORT_NAMES.get(k.decode(), k.decode())
                + "="
                + v.decode("utf-8", "replace").replace(",", "\\,")
                for k, v in name.get_components()
            ]
            legacy.append(", ".join(reversed(parts)))
        return tuple(legacy)
    return tuple(format_name(n) for n in names)


def _peer_chain(conn: SSL.Connection) -> list[x509.Certificate]:
    try:
        return conn.get_peer_cert_chain(as_cryptography=True) or []
    except TypeError:
        return [c.to_cryptography() for c in conn.get_peer_cert_chain() or []]


def _use_identity(ctx: SSL.Context, chain: tuple[x509.Certificate, ...], key: SigningKey) -> None:
    try:
        ctx.use_certificate(chain[0])
        for extra in chain[1:]:
            ctx.add_extra_chain_cert(extra)
        ctx.use_privatekey(key)
    except TypeError:
        ctx.use_certificate(crypto.X509.from_cryptography(chain[0]))
        for extra in chain[1:]:
            ctx.add_extra_chain_cert(crypto.X509.from_cryptography(extra))
        ctx.use_privatekey(crypto.PKey.from_cryptography_key(key))


def _context(settings: TlsSettings) -> SSL.Context:
    """An OpenSSL client context offering what the MP offers."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    versions = [PROTOCOLS[p] for p in settings.effective_protocols]
    if not versions:  # nothing usable: offer TLS 1.2 with no suite, so that it fails like Java
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_cipher_list(b"eNULL")
        return ctx
    ctx.set_min_proto_version(min(versions))
    ctx.set_max_proto_version(max(versions))
    if min(versions) < SSL.TLS1_2_VERSION:
        ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    if settings.ciphers:
        tls12 = [openssl_cipher(c) for c in settings.ciphers if c not in TLS13_SUITES]
        tls13 = [c for c in settings.ciphers if c in TLS13_SUITES]
        names = [n for n in tls12 if n]
        level = ":@SECLEVEL=0" if min(versions) < SSL.TLS1_2_VERSION else ""
        try:
            ctx.set_cipher_list((":".join(names) + level).encode() if names else b"eNULL")
        except SSL.Error:
            ctx.set_cipher_list(b"eNULL")  # none known here: no TLS 1.2 suite, like Java
        if tls13:
            ctx.set_tls13_ciphersuites(":".join(tls13).encode())
    return ctx


def _handshake(
    host: str,
    port: int,
    settings: TlsSettings,
    ca_file: Optional[str],
    identity: Optional[ClientIdentity],
    timeout: float,
    http_wait: float,
    offer_post_handshake: bool = False,
    answered: Optional[threading.Event] = None,
) -> Handshake:
    deadline = time.monotonic() + timeout
    rec = _Recorder()
    if answered is not None:
        rec.answered = answered
    ctx = _context(settings)
    rec.watch(ctx)
    if ca_file:
        ctx.load_verify_locations(ca_file)
        ctx.set_verify(SSL.VERIFY_PEER, rec.verify)
    else:
        ctx.set_verify(SSL.VERIFY_NONE, rec.verify)
    ctx.set_info_callback(rec.info)
    if identity is not None and identity.private_key is not None and identity.chain:
        _use_identity(ctx, identity.chain, identity.private_key)
    if offer_post_handshake:
        _lib.SSL_CTX_set_post_handshake_auth(ctx._context, 1)
    protocols, ciphers = settings.effective_protocols, settings.ciphers
    sni = settings.servername
    try:
        remaining = max(deadline - time.monotonic(), 0.001)
        sock = socket.create_connection((host, port), timeout=remaining)
    except socket.timeout:
        rec.answered.set()
        return Handshake(
            completed=False, error="TCP connect timed out", timed_out=True,
            protocols=protocols, ciphers=ciphers, servername=sni,
        )  # fmt: skip
    except OSError as exc:
        rec.answered.set()
        return Handshake(
            completed=False, error=f"TCP connect failed: {exc.strerror or exc}",
            protocols=protocols, ciphers=ciphers, servername=sni,
        )  # fmt: skip
    sock.setblocking(False)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    if settings.servername:
        conn.set_tlsext_host_name(settings.servername.encode("idna"))
    completed, timed_out, after, was_reset, closed = False, False, False, False, False
    error: Optional[str] = None
    alert: Optional[str] = None
    version: Optional[str] = None
    http: Optional[HttpAnswer] = None
    try:
        started = time.monotonic()
        _drive(sock, conn.do_handshake, deadline)
        took = time.monotonic() - started
        rec.handshake_done = True
        version = conn.get_protocol_version_name()
        completed = True
        http_host = settings.servername or (f"[{host}]" if ":" in host else host)
        # The server's verdict on our certificate (TLS 1.3) takes about one more round trip.
        verdict = min(http_wait, VERDICT_FLOOR + 2 * took)
        http, after_error, ended = _exchange(
            sock, conn, rec, http_host, port, min(deadline, time.monotonic() + http_wait), verdict
        )
        judged = http is None and rec.certificate_requested and version == "TLSv1.3"
        if rec.alert is not None or after_error is not None:
            after = True
            alert = _alert_from_error(after_error) if after_error else None
            error = _error_text(after_error) if after_error else None
        elif ended == "reset" and judged:
            was_reset = True
            error = "connection reset by the backend right after the handshake"
        elif ended == "closed" and judged:
            closed = True
            error = "connection closed by the backend right after the handshake, without an alert"
    except _Timeout:
        timed_out, error = True, f"no TLS answer within {timeout:g}s"
    except SSL.SysCallError as exc:
        error = f"connection closed by the backend ({_error_text(exc)})"
    except SSL.Error as exc:
        error = _error_text(exc)
        alert = _alert_from_error(exc)
    except OSError as exc:
        error = f"connection failed: {exc.strerror or exc}"
    finally:
        rec.answered.set()
        ca_names = _client_ca_names(conn)
        peer = _peer_chain(conn)
        if version is None and rec.server_hello:
            version = conn.get_protocol_version_name()
        sock.close()
    not_tls = not completed and not rec.server_hello and any(t in (error or "") for t in _NOT_TLS)
    return Handshake(
        completed=completed,
        tls_version=version if rec.server_hello or completed else None,
        server_hello=rec.server_hello or completed,
        certificate_requested=rec.certificate_requested or bool(ca_names),
        acceptable_ca_names=ca_names,
        server_chain=tuple(CertSummary.from_x509(c) for c in peer),
        server_verify_error=rec.verify_error if ca_file else None,
        alert=rec.alert or alert,
        alert_after_handshake=after and bool(rec.alert or alert),
        reset_after_handshake=was_reset,
        error=error,
        timed_out=timed_out,
        not_tls=not_tls,
        sent_certificate=bool(rec.sent_certificate),
        http=http,
        certificate_types=rec.certificate_types,
        signature_algorithms=rec.signature_algorithms,
        closed_after_handshake=closed,
        post_handshake_request=rec.post_handshake_request,
        protocols=protocols,
        ciphers=ciphers,
        servername=sni,
    )


def _exchange(
    sock: socket.socket,
    conn: SSL.Connection,
    rec: _Recorder,
    host: str,
    port: int,
    until: float,
    verdict: float,
) -> tuple[Optional[HttpAnswer], Optional[SSL.Error], Optional[str]]:
    """Send ``GET /`` and read until something happens: an answer, an alert, a close, ``until``.

    In TLS 1.3 the server judges our certificate after our handshake is done: first wait for
    its verdict (a session ticket or data: accepted; an alert or a close: rejected) for up to
    ``verdict`` seconds, since a request sent to a server that has just closed makes the kernel
    reset the connection and drop the alert. Returns the answer (None when the backend sent
    none: not HTTP, or it closed), the TLS error that ended the read, if any, and how the
    connection ended before any answer: ``"reset"``, ``"closed"`` (an end of stream or a
    close_notify) or None.
    """
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: apigee-tls-exporter-diagnose\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("idna" if not host.isascii() else "ascii", "replace")
    data = b""
    first = min(until, time.monotonic() + verdict)
    try:
        while conn.get_protocol_version_name() == "TLSv1.3" and not rec.ticket and not data:
            try:
                data += conn.recv(4096)
            except SSL.WantReadError:
                try:
                    _wait(sock, False, first)
                except _Timeout:
                    break
        sent = 0
        while sent < len(request):
            try:
                sent += conn.send(request[sent:])
            except SSL.WantWriteError:
                _wait(sock, True, until)
            except SSL.WantReadError:
                _wait(sock, False, until)
        while len(data) < MAX_HTTP_BYTES and not _complete(data):
            try:
                data += conn.recv(4096)
            except SSL.WantReadError:
                _wait(sock, False, until)
            except SSL.WantWriteError:
                _wait(sock, True, until)
    except SSL.ZeroReturnError:
        return _parse_http(data), None, None if data else "closed"
    except SSL.SysCallError as exc:
        reset = bool(exc.args) and exc.args[0] in (errno.ECONNRESET, errno.EPIPE)
        return _parse_http(data), None, "reset" if reset else (None if data else "closed")
    except (ConnectionResetError, BrokenPipeError):
        return _parse_http(data), None, "reset"
    except (_Timeout, OSError):
        pass
    except SSL.Error as exc:
        return _parse_http(data), exc, None
    return _parse_http(data), None, None


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    if b"</title>" in body.lower():
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return False


def _parse_http(data: bytes) -> Optional[HttpAnswer]:
    if not data.startswith(b"HTTP/"):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    server = next(
        (ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("server:")),
        None,
    )
    title = None
    text = body.decode("utf-8", "replace")
    low = text.lower()
    start = low.find("<title>")
    if start >= 0:
        end = low.find("</title>", start)
        if end > start:
            title = " ".join(text[start + len("<title>") : end].split())[:200] or None
    reason = parts[2].strip() if len(parts) > 2 else ""
    return HttpAnswer(int(parts[1]), reason[:200], title, server[:100] if server else None)


def _host_name(host: str, wait: float) -> Optional[str]:
    """The host name of a target: itself when it is one, else its reverse DNS name (within
    ``wait`` seconds), else None."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    pool = ThreadPoolExecutor(1)
    future = pool.submit(socket.gethostbyaddr, host)
    pool.shutdown(wait=False)  # a resolver that hangs is left behind, not waited for
    try:
        name = future.result(timeout=wait)[0]
    except (FutureTimeout, OSError):
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None


def _variants(host: str, settings: TlsSettings, timeout: float) -> list[TlsSettings]:
    """The ClientHellos tried after a close before the ServerHello: TLS 1.3 only and TLS 1.2
    only with the default cipher suites, and, when the MP sends no SNI, its own with the
    target's host name."""
    variants = [replace(settings, protocols=(v,), ciphers=()) for v in ("TLSv1.3", "TLSv1.2")]
    name = None if settings.servername else _host_name(host, min(timeout, 1.0))
    if name:
        variants.append(replace(settings, servername=name))
    return variants


def _rejects_after_tls13(hs: Handshake) -> bool:
    """A TLS 1.3 handshake that asked for no certificate, and the backend refused or closed."""
    if not hs.completed or hs.tls_version != "TLSv1.3" or hs.certificate_requested:
        return False
    return hs.http is None or hs.http.status in (401, 403)


def probe(
    target: str,
    settings: TlsSettings,
    identity: Optional[ClientIdentity],
    timeout: float,
    *,
    ca_file: Optional[str] = None,
    http_wait: float = 2.0,
) -> ProbeResult:
    """Probe ``target`` (``HOST:PORT``): without, then with, the client certificate.

    ``timeout`` bounds each connection (TCP connect, handshake and request).
    ``ca_file`` (the CAs of the MP truststore, PEM) turns on the check of the server chain.
    The handshake with the certificate only runs when the identity has a private key.

    When the backend closes before its ServerHello, retries tell why (``_variants``): TLS 1.3
    only and TLS 1.2 only with the default cipher suites, and, when the MP sends no SNI, the
    same ClientHello with the target's host name as SNI. They run side by side, and start
    alongside the first attempt when it has no ServerHello after ``RETRY_AFTER`` seconds, so
    that a proxy that closes late is diagnosed in the time it takes to close once, and a silent
    port within ``timeout``. When a TLS 1.3
    backend asks for no certificate in the handshake but refuses the request, one more
    handshake offers post-handshake authentication (which Java never does) to see whether the
    backend asks for the certificate that way.
    """
    host, port = parse_target(target)
    checked = bool(ca_file)

    def attempt(
        s: TlsSettings, ident: Optional[ClientIdentity] = None, post: bool = False
    ) -> Handshake:
        return _handshake(host, port, s, ca_file, ident, timeout, http_wait, post)

    patience = min(RETRY_AFTER, timeout / 2)

    def alongside(s: TlsSettings) -> Handshake:  # ends with the first attempt's deadline
        return _handshake(host, port, s, ca_file, None, timeout - patience, http_wait)

    # The retries start when no ServerHello came within RETRY_AFTER (a backend that answers
    # does so in milliseconds): side by side with the first attempt, so that a proxy that
    # closes late, or a silent port, is diagnosed within the timeout.
    answered = threading.Event()
    pool = ThreadPoolExecutor(4)
    try:
        first = pool.submit(_handshake, host, port, settings, ca_file, None, timeout, http_wait,
                            False, answered)  # fmt: skip
        retries_running = []
        if not answered.wait(patience):
            variants = _variants(host, settings, timeout)
            retries_running = [pool.submit(alongside, v) for v in variants]
        anonymous = first.result()
        unreachable = (anonymous.error or "").startswith("TCP connect") or (
            anonymous.timed_out and not anonymous.server_hello
        )
        if anonymous.server_hello or anonymous.not_tls or unreachable:
            retries: tuple[Handshake, ...] = ()
        elif retries_running:
            retries = tuple(f.result() for f in retries_running)
        else:
            retries = tuple(pool.map(attempt, _variants(host, settings, timeout)))
    finally:
        pool.shutdown(wait=False)  # retries no longer needed finish at their own deadline
    if unreachable:
        return ProbeResult(
            target, settings, reachable=False, connect_error=anonymous.error,
            server_chain_checked=checked, without_certificate=anonymous,
        )  # fmt: skip
    if not anonymous.server_hello and not anonymous.not_tls:
        return ProbeResult(
            target, settings, reachable=True, server_chain_checked=checked,
            without_certificate=anonymous, retries=retries,
        )  # fmt: skip
    with_cert = None
    if identity is not None and identity.can_handshake and anonymous.server_hello:
        with_cert = attempt(settings, identity)
    post = None
    if _rejects_after_tls13(anonymous):
        post = attempt(settings, identity if identity and identity.can_handshake else None, True)
    return ProbeResult(
        target,
        settings,
        reachable=True,
        server_chain_checked=checked,
        without_certificate=anonymous,
        with_certificate=with_cert,
        post_handshake=post,
    )
