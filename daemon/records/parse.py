"""Lines of the MP system.log -> events. The regexes live here and only here.

The contract is logster's: ``Parser.parse(line)`` returns an event, or ``None`` for a line that
is none of ours, and raises ``UnrecognisedLine`` for a line that mentions a handshake marker but
matches no rule (the signal that an Apigee upgrade changed the format), and for a failure record
whose timestamp is no real time (``2017-02-30``, month 13, hour 24, year 0000). A failure whose
backend cannot be read is an event all the same (``target="unknown"``); ``unreadable_target``
tells the caller to count it as unrecognised too. ``candidate_lines`` is the fast prefilter: it
finds the few lines of a block that mention a marker, so that the other 99 % of the log never
reach a regex.

The ``reason`` of a failure comes from the JDK's own message (``classify_message``): the alert
the backend sent (``reasons.TLS_ALERTS``) or one of the fixed reasons (``reasons.REASONS``), for
every wording of
the old JDK 8 JSSE stack (before 8u261), of the JDK 11+ stack, and with the ``(alert_name)``
prefix of JDK 17+.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import tzinfo
from typing import Callable, Optional, TypeVar, Union

from .events import (
    GENERAL_SSLENGINE_PROBLEM,
    AlertException,
    Cause,
    Context,
    Event,
    HandshakeFailure,
    SSLInfo,
)
from .head import DEFAULT, BadTime, Clock, RecordHead
from .reasons import ALERT_NUMBERS, TLS_ALERTS
from .search import LineFinder

# What makes a line a candidate. The handshake markers: a line with one in its body is ours or
# unrecognised. A received alert's text: an exception record carrying one may be the only trace
# of a failure (TLS 1.3 rejects a client certificate on the first read).
HANDSHAKE_MARKERS = (b"handshakeFailed", b"handshakeTimeout", b"SSLInfo")
ALERT_MARKERS = (b"Received fatal alert", b"Unknown alert description")
# The exception line of the old JDK 8 SSLEngine's wrapper: its ``Caused by:`` lines name the cause.
GENERAL_PROBLEM = b"General SSLEngine problem"
MARKERS = HANDSHAKE_MARKERS + ALERT_MARKERS + (GENERAL_PROBLEM,)
_MARKER_TEXT = tuple(m.decode() for m in HANDSHAKE_MARKERS)

# The channel block; an address in it may be bracketed (an IPv6 literal, JDK 14+). Written as
# an unrolled loop (runs of plain characters between bracketed parts): twice as fast in `re`.
_CHAN = re.compile(r"SSLClientChannel\[(?P<chan>[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*)\]")
_FAILED_TEXT = "handshake failed, message: "
_TIMEOUT = re.compile(r"\S*\.handshakeTimeout\(\) : .*handshake timeout")
_SSLINFO = re.compile(r"\S*\(\) : SSLInfo: .*?KeyAlias:(?P<alias>\S*)")
# The backend in either rendering of the channel, whichever kind of line it is in:
# ``[C:<mp> Remote host:<backend>]`` or ``[Connected: Remote:<backend> Local:<mp>]``; the address
# is runs of plain characters and bracketed parts (an IPv6 literal). The pattern starts with its
# literal, which `re` then finds by a fast scan (4x faster than with the ``\b`` in front):
# ``_remote`` checks the word boundary before it.
_REMOTE = re.compile(r"Remote(?: host)?: *(?P<addr>(?:[^\s\[\]]+|\[[^\s\[\]]*\])+)")
# A line that continues the record above: a stack frame, "Caused by:", or an exception class line.
_CONTINUATION = re.compile(
    r"\s|Caused by:|Suppressed:|\.\.\. \d+ more|[A-Za-z_$][\w$]*(?:\.[\w$]+)+(?::|$)"
)
# An exception class line, or its "Caused by:", naming an SSL exception (SSLException,
# SSLHandshakeException, SSLProtocolException, ...), possibly wrapped (``IOException: javax…``).
_SSL_EXCEPTION_LINE = re.compile(
    r"(?:Caused by: |Suppressed: )?(?:[\w$]+\.)*[\w$]*(?:Exception|Error)\b[^ ]*(?: |$)"
)
_SSL_EXCEPTION = re.compile(r"\bSSL\w*Exception\b")
UNKNOWN_TARGET = "unknown"
MAX_TARGET_CHARS = 260
MAX_LABEL_CHARS = 260  # org, env, api, rev and key alias as read from the log: cut like target

# The fixed reasons, each with the JDK wordings that mean it (old JDK 8 stack and JDK 11+ stack;
# the JDK 17+ ``(alert_name) `` prefix in front changes nothing). The first rule that matches
# anywhere in the message wins, so the more specific cause comes first: an algorithm constraint
# is reported inside a "PKIX path validation failed" text, and so is an expired certificate.
_FIXED_RULES: tuple[tuple[str, str], ...] = (
    (
        "algorithm_constraints",
        r"algorithm constraints|Algorithm constraints check failed|algorithm check failed"
        r"|Certificate signature algorithm disabled|Could not generate DH keypair"
        r"|No supported signature algorithm|No signature algorithm",
    ),
    (
        "pkix_path_validation_failed",
        r"PKIX path validation failed|\bcheck failed\b|Certificate expired|has been revoked"
        r"|revocation status|Certificate signature validation failed|Certificate chaining error"
        r"|Untrusted certificate|Extended key usage does not permit|KeyUsage does not allow"
        r"|End user tried to act as a CA|Violated path length constraints"
        r"|Path does not chain with any of the trust anchors|critical extension"
        r"|distrusted|Certificate(?:Expired|NotYetValid)Exception|\bNot(?:After|Before): ",
    ),
    (
        "pkix_path_building_failed",
        r"PKIX path building failed|unable to find valid certification path"
        r"|No trusted certificate found",
    ),
    (
        "hostname_mismatch",
        r"No subject alternative (?:names|DNS name)|No name matching \S.* found"
        r"|Hostname or IP address is undefined|Illegal given domain name",
    ),
    ("empty_server_certificate", r"Empty server certificate|empty certificate chain"),
    (
        "not_tls",
        r"Unrecognized SSL message|Unrecognized record version"
        r"|Unsupported record version|plaintext connection\?|record too big",
    ),
    (
        "protocol_version",
        r"Server chose \S+, but that protocol version is not enabled"
        r"|The server selected protocol version \S+ is not accepted"
        r"|not accepted by server preferences"
        r"|Server resumed with wrong protocol version|protocol version downgrade",
    ),
    ("no_appropriate_protocol", r"No appropriate protocol"),
    (
        "no_appropriate_cipher_suite",
        r"No appropriate cipher suite|no cipher suites in common|No negotiable cipher suite"
        r"|Server selected improper ciphersuite|Illegal cipher suite"
        r"|Server returned wrong cipher suite",
    ),
    (
        "remote_closed",
        r"Remote host closed connection|Remote host terminated the (?:handshake|connection)"
        r"|(?:closing inbound|Inbound closed) before receiving peer's close_notify"
        r"|Received close_notify during handshake|Received fatal close_notify alert"
        r"|SSL peer shut down incorrectly|Connection reset|Broken pipe"
        r"|connection was forcibly closed|Connection closed by (?:remote host|peer)"
        r"|^(?:\(\w+\) )?readHandshakeRecord$",
    ),
    ("handshake_timeout", r"[Hh]andshake timed? ?out|\btimed out\b"),
    ("general_sslengine_problem", r"General SSLEngine problem"),
)
_FIXED = tuple((reason, re.compile(text, re.IGNORECASE)) for reason, text in _FIXED_RULES)

# A received alert as each JDK words it: a name, or a number when the JDK has none for it
# (JDK 8 ``<UNKNOWN ALERT: 116>``, JDK 11+ ``Unknown alert description (116)``). A warning made
# fatal during the handshake reads ``handshake alert:  <name>`` (JDK 8) or ``Received handshake
# warning: <name>`` (JDK 11+; ``received`` in later sources). Case does not matter in the words.
_ALERT_TEXT = re.compile(
    r"(?i:received fatal alert|handshake alert|received handshake warning): *"
    r"(?:<?(?i:unknown alert)(?::|\s*\()\s*(?P<number>\d{1,5})|(?P<name>[A-Za-z_]+))"
    r"|(?i:unknown alert description) *\((?P<described>\d{1,5})\)"
)
_ALERT_SET = frozenset(TLS_ALERTS)


def is_continuation(line: str) -> bool:
    """Whether ``line`` continues the record above (a stack frame, ``Caused by:``, an exception
    class line) rather than starting one."""
    return _CONTINUATION.match(line) is not None


class UnrecognisedLine(ValueError):
    """A line mentions a handshake marker but matches no rule."""


def alert_reason(message: str) -> Optional[str]:
    """The alert a received-alert text in ``message`` names (``"other"`` for a name or number
    outside RFC 8446), or None when ``message`` reports no received alert."""
    found = _ALERT_TEXT.search(message)
    if found is None:
        return None
    name = found.group("name")
    if name is not None:
        return name if name in _ALERT_SET else "other"
    number = found.group("number") or found.group("described")
    return ALERT_NUMBERS.get(int(number), "other")


_T = TypeVar("_T")
# The same few JDK texts repeat: each is read once (scan: 17% less time on 200 MB). Only texts of
# a bounded length are kept, so that the cache stays small on any input.
_CACHED_CHARS = 1024


def _remembered(function: Callable[[str], _T]) -> Callable[[str], _T]:
    """``function`` of a text, remembered for the last 2,048 texts of up to ``_CACHED_CHARS``."""
    cached = functools.lru_cache(maxsize=2048)(function)

    @functools.wraps(function)
    def call(text: str) -> _T:
        return cached(text) if len(text) <= _CACHED_CHARS else function(text)

    return call


@_remembered
def classify_message(message: str) -> str:
    """The ``reason`` label for the JDK's message of a failed handshake: one of ``TLS_ALERTS``
    or ``REASONS``. An alert the backend sent wins over any other text in the message."""
    alert = alert_reason(message)
    if alert is not None:
        return alert
    for reason, pattern in _FIXED:
        if pattern.search(message):
            return reason
    return "other"


@_remembered
def _exception_alert(line: str) -> Optional[str]:
    """The received alert that the exception class line (or ``Caused by:`` line) of an SSL
    exception reports, or None. Such lines repeat word for word."""
    if not (_SSL_EXCEPTION_LINE.match(line) and _SSL_EXCEPTION.search(line)):
        return None
    return alert_reason(line)


def normalise_address(address: str) -> str:
    """Java's InetSocketAddress rendering -> ``host:port``.

    ``hostname/10.1.2.3:443`` -> ``hostname:443``; ``/10.1.2.3:443`` and ``10.1.2.3:443`` ->
    ``10.1.2.3:443``; an IPv6 address is bracketed. Anything else -> ``unknown``.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return UNKNOWN_TARGET
    name, _, ip = host.partition("/")
    host = name or ip
    if not host:
        return UNKNOWN_TARGET
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"[:MAX_TARGET_CHARS]


