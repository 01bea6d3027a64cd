"""The human report of a ``Diagnosis``: what was checked, what was found, the cause and the fix.

Every line and mark comes from the ``Diagnosis``'s ``Evaluation``, the facts the cause was decided
from, so the report never contradicts the decision.
"""

from __future__ import annotations

import textwrap

from ..records.reasons import MEANINGS
from .decide import Diagnosis, describe_answer
from .identity import CertSummary, iso


def _dates(cert: CertSummary) -> str:
    return f"{iso(cert.not_before) or '?'} .. {iso(cert.not_after) or '?'}"


def _wrap(head: str, text: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=head, subsequent_indent=" " * len(head))


def _mp_side(d: Diagnosis) -> str:
    s = d.result.settings
    protocols = ", ".join(s.protocols) if s.protocols else "JVM defaults (TLSv1.2, TLSv1.3)"
    ciphers = f"{len(s.ciphers)} configured" if s.ciphers else "JVM defaults"
    sni = s.servername or "none"
    return f"MP side: protocols {protocols}; cipher suites {ciphers}; SNI {sni}"


def _checked(d: Diagnosis) -> list[str]:
    lines = ["Checked:"]
    anon, cert, ev = d.result.without_certificate, d.result.with_certificate, d.evaluation
    if d.cause == "unreachable" or anon is None:
        lines.append(f"  - TCP/TLS connection: failed ({d.error or 'no answer'})")
        return lines
    lines.append("  - TCP connection: ok")
    hs = f"  - TLS handshake without a client certificate: {anon.tls_version or 'no version'}"
    if anon.server_hello:
        asked = "asked" if anon.certificate_requested else "did not ask"
        hs += f", the server {asked} for a client certificate"
    hs += f"; {describe_answer(anon)}"
    lines.append(hs)
    for retry in d.result.retries:
        offered = ", ".join(retry.protocols)
        lines.append(
            f"  - the same with {offered} and default cipher suites: {describe_answer(retry)}"
        )
    if d.result.server_chain_checked:
        error = d.server_verify_error
        verdict = f"NOT trusted ({error})" if error else "trusted"
        lines.append(f"  - server chain against the given truststore: {verdict}")
    ident = d.identity
    if ident is not None:
        lines.append(f"  - client identity ({ident.source}): {ident.description}")
    else:
        lines.append("  - client identity: none given")
    if cert is not None:
        line = f"  - TLS handshake with the client certificate: {describe_answer(cert)}"
        if ev.probe_sent_unlike_java:
            why = "this key type" if ev.key_type_fits is False else "these CA names"
            line += f" (the probe sent it; Java sends none for {why})"
        elif cert.certificate_requested and not cert.sent_certificate:
            line += " (its Certificate message was empty: OpenSSL found the key unfit too)"
        lines.append(line)
    elif ev.mp_attempt == "not_tried":
        lines.append("  - TLS handshake with the client certificate: not tried (no private key)")
    return lines


def _found(d: Diagnosis) -> list[str]:
    lines = ["Found:"]
    ev = d.evaluation
    names = d.acceptable_ca_names
    if d.certificate_requested:
        if names:
            lines.append("  Acceptable client certificate CA names (sent by the backend):")
            for name in names:
                mark = "   <- matches the client chain" if name == ev.matched_ca else ""
                lines.append(f"    {name}{mark}")
        else:
            lines.append(
                "  No client certificate CA names sent: Java sends the certificate whatever its "
                "issuer; the backend decides after it"
            )
    ident = d.identity
    if ident is not None:
        if ident.leaf is None:
            lines.append("  Client certificate: none")
        else:
            lines.extend(_client_chain(d))
    if ev.java_sends is True:
        where = (
            "the leaf's" if ev.matched_depth == 0 else f"chain certificate [{ev.matched_depth}]'s"
        )
        why = f"{where} issuer is acceptable" if names else "no CA names restrict it"
        lines.append(f"  Java's key manager: sends this chain ({why})")
    elif ev.java_sends is False:
        reasons: list[str] = []
        if ev.matched_ca is None and names:
            reasons.append("no issuer in the chain is among the CA names")
        if ev.key_type_fits is False and ident is not None and ident.leaf is not None:
            kinds = ", ".join(ev.key_types or ()) or "none it can use"
            reasons.append(f"the key is {ident.leaf.key_type}, the backend asks for {kinds}")
        lines.append(
            "  Java's key manager: sends an empty Certificate message ("
            + ("; ".join(reasons) or "no issuer in the chain is among the CA names")
            + ")"
        )
    if ev.key_types is not None and ev.java_sends is not False:
        lines.append(f"  Client key types the backend asks for: {', '.join(ev.key_types)}")
    for detail in (*ev.client_details, *ev.server_details):
        lines.append(_wrap("  Problem: ", detail))
    for i, cert in enumerate(d.server_chain):
        sans = ", ".join(cert.subject_alternative_names) or "none"
        lines.append(f"  Server chain [{i}]: {cert.subject}")
        lines.append(f"    issuer: {cert.issuer}")
        lines.append(f"    valid:  {_dates(cert)}; SANs: {sans}")
    if d.error:
        lines.append(f"  Error: {d.error}")
    return lines


def _client_chain(d: Diagnosis) -> list[str]:
    ev = d.evaluation
    chain = d.client_chain
    lines = []

    def mark(i: int) -> str:
        if ev.java_sends and d.acceptable_ca_names and ev.matched_depth == i:
            return "   <- among the acceptable CAs"
        if ev.java_sends is False and i == 0 and d.acceptable_ca_names and ev.matched_ca is None:
            more = ", nor is any other issuer of the chain" if len(chain) > 1 else ""
            return f"   <- NOT among them{more}"
        return ""

    leaf = chain[0]
    lines.append("  Client leaf certificate:")
    lines.append(f"    subject: {leaf.subject}")
    lines.append(f"    issuer:  {leaf.issuer}{mark(0)}")
    lines.append(f"    valid:   {_dates(leaf)}")
    if leaf.extended_key_usage is not None:
        lines.append(f"    usage:   {', '.join(leaf.extended_key_usage) or 'none'}")
    for i, cert in enumerate(chain[1:], start=1):
        lines.append(f"  Client chain [{i}]: {cert.subject}")
        lines.append(f"    issuer:  {cert.issuer}{mark(i)}")
    return lines


def render_report(d: Diagnosis) -> str:
    """A report a person can act on: what was checked, what was found, the cause and the fix."""
    lines = [f"Diagnosis of {d.target}", _mp_side(d)]
    if d.received:
        meaning = MEANINGS.get(d.received)
        lines.append(
            _wrap("Alert received by the MP: ", d.received + (f" ({meaning})" if meaning else ""))
        )
    lines.append("")
    lines.extend(_checked(d))
    lines.append("")
    lines.extend(_found(d))
    lines.append("")
    lines.append(f"Cause: {d.cause}")
    lines.append(_wrap("Fix:   ", d.advice))
    if d.other_problems:
        lines.append(f"Also:  {', '.join(d.other_problems)}")
    lines.extend(_wrap("Note:  ", note) for note in d.notes)
    return "\n".join(lines) + "\n"
