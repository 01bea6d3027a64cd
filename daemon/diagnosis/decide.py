"""The decision: from a probe and a client identity, one cause and what to change.

``evaluate()`` derives every fact the cause, the human report and ``--json`` show (would Java send
the certificate for these CA names, and which name matched; which of the probe's handshakes is the
one the MP makes; how the backend answered it; what is wrong with the certificates), so that the
report cannot say anything the decision did not use. ``decide()`` maps those facts onto
``CAUSES``; ``make_diagnosis()`` puts it all into a ``Diagnosis``.

The order of the checks follows the order in which the MP's handshake can fail: no TCP or no
TLS; no common protocol, cipher suite or SNI name; the backend's certificate (when the MP checks
it); whether the backend asks for a client certificate; the client side as the playbook checks
it (no certificate, CA names, dates, key usage, chain); the HTTP answer; finally ``accepted``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..records.reasons import MEANINGS
from .identity import CertSummary, ClientIdentity, dn_key, is_ip_literal, iso
from .probe import (
    Handshake,
    HttpAnswer,
    ProbeResult,
    TlsSettings,
    parse_target,
    probe,
    signature_scheme,
)

Clock = Callable[[], float]

CAUSES = (
    "missing_client_certificate",
    "ca_mismatch",
    "key_type_not_requested",
    "post_handshake_auth",
    "rejected_without_reason",
    "issuer_not_trusted_by_backend",
    "client_certificate_expired",
    "client_certificate_not_yet_valid",
    "client_certificate_wrong_usage",
    "incomplete_chain",
    "chain_too_long",
    "rejected_at_http",
    "no_client_certificate_requested",
    "accepted",
    "server_certificate_untrusted",
    "server_certificate_expired",
    "hostname_mismatch",
    "sni_required",
    "protocol_mismatch",
    "cipher_mismatch",
    "not_tls",
    "unreachable",
    "unknown",
)

# Alerts a server sends when it cannot build or check a path from the client's certificate
# (Apache's mod_ssl answers a chain longer than SSLVerifyDepth with internal_error).
CHAIN_ALERTS = frozenset(
    {
        "bad_certificate",
        "unknown_ca",
        "certificate_unknown",
        "decrypt_error",
        "handshake_failure",
        "internal_error",
    }
)
# HTML titles of nginx's answers for a missing or unverifiable client certificate.
CERTIFICATE_TITLES = ("no required ssl certificate was sent", "the ssl certificate error")
CERTIFICATE_STATUSES = (495, 496)  # nginx's own codes, when the config maps them to a page
REJECTING_STATUSES = (400, 401, 403, 421, 495, 496)


def would_send(
    chain: tuple[CertSummary, ...],
    ca_names: tuple[str, ...],
    key_types: Optional[frozenset[str]] = None,
) -> bool:
    """Would Java's key manager send this chain for this CertificateRequest?

    Java (SunX509, the default key manager) is asked for an alias once per key type the backend
    accepts (``key_types``, see ``requested_key_types``; None: not known, any) and picks one only
    when the leaf's key is of that type (not checked when the leaf's key type is not known) and,
    when CA names were sent, the issuer of a certificate in its chain (the leaf's issuer, as the
    playbook checks, or an intermediate's) is among them; else it sends an empty Certificate
    message.
    """
    key_type = chain[0].key_type if chain else None
    if key_types is not None and key_type is not None and key_type not in key_types:
        return False
    return match_depth(chain, ca_names) is not None


# The key algorithm (Java's name) of each signature scheme, and whether TLS 1.3 allows it for
# a CertificateVerify (SignatureScheme.java: rsa_pkcs1_*, dsa_* and the SHA-1/SHA-224 ECDSA
# schemes are TLS 1.2 only).
_SCHEME_KEYS = (
    ("rsa_pss_rsae_", "RSA", True),
    ("rsa_pss_pss_", "RSASSA-PSS", True),
    ("rsa_", "RSA", False),
    ("ecdsa_secp", "EC", True),
    ("ecdsa_", "EC", False),
    ("ed25519", "EdDSA", True),
    ("ed448", "EdDSA", True),
    ("dsa_", "DSA", False),
)
# ClientCertificateType.java: ecdsa_sign covers EdDSA keys too (RFC 8422).
_CERTIFICATE_TYPE_KEYS = {1: ("RSA",), 2: ("DSA",), 64: ("EC", "EdDSA")}


def requested_key_types(hs: Handshake) -> Optional[frozenset[str]]:
    """The client key types Java's key manager is asked for, from the CertificateRequest.

    TLS 1.2 (CertificateRequest.T12CertificateRequestConsumer.choosePossession): the key
    algorithms of the backend's signature algorithms that are also among its certificate types
    (rsa_sign also allows RSASSA-PSS). TLS 1.3 (CertificateMessage.T13CertificateProducer): the
    key algorithms of its ``signature_algorithms`` usable in TLS 1.3. None when the probe did not
    see the request's signature algorithms.
    """
    if not hs.signature_algorithms:
        return None
    tls13 = hs.tls_version == "TLSv1.3"
    keys = set()
    for code in hs.signature_algorithms:
        name = signature_scheme(code)
        for prefix, key, in13 in _SCHEME_KEYS:
            if name.startswith(prefix):
                if in13 or not tls13:
                    keys.add(key)
                break
    if not tls13:
        allowed = {k for t in hs.certificate_types for k in _CERTIFICATE_TYPE_KEYS.get(t, ())}
        if "RSA" in allowed:
            allowed.add("RSASSA-PSS")
        keys &= allowed
    return frozenset(keys)


def match_depth(chain: tuple[CertSummary, ...], ca_names: tuple[str, ...]) -> Optional[int]:
    """The index of the first chain certificate whose issuer is among ``ca_names`` (0: the leaf);
    0 when no names were sent (any issuer goes); None when Java would send nothing."""
    if not chain:
        return None
    if not ca_names:
        return 0
    accepted = {dn_key(name) for name in ca_names}
    return next((i for i, c in enumerate(chain) if dn_key(c.issuer) in accepted), None)


def http_rejection(answer: Optional[HttpAnswer]) -> Optional[str]:
    """``"certificate"`` for an HTTP answer that rejects the client certificate (nginx),
    ``"sni"`` for 421 Misdirected Request (the SNI name, or its absence, does not fit the
    request), ``"http"`` for another refusal (401, 403, ...), None for an answer that lets the
    call in."""
    if answer is None:
        return None
    title = (answer.title or "").lower()
    if answer.status in CERTIFICATE_STATUSES or (
        answer.status == 400 and any(t in title for t in CERTIFICATE_TITLES)
    ):
        return "certificate"
    if answer.status == 421:
        return "sni"
    if answer.status in REJECTING_STATUSES:
        return "http"
    return None


def describe_answer(hs: Handshake) -> str:
    """How the backend answered one attempt, in a few words."""
    if not hs.completed:
        if hs.alert:
            return f"rejected in the handshake (alert {hs.alert})"
        return f"failed ({hs.error or 'no answer'})"
    if hs.alert:
        return f"rejected after the handshake (alert {hs.alert})"
    if hs.closed_after_handshake or hs.reset_after_handshake:
        return "rejected after the handshake (closed without an alert or answer: no reason given)"
    if hs.http is not None:
        answer = f"HTTP {hs.http.status} {hs.http.reason}".rstrip()
        if hs.http.title and hs.http.title.lower() not in answer.lower():
            answer += f' ("{hs.http.title}")'
        verdict = "rejected at HTTP" if http_rejection(hs.http) else "accepted"
        return f"{verdict}: {answer}"
    return "accepted (no HTTP answer)"


def _rejection(hs: Handshake) -> Optional[str]:
    """``"tls"``, ``"certificate"`` (HTTP), ``"http"`` or None (the backend let it in)."""
    if hs.tls_rejected:
        return "tls"
    return http_rejection(hs.http)


@dataclass(frozen=True)
class Evaluation:
    """The facts the cause is decided from; the report and ``--json`` show exactly these."""

    java_sends: Optional[bool] = None  # None: no client certificate to send, or no handshake
    key_types: Optional[tuple[str, ...]] = None  # the key types the request lets Java choose
    key_type_fits: Optional[bool] = None  # the leaf's key is one of them (None: not known)
    matched_depth: Optional[int] = None  # chain index whose issuer the backend names
    matched_ca: Optional[str] = None
    mp_attempt: str = "none"  # "without_certificate", "with_certificate", "not_tried", "none"
    probe_sent_unlike_java: bool = False  # the probe presented a certificate Java would not
    rejection: Optional[str] = None  # of the MP's attempt: "tls", "certificate", "http", None
    client_problems: tuple[str, ...] = ()  # causes certain from the certificates alone
    client_details: tuple[str, ...] = ()
    server_problems: tuple[str, ...] = ()  # server_certificate_expired, hostname_mismatch
    server_details: tuple[str, ...] = ()
    hostnames_checked: tuple[str, ...] = ()


def _client_problems(
    identity: ClientIdentity, now: float
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    problems: list[str] = []
    details: list[str] = []
    for i, cert in enumerate(identity.certificates):
        state = cert.expiry_problem(now)
        if state is None:
            continue
        what = "the client certificate" if i == 0 else f"chain certificate [{i}] {cert.subject}"
        cause = f"client_certificate_{state}"
        if cause not in problems:
            problems.append(cause)
        when = iso(cert.not_after if state == "expired" else cert.not_before)
        verb = "expired on" if state == "expired" else "is valid only from"
        details.append(f"{what} {verb} {when}")
    leaf = identity.leaf
    if leaf is not None and leaf.wrong_usage:
        problems.append("client_certificate_wrong_usage")
        details.append(f"the client certificate's {leaf.wrong_usage}")
    return tuple(problems), tuple(details)


def _server_problems(
    result: ProbeResult, now: float
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    anon = result.without_certificate
    if anon is None or not anon.server_chain:
        return (), (), ()
    leaf = anon.server_chain[0]
    problems: list[str] = []
    details: list[str] = []
    state = leaf.expiry_problem(now)
    if state == "expired":
        problems.append("server_certificate_expired")
        details.append(f"the backend's certificate expired on {iso(leaf.not_after)}")
    elif state == "not_yet_valid":
        problems.append("server_certificate_expired")
        details.append(f"the backend's certificate is valid only from {iso(leaf.not_before)}")
    names = tuple(n for n in (result.servername, result.host) if n)
    names = tuple(dict.fromkeys(names))
    if not any(leaf.matches_host(n) for n in names):
        problems.append("hostname_mismatch")
        sans = ", ".join(leaf.subject_alternative_names) or "none"
        details.append(
            f"the backend's certificate does not name {' or '.join(names)} (subject "
            f"{leaf.subject}; SANs: {sans})"
        )
    return tuple(problems), tuple(details), names


def evaluate(result: ProbeResult, identity: Optional[ClientIdentity], now: float) -> Evaluation:
    """Every fact the decision uses, from one probe and one identity."""
    anon = result.without_certificate
    server, server_details, hostnames = _server_problems(result, now)
    base = Evaluation(
        server_problems=server, server_details=server_details, hostnames_checked=hostnames
    )
    if anon is None or not anon.server_hello:
        return base
    if identity is None or identity.leaf is None:
        attempt = "without_certificate" if identity is not None else "none"
        rejection = _rejection(anon) if identity is not None else None
        return Evaluation(
            mp_attempt=attempt, rejection=rejection, server_problems=server,
            server_details=server_details, hostnames_checked=hostnames,
        )  # fmt: skip
    problems, details = _client_problems(identity, now)
    names = anon.acceptable_ca_names
    depth = match_depth(identity.certificates, names) if anon.certificate_requested else 0
    kinds = requested_key_types(anon) if anon.certificate_requested else None
    key_type = identity.certificates[0].key_type
    fits = None if kinds is None or key_type is None else key_type in kinds
    sends = depth is not None and anon.certificate_requested and fits is not False
    matched = None
    if depth is not None and names:
        issuer = dn_key(identity.certificates[depth].issuer)
        matched = next(n for n in names if dn_key(n) == issuer)
    with_cert = result.with_certificate
    if not sends:
        attempt, mp = "without_certificate", anon
    elif with_cert is not None:
        attempt, mp = "with_certificate", with_cert
    else:
        attempt, mp = "not_tried", None
    return Evaluation(
        java_sends=sends if anon.certificate_requested else None,
        key_types=tuple(sorted(kinds)) if kinds is not None else None,
        key_type_fits=fits,
        matched_depth=depth if sends else None,
        matched_ca=matched,
        mp_attempt=attempt,
        probe_sent_unlike_java=(
            with_cert is not None
            and with_cert.sent_certificate
            and not sends
            and anon.certificate_requested
        ),
        rejection=_rejection(mp) if mp is not None else None,
        client_problems=problems,
        client_details=details,
        server_problems=server,
        server_details=server_details,
        hostnames_checked=hostnames,
    )


def _negotiation(result: ProbeResult) -> str:
    """The cause of a handshake that failed before the ServerHello."""
    anon = result.without_certificate
    assert anon is not None
    attempts = (anon, *result.retries)
    if any(a.alert == "unrecognized_name" for a in attempts):
        return "sni_required"
    if not result.settings.servername and any(
        r.servername and r.server_hello for r in result.retries
    ):
        return "sni_required"  # the same ClientHello with an SNI name gets an answer
    if closes_whatever_is_sent(result):
        return "unreachable"
    offered = result.settings.effective_protocols
    working = [r.protocols[0] for r in result.retries if r.server_hello and r.protocols]
    if result.settings.ciphers and any(v in offered for v in working):
        return "cipher_mismatch"  # a version the MP offers works, with other suites
    if any(v not in offered for v in working):
        return "protocol_mismatch"
    if not offered:
        return "protocol_mismatch" if result.settings.protocols else "cipher_mismatch"
    return "unknown"


def closes_whatever_is_sent(result: ProbeResult) -> bool:
    """The backend accepted TCP and closed before a ServerHello, with no alert, whatever the
    ClientHello offered (TLS 1.2, 1.3, with and without SNI): nothing answers TLS behind it."""
    anon = result.without_certificate
    if anon is None or anon.server_hello or not result.retries:
        return False
    attempts = (anon, *result.retries)
    return not any(a.server_hello or a.alert or a.timed_out or a.not_tls for a in attempts)


def decide(
    result: ProbeResult,
    identity: Optional[ClientIdentity],
    ev: Evaluation,
    received: Optional[str] = None,
) -> tuple[str, tuple[str, ...]]:
    """The cause (one of ``CAUSES``) and further problems that are certain too."""
    anon = result.without_certificate
    if not result.reachable or anon is None:
        return "unreachable", ()
    if anon.not_tls:
        return "not_tls", ()
    if not anon.server_hello:
        return ("unreachable", ()) if anon.timed_out else (_negotiation(result), ())
    if result.server_chain_checked and anon.server_verify_error:
        return "server_certificate_untrusted", ev.server_problems
    server = ev.server_problems
    if received == "hostname_mismatch" and "hostname_mismatch" in server:
        return "hostname_mismatch", tuple(p for p in server if p != "hostname_mismatch")
    if server and result.server_chain_checked:
        return server[0], server[1:]
    if not anon.certificate_requested:
        post = result.post_handshake
        if post is not None and post.post_handshake_request:
            return "post_handshake_auth", server
        refusal = http_rejection(anon.http)
        if refusal == "sni":
            return "sni_required", server
        if refusal is not None:
            return "rejected_at_http", server
        return (server[0], server[1:]) if server else ("no_client_certificate_requested", ())
    if identity is None:
        return "unknown", ()
    if identity.leaf is None:
        if ev.rejection is None:  # the backend asks, but lets the MP in without one
            return "accepted", ("missing_client_certificate", *server)
        return "missing_client_certificate", ()
    static = ev.client_problems
    if not ev.java_sends:
        unsent = _why_not_sent(identity, anon, ev)
        if ev.rejection is None:  # the backend lets the MP in without a certificate
            return "accepted", (*unsent, *static, *server)
        return unsent[0], (*unsent[1:], *static)
    if ev.mp_attempt == "not_tried":
        return (static[0], static[1:]) if static else ("unknown", ())
    if ev.rejection is None:  # let in: the dates (by the given clock) and names still count
        dates = tuple(p for p in static if p != "client_certificate_wrong_usage")
        found = (*dates, *server)
        if found:
            return found[0], found[1:]
        return "accepted", tuple(p for p in static if p not in dates)
    if static:
        return static[0], static[1:]
    with_cert = result.with_certificate
    assert with_cert is not None
    if ev.rejection == "sni":
        return "sni_required", ()
    if with_cert.closed_after_handshake:
        return "rejected_without_reason", ()
    chain_error = ev.rejection == "certificate" or (
        ev.rejection == "tls" and (with_cert.alert in CHAIN_ALERTS or with_cert.alert is None)
    )
    if chain_error:
        return _chain_cause(identity, ev, with_cert.alert, bool(anon.acceptable_ca_names)), ()
    if ev.rejection == "http":
        return "rejected_at_http", ()
    return "unknown", ()


def _why_not_sent(identity: ClientIdentity, anon: Handshake, ev: Evaluation) -> tuple[str, ...]:
    """Why Java's key manager picks no alias: the issuers, the key type, or both."""
    found = []
    if match_depth(identity.certificates, anon.acceptable_ca_names) is None:
        found.append("ca_mismatch")
    if ev.key_type_fits is False:
        found.append("key_type_not_requested")
    return tuple(found) or ("ca_mismatch",)


def _chain_cause(
    identity: ClientIdentity, ev: Evaluation, alert: Optional[str], names_sent: bool
) -> str:
    """Java sent the chain and the backend could not verify it."""
    if not names_sent:
        return "issuer_not_trusted_by_backend"
    depth = ev.matched_depth or 0
    if depth >= 1 or alert == "internal_error":
        # An intermediate between the leaf and a CA the backend names (and so trusts): its
        # verify depth. Apache's mod_ssl answers a chain over SSLVerifyDepth with internal_error.
        return "chain_too_long"
    leaf = identity.certificates[0]
    has_issuer = any(dn_key(c.subject) == dn_key(leaf.issuer) for c in identity.certificates[1:])
    return "issuer_not_trusted_by_backend" if has_issuer else "incomplete_chain"


# -- advice -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    """What the advice texts are made of."""

    result: ProbeResult
    identity: Optional[ClientIdentity]
    ev: Evaluation
    received: Optional[str]

    @property
    def anon(self) -> Optional[Handshake]:
        return self.result.without_certificate

    @property
    def leaf(self) -> Optional[CertSummary]:
        return self.identity.leaf if self.identity else None

    @property
    def issuer(self) -> str:
        return self.leaf.issuer if self.leaf else "?"

    @property
    def mp(self) -> Optional[Handshake]:
        """The attempt that is the MP's handshake."""
        with_cert = self.ev.mp_attempt == "with_certificate"
        return self.result.with_certificate if with_cert else self.anon

    @property
    def answer(self) -> str:
        return describe_answer(self.mp) if self.mp is not None else ""

    @property
    def chain_len(self) -> int:
        return len(self.identity.certificates) if self.identity else 0

    @property
    def settings(self) -> TlsSettings:
        return self.result.settings


def _advice_missing_client_certificate(f: _Facts) -> str:
    return (
        "The keystore holds no client certificate for this key alias. Upload the client "
        "certificate with its complete chain and private key to the keystore the "
        "TargetEndpoint/TargetServer <SSLInfo> uses, under the configured KeyAlias."
    )


def _advice_ca_mismatch(f: _Facts) -> str:
    text = (
        "The MP sends no certificate: no issuer in the keystore chain is among the CA names "
        "the backend accepts, so Java's key manager picks no alias and sends an empty "
        f"Certificate message. Leaf issuer: {f.issuer}. Use a client certificate issued by "
        "one of the acceptable CAs, or add the issuer to the backend's client CA list."
    )
    if f.leaf is not None and not f.leaf.self_issued and f.chain_len == 1:
        text += (
            " If the leaf's issuer is an intermediate below one of the acceptable CAs, upload "
            "the chain with that intermediate (leaf first): Java then finds the alias."
        )
    return text


def _advice_key_type_not_requested(f: _Facts) -> str:
    wanted = ", ".join(f.ev.key_types or ()) or "none Java can use"
    key = f.leaf.key_type if f.leaf else "?"
    return (
        f"The MP sends no certificate: the backend asks for client keys of type {wanted} "
        f"(its CertificateRequest's certificate types and signature algorithms), the keystore "
        f"alias holds a {key} key, so Java's key manager picks no alias and sends an empty "
        "Certificate message. Issue the client certificate with a key of an accepted type "
        "and upload it to the keystore alias, or allow that key type's signature "
        "algorithms on the backend."
    )


def _advice_post_handshake_auth(f: _Facts) -> str:
    return (
        "The backend asks for no client certificate in the TLS handshake: it asks only after "
        "it (TLS 1.3 post-handshake authentication), which Java never offers nor answers, "
        f"and refuses the request without one ({f.answer}). Configure the backend to request "
        "the certificate in the handshake (e.g. verify the client at the TLS layer for this "
        "host), or limit the TargetServer to TLSv1.2 in <SSLInfo><Protocols> where the "
        "backend then renegotiates or asks in the handshake."
    )


def _advice_rejected_without_reason(f: _Facts) -> str:
    return (
        "Java sends the certificate and the TLS 1.3 handshake completes, then the backend "
        "closes the connection without an alert or an HTTP answer: it refuses this "
        "certificate but gives no reason. Its own log says why; usual reasons are an "
        f"issuer it does not trust ({f.issuer}), a chain it cannot complete, or access rules "
        "on the certificate's subject."
    )


def _advice_issuer_not_trusted_by_backend(f: _Facts) -> str:
    text = (
        f"Java sends the certificate but the backend cannot verify it ({f.answer}): it does "
        f"not trust the issuer {f.issuer}. Add that CA (and its root) to the backend's trusted "
        "client CAs, or use a client certificate from a CA the backend trusts."
    )
    if f.chain_len == 1 and f.leaf is not None and not f.leaf.self_issued:
        text += (
            " If that issuer is an intermediate CA, upload the chain with it to the keystore "
            "alias (leaf first)."
        )
    return text


def _advice_client_certificate_expired(f: _Facts) -> str:
    return (
        "Renew the client certificate and upload the new one (with its chain) to the "
        "keystore alias: " + "; ".join(f.ev.client_details) + "."
    )


def _advice_client_certificate_not_yet_valid(f: _Facts) -> str:
    return (
        "The client certificate is not valid yet: check the node's clock, or upload a "
        "certificate whose validity has started: " + "; ".join(f.ev.client_details) + "."
    )


def _advice_client_certificate_wrong_usage(f: _Facts) -> str:
    return (
        "The backend refuses the certificate for client authentication: "
        + "; ".join(d for d in f.ev.client_details if "usage" in d)
        + ". Issue a client certificate with the extended key usage clientAuth (TLS Web "
        "Client Authentication) and digitalSignature, and upload it to the keystore alias."
    )


def _advice_incomplete_chain(f: _Facts) -> str:
    return (
        f"The backend names the leaf's issuer {f.issuer} among its CAs but cannot build a path "
        f"from it ({f.answer}). Upload the complete chain (leaf first, then every "
        "intermediate) to the keystore alias; if the backend still refuses, its CA file "
        "lacks the root that issued that CA."
    )


def _advice_chain_too_long(f: _Facts) -> str:
    depth = (f.ev.matched_depth or 0) + 1
    return (
        f"The backend names {f.ev.matched_ca} and Java sends the chain that leads to it (a "
        f"path of {depth + 1} certificates with that CA), but the backend refuses it "
        f"({f.answer}): its verify depth is too small for this path. Raise it on the backend "
        f"to at least {depth} (nginx ssl_verify_depth, Apache SSLVerifyDepth; both default "
        "to 1), or add the intermediate CAs to the backend's client CA file."
    )


def _advice_rejected_at_http(f: _Facts) -> str:
    http = f.answer.split(": ", 1)[-1]
    return (
        f"The TLS handshake succeeds but the backend refuses the request: {http}. The "
        "backend's HTTP configuration rejects this client (certificate not verified or not "
        "allowed): check its access rules for the client certificate's subject and issuer."
    )


def _advice_no_client_certificate_requested(f: _Facts) -> str:
    return (
        "The backend does not ask for a client certificate, so a certificate rejection does "
        "not come from this backend's client authentication: check which backend the MP "
        "really reaches (load balancer members, TargetServer host/port, SNI)."
    )


def _advice_accepted(f: _Facts) -> str:
    if f.leaf is None:
        return (
            "The keystore holds no client certificate, and the backend lets the call in "
            "without one: this backend does not fail the MP's handshake. Check which backend "
            "the MP really reaches and the keystore/KeyAlias in <SSLInfo>."
        )
    if f.ev.java_sends is False:
        return (
            "Java would send no certificate for these CA names, and the backend lets the "
            "call in without one: this backend does not fail the MP's handshake. Check which "
            "backend the MP really reaches and the keystore/KeyAlias in <SSLInfo>."
        )
    return (
        "The backend accepts this client certificate with the MP's protocols and SNI, so "
        "the MP must be using another one: check the KeyStore reference and KeyAlias in "
        "<SSLInfo> and that every MP has the current keystore."
    )


def _advice_server_certificate_untrusted(f: _Facts) -> str:
    error = f.anon.server_verify_error if f.anon else None
    return (
        f"The backend's chain does not verify against the given truststore ({error}): "
        "import the backend's CA (and intermediates) into the MP truststore, or have the "
        "backend serve its full chain."
    )


def _advice_server_certificate_expired(f: _Facts) -> str:
    return (
        "The backend serves a certificate outside its validity ("
        + "; ".join(d for d in f.ev.server_details if "valid" in d or "expired" in d)
        + "): renew it on the backend. (An MP that does not validate the backend's "
        "certificate, without a TrustStore in <SSLInfo>, is not stopped by this.)"
    )


def _advice_hostname_mismatch(f: _Facts) -> str:
    return (
        "The MP checks the backend's certificate against the host it connects to: "
        + "; ".join(d for d in f.ev.server_details if "does not name" in d)
        + ". Use the host name the certificate names in the TargetServer, or have the "
        "backend's certificate name this host (an IP target needs an IP SAN). (An MP that "
        "does not validate the backend's certificate is not stopped by this.)"
    )


def _advice_sni_required(f: _Facts) -> str:
    if f.mp is not None and http_rejection(f.mp.http) == "sni":
        sent = f"the SNI name {f.settings.servername}" if f.settings.servername else "no SNI name"
        return (
            f"The backend answers {f.answer.split(': ', 1)[-1]} to a request made with "
            f"{sent}: it routes or authorises by the TLS server name. Use the host name the "
            "backend serves in the TargetServer (the MP sends SNI for a host name), or make "
            "the backend serve this name; run diagnose with --servername NAME to check it."
        )
    if not f.settings.servername and not any(a.alert for a in (f.anon, *f.result.retries) if a):
        name = next((r.servername for r in f.result.retries if r.servername), "")
        return (
            "The backend closes the connection before its ServerHello when no SNI name is "
            f"sent, and answers with the name {name}: it (or a TCP proxy in front of it) "
            "routes on the TLS server name. Use the host name in the TargetServer (the MP "
            "sends SNI for a host name), not an IP address."
        )
    if f.settings.servername:
        return (
            f"The backend does not know the SNI name {f.settings.servername} "
            "(unrecognized_name): configure the host name the backend serves in the "
            "TargetServer, or add this name to the backend."
        )
    return (
        "The backend needs an SNI name (unrecognized_name without one) and the MP sends none "
        f"for the IP target {f.result.host}: use the host name in the TargetServer (the MP "
        "sends SNI for a host name when jsse.enableSNIExtension is on), and run diagnose "
        "with --servername NAME to check that name."
    )


def _advice_protocol_mismatch(f: _Facts) -> str:
    offered = ", ".join(f.settings.effective_protocols) or "none usable"
    works = [r.protocols[0] for r in f.result.retries if r.server_hello and r.protocols]
    text = f"No TLS version in common: the MP offers {offered}"
    text += f", the backend answers {', '.join(works)}" if works else ""
    return (
        text + ". Add the backend's version to the TargetServer's <SSLInfo><Protocols> (or "
        "remove the list to use the JVM's defaults), or enable the MP's version on the "
        "backend."
    )


def _advice_cipher_mismatch(f: _Facts) -> str:
    return (
        "No cipher suite in common: the backend completes the handshake with the default "
        "suites but not with the TargetServer's <SSLInfo><Ciphers> ("
        + (", ".join(f.settings.ciphers) or "none usable")
        + "). Add a suite the backend supports to <Ciphers>, or remove the list."
    )


def _advice_not_tls(f: _Facts) -> str:
    return (
        "The port does not speak TLS (the backend answered the ClientHello with something "
        "else, e.g. plain HTTP): check the TargetServer port and that <SSLInfo> is meant "
        "for it."
    )


def _advice_unreachable_closed(f: _Facts) -> str:
    return (
        "The port accepts TCP connections but closes every ClientHello before a ServerHello, "
        "whatever it offers (TLS 1.2, TLS 1.3, with and without an SNI name), without an "
        "alert: nothing answers TLS behind it. Typically a TCP proxy or load balancer whose "
        "backend servers are down or refuse it: check the proxy's backends and health checks."
    )


def _advice_unreachable(f: _Facts) -> str:
    return (
        "No TLS answer from the backend: check the host and port, DNS, firewalls and that "
        "the port speaks TLS."
    )


# What to change, per cause (``unknown`` and any other: ``_unknown_advice``).
ADVICE: dict[str, Callable[[_Facts], str]] = {
    "missing_client_certificate": _advice_missing_client_certificate,
    "ca_mismatch": _advice_ca_mismatch,
    "key_type_not_requested": _advice_key_type_not_requested,
    "post_handshake_auth": _advice_post_handshake_auth,
    "rejected_without_reason": _advice_rejected_without_reason,
    "issuer_not_trusted_by_backend": _advice_issuer_not_trusted_by_backend,
    "client_certificate_expired": _advice_client_certificate_expired,
    "client_certificate_not_yet_valid": _advice_client_certificate_not_yet_valid,
    "client_certificate_wrong_usage": _advice_client_certificate_wrong_usage,
    "incomplete_chain": _advice_incomplete_chain,
    "chain_too_long": _advice_chain_too_long,
    "rejected_at_http": _advice_rejected_at_http,
    "no_client_certificate_requested": _advice_no_client_certificate_requested,
    "accepted": _advice_accepted,
    "server_certificate_untrusted": _advice_server_certificate_untrusted,
    "server_certificate_expired": _advice_server_certificate_expired,
    "hostname_mismatch": _advice_hostname_mismatch,
    "sni_required": _advice_sni_required,
    "protocol_mismatch": _advice_protocol_mismatch,
    "cipher_mismatch": _advice_cipher_mismatch,
    "not_tls": _advice_not_tls,
    "unreachable": _advice_unreachable,
}


def advice(
    cause: str,
    result: ProbeResult,
    identity: Optional[ClientIdentity],
    ev: Evaluation,
    received: Optional[str],
) -> str:
    """What to change, in words a paged engineer can act on, with the facts that matter."""
    f = _Facts(result, identity, ev, received)
    if cause == "unreachable" and closes_whatever_is_sent(f.result):
        return _advice_unreachable_closed(f)
    chosen = ADVICE.get(cause)
    return chosen(f) if chosen is not None else _unknown_advice(result, identity, ev, received)


def _unknown_advice(
    result: ProbeResult,
    identity: Optional[ClientIdentity],
    ev: Evaluation,
    received: Optional[str],
) -> str:
    anon = result.without_certificate
    seen = None
    if anon is not None:
        mp = result.with_certificate if ev.mp_attempt == "with_certificate" else anon
        seen = mp.alert if mp is not None else None
    parts = ["No cause is certain from what the backend and the client identity show."]
    for what, alert in (("The MP received", received), ("The probe received", seen)):
        if alert and alert in MEANINGS:
            parts.append(f"{what} {alert}, which usually means: {MEANINGS[alert]}.")
        elif alert:
            parts.append(f"{what} {alert}.")
    if identity is None:
        parts.append(
            "Give the identity the MP uses (--client-cert/--client-key, --pkcs12 or the "
            "management API) to decide."
        )
    elif ev.mp_attempt == "not_tried":
        parts.append(
            "Java would send the keystore certificate and it is within its dates, but without "
            "the private key the handshake cannot be tried: run again with --client-cert and "
            "--client-key (or --pkcs12)."
        )
    if len(parts) == 1:
        parts.append("The backend's own log says why it refused the handshake.")
    return " ".join(parts)


# -- the diagnosis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    """The outcome of one diagnosis: the cause, the advice and every fact that led there."""

    target: str
    cause: str
    advice: str
    checked_at: float
    result: ProbeResult
    evaluation: Evaluation
    identity: Optional[ClientIdentity] = None
    received: Optional[str] = None
    other_problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    # -- shortcuts for the report, the daemon and the tests -----------------------------------
    @property
    def servername(self) -> Optional[str]:
        return self.result.servername

    @property
    def anonymous(self) -> Optional[Handshake]:
        return self.result.without_certificate

    @property
    def tls_version(self) -> Optional[str]:
        anon, cert = self.result.without_certificate, self.result.with_certificate
        return (anon.tls_version if anon else None) or (cert.tls_version if cert else None)

    @property
    def certificate_requested(self) -> Optional[bool]:
        anon = self.result.without_certificate
        return anon.certificate_requested if anon and anon.server_hello else None

    @property
    def acceptable_ca_names(self) -> tuple[str, ...]:
        anon = self.result.without_certificate
        return anon.acceptable_ca_names if anon else ()

    @property
    def client_certificate(self) -> Optional[CertSummary]:
        return self.identity.leaf if self.identity else None

    @property
    def client_chain(self) -> tuple[CertSummary, ...]:
        return self.identity.certificates if self.identity else ()

    @property
    def server_chain(self) -> tuple[CertSummary, ...]:
        anon = self.result.without_certificate
        return anon.server_chain if anon else ()

    @property
    def server_chain_checked(self) -> bool:
        return self.result.server_chain_checked

    @property
    def identity_source(self) -> Optional[str]:
        return self.identity.source if self.identity else None

    @property
    def server_verify_error(self) -> Optional[str]:
        anon = self.result.without_certificate
        return anon.server_verify_error if anon else None

    @property
    def alert_without_certificate(self) -> Optional[str]:
        anon = self.result.without_certificate
        return anon.alert if anon else None

    @property
    def alert_with_certificate(self) -> Optional[str]:
        cert = self.result.with_certificate
        return cert.alert if cert else None

    @property
    def handshake_with_certificate(self) -> str:
        """``accepted``, ``rejected`` (in TLS or at HTTP) or ``not_tried``."""
        cert = self.result.with_certificate
        if cert is None:
            return "not_tried"
        return "rejected" if _rejection(cert) else "accepted"

    @property
    def error(self) -> Optional[str]:
        if self.cause not in ("unreachable", "unknown", "not_tls", *NEGOTIATION):
            return None
        anon = self.result.without_certificate
        if self.cause == "unreachable" and closes_whatever_is_sent(self.result):
            return "closed before the ServerHello whatever the ClientHello offered"
        return self.result.connect_error or (anon.error if anon else None)

    def to_json(self) -> dict[str, Any]:
        """One JSON object: the ``--json`` output, the same facts as the report."""
        r, ev, ident = self.result, self.evaluation, self.identity
        leaf = self.client_certificate
        anon, cert = r.without_certificate, r.with_certificate
        return {
            "target": self.target,
            "servername": self.servername,
            "protocols": list(r.settings.protocols),
            "ciphers": list(r.settings.ciphers),
            "cause": self.cause,
            "advice": self.advice,
            "checked_at": iso(self.checked_at),
            "received": self.received,
            "received_meaning": MEANINGS.get(self.received or ""),
            "tls_version": self.tls_version,
            "certificate_requested": self.certificate_requested,
            "acceptable_ca_names": list(self.acceptable_ca_names),
            "client_certificate": leaf.to_json() if leaf else None,
            "client_chain": [c.to_json() for c in self.client_chain],
            "identity_source": ident.source if ident else None,
            "identity": ident.description if ident else None,
            "java_sends_certificate": ev.java_sends,
            "requested_key_types": list(ev.key_types) if ev.key_types is not None else None,
            "key_type_fits": ev.key_type_fits,
            "matched_ca": ev.matched_ca,
            "matched_chain_index": ev.matched_depth,
            "mp_attempt": ev.mp_attempt,
            "probe_sent_certificate_java_would_not": ev.probe_sent_unlike_java,
            "rejection": ev.rejection,
            "client_problems": list(ev.client_details),
            "server_problems": list(ev.server_details),
            "hostnames_checked": list(ev.hostnames_checked),
            "server_chain": [c.to_json() for c in self.server_chain],
            "server_chain_checked": r.server_chain_checked,
            "server_verify_error": self.server_verify_error,
            "alert_without_certificate": self.alert_without_certificate,
            "alert_with_certificate": self.alert_with_certificate,
            "handshake_without_certificate": anon.to_json() if anon else None,
            "handshake_with_certificate": self.handshake_with_certificate,
            "with_certificate": cert.to_json() if cert else None,
            "retries": [h.to_json() for h in r.retries],
            "post_handshake": r.post_handshake.to_json() if r.post_handshake else None,
            "error": self.error,
            "other_problems": list(self.other_problems),
            "notes": list(self.notes),
        }


NEGOTIATION = ("sni_required", "protocol_mismatch", "cipher_mismatch")


def make_diagnosis(
    result: ProbeResult,
    identity: Optional[ClientIdentity],
    now: float,
    received: Optional[str] = None,
) -> Diagnosis:
    """Combine a probe and an identity into a ``Diagnosis``."""
    ev = evaluate(result, identity, now)
    cause, others = decide(result, identity, ev, received)
    notes: list[str] = []
    if identity is not None and identity.source == "management_api":
        notes.append(
            "The management API returns certificate details but never the private key: no "
            "handshake with the client certificate was tried; the cause comes from the CA names "
            "the backend sends versus the issuers in the keystore chain, and from the dates."
        )
    if not result.server_chain_checked:
        notes.append("The server chain was not checked against a truststore (none given).")
    leaf = identity.leaf if identity else None
    if identity is not None and len(identity.certificates) == 1 and leaf and not leaf.self_issued:
        notes.append(
            "The client chain holds the leaf certificate only; if its issuer is an intermediate "
            "CA, add the intermediates (leaf first)."
        )
    problems = result.settings.problems()
    if problems:
        notes.append("Not offered by this probe (unknown here): " + ", ".join(problems) + ".")
    if ev.probe_sent_unlike_java:
        notes.append(
            "The probe also presented the certificate although Java would not (its issuers are "
            "not among the CA names), to show what the backend would say to it."
        )
    return Diagnosis(
        target=result.target,
        cause=cause,
        advice=advice(cause, result, identity, ev, received),
        checked_at=now,
        result=result,
        evaluation=ev,
        identity=identity,
        received=received,
        other_problems=tuple(p for p in dict.fromkeys(others) if p != cause),
        notes=tuple(notes),
    )


def mp_settings(
    target: str,
    *,
    servername: Optional[str] = None,
    protocols: tuple[str, ...] = (),
    ciphers: tuple[str, ...] = (),
) -> TlsSettings:
    """The MP's side: the SNI name is ``servername`` when given (``""``: none), else the host
    name of the target, none for an IP literal."""
    host, _ = parse_target(target)
    if servername is None:
        servername = None if is_ip_literal(host) else host
    return TlsSettings(protocols=protocols, ciphers=ciphers, servername=servername or None)


def run_diagnosis(
    target: str,
    *,
    servername: Optional[str] = None,
    identity: Optional[ClientIdentity],
    timeout: float,
    ca_file: Optional[str] = None,
    clock: Clock = time.time,
    http_wait: float = 2.0,
    protocols: tuple[str, ...] = (),
    ciphers: tuple[str, ...] = (),
    received: Optional[str] = None,
) -> Diagnosis:
    """Probe ``target`` as the MP would and decide; never raises for network trouble.

    ``received`` is the failure reason the MP logged (the alert), used when no cause is certain.
    """
    settings = mp_settings(target, servername=servername, protocols=protocols, ciphers=ciphers)
    result = probe(target, settings, identity, timeout, ca_file=ca_file, http_wait=http_wait)
    return make_diagnosis(result, identity, clock(), received)