def target_of(text: str) -> str:
    """The backend named in ``text`` (a channel block, or the record's body): ``host:port`` from
    ``Remote host:`` or ``Remote:``, or ``unknown``. The channel block is read first."""
    if "Remote" not in text:
        return UNKNOWN_TARGET
    chan = _CHAN.search(text)
    remote = _remote(chan.group("chan") if chan else text)
    return normalise_address(remote.group("addr")) if remote else UNKNOWN_TARGET


def _remote(text: str) -> Optional[re.Match[str]]:
    """The first ``Remote`` address of ``text`` that starts a word (``\\bRemote...``)."""
    found = _REMOTE.search(text)
    while found is not None and found.start() > 0:
        before = text[found.start() - 1]
        if not (before.isalnum() or before == "_"):
            break
        found = _REMOTE.search(text, found.start() + 1)
    return found


def _label(value: str) -> str:
    return value[:MAX_LABEL_CHARS]


_FATAL_ALERT, _UNKNOWN_ALERT = ALERT_MARKERS
_INDENTS = (b" ", b"\t")


def needs_record(raw: bytes, head: RecordHead = DEFAULT) -> bool:
    """Whether the candidate ``raw`` is a continuation line carrying a received alert: its
    meaning depends on the record it continues (see ``record_above``)."""
    return (_FATAL_ALERT in raw or _UNKNOWN_ALERT in raw) and not head.is_record(raw)


