"""Parser: MP system.log lines -> HandshakeFailure / SSLInfo events, through real log text.

Every line here is written the way the Message Processor writes it (see
``shared/reference/mp-log-format.md``); the expected values come from issue 2, not from the code.
"""

from __future__ import annotations

import calendar
import re
from datetime import timezone
from pathlib import Path
from typing import Optional

import pytest
from apigee_tls_exporter.records.correlate import Correlator
from apigee_tls_exporter.records.events import Context, Failure, HandshakeFailure, SSLInfo
from apigee_tls_exporter.records.parse import (
    _FIXED_RULES,
    MAX_LABEL_CHARS,
    UNKNOWN_TARGET,
    Parser,
    UnrecognisedLine,
    candidate_lines,
    normalise_address,
    target_of,
)
from apigee_tls_exporter.records.pipeline import LogPipeline
from apigee_tls_exporter.records.reasons import REASONS, TLS_ALERTS
from apigee_tls_exporter.records.stats import FileStats
from helpers import records
from helpers.records import CTX, MESSAGE_ID
from hypothesis import given, settings
from hypothesis import strategies as st

STAMP = "2017-10-23 05:28:57,500"
EPOCH_UTC = calendar.timegm((2017, 10, 23, 5, 28, 57)) + 0.5


def failed(
    message: str = "Received fatal alert: bad_certificate",
    remote: str = "10.20.3.4:443",
    ctx: str = CTX,
    thread: str = "NIOThread@0",
    stamp: str = STAMP,
) -> str:
    return records.failed(message=message, remote=remote, ctx=ctx, thread=thread, stamp=stamp)


def timeout(remote: str = "10.20.3.4:443", ctx: str = CTX, thread: str = "NIOThread@2") -> str:
    return records.timeout(remote=remote, ctx=ctx, thread=thread, stamp=STAMP)


def ssl_info(alias: str = "backend-client", ctx: str = CTX, thread: str = "NIOThread@0") -> str:
    return records.ssl_info(alias=alias, ctx=ctx, thread=thread, stamp=STAMP)


# The playbook's record, as in the reference: failure, SSLInfo, onException record, stack trace.
PLAYBOOK_RECORD = "\n".join(
    [
        failed(),
        ssl_info(),
        f"2017-10-23 05:28:57,814 {CTX}NIOThread@0 ERROR ADAPTORS.HTTP.FLOW - "
        "RequestWriteListener.onException() : "
        "RequestWriteListener.onException(HTTPRequest@6071a73d)",
        "javax.net.ssl.SSLException: Received fatal alert: bad_certificate",
        "\tat sun.security.ssl.Alerts.getSSLException(Alerts.java:208) ~[na:1.8.0_101]",
        "\tat sun.security.ssl.SSLEngineImpl.fatal(SSLEngineImpl.java:1666) ~[na:1.8.0_101]",
        "\tat com.apigee.protocol.http.HTTPClient$Context.handshakeFailed(HTTPClient.java:1006) "
        "~[http-1.0.0.jar:na]",
        "\t... 12 common frames omitted",
    ]
)


def run_pipeline(lines: list[str]) -> tuple[FileStats, list[Failure]]:
    """Lines through parse -> correlate, as ``scan`` and ``run`` read them."""
    failures: list[Failure] = []
    stats = FileStats()
    pipeline = LogPipeline(
        stats,
        Parser(timezone.utc),
        Correlator(1000, None),
        [failures.append],
    )
    pipeline.process(records.text(lines).encode())
    pipeline.finish()
    return stats, failures


def parse(line: str, tz: Optional[timezone] = timezone.utc) -> object:
    return Parser(tz).parse(line.encode())


def parse_failure(line: str) -> HandshakeFailure:
    event = parse(line)
    assert isinstance(event, HandshakeFailure)
    return event


# --- reason ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alert",
    [
        "bad_certificate",
        "certificate_required",
        "handshake_failure",
        "protocol_version",
        "unrecognized_name",
        "unknown_ca",
        "certificate_unknown",
        "certificate_expired",
        "access_denied",
    ],
)
def test_fatal_alert_reason_is_the_alert_name(alert: str) -> None:
    """``Received fatal alert: <name>`` gives the alert name, as written, as the reason."""
    assert alert == parse_failure(failed(f"Received fatal alert: {alert}")).reason


