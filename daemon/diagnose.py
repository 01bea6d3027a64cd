"""Tell the cause of a southbound ``bad_certificate``: the playbook, automated.

The manual playbook (``shared/reference/playbook-bad-client-certificate.ja.txt``) finds one of two
causes with a trace, the management API, ``openssl s_client`` and Wireshark: the keystore holds no
client certificate, or the leaf certificate's issuer is not among the CAs the backend accepts (so
Java, like the Message Processor, silently sends an empty Certificate message). This module does the
same in one call:

1. ``probe()`` connects to the backend, runs a TLS handshake without a client certificate and,
   when a private key is at hand, one with the client certificate; it records the protocol version,
   whether the server asked for a certificate, the acceptable client CA names it sent, its chain
   and the alert received. In TLS 1.3 the server judges the client certificate after the client's
   handshake is done, so the probe reads once more after the handshake to catch the alert.
2. The client identity comes from PEM files, a PKCS#12 file or the management API. The API never
   returns private keys, so with that source no handshake with the certificate is possible: the
   cause is decided, as in the playbook, from the CA names the backend sends versus the issuers in
   the keystore chain, and from the validity dates.
3. ``decide_cause()`` maps the findings onto ``CAUSES``; ``Diagnosis`` carries everything for the
   human report (``render_report``) and ``--json`` (``Diagnosis.to_json``).

``configure_parser``/``command`` are the ``diagnose`` subcommand; ``run_diagnosis`` is the same for
the daemon's background worker.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import selectors
import socket
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

from .mgmt import (
    ApiCertificate,
    Credentials,
    ManagementAPIError,
    ManagementClient,
    TargetServerSSL,
    strip_ref,
)

Clock = Callable[[], float]
SigningKey = Union[
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
]

CAUSES = (
    "missing_client_certificate",
    "ca_mismatch",
    "client_certificate_expired",
    "client_certificate_not_yet_valid",
    "incomplete_chain",
    "no_client_certificate_requested",
    "accepted",
    "server_certificate_untrusted",
    "unreachable",
    "unknown",
)

ADVICE = {
    "missing_client_certificate": (
        "Upload the client certificate with its complete chain and private key to the keystore "
        "the TargetEndpoint/TargetServer <SSLInfo> uses, under the configured KeyAlias."
    ),
    "ca_mismatch": (
        "The MP sends no certificate because no issuer in the keystore chain is among the CAs the "
        "backend accepts. Use a client certificate issued by one of the acceptable CAs, or add "
        "the issuer of the leaf certificate to the backend's truststore / client CA list."
    ),
    "client_certificate_expired": (
        "Renew the client certificate and upload the new one (with its chain) to the keystore."
    ),
    "client_certificate_not_yet_valid": (
        "The client certificate is not valid yet: check the node's clock, or upload a certificate "
        "whose validity has started."
    ),
    "incomplete_chain": (
        "The backend cannot build a path from the leaf to a CA it trusts. Upload the complete "
        "chain (leaf first, then every intermediate) to the keystore alias."
    ),
    "no_client_certificate_requested": (
        "The backend does not ask for a client certificate, so bad_certificate does not come "
        "from this backend's client authentication: check which backend the MP really reaches "
        "(load balancer members, TargetServer host/port, SNI)."
    ),
    "accepted": (
        "The backend accepts this client certificate, so the MP must be using another one: "
        "check the KeyStore reference and KeyAlias in <SSLInfo> and that every MP has the "
        "current keystore."
    ),
    "server_certificate_untrusted": (
        "The backend's chain does not verify against the given truststore: import the backend's "
        "CA (and intermediates) into the MP truststore, or have the backend serve its full chain."
    ),
    "unreachable": (
        "No TLS answer from the backend: check the host and port, DNS, firewalls and that the "
        "port speaks TLS."
    ),
    "unknown": (
        "No cause could be decided from what the backend and the client identity show; compare "
        "the findings above with the backend's own log."
    ),
}

# Alerts (RFC 8446 section 6) by code, as the MP log spells them.
ALERTS = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    116: "certificate_required",
    120: "no_application_protocol",
}
# Alerts a server sends when it cannot build or check a path from the client's certificate.
CHAIN_ALERTS = frozenset({"bad_certificate", "unknown_ca", "certificate_unknown", "decrypt_error"})

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


class UsageError(ValueError):
    """Bad arguments or unreadable input files: exit code 2 with a one-line message."""


# -- distinguished names ------------------------------------------------------------------------

_ATTR_ALIASES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "S": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.9": "STREET",
    "2.5.4.5": "SERIALNUMBER",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
    "1.2.840.113549.1.9.1": "EMAILADDRESS",
    "E": "EMAILADDRESS",
    "EMAIL": "EMAILADDRESS",
}
_NAME_OVERRIDES = {NameOID.EMAIL_ADDRESS: "EMAILADDRESS", NameOID.SERIAL_NUMBER: "SERIALNUMBER"}


def _split_unescaped(text: str, separators: str) -> list[str]:
    parts, current, escaped, quoted = [], [], False, False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch in separators and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def dn_key(dn: str) -> tuple[tuple[str, str], ...]:
    """A comparison key for a distinguished name, whatever its order, spacing or case.

    Java (the management API) writes ``CN=x, O=y``; OpenSSL-based tools write ``/O=y/CN=x`` or
    ``O = y, CN = x``; RFC 4514 writes ``CN=x,O=y``. All give the same key.
    """
    text = dn.strip()
    if text.startswith("/"):
        text = ",".join(_split_unescaped(text[1:], "/"))
    pairs = []
    for part in _split_unescaped(text, ",+;"):
        if "=" not in part:
            continue
        attr, value = part.split("=", 1)
        attr = attr.strip().upper()
        attr = attr[len("OID.") :] if attr.startswith("OID.") else attr
        attr = _ATTR_ALIASES.get(attr, attr)
        pairs.append((attr, " ".join(_unescape(value).split()).casefold()))
    return tuple(sorted(pairs))


def format_name(name: x509.Name) -> str:
    """A name the way Java and the management API print it: most specific first, ``", "``."""
    return ", ".join(rdn.rfc4514_string(_NAME_OVERRIDES) for rdn in reversed(name.rdns))


# -- certificates and identities ----------------------------------------------------------------


def _iso(epoch: Optional[float]) -> Optional[str]:
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class CertSummary:
    """What a report needs of one certificate, from X.509 or from the management API."""

    subject: str
    issuer: str
    not_before: Optional[float]  # seconds since the epoch
    not_after: Optional[float]
    subject_alternative_names: tuple[str, ...] = ()

    @classmethod
    def from_x509(cls, cert: x509.Certificate) -> CertSummary:
        """Summarise a ``cryptography`` certificate."""
        sans: list[str] = []
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            ext = None
        if ext is not None:
            sans.extend(f"DNS:{v}" for v in ext.get_values_for_type(x509.DNSName))
            sans.extend(f"IP:{v}" for v in ext.get_values_for_type(x509.IPAddress))
            sans.extend(f"email:{v}" for v in ext.get_values_for_type(x509.RFC822Name))
            sans.extend(f"URI:{v}" for v in ext.get_values_for_type(x509.UniformResourceIdentifier))
        return cls(
            subject=format_name(cert.subject),
            issuer=format_name(cert.issuer),
            not_before=cert.not_valid_before_utc.timestamp(),
            not_after=cert.not_valid_after_utc.timestamp(),
            subject_alternative_names=tuple(sans),
        )

    @classmethod
    def from_api(cls, cert: ApiCertificate) -> CertSummary:
        """Summarise a management API ``certInfo`` entry."""
        return cls(
            subject=cert.subject,
            issuer=cert.issuer,
            not_before=cert.valid_from,
            not_after=cert.expiry,
            subject_alternative_names=cert.subject_alternative_names,
        )

    @property
    def self_issued(self) -> bool:
        """True for a root (subject equals issuer)."""
        return dn_key(self.subject) == dn_key(self.issuer)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with ISO 8601 UTC dates."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "subject_alternative_names": list(self.subject_alternative_names),
        }


@dataclass(frozen=True)
class ClientIdentity:
    """The client certificate chain the MP would present (leaf first), and its key if known.

    ``certificates`` empty means "no client certificate" (an empty keystore or alias). The private
    key is only present for file sources; it never appears in ``repr``.
    """

    source: str  # "pem", "pkcs12" or "management_api"
    description: str
    certificates: tuple[CertSummary, ...] = ()
    chain: tuple[x509.Certificate, ...] = field(default=(), repr=False, compare=False)
    private_key: Optional[SigningKey] = field(default=None, repr=False, compare=False)

    @property
    def leaf(self) -> Optional[CertSummary]:
        """The first certificate of the chain, if any."""
        return self.certificates[0] if self.certificates else None

    @property
    def can_handshake(self) -> bool:
        """True when the probe can present this identity in a handshake."""
        return self.private_key is not None and bool(self.chain)


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or 'cannot read'}") from None


def _signing_key(key: Any, option: str) -> SigningKey:
    if not isinstance(
        key,
        (
            rsa.RSAPrivateKey,
            ec.EllipticCurvePrivateKey,
            dsa.DSAPrivateKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey,
        ),
    ):
        raise UsageError(f"{option}: unsupported private key type")
    return key


def _spki(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _order_chain(leaf: x509.Certificate, others: list[x509.Certificate]) -> list[x509.Certificate]:
    chain, rest = [leaf], list(others)
    while rest:
        issuer = chain[-1].issuer
        nxt = next((c for c in rest if c.subject == issuer), None)
        if nxt is None or nxt is chain[-1]:
            break
        chain.append(nxt)
        rest.remove(nxt)
    return chain + rest


def _identity(
    source: str, description: str, chain: list[x509.Certificate], key: Optional[SigningKey]
) -> ClientIdentity:
    return ClientIdentity(
        source=source,
        description=description,
        certificates=tuple(CertSummary.from_x509(c) for c in chain),
        chain=tuple(chain),
        private_key=key,
    )


def load_pem_identity(
    cert_file: str, key_file: str, key_password: Optional[bytes] = None
) -> ClientIdentity:
    """A client identity from a PEM certificate chain (leaf first) and a PEM private key."""
    try:
        certs = x509.load_pem_x509_certificates(_read(cert_file, "--client-cert"))
    except ValueError:
        raise UsageError(f"--client-cert {cert_file}: no PEM certificate found") from None
    try:
        key = serialization.load_pem_private_key(
            _read(key_file, "--client-key"), password=key_password
        )
    except (ValueError, TypeError):
        raise UsageError(
            f"--client-key {key_file}: not a readable PEM private key (encrypted?)"
        ) from None
    signing = _signing_key(key, "--client-key")
    if _spki(signing.public_key()) != _spki(certs[0].public_key()):
        raise UsageError(
            f"--client-key {key_file}: does not match the first certificate in {cert_file}"
        )
    return _identity("pem", cert_file, _order_chain(certs[0], certs[1:]), signing)


def load_pkcs12_identity(path: str, password: Optional[bytes] = None) -> ClientIdentity:
    """A client identity from a PKCS#12 file (key, leaf and CA certificates)."""
    data = _read(path, "--pkcs12")
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, TypeError):
        raise UsageError(
            f"--pkcs12 {path}: cannot read the PKCS#12 file (wrong or missing password?)"
        ) from None
    if cert is None or key is None:
        raise UsageError(f"--pkcs12 {path}: holds no certificate with a private key")
    return _identity("pkcs12", path, _order_chain(cert, list(extra)), _signing_key(key, "--pkcs12"))


