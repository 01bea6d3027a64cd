"""Parser: MP system.log lines -> HandshakeFailure / SSLInfo events, through real log text.

Every line here is written the way the Message Processor writes it (see
``shared/reference/mp-log-format.md``); the expected values come from issue 2, not from the code.
"""

from __future__ import annotations

import calendar
from datetime import timezone
from typing import Optional

import pytest
import records
from apigee_tls_exporter.events import Context, HandshakeFailure, SSLInfo
from apigee_tls_exporter.parse import Parser, UnrecognisedLine, candidate_lines
from records import CTX, MESSAGE_ID

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


def test_target_is_the_remote_side_not_the_mp_side() -> None:
    """The ``C:`` address (the MP's own side) never becomes the target."""
    expected = "10.20.3.4:443"
    assert expected == parse_failure(failed()).target


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
    line = failed(stamp="2017-10-23T05:28:57.500Z")
    with pytest.raises(UnrecognisedLine):
        parse(line)


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