@pytest.mark.parametrize(
    "alert",
    ["BAD-RECORD-MAC", "Bad_Certificate", "alert_255", "x" * 41, "", "a" * 40, "no_such_alert"],
    ids=["dashes-capitals", "capitals", "digits", "41-chars", "empty", "40-chars", "unknown"],
)
def test_odd_alert_name_is_other(alert: str) -> None:
    """An alert name that is not one of RFC 8446's, exactly as the JDK prints them, becomes
    ``other``: the label's vocabulary is bounded (issue 11; was any 1-40 of ``[a-z_]``)."""
    expected = "other"
    assert expected == parse_failure(failed(f"Received fatal alert: {alert}")).reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            "sun.security.validator.ValidatorException: PKIX path building failed: "
            "sun.security.provider.certpath.SunCertPathBuilderException: unable to find valid "
            "certification path to requested target",
            "pkix_path_building_failed",
        ),
        (
            "java.security.cert.CertificateException: No subject alternative names present",
            "hostname_mismatch",
        ),
        (
            "java.security.cert.CertificateException: No subject alternative names matching IP "
            "address 10.20.3.4 found",
            "hostname_mismatch",
        ),
        (
            "java.security.cert.CertificateException: No name matching backend.example.com found",
            "hostname_mismatch",
        ),
        ("Remote host closed connection during handshake", "remote_closed"),
        (
            "No appropriate protocol (protocol is disabled or cipher suites are inappropriate)",
            "no_appropriate_protocol",
        ),
        ("General SSLEngine problem", "general_sslengine_problem"),
        ("Something no JDK says", "other"),
        ("", "other"),
    ],
    ids=[
        "pkix",
        "no-san-present",
        "no-san-matching-ip",
        "no-name-matching",
        "remote-closed",
        "no-appropriate-protocol",
        "old-sslengine-wrapper",
        "anything-else",
        "empty-message",
    ],
)
def test_message_reason_from_fixed_vocabulary(message: str, reason: str) -> None:
    """A message that is not a fatal alert maps to the fixed vocabulary, ``other`` otherwise."""
    assert reason == parse_failure(failed(message)).reason