def identity_from_management(
    client: ManagementClient, org: str, env: str, keystore: str, key_alias: Optional[str]
) -> ClientIdentity:
    """The keystore chain from the management API (no private key: the API never returns it).

    ``keystore`` is a name or ``ref://REF``. A keystore without certificates, or a key alias it does
    not hold, gives an identity without certificates (cause ``missing_client_certificate``).
    """
    name, is_ref = strip_ref(keystore)
    resolved = client.resolve_keystore(org, env, keystore)
    where = f"keystore {resolved}" + (f" (via reference {name})" if is_ref else "")
    where += f" in {org}/{env}"
    certs = client.list_certs(org, env, resolved)
    if not certs:
        return ClientIdentity("management_api", f"{where}: no certificates")
    if key_alias:
        try:
            chain = client.get_alias(org, env, resolved, key_alias)
        except ManagementAPIError as exc:
            if exc.kind != "not_found":
                raise
            return ClientIdentity("management_api", f"{where}: no alias {key_alias}")
        description = f"{where}, alias {key_alias}"
    else:
        if len(certs) > 1:
            raise UsageError(
                f"{where} holds {len(certs)} certificates; give --key-alias to pick one"
            )
        chain = client.get_cert(org, env, resolved, certs[0])
        description = f"{where}, certificate {certs[0]}"
    return ClientIdentity(
        "management_api", description, tuple(CertSummary.from_api(c) for c in chain)
    )


