"""The client identity the MP presents: distinguished names, certificate summaries, and the
chain (with its key when known) from PEM files, a PKCS#12 file or the Edge management API.

The management API never returns private keys: an identity from it holds the certificate details
only, so the probe cannot present it and the decision works from the CA names and dates.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import UsageError
from .mgmt import ApiCertificate, ManagementAPIError, ManagementClient, TargetServerSSL, strip_ref

SigningKey = Union[
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
]


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


def iso(epoch: Optional[float]) -> Optional[str]:
    """Seconds since the epoch as ISO 8601 UTC (``2026-01-02T03:04:05Z``); None stays None."""
    if epoch is None:
        return None
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_EKU_NAMES = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


def _usages(cert: x509.Certificate) -> Optional[tuple[str, ...]]:
    """The extended key usages by name (dotted for unknown ones); None without the extension."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku)


def _signs(cert: x509.Certificate) -> Optional[bool]:
    """Whether KeyUsage allows digitalSignature (None without the extension)."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return bool(usage.digital_signature)


def java_key_type(key: Any) -> Optional[str]:
    """The key algorithm as Java names it (``Key.getAlgorithm()``), None for another kind."""
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "RSA"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return "EC"
    if isinstance(key, (dsa.DSAPublicKey, dsa.DSAPrivateKey)):
        return "DSA"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "EdDSA"
    return None


def _host_matches(pattern: str, host: str) -> bool:
    """RFC 6125 matching of a DNS name with at most one leftmost ``*`` label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


@dataclass(frozen=True)
class CertSummary:
    """What a report needs of one certificate, from X.509 or from the management API.

    ``extended_key_usage`` is None when the certificate has no such extension or when the source
    (the management API) does not tell; ``digital_signature`` likewise for KeyUsage.
    """

    subject: str
    issuer: str
    not_before: Optional[float]  # seconds since the epoch
    not_after: Optional[float]
    subject_alternative_names: tuple[str, ...] = ()
    extended_key_usage: Optional[tuple[str, ...]] = None
    digital_signature: Optional[bool] = None
    key_type: Optional[str] = None  # Java's name of the public key's algorithm: RSA, EC, ...

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
            extended_key_usage=_usages(cert),
            digital_signature=_signs(cert),
            key_type=java_key_type(cert.public_key()),
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

    @property
    def wrong_usage(self) -> Optional[str]:
        """Why this certificate may not authenticate a TLS client, or None when it may."""
        eku = self.extended_key_usage
        if eku is not None and not {"clientAuth", "anyExtendedKeyUsage"} & set(eku):
            return f"extended key usage {', '.join(eku) or 'empty'} lacks clientAuth"
        if self.digital_signature is False:
            return "key usage lacks digitalSignature"
        return None

    def expiry_problem(self, now: float) -> Optional[str]:
        """``"expired"``, ``"not_yet_valid"`` or None at ``now``."""
        if self.not_after is not None and now > self.not_after:
            return "expired"
        if self.not_before is not None and now < self.not_before:
            return "not_yet_valid"
        return None

    def matches_host(self, host: str) -> bool:
        """Would Java's HTTPS hostname check accept this server certificate for ``host``?

        An IP literal must be an IP SAN; a name must match a DNS SAN, or the CN when the
        certificate has no DNS SAN.
        """
        bare = host[1:-1] if host.startswith("[") else host
        if _is_ip(bare):
            ips = {_norm_ip(s[3:]) for s in self.subject_alternative_names if s.startswith("IP:")}
            return _norm_ip(bare) in ips
        dns = [s[4:] for s in self.subject_alternative_names if s.startswith("DNS:")]
        if not dns:
            dns = [v for k, v in dn_key(self.subject) if k == "CN"]
        return any(_host_matches(name, bare) for name in dns)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with ISO 8601 UTC dates."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": iso(self.not_before),
            "not_after": iso(self.not_after),
            "subject_alternative_names": list(self.subject_alternative_names),
            "extended_key_usage": (
                None if self.extended_key_usage is None else list(self.extended_key_usage)
            ),
            "key_type": self.key_type,
        }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _norm_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def is_ip_literal(host: str) -> bool:
    """True for ``10.1.2.3``, ``::1`` or ``[::1]``: the MP sends no SNI for those."""
    return _is_ip(host[1:-1] if host.startswith("[") else host)


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


def read_file(path: str, option: str) -> bytes:
    """The bytes of ``path``; ``UsageError`` naming ``option`` when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise UsageError(f"{option} {path}: file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{option} {path}: is a directory") from None
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
    cert_data = read_file(cert_file, "--client-cert")  # first: a missing file is "not found"
    key_data = read_file(key_file, "--client-key")
    try:
        certs = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise UsageError(f"--client-cert {cert_file}: no PEM certificate found") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=key_password)
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
    data = read_file(path, "--pkcs12")
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