# The old JDK 8 JSSE stack (before 8u261), read from its sources (JetBrains/jdk8u_jdk,
# src/share/classes/sun/security/...): the text each failure gets there, and its reason.
JDK8_TEXTS = [
    # ssl/SSLEngineImpl.java recvAlert() and ssl/SSLSocketImpl.java recvAlert(): fatal alerts
    ("Received fatal alert: bad_certificate", "bad_certificate"),
    ("Received fatal alert: handshake_failure", "handshake_failure"),
    ("Received fatal alert: decryption_failed", "decryption_failed"),
    # ssl/Alerts.java alertDescription(): an alert it has no name for
    ("Received fatal alert: <UNKNOWN ALERT: 116>", "certificate_required"),
    ("Received fatal alert: <UNKNOWN ALERT: 109>", "missing_extension"),
    ("Received fatal alert: <UNKNOWN ALERT: 254>", "other"),
    # ssl/ClientHandshaker.java handshakeAlert(): a warning during the handshake (two spaces)
    ("handshake alert:  unrecognized_name", "unrecognized_name"),
    # ssl/SSLSocketImpl.java readRecord(): EOF during the handshake
    ("Remote host closed connection during handshake", "remote_closed"),
    ("Remote host closed connection incorrectly", "remote_closed"),
    # ssl/SSLEngineImpl.java closeInbound()
    (
        "Inbound closed before receiving peer's close_notify: possible truncation attack?",
        "remote_closed",
    ),
    # ssl/SSLEngineImpl.java and ssl/SSLSocketImpl.java recvAlert(): close_notify too early
    ("Received close_notify during handshake", "remote_closed"),
    # ssl/InputRecord.java read(): EOF (the cause of the SSLSocket text above)
    ("SSL peer shut down incorrectly", "remote_closed"),
    # ssl/EngineInputRecord.java and ssl/InputRecord.java: not a TLS record
    ("Unrecognized SSL message, plaintext connection?", "not_tls"),
    ("Unsupported record version Unknown-72.84", "not_tls"),
    ("Input SSL/TLS record too big: max = 16709 len = 18245", "not_tls"),
    # ssl/ClientHandshaker.java serverHello(): the client refuses the server's version
    (
        "Server chose TLSv1, but that protocol version is not enabled or not supported by the "
        "client.",
        "protocol_version",
    ),
    # ssl/Handshaker.java activate() and getActiveCipherSuites()
    (
        "No appropriate protocol (protocol is disabled or cipher suites are inappropriate)",
        "no_appropriate_protocol",
    ),
    ("No appropriate cipher suite", "no_appropriate_cipher_suite"),
    # ssl/ClientHandshaker.java serverHello() and getKickstartMessage()
    (
        "Server selected improper ciphersuite TLS_RSA_WITH_RC4_128_SHA",
        "no_appropriate_cipher_suite",
    ),
    ("No negotiable cipher suite", "no_appropriate_cipher_suite"),
    # ssl/ClientHandshaker.java serverCertificate(): an empty Certificate message
    ("empty certificate chain", "empty_server_certificate"),
    # ssl/SSLEngineImpl.java fatal(): the engine's text for a failure it detected itself
    ("General SSLEngine problem", "general_sslengine_problem"),
    # ssl/Alerts.java getSSLException(): reason = cause.toString() (an SSLSocket client)
    (
        "sun.security.validator.ValidatorException: PKIX path building failed: "
        "sun.security.provider.certpath.SunCertPathBuilderException: unable to find valid "
        "certification path to requested target",
        "pkix_path_building_failed",
    ),
    (
        "sun.security.validator.ValidatorException: PKIX path validation failed: "
        "java.security.cert.CertPathValidatorException: timestamp check failed",
        "pkix_path_validation_failed",
    ),
    (
        "sun.security.validator.ValidatorException: PKIX path validation failed: "
        "java.security.cert.CertPathValidatorException: Path does not chain with any of the "
        "trust anchors",
        "pkix_path_validation_failed",
    ),
    # validator/SimpleValidator.java (sun.security.x509.CertificateValidity: NotAfter: <date>)
    (
        "java.security.cert.CertificateExpiredException: NotAfter: Sat Jan 01 00:00:00 UTC 2022",
        "pkix_path_validation_failed",
    ),
    # provider/certpath/BasicChecker.java: "<msg> check failed"
    (
        "sun.security.validator.ValidatorException: PKIX path validation failed: "
        "java.security.cert.CertPathValidatorException: signature check failed",
        "pkix_path_validation_failed",
    ),
    # provider/certpath/PKIXMasterCertPathValidator.java
    (
        "java.security.cert.CertPathValidatorException: unrecognized critical extension(s)",
        "pkix_path_validation_failed",
    ),
    # validator/EndEntityChecker.java
    (
        "sun.security.validator.ValidatorException: KeyUsage does not allow key encipherment",
        "pkix_path_validation_failed",
    ),
    # validator/SymantecTLSPolicy.java
    (
        "sun.security.validator.ValidatorException: TLS Server certificate issued after "
        "2019-04-16 and anchored by a distrusted legacy Symantec root CA: CN=GeoTrust Global CA",
        "pkix_path_validation_failed",
    ),
    # provider/certpath/AlgorithmChecker.java (checked before "PKIX path validation failed")
    (
        "sun.security.validator.ValidatorException: PKIX path validation failed: "
        "java.security.cert.CertPathValidatorException: Algorithm constraints check failed on "
        "signature algorithm: MD5withRSA",
        "algorithm_constraints",
    ),
    # validator/SimpleValidator.java and validator/ValidatorException.java
    (
        "sun.security.validator.ValidatorException: No trusted certificate found",
        "pkix_path_building_failed",
    ),
    (
        "sun.security.validator.ValidatorException: Extended key usage does not permit use "
        "for TLS server authentication",
        "pkix_path_validation_failed",
    ),
    # util/HostnameChecker.java matchIP() / matchDNS(), via ssl/X509TrustManagerImpl.java
    (
        "java.security.cert.CertificateException: No subject alternative names present",
        "hostname_mismatch",
    ),
    (
        "java.security.cert.CertificateException: No subject alternative DNS name matching "
        "backend.example.com found.",
        "hostname_mismatch",
    ),
    (
        "java.security.cert.CertificateException: No name matching backend.example.com found",
        "hostname_mismatch",
    ),
    # ssl/SSLContextImpl.java checkAlgorithmConstraints()
    (
        "java.security.cert.CertificateException: Certificates do not conform to algorithm "
        "constraints",
        "algorithm_constraints",
    ),
    # ssl/ClientHandshaker.java serverKeyExchange() and ssl/DHCrypt.java
    ("RSA ServerKeyExchange does not comply to algorithm constraints", "algorithm_constraints"),
    ("DHPublicKey does not comply to algorithm constraints", "algorithm_constraints"),
    # ssl/DHCrypt.java on a JDK without large DH groups (the cause: "Prime size must be …")
    ("java.lang.RuntimeException: Could not generate DH keypair", "algorithm_constraints"),
    # ssl/SSLSocketImpl.java: the socket's read timeout during the handshake
    ("Read timed out", "handshake_timeout"),
    # ssl/SSLSocketImpl.java checkEOF(): a later call on a socket that failed
    (
        "Connection has been shutdown: javax.net.ssl.SSLHandshakeException: Received fatal "
        "alert: bad_certificate",
        "bad_certificate",
    ),
]

