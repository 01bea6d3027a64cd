"""The ``reason`` vocabulary, and what each reason means: written once, here.

A failure's ``reason`` label is a TLS alert the backend sent (``TLS_ALERTS``, RFC 8446 section 6
names) or one of the fixed reasons the JDK's own message gives (``REASONS``). ``MEANINGS`` says in
one sentence what each means; ``docs/reasons.md`` renders it as a table (a test keeps the two the
same) and ``docs/runbook.md`` has a section per reason (what to check, what to do). The diagnosis
quotes the meaning when no cause is certain.
"""

from __future__ import annotations

# RFC 8446 section 6, with the numbers of its registry (an old JDK prints an alert it has no name
# for by number). The names RFC 8446 marks ``_RESERVED`` (TLS 1.2 and older only) are listed as
# the JDK prints them, without the suffix.
ALERT_NUMBERS: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
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
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    111: "certificate_unobtainable",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}
TLS_ALERTS: tuple[str, ...] = tuple(ALERT_NUMBERS.values())
"""The alert reasons: a TLS alert the backend sent, by its RFC 8446 section 6 name."""

REASONS: tuple[str, ...] = (
    "pkix_path_building_failed",
    "pkix_path_validation_failed",
    "hostname_mismatch",
    "remote_closed",
    "no_appropriate_protocol",
    "no_appropriate_cipher_suite",
    "protocol_version",
    "unrecognized_name",
    "not_tls",
    "empty_server_certificate",
    "algorithm_constraints",
    "handshake_timeout",
    "general_sslengine_problem",
    "other",
)
"""The fixed (non-alert) reasons; with ``TLS_ALERTS``, the whole ``reason`` vocabulary.

Two names are in both: ``protocol_version`` and ``unrecognized_name``, one reason each.

- ``protocol_version``: the backend's ``protocol_version`` alert (``Received fatal alert:
  protocol_version``: it refused the versions we offered) **or** the client's own refusal of the
  version the server chose (JDK 8: ``Server chose TLSv1, but that protocol version is not
  enabled or not supported by the client.``; JDK 11+: ``The server selected protocol version
  TLS10 is not accepted by client preferences [TLS13, TLS12]``). Either way the two sides'
  protocol lists do not meet; which side said so is in the message.
- ``unrecognized_name``: the backend's ``unrecognized_name`` alert, fatal (``Received fatal
  alert: unrecognized_name``) **or** as a warning, which the JDK makes fatal during the handshake
  (JDK 8: ``handshake alert:  unrecognized_name``; JDK 11+: ``received handshake warning:
  unrecognized_name``): the backend does not serve the SNI name we sent.

Every other alert reason counts only an alert the backend *sent*. The ``(certificate_unknown)``
prefix of JDK 17+ names the alert the *client* sent or received, so it never is the reason by
itself: ``(certificate_unknown) PKIX path building failed: …`` is ``pkix_path_building_failed``.
``general_sslengine_problem`` is the old JDK 8 SSLEngine's wording for a failure the client
itself detected (most often the backend's certificate, PKIX or host name): the cause is only in
the ``Caused by:`` lines of the exception record that follows, and the failure takes that cause's
reason when the record comes (``correlate``); it keeps ``general_sslengine_problem`` otherwise.
"""