def ignorable(raw: bytes, head: RecordHead = DEFAULT) -> bool:
    """Whether the candidate ``raw`` parses to nothing, whatever the record above it: with the
    built-in head, an indented line (a stack frame that mentions a marker, ``\tat
    …handshakeFailed(…)``) is no record, and one that carries no received alert and no ``General
    SSLEngine problem`` is nothing to ``parse`` nor ``open_trace``. ``candidate_lines`` with the
    parser's head leaves such lines out as the search finds them, before they are copied (on a
    log with dense stack traces, most of the candidates). A site's own head may match an indented
    line: then every candidate is parsed."""
    return (
        head.pattern is None
        and raw.startswith(_INDENTS)
        and _FATAL_ALERT not in raw
        and _UNKNOWN_ALERT not in raw
        and GENERAL_PROBLEM not in raw
    )


RECORD_LINES = 256
"""A continuation line belongs to the nearest record (timestamped) line above it, at most this
many lines up; further up, to none."""


def record_above(
    buf: Union[bytes, bytearray], start: int, begin: int, head: RecordHead = DEFAULT
) -> tuple[Optional[bytes], int]:
    """The nearest record line above the line starting at ``begin``, looked for in
    ``buf[start:begin]`` at most ``RECORD_LINES`` lines up, and how many lines up it is; or
    (None, the lines looked at) when there is none (then it may lie in the block before, if
    fewer than ``RECORD_LINES`` lines were looked at: ``LogPipeline`` keeps the one in force)."""
    end = begin - 1  # the newline that ends the line above
    for up in range(1, RECORD_LINES + 1):
        if end < start:
            return None, up - 1
        newline = buf.rfind(b"\n", start, end)
        line_start = newline + 1 if newline >= 0 else start
        line = bytes(buf[line_start:end])
        if head.is_record(line):
            return line, up
        end = line_start - 1
    return None, RECORD_LINES