# The JDK 11+ stack (also JDK 8u261+), read from openjdk/jdk
# src/java.base/share/classes/sun/security/ (the texts the harness in test_jsse.py cannot make).
# JDK 17+ puts "(<alert>) " in front of each; the cases below run with and without it.
JDK11_TEXTS = [
    # ssl/Alert.java AlertConsumer: a received alert, known or not
    ("Received fatal alert: access_denied", "access_denied"),
    ("Unknown alert description (116)", "certificate_required"),
    ("Unknown alert description (200)", "other"),
    ("Received fatal close_notify alert", "remote_closed"),
    # ssl/Alert.java AlertConsumer: a warning during the handshake
    ("received handshake warning: unrecognized_name", "unrecognized_name"),
    ("Received handshake warning: unrecognized_name", "unrecognized_name"),
    # ssl/SSLSocketImpl.java handleEOF(), ssl/SSLEngineImpl.java closeInbound()
    ("Remote host terminated the handshake", "remote_closed"),
    ("Remote host terminated the connection", "remote_closed"),
    ("closing inbound before receiving peer's close_notify", "remote_closed"),
    # ssl/SSLSocketImpl.java readHandshakeRecord(): an I/O error (a reset) while handshaking
    ("readHandshakeRecord", "remote_closed"),
    # ssl/SSLSocketInputRecord.java, ssl/SSLEngineInputRecord.java
    ("Unsupported or unrecognized SSL message", "not_tls"),
    ("Unrecognized record version (D)TLS-1.7 , plaintext connection?", "not_tls"),
    # ssl/ServerHello.java: the client refuses the server's version
    (
        "The server selected protocol version TLS10 is not accepted by client preferences "
        "[TLS13, TLS12]",
        "protocol_version",
    ),
    ("A potential protocol version downgrade attack", "protocol_version"),
    # ssl/HandshakeContext.java, ssl/ClientHello.java, ssl/ServerHello.java
    (
        "No appropriate protocol (protocol is disabled or cipher suites are inappropriate)",
        "no_appropriate_protocol",
    ),
    ("No appropriate cipher suite", "no_appropriate_cipher_suite"),
    ("No negotiable cipher suite", "no_appropriate_cipher_suite"),
    ("Server returned wrong cipher suite for session", "no_appropriate_cipher_suite"),
    # ssl/CertificateMessage.java: the server's Certificate message is empty
    ("Empty server certificate chain", "empty_server_certificate"),
    # validator/PKIXValidator.java via ssl/CertificateMessage.java: diagnostic = getMessage()
    (
        "PKIX path validation failed: java.security.cert.CertPathValidatorException: "
        "Certificate has been revoked, reason: KEY_COMPROMISE, revocation date: Mon Jan 02 "
        "10:00:00 UTC 2023, authority: CN=Issuing CA",
        "pkix_path_validation_failed",
    ),
    (
        "PKIX path validation failed: java.security.cert.CertPathValidatorException: "
        "Algorithm constraints check failed on signature algorithm: SHA1withRSA",
        "algorithm_constraints",
    ),
    ("unable to find valid certification path to requested target", "pkix_path_building_failed"),
    # util/HostnameChecker.java
    ("No subject alternative names matching IP address 10.20.3.4 found", "hostname_mismatch"),
    ("No subject alternative DNS name matching backend.example.com found.", "hostname_mismatch"),
    ("Hostname or IP address is undefined.", "hostname_mismatch"),
    # ssl/SSLContextImpl.java checkAlgorithmConstraints(), ssl/ECDHServerKeyExchange.java
    ("Certificates do not conform to algorithm constraints", "algorithm_constraints"),
    ("ECDH ServerKeyExchange does not comply with algorithm constraints", "algorithm_constraints"),
]


@pytest.mark.parametrize(
    ("message", "reason"), JDK8_TEXTS, ids=[f"jdk8-{i}" for i in range(len(JDK8_TEXTS))]
)
def test_jdk8_message_gets_its_reason(message: str, reason: str) -> None:
    """Each failure's wording in the old JDK 8 stack gets the failure's reason."""
    assert reason == parse_failure(failed(message)).reason


@pytest.mark.parametrize("prefix", ["", "(handshake_failure) ", "(certificate_unknown) "])
@pytest.mark.parametrize(
    ("message", "reason"), JDK11_TEXTS, ids=[f"jdk11-{i}" for i in range(len(JDK11_TEXTS))]
)
def test_jdk11_message_gets_its_reason_with_or_without_the_alert_prefix(
    message: str, reason: str, prefix: str
) -> None:
    """Each failure's wording in the JDK 11+ stack gets the failure's reason, and so does the
    same text behind JDK 17's ``(alert_name)`` prefix: the prefix is not the reason."""
    assert reason == parse_failure(failed(prefix + message)).reason


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (0, "close_notify"),
        (42, "bad_certificate"),
        (112, "unrecognized_name"),
        (116, "certificate_required"),
        (120, "no_application_protocol"),
    ],
)
def test_unknown_alert_number_is_named_by_rfc_8446(number: int, name: str) -> None:
    """``<UNKNOWN ALERT: N>`` (JDK 8) and ``Unknown alert description (N)`` (JDK 11+) get the RFC
    8446 name of N."""
    messages = (
        f"Received fatal alert: <UNKNOWN ALERT: {number}>",
        f"(unexpected_message) Unknown alert description ({number})",
    )
    assert [name, name] == [parse_failure(failed(m)).reason for m in messages]


def test_every_alert_name_is_its_own_reason() -> None:
    """Every RFC 8446 alert name received is the reason, with or without the JDK 17 prefix."""
    reasons = [
        parse_failure(failed(f"({name}) Received fatal alert: {name}")).reason
        for name in TLS_ALERTS
    ]
    assert list(TLS_ALERTS) == reasons