MEANINGS: dict[str, str] = {
    # --- alerts a backend sends when it rejects the client certificate
    "bad_certificate": "the backend rejected the client certificate, or the empty Certificate "
    "message Java sends when no keystore certificate fits the backend's CA names (Java/Tomcat "
    "backends answer a missing certificate with bad_certificate)",
    "certificate_required": "a TLS 1.3 backend wanted a client certificate and got none: Java "
    "found no keystore certificate for the backend's CA names, or the keystore has none",
    "unknown_ca": "the backend does not trust the issuer of the client certificate chain "
    "(or the chain lacks an intermediate)",
    "certificate_unknown": "the backend could not verify the client certificate chain",
    "certificate_expired": "the client certificate (or a certificate of its chain) has expired "
    "by the backend's clock",
    "unsupported_certificate": "the backend refuses the client certificate's type or usage "
    "(usually an extended key usage without clientAuth)",
    "certificate_revoked": "the backend found the client certificate revoked",
    "access_denied": "the backend verified the client certificate but its access rules refuse it",
    "no_certificate": "SSL 3.0's answer to a missing client certificate (reserved in RFC 8446): "
    "a very old backend requires one",
    # --- alerts of a negotiation that found nothing in common
    "handshake_failure": "no common protocol or cipher suite, or (OpenSSL-based backends on "
    "TLS 1.2) no acceptable client certificate",
    "protocol_version": "no TLS version in common with the backend: it refused the versions the "
    "MP offered, or the MP refused the one it chose",
    "insufficient_security": "the backend wants stronger cipher suites than the MP offers",
    "unrecognized_name": "the backend does not know the SNI name sent, or needs one: the MP "
    "sends none for an IP target",
    "no_application_protocol": "no ALPN protocol in common",
    "inappropriate_fallback": "the MP retried with a lower TLS version although the backend "
    "supports a higher one: the first attempt failed for another reason",
    "missing_extension": "TLS 1.3: the ClientHello lacked an extension the backend requires "
    "(server_name when it needs SNI, signature_algorithms, supported_groups)",
    "unsupported_extension": "a handshake message carried an extension the receiver did not "
    "offer or allow: mismatched TLS stacks, or a middlebox",
    "export_restriction": "an export-grade negotiation (reserved in RFC 8446): a very old backend",
    "no_renegotiation": "the backend refused a renegotiation (an old server asking for the "
    "client certificate after the first handshake), or renegotiation is off on one side",
    # --- alerts of a broken handshake or record layer
    "close_notify": "the backend closed the connection cleanly during the handshake instead of "
    "finishing it: a policy refusal without a specific alert, or a server shutting down",
    "unexpected_message": "a handshake message arrived out of order: an incompatible TLS stack, "
    "or a middlebox altering the handshake",
    "bad_record_mac": "a record failed its integrity check: data corrupted on the way, or a "
    "cipher implementation bug",
    "decryption_failed": "TLS 1.0 and older only: a record could not be decrypted (as "
    "bad_record_mac on an old backend)",
    "record_overflow": "a record was longer than allowed: a buggy TLS stack or middlebox",
    "decompression_failure": "TLS compression failed (reserved in RFC 8446): a very old backend",
    "illegal_parameter": "a handshake field the backend did not accept",
    "decode_error": "a handshake message could not be parsed: an incompatible extension, a "
    "broken TLS stack or middlebox",
    "decrypt_error": "the backend could not check the signature of the client certificate chain "
    "or of the handshake",
    "internal_error": "the backend failed on its side: see its log",
    "user_canceled": "the backend aborted the handshake on purpose: its application or policy "
    "cancelled the connection",
    "certificate_unobtainable": "RFC 6066: the backend could not fetch a client certificate "
    "from a URL (the JDK never asks for that): a backend stack oddity",
    "bad_certificate_status_response": "an OCSP status response (stapling) was invalid",
    "bad_certificate_hash_value": "RFC 6066: a certificate fetched from a URL had the wrong "
    "hash (the JDK never asks for that): a backend stack oddity",
    "unknown_psk_identity": "the backend does not know the pre-shared key identity offered",
    # --- the MP's JVM's own findings (fixed reasons)
    "pkix_path_building_failed": "the MP does not trust the backend's certificate chain (its "
    "truststore lacks the backend's CA, or the backend serves an incomplete chain)",
    "pkix_path_validation_failed": "the MP found the backend's chain invalid (expired, revoked, "
    "wrong key usage or path constraints)",
    "hostname_mismatch": "the backend's certificate does not name the host the MP connects to",
    "algorithm_constraints": "the backend's certificate or handshake uses an algorithm the MP's "
    "JVM disables (jdk.certpath/jdk.tls.disabledAlgorithms)",
    "empty_server_certificate": "the backend sent no certificate",
    "not_tls": "the backend's port does not speak TLS (plain HTTP, or another protocol)",
    "remote_closed": "the backend closed the connection during the handshake: it needs SNI, "
    "does not speak TLS on that port, or a load balancer refused the connection",
    "no_appropriate_protocol": "the MP's protocols and cipher suites leave nothing usable",
    "no_appropriate_cipher_suite": "none of the MP's cipher suites can be used with its "
    "protocols or with the backend's certificate",
    "handshake_timeout": "no answer to the ClientHello: a firewall or load balancer drops it",
    "general_sslengine_problem": "JDK 8's SSLEngine failed and no exception record of the same "
    "thread and message id named the cause within the pairing window",
    "other": "a handshake failure whose message the exporter does not classify, or an alert "
    "name or number outside RFC 8446",
}
"""reason -> what it means, for every reason of ``VOCABULARY``."""

VOCABULARY: tuple[str, ...] = (*TLS_ALERTS, *(r for r in REASONS if r not in TLS_ALERTS))
"""Every value of the ``reason`` label, each once."""
