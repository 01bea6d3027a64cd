"""Small frozen value types passed between the pipeline stages.

They are NamedTuples rather than frozen dataclasses: a few are made for every failure read, and a
NamedTuple is made in a third of the time.

tail -> lines -> parse -> ``HandshakeFailure`` / ``SSLInfo`` -> correlate -> ``Failure`` -> metrics
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union


class Context(NamedTuple):
    """The ``org: env: api: rev: messageid:`` block of a record; empty strings when absent."""

    org: str = ""
    env: str = ""
    api: str = ""
    rev: str = ""
    message_id: str = ""


class HandshakeFailure(NamedTuple):
    """A ``handshakeFailed()`` or ``handshakeTimeout()`` record, before pairing."""

    timestamp: float  # seconds since the epoch, from the log's own clock
    context: Context
    thread: str
    target: str  # backend as host:port
    reason: str  # bounded vocabulary, see parse.classify_message


class SSLInfo(NamedTuple):
    """The ``SSLInfo: KeyStore:… KeyAlias:… TrustStore:…`` line that follows a failure."""

    context: Context
    thread: str
    key_alias: str  # "" for null


class AlertException(NamedTuple):
    """An SSL exception record carrying a received TLS alert (``… SSLHandshakeException: Received
    fatal alert: certificate_required``), before the correlator decides whether it is a failure
    of its own or the repeat of a ``handshakeFailed()`` line."""

    timestamp: float
    context: Context
    thread: str
    target: str  # "unknown" unless the record names the backend
    reason: str  # an alert name, see parse.TLS_ALERTS


class Cause(NamedTuple):
    """The reason the ``Caused by:`` chain of a ``General SSLEngine problem`` exception record
    gives (the first cause, outermost first, that names one), for the failure of its thread and
    message id."""

    context: Context
    thread: str
    reason: str


GENERAL_SSLENGINE_PROBLEM = "general_sslengine_problem"

Event = Union[HandshakeFailure, SSLInfo, AlertException, Cause]


class Failure(NamedTuple):
    """A handshake failure with its key alias decided: what the metrics count."""

    org: str
    env: str
    api: str
    rev: str
    target: str
    reason: str
    key_alias: str
    timestamp: float
    paired: bool = True  # False when the window closed without an SSLInfo line

    @classmethod
    def from_event(
        cls, event: Union[HandshakeFailure, AlertException], key_alias: Optional[str]
    ) -> Failure:
        org, env, api, rev, _ = event.context
        # by position: a third less time than by keyword, once per failure
        paired = key_alias is not None
        alias = key_alias or ""
        return cls(org, env, api, rev, event.target, event.reason, alias, event.timestamp, paired)