# The prefilter: which lines mention a marker. How they are found (a compiled multi-literal search,
# `find` passes when it cannot be imported) is daemon/records/search.py's business. The second
# leaves out the ``ignorable`` lines as it finds them.
_FINDER = LineFinder(MARKERS)
_PARSED = LineFinder(MARKERS, not_indented=HANDSHAKE_MARKERS)


def candidate_lines(
    buf: Union[bytes, bytearray],
    start: int = 0,
    end: Optional[int] = None,
    head: Optional[RecordHead] = None,
) -> Iterator[tuple[int, bytes]]:
    """The lines of ``buf[start:end]`` that mention a marker, as (offset, line without newline);
    with ``head`` (the parser's), only those that are not ``ignorable`` with it.

    The range holds whole lines. Each line is yielded once, in order, however many markers it has.
    """
    finder = _PARSED if head is not None and head.pattern is None else _FINDER
    return finder(buf, start, end)


class Trace:
    """The exception trace of a ``General SSLEngine problem`` being read, line by line: the
    first of its ``Caused by:`` lines (outermost first) whose message names a reason other than
    ``general_sslengine_problem`` or ``other`` gives its cause."""

    def __init__(self, context: Context, thread: str, line: int) -> None:
        self.context = context
        self.thread = thread
        self.line = line  # the number of the exception line
        self.looked = 0  # the lines read of it
        self.reason: Optional[str] = None

    def take(self, raw: bytes) -> None:
        """One more line of the trace."""
        self.looked += 1
        if self.reason is None and raw.startswith(b"Caused by: "):
            text = raw[len(b"Caused by: ") :].decode("utf-8", errors="replace").rstrip("\r")
            reason = classify_message(text)
            if reason not in (GENERAL_SSLENGINE_PROBLEM, "other"):
                self.reason = reason

    def cause(self) -> Optional[Cause]:
        return None if self.reason is None else Cause(self.context, self.thread, self.reason)