def test_vocabulary_is_bounded_and_documented() -> None:
    """Every fixed reason a message can get is in REASONS; REASONS and TLS_ALERTS share exactly
    the documented overlap, and docs/reasons.md's table has a row for every fixed reason."""
    page = (Path(__file__).resolve().parents[3] / "docs" / "reasons.md").read_text()
    undocumented = [r for r in REASONS if f"| `{r}` |" not in page]
    overlap = sorted(set(REASONS) & set(TLS_ALERTS))
    rules = [r for r, _ in _FIXED_RULES if r not in REASONS]
    expected: tuple[list[str], list[str], list[str]] = (
        [],
        ["protocol_version", "unrecognized_name"],
        [],
    )
    assert expected == (undocumented, overlap, rules)


def test_handshake_timeout_line_is_a_failure_with_reason_handshake_timeout() -> None:
    """A ``handshakeTimeout()`` line is a failure with reason ``handshake_timeout``."""
    expected = "handshake_timeout"
    assert expected == parse_failure(timeout()).reason


# --- target --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "target"),
    [
        ("backend.example.com/10.20.3.4:443", "backend.example.com:443"),
        ("/10.20.3.4:443", "10.20.3.4:443"),
        ("10.20.3.4:8443", "10.20.3.4:8443"),
        ("/2001:db8:0:0:0:0:0:1:443", "[2001:db8:0:0:0:0:0:1]:443"),
        ("backend.example.com/2001:db8:0:0:0:0:0:1:443", "backend.example.com:443"),
        ("/[2001:db8::1]:443", "[2001:db8::1]:443"),
    ],
    ids=["hostname/ip", "/ip", "ip", "ipv6", "hostname/ipv6", "bracketed-ipv6"],
)
def test_failure_target_from_remote_host_address(remote: str, target: str) -> None:
    """``Remote host:`` in every InetSocketAddress form gives the backend as ``host:port``."""
    assert target == parse_failure(failed(remote=remote)).target


@pytest.mark.parametrize(
    ("remote", "target"),
    [
        ("10.20.3.4:443", "10.20.3.4:443"),
        ("/10.20.3.4:443", "10.20.3.4:443"),
        ("backend.example.com/10.20.3.4:443", "backend.example.com:443"),
    ],
    ids=["ip", "/ip", "hostname/ip"],
)
def test_timeout_target_from_remote_address(remote: str, target: str) -> None:
    """``Remote:`` of a handshakeTimeout line gives the backend as ``host:port``."""
    assert target == parse_failure(timeout(remote=remote)).target


# The backend's address as specified: ``Remote`` starting a word, ``host`` optional, then one
# or more runs of plain characters or bracketed parts. ``parse`` finds the same with a faster
# pattern (literal first, the word boundary checked apart).
SPEC_REMOTE = re.compile(r"\bRemote(?: host)?: *(?P<addr>(?:[^\s\[\]]|\[[^\s\[\]]*\])+)")
TEXT = st.text(alphabet=st.sampled_from(list("Remote host:[]/_x1 .\tRé")), max_size=60)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(TEXT, st.sampled_from(["Remote:", "Remote host:", "xRemote:"]))))
def test_the_remote_address_is_found_as_its_specification_says(parts: list[str]) -> None:
    """On any text, the backend read is the one the specification pattern finds first."""
    text = "".join(parts)
    spec = SPEC_REMOTE.search(text)
    assert target_of(text) == (normalise_address(spec.group("addr")) if spec else UNKNOWN_TARGET)


def test_target_is_the_remote_side_not_the_mp_side() -> None:
    """The ``C:`` address (the MP's own side) never becomes the target."""
    expected = "10.20.3.4:443"
    assert expected == parse_failure(failed()).target


@pytest.mark.parametrize("rendering", [records.REMOTE_HOST, records.CONNECTED])
@pytest.mark.parametrize("kind", ["failed", "timeout"])
def test_backend_read_from_either_channel_rendering_in_either_kind_of_line(
    kind: str, rendering: str
) -> None:
    """``[C:<mp> Remote host:<backend>]`` and ``[Connected: Remote:<backend> Local:<mp>]`` both
    give the backend, in a handshakeFailed line and in a handshakeTimeout line alike."""
    make = records.failed if kind == "failed" else records.timeout
    line = make(remote="backend.example.com/10.20.3.4:443", stamp=STAMP, rendering=rendering)
    expected = "backend.example.com:443"
    assert expected == parse_failure(line).target


@pytest.mark.parametrize(
    "body",
    [
        "SSLClientChannel[C:10.0.3.4:52144 Peer:10.20.3.4:443]@65461",
        "SSLClientChannel[C:10.0.3.4:52144 Remote host:null]@65461",
        "SSLClientChannel[C:10.0.3.4:52144 Remote host:]@65461",
        "SSLChannel{10.20.3.4:443}",
    ],
    ids=["no-remote-key", "null-address", "empty-address", "no-channel-block"],
)
def test_failure_whose_backend_cannot_be_read_is_counted_as_unknown_and_unrecognised(
    body: str,
) -> None:
    """A handshakeFailed line whose backend cannot be read is a failure (``target="unknown"``)
    and is counted as unrecognised as well, so that a format change shows."""
    line = (
        f"{STAMP} {CTX}NIOThread@0 ERROR HTTP.CLIENT - HTTPClient$Context.handshakeFailed() : "
        f"{body} useCount=1 handshake failed, message: Received fatal alert: bad_certificate"
    )
    stats, failures = run_pipeline([line, ssl_info()])
    expected = ([("unknown", "bad_certificate", "backend-client")], 1, 2)
    assert expected == (
        [(f.target, f.reason, f.key_alias) for f in failures],
        stats.unrecognised,
        stats.lines,
    )