def identity_from_target_server(
    client: ManagementClient, org: str, env: str, name: str
) -> tuple[ClientIdentity, TargetServerSSL]:
    """The identity a TargetServer's ``sSLInfo`` names (keyStore and keyAlias)."""
    server = client.get_target_server(org, env, name)
    if not server.client_auth_enabled or not server.key_store:
        why = "clientAuthEnabled is false" if not server.client_auth_enabled else "no keyStore"
        return ClientIdentity("management_api", f"target server {name}: {why}"), server
    identity = identity_from_management(
        client, org, env, server.key_store, server.key_alias or None
    )
    return identity, server


# -- the probe ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """One TLS handshake attempt, as the client saw it."""

    completed: bool
    tls_version: Optional[str] = None
    certificate_requested: bool = False
    acceptable_ca_names: tuple[str, ...] = ()
    server_chain: tuple[CertSummary, ...] = ()
    server_verify_error: Optional[str] = None  # None when verified or not checked
    alert: Optional[str] = None  # the fatal alert received
    error: Optional[str] = None
    timed_out: bool = False


@dataclass(frozen=True)
class ProbeResult:
    """Everything ``probe()`` saw of the backend."""

    target: str
    servername: Optional[str]
    reachable: bool
    connect_error: Optional[str] = None
    server_chain_checked: bool = False
    without_certificate: Optional[Handshake] = None
    with_certificate: Optional[Handshake] = None


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
    """Collects what OpenSSL's callbacks report during one handshake."""

    def __init__(self) -> None:
        self.certificate_requested = False
        self.server_hello = False
        self.ticket = False
        self.alert: Optional[str] = None
        self.verify_error: Optional[str] = None

    def info(self, conn: SSL.Connection, where: int, ret: int) -> None:
        if where & SSL.SSL_CB_LOOP:
            state = conn.get_state_string().decode("ascii", "replace").lower()
            if "read server hello" in state:
                self.server_hello = True
            elif "read server certificate request" in state:
                self.certificate_requested = True
            elif "read server session ticket" in state:
                self.ticket = True
        if where & SSL.SSL_CB_READ_ALERT == SSL.SSL_CB_READ_ALERT:
            code = ret & 0xFF
            if code != 0 and self.alert is None:
                self.alert = ALERTS.get(code, f"alert_{code}")

    def verify(self, conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
        if not ok and self.verify_error is None:
            text = VERIFY_ERRORS.get(errno, f"verify error {errno}")
            self.verify_error = f"{text} (depth {depth})"
        return True  # keep going: the CA list and the alert are what we came for


def _alert_from_error(exc: Exception) -> Optional[str]:
    text = str(exc).lower()
    for marker in ("sslv3 alert ", "tlsv1 alert ", "tlsv13 alert "):
        if marker in text:
            rest = text.split(marker, 1)[1]
            return rest.split("'", 1)[0].split(")", 1)[0].strip().replace(" ", "_")
    return None


def _error_text(exc: Exception) -> str:
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        reasons = [str(item[-1]) for item in exc.args[0] if isinstance(item, tuple) and item]
        if reasons:
            return "; ".join(reasons)
    return str(exc) or type(exc).__name__


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    remaining = max(deadline - time.monotonic(), 0.001)
    return socket.create_connection((host, port), timeout=remaining)


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


def _handshake(
    host: str,
    port: int,
    servername: Optional[str],
    ca_file: Optional[str],
    identity: Optional[ClientIdentity],
    timeout: float,
    post_handshake_wait: float,
) -> Handshake:
    deadline = time.monotonic() + timeout
    rec = _Recorder()
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if ca_file:
        ctx.load_verify_locations(ca_file)
        ctx.set_verify(SSL.VERIFY_PEER, rec.verify)
    else:
        ctx.set_verify(SSL.VERIFY_NONE, rec.verify)
    ctx.set_info_callback(rec.info)
    if identity is not None and identity.private_key is not None and identity.chain:
        _use_identity(ctx, identity.chain, identity.private_key)
    try:
        sock = _connect(host, port, deadline)
    except socket.timeout:
        return Handshake(completed=False, error="TCP connect timed out", timed_out=True)
    except OSError as exc:
        return Handshake(completed=False, error=f"TCP connect failed: {exc.strerror or exc}")
    sock.setblocking(False)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    if servername:
        conn.set_tlsext_host_name(servername.encode("idna"))
    completed, timed_out = False, False
    error: Optional[str] = None
    alert: Optional[str] = None
    version: Optional[str] = None
    try:
        _drive(sock, conn.do_handshake, deadline)
        version = conn.get_protocol_version_name()
        completed = True
        if version == "TLSv1.3":
            # The server checks our Certificate/Finished after our handshake is done: read once.
            _post_handshake_read(
                sock, conn, rec, min(deadline, time.monotonic() + post_handshake_wait)
            )
    except _Timeout:  # only the handshake itself can time out; the read above cannot
        timed_out, error = True, f"no TLS answer within {timeout:g}s"
    except SSL.ZeroReturnError:
        pass  # a clean close_notify after the handshake: nothing was rejected
    except SSL.SysCallError as exc:
        completed, error = False, f"connection closed by the backend ({_error_text(exc)})"
    except SSL.Error as exc:
        completed, error = False, _error_text(exc)
        alert = _alert_from_error(exc)
    except OSError as exc:
        completed, error = False, f"connection failed: {exc.strerror or exc}"
    finally:
        ca_names = _client_ca_names(conn)
        peer = _peer_chain(conn)
        if version is None and rec.server_hello:
            version = conn.get_protocol_version_name()
        sock.close()
    return Handshake(
        completed=completed,
        tls_version=version if rec.server_hello or completed else None,
        certificate_requested=rec.certificate_requested or bool(ca_names),
        acceptable_ca_names=ca_names,
        server_chain=tuple(CertSummary.from_x509(c) for c in peer),
        server_verify_error=rec.verify_error if ca_file else None,
        alert=rec.alert or alert,
        error=error,
        timed_out=timed_out,
    )


def _post_handshake_read(
    sock: socket.socket, conn: SSL.Connection, rec: _Recorder, until: float
) -> None:
    """Read until data, a session ticket (the server accepted us), an alert or ``until``."""
    while True:
        try:
            conn.recv(1)
            return
        except SSL.WantReadError:
            if rec.ticket:
                return
            try:
                _wait(sock, False, until)
            except _Timeout:
                return
        except SSL.WantWriteError:
            try:
                _wait(sock, True, until)
            except _Timeout:
                return


def probe(
    target: str,
    servername: Optional[str],
    identity: Optional[ClientIdentity],
    timeout: float,
    *,
    ca_file: Optional[str] = None,
    post_handshake_wait: float = 2.0,
) -> ProbeResult:
    """Probe ``target`` (``HOST:PORT``): a handshake without, then with, the client certificate.

    ``timeout`` bounds each connection (TCP connect plus handshake plus the TLS 1.3 read).
    ``ca_file`` (the CAs of the MP truststore, PEM) turns on the check of the server chain.
    The second handshake only runs when the identity has a private key.
    """
    host, port = parse_target(target)
    anonymous = _handshake(host, port, servername, ca_file, None, timeout, post_handshake_wait)
    if (anonymous.error and anonymous.error.startswith("TCP connect")) or (
        anonymous.timed_out and not anonymous.server_chain
    ):
        return ProbeResult(
            target, servername, reachable=False, connect_error=anonymous.error,
            server_chain_checked=bool(ca_file), without_certificate=anonymous,
        )  # fmt: skip
    with_cert = None
    if identity is not None and identity.can_handshake and anonymous.server_chain:
        with_cert = _handshake(
            host, port, servername, ca_file, identity, timeout, post_handshake_wait
        )
    return ProbeResult(
        target,
        servername,
        reachable=True,
        server_chain_checked=bool(ca_file),
        without_certificate=anonymous,
        with_certificate=with_cert,
    )


# -- the decision -------------------------------------------------------------------------------


def would_send(chain: tuple[CertSummary, ...], ca_names: tuple[str, ...]) -> bool:
    """Would Java's key manager send this chain for this CertificateRequest?

    With no CA names, any certificate goes. Otherwise Java picks the alias only when the issuer of a
    certificate in its chain (the leaf's issuer, as the playbook checks, or an intermediate's) is
    among the names; else it sends an empty Certificate message.
    """
    if not ca_names:
        return True
    accepted = {dn_key(name) for name in ca_names}
    return any(dn_key(cert.issuer) in accepted for cert in chain)


def decide_cause(
    result: ProbeResult, identity: Optional[ClientIdentity], now: float
) -> tuple[str, tuple[str, ...]]:
    """The cause (one of ``CAUSES``) and any further problems, from a probe and an identity.

    Order: unreachable, server_certificate_untrusted (the MP would stop before sending anything),
    no_client_certificate_requested, then the client side as the playbook checks it: no
    certificate, CA mismatch, dates, chain; finally the handshake with the certificate.
    """
    anon = result.without_certificate
    if not result.reachable or anon is None:
        return "unreachable", ()
    if not anon.server_chain:
        return ("unreachable" if anon.timed_out else "unknown"), ()
    if result.server_chain_checked and anon.server_verify_error:
        return "server_certificate_untrusted", ()
    if anon.completed and not anon.certificate_requested:
        return "no_client_certificate_requested", ()
    if identity is None:
        return "unknown", ()
    leaf = identity.leaf
    if leaf is None:
        return "missing_client_certificate", ()
    problems: list[str] = []
    if not would_send(identity.certificates, anon.acceptable_ca_names):
        problems.append("ca_mismatch")
    if leaf.not_after is not None and now > leaf.not_after:
        problems.append("client_certificate_expired")
    if leaf.not_before is not None and now < leaf.not_before:
        problems.append("client_certificate_not_yet_valid")
    with_cert = result.with_certificate
    chain_open = not identity.certificates[-1].self_issued
    if (
        with_cert is not None
        and not with_cert.completed
        and with_cert.alert in CHAIN_ALERTS
        and chain_open
        and "ca_mismatch" not in problems
    ):
        problems.append("incomplete_chain")
    if problems:
        return problems[0], tuple(problems[1:])
    if with_cert is not None and with_cert.completed:
        return "accepted", ()
    return "unknown", ()


# -- the diagnosis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    """The outcome of one diagnosis: the cause, the advice and what led there."""

    target: str
    cause: str
    advice: str
    checked_at: float
    servername: Optional[str] = None
    tls_version: Optional[str] = None
    certificate_requested: Optional[bool] = None
    acceptable_ca_names: tuple[str, ...] = ()
    client_certificate: Optional[CertSummary] = None
    client_chain: tuple[CertSummary, ...] = ()
    identity_source: Optional[str] = None
    identity_description: Optional[str] = None
    server_chain: tuple[CertSummary, ...] = ()
    server_chain_checked: bool = False
    server_verify_error: Optional[str] = None
    alert_without_certificate: Optional[str] = None
    alert_with_certificate: Optional[str] = None
    handshake_with_certificate: str = "not_tried"  # "accepted", "rejected" or "not_tried"
    error: Optional[str] = None
    other_problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """One JSON object: the ``--json`` output."""
        leaf = self.client_certificate
        return {
            "target": self.target,
            "servername": self.servername,
            "cause": self.cause,
            "advice": self.advice,
            "checked_at": _iso(self.checked_at),
            "tls_version": self.tls_version,
            "certificate_requested": self.certificate_requested,
            "acceptable_ca_names": list(self.acceptable_ca_names),
            "client_certificate": leaf.to_json() if leaf else None,
            "client_chain": [c.to_json() for c in self.client_chain],
            "identity_source": self.identity_source,
            "identity": self.identity_description,
            "server_chain": [c.to_json() for c in self.server_chain],
            "server_chain_checked": self.server_chain_checked,
            "server_verify_error": self.server_verify_error,
            "alert_without_certificate": self.alert_without_certificate,
            "alert_with_certificate": self.alert_with_certificate,
            "handshake_with_certificate": self.handshake_with_certificate,
            "error": self.error,
            "other_problems": list(self.other_problems),
            "notes": list(self.notes),
        }


def _advice(cause: str, identity: Optional[ClientIdentity], ca_names: tuple[str, ...]) -> str:
    text = ADVICE[cause]
    leaf = identity.leaf if identity else None
    if cause == "ca_mismatch" and leaf is not None:
        text += f" Leaf issuer: {leaf.issuer}."
    if cause == "unknown" and identity is None:
        text += (
            " Give the identity the MP uses (--client-cert/--client-key, --pkcs12 or the "
            "management API) to decide."
        )
    if cause == "unknown" and identity is not None and not identity.can_handshake:
        text += (
            " The keystore certificate would be sent and is within its dates, but without the "
            "private key the handshake cannot be tried: run again with --client-cert and "
            "--client-key (or --pkcs12)."
        )
    return text


def make_diagnosis(
    result: ProbeResult, identity: Optional[ClientIdentity], now: float
) -> Diagnosis:
    """Combine a probe and an identity into a ``Diagnosis``."""
    cause, others = decide_cause(result, identity, now)
    anon = result.without_certificate or Handshake(completed=False)
    with_cert = result.with_certificate
    notes: list[str] = []
    if identity is not None and identity.source == "management_api":
        notes.append(
            "The management API returns certificate details but never the private key: no "
            "handshake with the client certificate was tried; the cause comes from the CA names "
            "the backend sends versus the issuers in the keystore chain, and from the dates."
        )
    if not result.server_chain_checked:
        notes.append("The server chain was not checked (no truststore given).")
    leaf = identity.leaf if identity else None
    if identity is not None and len(identity.certificates) == 1 and leaf and not leaf.self_issued:
        notes.append(
            "The client chain holds the leaf certificate only; if its issuer is an intermediate "
            "CA, add the intermediates (leaf first)."
        )
    tried = "not_tried"
    if with_cert is not None:
        tried = "accepted" if with_cert.completed else "rejected"
    return Diagnosis(
        target=result.target,
        cause=cause,
        advice=_advice(cause, identity, anon.acceptable_ca_names),
        checked_at=now,
        servername=result.servername,
        tls_version=anon.tls_version or (with_cert.tls_version if with_cert else None),
        certificate_requested=anon.certificate_requested if anon.server_chain else None,
        acceptable_ca_names=anon.acceptable_ca_names,
        client_certificate=identity.leaf if identity else None,
        client_chain=identity.certificates if identity else (),
        identity_source=identity.source if identity else None,
        identity_description=identity.description if identity else None,
        server_chain=anon.server_chain,
        server_chain_checked=result.server_chain_checked,
        server_verify_error=anon.server_verify_error,
        alert_without_certificate=anon.alert,
        alert_with_certificate=with_cert.alert if with_cert else None,
        handshake_with_certificate=tried,
        error=(result.connect_error or anon.error) if cause in ("unreachable", "unknown") else None,
        other_problems=others,
        notes=tuple(notes),
    )


def run_diagnosis(
    target: str,
    *,
    servername: Optional[str] = None,
    identity: Optional[ClientIdentity],
    timeout: float,
    ca_file: Optional[str] = None,
    clock: Clock = time.time,
    post_handshake_wait: float = 2.0,
) -> Diagnosis:
    """Probe ``target`` with ``identity`` and decide; never raises for network trouble."""
    result = probe(
        target,
        servername,
        identity,
        timeout,
        ca_file=ca_file,
        post_handshake_wait=post_handshake_wait,
    )
    return make_diagnosis(result, identity, clock())


# -- the human report ---------------------------------------------------------------------------


def _dates(cert: CertSummary) -> str:
    return f"{_iso(cert.not_before) or '?'} .. {_iso(cert.not_after) or '?'}"


def _wrap(head: str, text: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=head, subsequent_indent=" " * len(head))


def render_report(d: Diagnosis) -> str:
    """A report a person can act on: what was checked, what was found, the cause and the fix."""
    lines = [f"Diagnosis of {d.target}" + (f" (SNI {d.servername})" if d.servername else "")]
    lines.append("")
    lines.append("Checked:")
    if d.cause == "unreachable":
        lines.append(f"  - TCP/TLS connection: failed ({d.error or 'no answer'})")
    else:
        lines.append("  - TCP connection: ok")
        hs = f"  - TLS handshake without a client certificate: {d.tls_version or 'no version'}"
        if d.certificate_requested is not None:
            asked = "asked" if d.certificate_requested else "did not ask"
            hs += f", the server {asked} for a client certificate"
        if d.alert_without_certificate:
            hs += f", alert {d.alert_without_certificate}"
        lines.append(hs)
    if d.server_chain_checked:
        verdict = f"NOT trusted ({d.server_verify_error})" if d.server_verify_error else "trusted"
        lines.append(f"  - server chain against the given truststore: {verdict}")
    if d.identity_description:
        lines.append(f"  - client identity ({d.identity_source}): {d.identity_description}")
    else:
        lines.append("  - client identity: none given")
    if d.handshake_with_certificate != "not_tried":
        hs = f"  - TLS handshake with the client certificate: {d.handshake_with_certificate}"
        if d.alert_with_certificate:
            hs += f" (alert {d.alert_with_certificate})"
        lines.append(hs)
    lines.append("")
    lines.append("Found:")
    if d.certificate_requested:
        if d.acceptable_ca_names:
            lines.append("  Acceptable client certificate CA names (sent by the backend):")
            lines.extend(f"    {name}" for name in d.acceptable_ca_names)
        else:
            lines.append("  No client certificate CA names sent (any issuer is acceptable)")
    if d.identity_description is not None:
        if d.client_certificate is None:
            lines.append("  Client certificate: none")
        else:
            accepted = {dn_key(n) for n in d.acceptable_ca_names}
            leaf = d.client_certificate
            mark = ""
            if d.acceptable_ca_names:
                listed = dn_key(leaf.issuer) in accepted
                mark = "   <- among the acceptable CAs" if listed else "   <- NOT among them"
            lines.append("  Client leaf certificate:")
            lines.append(f"    subject: {leaf.subject}")
            lines.append(f"    issuer:  {leaf.issuer}{mark}")
            lines.append(f"    valid:   {_dates(leaf)}")
            for i, cert in enumerate(d.client_chain[1:], start=1):
                lines.append(f"  Client chain [{i}]: {cert.subject} (issuer {cert.issuer})")
    for i, cert in enumerate(d.server_chain):
        sans = ", ".join(cert.subject_alternative_names) or "none"
        lines.append(f"  Server chain [{i}]: {cert.subject}")
        lines.append(f"    issuer: {cert.issuer}")
        lines.append(f"    valid:  {_dates(cert)}; SANs: {sans}")
    if d.error:
        lines.append(f"  Error: {d.error}")
    lines.append("")
    lines.append(f"Cause: {d.cause}")
    lines.append(_wrap("Fix:   ", d.advice))
    if d.other_problems:
        lines.append(f"Also:  {', '.join(d.other_problems)}")
    lines.extend(_wrap("Note:  ", note) for note in d.notes)
    return "\n".join(lines) + "\n"


# -- the subcommand -----------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``diagnose`` options to ``parser``."""
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="backend to probe")
    parser.add_argument(
        "--servername", help="SNI name to send (default: none, like a Private Cloud MP)"
    )
    files = parser.add_argument_group("client identity from files")
    files.add_argument("--client-cert", metavar="PEM", help="client certificate chain, leaf first")
    files.add_argument("--client-key", metavar="PEM", help="private key of the client certificate")
    files.add_argument("--pkcs12", metavar="FILE", help="PKCS#12 file with key and chain")
    files.add_argument("--pkcs12-password-file", metavar="FILE")
    files.add_argument("--pkcs12-password-env", metavar="VAR")
    api = parser.add_argument_group("client identity from the Edge management API")
    api.add_argument("--management-url", metavar="URL", help="e.g. http://ms:8080/v1")
    api.add_argument("--org")
    api.add_argument("--env")
    api.add_argument("--keystore", metavar="NAME|ref://REF")
    api.add_argument("--key-alias", metavar="ALIAS")
    api.add_argument("--target-server", metavar="NAME", help="read keyStore/keyAlias from sSLInfo")
    api.add_argument("--username")
    api.add_argument("--password-file", metavar="FILE")
    api.add_argument("--password-env", metavar="VAR")
    api.add_argument("--token-file", metavar="FILE", help="OAuth bearer token")
    api.add_argument("--token-env", metavar="VAR")
    api.add_argument(
        "--insecure", action="store_true", help="do not verify the management API's TLS"
    )
    api.add_argument("--ca-file", metavar="PEM", help="CA bundle for the management API")
    parser.add_argument(
        "--backend-ca-file",
        metavar="PEM",
        help="CAs of the MP truststore: check the backend's chain against them",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per connection (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _secret(path: Optional[str], env: Optional[str], what: str) -> Optional[str]:
    if path and env:
        raise UsageError(f"give the {what} as a file or an environment variable, not both")
    if path:
        value = _read(path, f"{what} file").decode("utf-8", "replace").rstrip("\r\n")
        if not value:
            raise UsageError(f"{what} file {path} is empty")
        return value
    if env:
        from_env = os.environ.get(env)
        if not from_env:
            raise UsageError(f"environment variable {env} ({what}) is not set")
        return from_env
    return None


def _credentials(args: argparse.Namespace) -> Credentials:
    password = _secret(args.password_file, args.password_env, "password")
    token = _secret(args.token_file, args.token_env, "token")
    if token and (args.username or password):
        raise UsageError("give either --username with a password or a token, not both")
    if args.username and not password:
        raise UsageError("--username needs --password-file or --password-env")
    if password and not args.username:
        raise UsageError("a password needs --username")
    return Credentials(username=args.username, password=password, token=token)


def identity_from_args(args: argparse.Namespace) -> Optional[ClientIdentity]:
    """The client identity the options describe; ``UsageError``/``ManagementAPIError`` if bad."""
    uses_files = bool(args.client_cert or args.client_key)
    uses_p12 = bool(args.pkcs12)
    uses_api = bool(args.management_url)
    if sum((uses_files, uses_p12, uses_api)) > 1:
        raise UsageError(
            "give one client identity: --client-cert/--client-key, --pkcs12 or --management-url"
        )
    if uses_files:
        if not (args.client_cert and args.client_key):
            raise UsageError("--client-cert and --client-key go together")
        return load_pem_identity(args.client_cert, args.client_key)
    if uses_p12:
        password = _secret(args.pkcs12_password_file, args.pkcs12_password_env, "PKCS#12 password")
        return load_pkcs12_identity(args.pkcs12, password.encode() if password else None)
    if not uses_api:
        if args.keystore or args.target_server or args.org or args.env:
            raise UsageError("--keystore/--target-server/--org/--env need --management-url")
        return None
    if not (args.org and args.env):
        raise UsageError("--management-url needs --org and --env")
    if bool(args.keystore) == bool(args.target_server):
        raise UsageError("--management-url needs either --keystore or --target-server")
    try:
        client = ManagementClient(
            args.management_url,
            _credentials(args),
            verify=not args.insecure,
            ca_file=args.ca_file,
            timeout=args.timeout,
        )
    except ValueError as exc:  # a bad URL or an unreadable --ca-file
        raise UsageError(str(exc)) from None
    if args.target_server:
        if args.key_alias:
            raise UsageError("--key-alias comes from the target server's sSLInfo; drop it")
        identity, _ = identity_from_target_server(client, args.org, args.env, args.target_server)
        return identity
    return identity_from_management(client, args.org, args.env, args.keystore, args.key_alias)


def command(args: argparse.Namespace, *, clock: Clock = time.time) -> int:
    """Run ``diagnose``: 0 when a cause was decided, 1 for ``unknown``, 2 for bad arguments."""
    try:
        parse_target(args.target)
        if not args.timeout > 0:
            raise UsageError("--timeout must be positive")
        if args.backend_ca_file:
            try:
                x509.load_pem_x509_certificates(_read(args.backend_ca_file, "--backend-ca-file"))
            except ValueError:
                raise UsageError(
                    f"--backend-ca-file {args.backend_ca_file}: no PEM certificate found"
                ) from None
        identity = identity_from_args(args)
    except (UsageError, ValueError, ManagementAPIError) as exc:
        print(f"diagnose: error: {exc}", file=sys.stderr)
        return 2
    diagnosis = run_diagnosis(
        args.target,
        servername=args.servername,
        identity=identity,
        timeout=args.timeout,
        ca_file=args.backend_ca_file,
        clock=clock,
    )
    if args.json:
        print(json.dumps(diagnosis.to_json(), indent=2, sort_keys=True))
    else:
        print(render_report(diagnosis), end="")
    return 1 if diagnosis.cause == "unknown" else 0