class Parser:
    """Turns one candidate line into an event. ``tz`` None reads timestamps without a zone in
    local time; ``head`` reads the record heads (a site's own pattern, or the built-in one)."""

    def __init__(self, tz: Optional[tzinfo] = None, head: RecordHead = DEFAULT) -> None:
        self.head = head
        self._clock = Clock(tz)
        self._context = Context()
        self._context_fields: Optional[tuple[str, str, str, str, str]] = None
        # the General SSLEngine problem trace being read (it may go on in the next block)
        self.trace: Optional[Trace] = None

    def open_trace(self, raw: bytes, record: Optional[bytes], line: int) -> bool:
        """Whether the continuation line ``raw`` (number ``line``) starts the trace of a General
        SSLEngine problem whose cause is worth reading (then ``trace`` is set): its exception
        line, in an exception record of a thread and message id (``record``)."""
        if (
            record is None
            or GENERAL_PROBLEM not in raw
            or not _CONTINUATION.match(raw.decode("utf-8", "replace"))
        ):
            return False
        fields = self._fields(record.decode("utf-8", errors="replace").rstrip("\r"))
        if fields is None:
            return False
        _, context, thread, _ = fields
        self.trace = Trace(context, thread, line)
        return True

    def parse(self, raw: bytes, record: Optional[bytes] = None) -> Optional[Event]:
        """The event of the candidate line ``raw``, None, or ``UnrecognisedLine``.

        ``record`` is the record line a continuation line belongs to (``record_above``), for
        the exception line of an exception record; without it such a line is None.
        """
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        fields = self._fields(line)
        if fields is None:
            if _CONTINUATION.match(line):
                if record is not None:
                    return self._exception_line(line, record)
                return None  # a stack frame or exception line: part of a record already seen
            raise UnrecognisedLine(line[:200])
        ts, context, thread, body = fields
        if "SSLInfo: " in body:
            info = _SSLINFO.match(body)
            if info:
                alias = info.group("alias")
                return SSLInfo(context, thread, "" if alias == "null" else _label(alias))
        elif _FAILED_TEXT in body:
            head, _, message = body.partition(_FAILED_TEXT)
            if "handshakeFailed" in head:
                reason = classify_message(message)
                return HandshakeFailure(
                    self._timestamp(ts, line), context, thread, target_of(head), reason
                )
        elif "handshake timeout" in body and _TIMEOUT.match(body):
            return HandshakeFailure(
                self._timestamp(ts, line), context, thread, target_of(body), "handshake_timeout"
            )
        if any(marker in body for marker in _MARKER_TEXT):
            raise UnrecognisedLine(line[:200])
        if _SSL_EXCEPTION.search(body):  # an exception record with the exception on its line
            alert = alert_reason(body)
            if alert is not None:
                return AlertException(
                    self._timestamp(ts, line), context, thread, target_of(body), alert
                )
        return None  # a marker only in the context block or thread name: not a handshake line

    def _fields(self, line: str) -> Optional[tuple[tuple[str, str], Context, str, str]]:
        """((time, zone), context, thread, body) of a record line, or None."""
        head = self.head.read(line)
        if head is None:
            return None
        fields = head.context
        if fields is None:
            context = Context()
        elif fields == self._context_fields:  # the context of the record before: most often
            context = self._context
        else:
            org, env, api, rev, message_id = fields
            context = Context(_label(org), _label(env), _label(api), _label(rev), message_id)
            self._context, self._context_fields = context, fields
        return (head.ts, head.zone), context, head.thread, head.body

    def _exception_line(self, line: str, record: bytes) -> Optional[AlertException]:
        """The exception line (or ``Caused by:`` line) of an SSL exception carrying a received
        alert, read with the context of the record line it belongs to."""
        alert = _exception_alert(line)
        if alert is None:
            return None
        header = record.decode("utf-8", errors="replace").rstrip("\r")
        fields = self._fields(header)
        if fields is None:
            return None
        ts, context, thread, body = fields
        if any(marker in body for marker in _MARKER_TEXT):
            return None  # the trace of a handshakeFailed record: that line counted it
        target = target_of(body)
        if target == UNKNOWN_TARGET:
            target = target_of(line)
        return AlertException(self._timestamp(ts, header), context, thread, target, alert)

    def _timestamp(self, ts: tuple[str, str], line: str) -> float:
        """The head's time (and zone) -> epoch seconds. A time that does not exist (February 30,
        month 13, hour 24, second 60, year 0) is an ``UnrecognisedLine``: never an exception out
        of the parser."""
        try:
            return self._clock.epoch(*ts)
        except BadTime:
            raise UnrecognisedLine(line[:200]) from None


def unreadable_target(event: Optional[Event]) -> bool:
    """A handshakeFailed or handshakeTimeout line whose backend could not be read: counted as a
    failure (``target="unknown"``) and as an unrecognised line, so that format drift shows."""
    return isinstance(event, HandshakeFailure) and event.target == UNKNOWN_TARGET