# --- context, thread, time ------------------------------------------------------------------------


def test_context_block_gives_org_env_api_rev_and_message_id() -> None:
    """The ``org: env: api: rev: messageid:`` block is read into the event's context."""
    expected = Context("acme", "prod", "payments-v1", "7", MESSAGE_ID)
    assert expected == parse_failure(failed()).context


def test_line_without_context_block_has_empty_context() -> None:
    """Outside an API call the block is absent: every context field is ``""``."""
    assert Context() == parse_failure(failed(ctx="")).context


def test_two_spaces_after_timestamp_are_accepted() -> None:
    """Without the context block there may be two spaces after the timestamp."""
    event = parse_failure(failed(ctx=" "))  # "<timestamp>  NIOThread@0 ERROR ..."
    assert ("10.20.3.4:443", Context()) == (event.target, event.context)


def test_thread_is_read() -> None:
    """The thread name is read, for pairing."""
    expected = "NIOThread@7"
    assert expected == parse_failure(failed(thread="NIOThread@7")).thread


def test_timestamp_read_in_configured_zone() -> None:
    """A configured zone reads the log's zone-less timestamp in that zone."""
    expected = EPOCH_UTC
    assert expected == parse_failure(failed()).timestamp


# --- SSLInfo -------------------------------------------------------------------------------------


def test_ssl_info_line_gives_key_alias_thread_and_context() -> None:
    """The SSLInfo line yields its KeyAlias, with its thread and context for pairing."""
    expected = SSLInfo(Context("acme", "prod", "payments-v1", "7", MESSAGE_ID), "NIOThread@0", "k1")
    assert expected == parse(ssl_info("k1"))


def test_ssl_info_null_alias_is_empty() -> None:
    """``KeyAlias:null`` (one-way TLS) gives an empty alias."""
    assert SSLInfo(Context(), "NIOThread@1", "") == parse(
        ssl_info("null", ctx="", thread="NIOThread@1")
    )


def test_crlf_line_end_is_not_part_of_the_alias() -> None:
    """A ``\\r`` before the newline does not end up in the key alias."""
    event = Parser(timezone.utc).parse((ssl_info("k1") + "\r").encode())
    assert isinstance(event, SSLInfo)
    expected = "k1"
    assert expected == event.key_alias


# --- what is not counted -------------------------------------------------------------------------


def test_playbook_record_gives_one_failure_and_one_ssl_info() -> None:
    """onException record, exception line and stack trace repeat the alert: no further event."""
    block = (PLAYBOOK_RECORD + "\n").encode()
    parser = Parser(timezone.utc)
    events = [parser.parse(raw) for _, raw in candidate_lines(block)]
    kinds = [type(e).__name__ for e in events if e is not None]
    expected = ["HandshakeFailure", "SSLInfo"]
    assert expected == kinds


def test_on_exception_record_is_no_event() -> None:
    """The ``RequestWriteListener.onException()`` record is not a failure."""
    line = PLAYBOOK_RECORD.splitlines()[2]
    assert parse(line) is None


def test_exception_line_repeating_the_alert_is_no_event() -> None:
    """The exception class line that repeats the alert text is not a failure."""
    assert parse("javax.net.ssl.SSLException: Received fatal alert: bad_certificate") is None


def test_stack_frame_mentioning_handshake_failed_is_not_unrecognised() -> None:
    """A stack frame of ``handshakeFailed`` is part of a record: no event, no error."""
    frame = (
        "\tat com.apigee.protocol.http.HTTPClient$Context.handshakeFailed(HTTPClient.java:1006) "
        "~[http-1.0.0.jar:na]"
    )
    assert parse(frame) is None


def test_caused_by_line_mentioning_ssl_info_is_not_unrecognised() -> None:
    """A ``Caused by:`` line is a continuation, whatever it mentions."""
    assert parse("Caused by: java.lang.IllegalStateException: SSLInfo missing for target") is None


def test_ordinary_record_mentioning_marker_only_in_context_is_no_event() -> None:
    """A proxy named after a marker does not make an ordinary record a handshake line."""
    line = (
        f"{STAMP} org:acme env:prod api:SSLInfo-check rev:1 messageid:m1 NIOThread@0 INFO "
        "MESSAGING.RUNTIME - AbstractRequestListener.onRequest() : request received"
    )
    assert parse(line) is None


