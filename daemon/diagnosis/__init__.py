"""Tell the cause of a southbound TLS failure: the bad_certificate playbook, automated, and more.

The manual playbook (``shared/reference/playbook-bad-client-certificate.ja.txt``) finds one of two
causes with a trace, the management API, ``openssl s_client`` and Wireshark. This package does it
in one call, for every failure the exporter counts, one module per part:

``probe`` (the module; ``probe.probe()`` the function)
    the network: TLS handshakes as the MP makes them (its protocols, cipher suites and SNI name),
    without and with the client certificate, then one HTTP request.
``identity``
    the client side: distinguished names, certificate summaries, the chain from PEM files, a
    PKCS#12 file or the management API (``mgmt``).
``decide``
    the facts (would Java send the certificate, how the backend answered the MP's handshake), the
    cause (``CAUSES``) and the advice; ``run_diagnosis`` is probe plus decision.
``report``
    the human report; ``Diagnosis.to_json`` is ``--json``.
``command``
    the ``diagnose`` subcommand.
``mgmt``, ``inventory``
    the management API client; the daemon's keystore inventory and background diagnoses.
"""

from __future__ import annotations

from ..errors import UsageError
from . import probe
from .command import command, configure_parser, identity_from_args
from .decide import (
    CAUSES,
    Diagnosis,
    Evaluation,
    decide,
    evaluate,
    make_diagnosis,
    match_depth,
    mp_settings,
    run_diagnosis,
    would_send,
)
from .identity import (
    CertSummary,
    ClientIdentity,
    dn_key,
    format_name,
    identity_from_management,
    identity_from_target_server,
    load_pem_identity,
    load_pkcs12_identity,
)
from .probe import Handshake, HttpAnswer, ProbeResult, TlsSettings, parse_target
from .report import render_report

__all__ = [
    "CAUSES",
    "CertSummary",
    "ClientIdentity",
    "Diagnosis",
    "Evaluation",
    "Handshake",
    "HttpAnswer",
    "ProbeResult",
    "TlsSettings",
    "UsageError",
    "command",
    "configure_parser",
    "decide",
    "dn_key",
    "evaluate",
    "format_name",
    "identity_from_args",
    "identity_from_management",
    "identity_from_target_server",
    "load_pem_identity",
    "load_pkcs12_identity",
    "make_diagnosis",
    "match_depth",
    "mp_settings",
    "parse_target",
    "probe",
    "render_report",
    "run_diagnosis",
    "would_send",
]
