"""The demo's lab on 127.0.0.1: a TLS backend that rejects one of the demo keystore's aliases, and
the management API STAND-IN (not Apigee) that serves that keystore and the TargetServers.

The story it tells: the backend ``payments`` has rotated the client CA list it accepts. It now
names only "Demo Partner CA"; the key alias ``backend-client`` still holds a certificate from
"Demo Legacy CA", so Java sends no certificate and the backend rejects every handshake
(``ca_mismatch``); ``backend-client-2027``, from the partner CA, would be accepted. Every
certificate is made here, in memory, for this run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto

from .standin import Standin, chain_info, target_server

ORG, ENV, KEYSTORE = "acme", "prod", "backend-ks"
REJECTED_ALIAS = "backend-client"  # from the CA the backend no longer names
ACCEPTED_ALIAS = "backend-client-2027"  # from the CA it names now
USERNAME = "demo"


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "apigee-tls-exporter demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue(
    common_name: str,
    issuer: Optional[Issued] = None,
    *,
    days: float = 365,
    usage: Optional[x509.ObjectIdentifier] = None,
) -> Issued:
    """A CA (no ``issuer``) or a leaf for ``usage`` (server: named localhost and 127.0.0.1)."""
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issued(cert, key)


class DemoBackend:
    """A TLS server on 127.0.0.1 that requires a client certificate from ``accepted_ca`` and names
    only that CA in its CertificateRequest (as nginx's ssl_client_certificate does); it answers
    ``HTTP 200`` to a request after a good handshake."""

    def __init__(self, server: Issued, accepted_ca: Issued) -> None:
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ca = crypto.X509.from_cryptography(accepted_ca.cert)
        try:  # newer pyOpenSSL takes cryptography objects, older releases only its own
            ctx.use_certificate(server.cert)
            ctx.use_privatekey(server.key)
            ctx.add_client_ca(accepted_ca.cert)
        except TypeError:
            ctx.use_certificate(crypto.X509.from_cryptography(server.cert))
            ctx.use_privatekey(crypto.PKey.from_cryptography_key(server.key))
            ctx.add_client_ca(ca)
        store = ctx.get_cert_store()
        assert store is not None
        store.add_cert(ca)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *a: bool(a[-1]))
        self._ctx = ctx
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="demo-backend", daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DemoBackend:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:  # the accept timeout, or closed
                continue
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        # Blocking for OpenSSL (a Python timeout makes the descriptor non-blocking), bounded by
        # the kernel's own send and receive timeouts.
        raw.setblocking(True)
        five_seconds = struct.pack("ll", 5, 0)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, five_seconds)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, five_seconds)
        conn = SSL.Connection(self._ctx, raw)
        conn.set_accept_state()
        with contextlib.suppress(SSL.Error, OSError):
            conn.do_handshake()
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            conn.shutdown()
        raw.close()


@dataclass
class Lab:
    """The backend and the stand-in, started; ``close()`` stops both."""

    backend: DemoBackend
    standin: Standin
    password: str

    def close(self) -> None:
        self.backend.close()
        self.standin.__exit__()


def start(password: str) -> Lab:
    """Make the certificates, start the backend and the stand-in (Basic auth ``demo``/password)
    with keystore ``backend-ks`` (both aliases) and TargetServers for both."""
    partner, legacy = issue("Demo Partner CA"), issue("Demo Legacy CA")
    server_ca = issue("Demo Backend Server CA")
    server = issue("payments.demo", server_ca, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    rejected = issue("mp.demo", legacy, days=200, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    accepted = issue("mp.demo", partner, days=10, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    backend = DemoBackend(server, partner).start()
    standin = Standin(username=USERNAME, password=password).__enter__()
    env = standin.env(ORG, ENV)
    env.keystores[KEYSTORE] = {
        REJECTED_ALIAS: chain_info(rejected.pem + legacy.pem),
        ACCEPTED_ALIAS: chain_info(accepted.pem + partner.pem),
    }
    for name, alias in (("payments", REJECTED_ALIAS), ("payments-2027", ACCEPTED_ALIAS)):
        env.target_servers[name] = target_server(
            name, "127.0.0.1", backend.port, key_store=KEYSTORE, key_alias=alias
        )
    return Lab(backend, standin, password)