def test_handshake_failed_line_in_a_new_format_is_unrecognised() -> None:
    """A handshakeFailed record that matches no rule raises UnrecognisedLine."""
    line = (
        f"{STAMP} {CTX}NIOThread@0 ERROR HTTP.CLIENT - HTTPClient$Context.handshakeFailed() : "
        "SSLChannel{remote=10.20.3.4:443} failed: bad_certificate"
    )
    with pytest.raises(UnrecognisedLine):
        parse(line)


def test_ssl_info_line_in_a_new_format_is_unrecognised() -> None:
    """An SSLInfo record without ``KeyAlias:`` raises UnrecognisedLine."""
    line = (
        f"{STAMP} {CTX}NIOThread@0 ERROR HTTP.CLIENT - HTTPClient$Context.handshakeFailed() : "
        "SSLInfo{keyStore=ks1, alias=backend-client}"
    )
    with pytest.raises(UnrecognisedLine):
        parse(line)


def test_handshake_line_with_a_new_timestamp_format_is_unrecognised() -> None:
    """A failure line whose timestamp changed shape is unrecognised, not silently dropped."""
    line = failed(stamp="23/10/2017 05:28:57.500")
    with pytest.raises(UnrecognisedLine):
        parse(line)


@pytest.mark.parametrize(
    "stamp",
    [
        "2017-02-30 05:28:57,500",
        "2017-13-01 05:28:57,500",
        "2017-10-23 24:00:00,500",
        "0000-10-23 05:28:57,500",
        "2017-00-10 05:28:57,500",
        "2017-10-23 05:60:00,500",
        "2017-10-23 05:28:60,500",
    ],
    ids=["feb-30", "month-13", "hour-24", "year-0", "month-0", "minute-60", "second-60"],
)
def test_failure_dated_at_an_impossible_time_is_unrecognised(stamp: str) -> None:
    """A failure line dated at a time that does not exist raises UnrecognisedLine (never a
    ValueError out of the parser)."""
    with pytest.raises(UnrecognisedLine):
        parse(failed(stamp=stamp))


def test_impossible_date_is_counted_and_the_failures_after_it_still_are() -> None:
    """An impossible date among failures is one unrecognised line; the failures after it in the
    same read are counted."""
    later = records.failed(remote="later.example.com/10.1.1.1:443", thread="NIOThread@3")
    lines = [failed(stamp="2017-02-30 05:28:57,500"), ssl_info(), later]
    stats, failures = run_pipeline(lines)
    expected = (1, [("later.example.com:443", "bad_certificate")])
    assert expected == (stats.unrecognised, [(f.target, f.reason) for f in failures])


@pytest.mark.parametrize("key", ["org", "env", "api", "rev"])
def test_context_label_values_are_cut_to_the_label_bound(key: str) -> None:
    """A 3,000-character org, env, api or rev is cut to MAX_LABEL_CHARS, like target; the
    message id, never a label, is kept whole."""
    values = {"org": "acme", "env": "prod", "api": "payments-v1", "rev": "7", key: "x" * 3000}
    ctx = " ".join(f"{k}:{v}" for k, v in values.items()) + f" messageid:{'m' * 3000} "
    context = parse_failure(failed(ctx=ctx)).context
    expected = ("x" * MAX_LABEL_CHARS, "m" * 3000)
    assert expected == (getattr(context, key), context.message_id)


def test_context_out_of_the_usual_order_is_cut_too() -> None:
    """The slow path (keys in another order) cuts label values the same way."""
    ctx = f"env:prod org:{'o' * 3000} messageid:m1 "
    expected = "o" * MAX_LABEL_CHARS
    assert expected == parse_failure(failed(ctx=ctx)).context.org


def test_key_alias_is_cut_to_the_label_bound() -> None:
    """A 3,000-character KeyAlias is cut to MAX_LABEL_CHARS."""
    event = parse(ssl_info("k" * 3000))
    assert isinstance(event, SSLInfo)
    expected = "k" * MAX_LABEL_CHARS
    assert expected == event.key_alias


# --- hostile input -------------------------------------------------------------------------------


def test_invalid_utf8_in_a_context_value_is_replaced() -> None:
    """Invalid UTF-8 does not stop a line from parsing; the bad byte becomes U+FFFD."""
    raw = failed(ctx="org:acme env:prod api:pay\udcffments rev:7 messageid:m1 ")
    event = Parser(timezone.utc).parse(raw.encode("utf-8", "surrogateescape"))
    assert isinstance(event, HandshakeFailure)
    expected = "pay\ufffdments"
    assert expected == event.context.api


def test_invalid_utf8_in_the_message_keeps_the_reason() -> None:
    """Invalid UTF-8 after the alert name leaves the reason intact."""
    raw = failed("Received fatal alert: bad_certificate \udcfe\udcff").encode(
        "utf-8", "surrogateescape"
    )
    event = Parser(timezone.utc).parse(raw)
    assert isinstance(event, HandshakeFailure)
    expected = "bad_certificate"
    assert expected == event.reason


def test_two_megabyte_failure_line_is_parsed() -> None:
    """A 2 MB failure line (a huge message) still gives its target and reason."""
    line = failed("Received fatal alert: handshake_failure " + "x" * (2 << 20))
    event = parse_failure(line)
    expected = ("10.20.3.4:443", "handshake_failure")
    assert expected == (event.target, event.reason)


# --- candidate_lines ------------------------------------------------------------------------------


def test_candidate_lines_yield_each_marker_line_once_in_order() -> None:
    """Lines with markers come once each, in order, with their offsets; others not at all."""
    other = f"{STAMP} NIOThread@0 INFO MESSAGING.RUNTIME - Ping.run() : ok"
    both = f"{STAMP} NIOThread@0 INFO X - handshakeFailed() : SSLInfo: handshakeTimeout"
    lines = [other, failed(), other, both, other, ssl_info()]
    block = ("\n".join(lines) + "\n").encode()
    starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
    expected = [(starts[i], lines[i].encode()) for i in (1, 3, 5)]
    assert expected == list(candidate_lines(block))


def test_candidate_lines_include_a_last_line_without_newline() -> None:
    """A last line without its newline is still a candidate."""
    block = ("x\n" + ssl_info()).encode()
    expected = [(2, ssl_info().encode())]
    assert expected == list(candidate_lines(block))


def test_candidate_lines_include_exception_lines_carrying_a_received_alert() -> None:
    """An exception line with ``Received fatal alert`` or ``Unknown alert description`` is a
    candidate (MARKERS holds both texts): it may be the only trace of a failure."""
    lines = [
        "javax.net.ssl.SSLHandshakeException: Received fatal alert: certificate_required",
        "\tat sun.security.ssl.Alert.createSSLException(Alert.java:131)",
        "javax.net.ssl.SSLProtocolException: (unexpected_message) Unknown alert description (116)",
    ]
    block = records.text(lines).encode()
    expected = [lines[0].encode(), lines[2].encode()]
    assert expected == [raw for _, raw in candidate_lines(block)]


# -- ignorable: the candidates the pipeline drops unread ---------------------------------------

_WORDS = st.sampled_from(
    [
        "\tat",
        "    at",
        " ",
        "handshakeFailed",
        "handshakeTimeout",
        "SSLInfo: ",
        "Received fatal alert: bad_certificate",
        "Unknown alert description (116)",
        "General SSLEngine problem",
        "Caused by: javax.net.ssl.SSLHandshakeException:",
        "javax.net.ssl.SSLException:",
        "HTTPClient$Context.handshakeFailed(HTTPClient.java:1006)",
        ": ",
        STAMP,
        "messageid:x",
        "\r",
    ]
)
_NOISE = st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=8)


@settings(max_examples=600, deadline=None)
@given(
    indent=st.sampled_from(["", " ", "\t", "\t\t", "  "]),
    parts=st.lists(st.one_of(_WORDS, _NOISE), min_size=1, max_size=8),
    record=st.sampled_from(
        [
            None,
            records.failed(),
            records.traffic(),
            records.on_exception()[0],
            records.exception_record(caused_by="PKIX path building failed")[0],
        ]
    ),
)
def test_an_ignorable_candidate_parses_to_nothing_whatever_its_record(
    indent: str, parts: list[str], record: Optional[str]
) -> None:
    """A line ``ignorable`` says the pipeline may drop is, for the parser, nothing: no event, no
    unrecognised line, no General SSLEngine problem trace opened, whatever record is above it.
    And it says so of the indented stack frames that mention a marker only (the class it is
    for), never of a line carrying a received alert or a General SSLEngine problem."""
    from apigee_tls_exporter.records.parse import ALERT_MARKERS, GENERAL_PROBLEM, ignorable

    raw = (indent + " ".join(parts)).encode("utf-8", "surrogatepass")
    above = None if record is None else record.encode()
    if ignorable(raw):
        parser = Parser(timezone.utc)
        assert parser.parse(raw, above) is None
        assert parser.parse(raw, None) is None
        assert not parser.open_trace(raw, above, 1)
        assert parser.trace is None
    marks = (*ALERT_MARKERS, GENERAL_PROBLEM)
    expected = raw[:1] in (b" ", b"\t") and not any(mark in raw for mark in marks)
    assert ignorable(raw) == expected


def test_an_indented_frame_mentioning_a_marker_is_ignorable_only_with_the_built_in_head() -> None:
    """A site's head may match an indented line: then no line is dropped unread."""
    from apigee_tls_exporter.records.head import RecordHead
    from apigee_tls_exporter.records.parse import ignorable

    frame = (
        b"\tat com.apigee.protocol.http.HTTPClient$Context.handshakeFailed(HTTPClient.java:1006)"
    )
    site = RecordHead(r"\s*(?P<ts>\S+ \S+) (?P<thread>\S+) \w+ \S+ - ")
    assert ignorable(frame)
    assert not ignorable(frame, site)
    assert not ignorable(b"\t" + records.on_exception()[1].encode())  # carries an alert
