"""Lines of the MP system.log -> events. The regexes live here and only here.

The contract is logster's: ``Parser.parse(line)`` returns an event, or ``None`` for a line that
is none of ours, and raises ``UnrecognisedLine`` for a line that mentions a handshake marker but
matches no rule (the signal that an Apigee upgrade changed the format). ``candidate_lines`` is the
fast prefilter: it finds the few lines of a block that mention a marker, so that the other 99 % of
the log never reach a regex.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, tzinfo
from typing import Optional, Union

from .events import Context, Event, HandshakeFailure, SSLInfo
from .search import LineFinder

MARKERS = (b"handshakeFailed", b"handshakeTimeout", b"SSLInfo")
_MARKER_TEXT = tuple(m.decode() for m in MARKERS)

_RECORD = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d{3}) +"
    r"(?P<ctx>(?:(?:org|env|api|rev|messageid):\S* +)*)"
    r"(?P<thread>\S+) +(?:TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL) +\S+ +- +(?P<body>.*)"
)
# The channel block; an address in it may be bracketed (an IPv6 literal, JDK 14+). Written as
# an unrolled loop (runs of plain characters between bracketed parts): twice as fast in `re`.
_CHAN = r"SSLClientChannel\[(?P<chan>[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*)\]"
# The usual shape, context keys in their usual order: one match gives every field.
_RECORD_FAST = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d{3}) +"
    r"(?:org:(\S*) +env:(\S*) +api:(\S*) +rev:(\S*) +messageid:(\S*) +)?"
    r"(?P<thread>\S+) +(?:TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL) +\S+ +- +(?P<body>.*)"
)
_FAILED = re.compile(
    r"\S*\.handshakeFailed\(\) : " + _CHAN + r".*?handshake failed, message: (?P<message>.*)"
)
_TIMEOUT = re.compile(r"\S*\.handshakeTimeout\(\) : " + _CHAN + r".*handshake timeout")
_SSLINFO = re.compile(r"\S*\(\) : SSLInfo: .*?KeyAlias:(?P<alias>\S*)")
_ADDR = r"(?P<addr>(?:[^\s\[\]]|\[[^\s\[\]]*\])+)"
_REMOTE_HOST = re.compile(r"Remote host: *" + _ADDR)
_REMOTE = re.compile(r"Remote: *" + _ADDR)
_ALERT = re.compile(r"Received fatal alert: (?P<name>\S*)")
_ALERT_NAME = re.compile(r"[a-z_]{1,40}")
# A line that continues the record above: a stack frame, "Caused by:", or an exception class line.
_CONTINUATION = re.compile(
    r"\s|Caused by:|Suppressed:|\.\.\. \d+ more|[A-Za-z_$][\w$]*(?:\.[\w$]+)+(?::|$)"
)

# Messages that are not a TLS alert, in order of precedence: (text in the message, reason).
FIXED_REASONS = (
    ("PKIX path building failed", "pkix_path_building_failed"),
    ("No subject alternative names", "hostname_mismatch"),
    ("No subject alternative DNS name", "hostname_mismatch"),
    ("No name matching", "hostname_mismatch"),
    ("Remote host closed connection during handshake", "remote_closed"),
    ("No appropriate protocol", "no_appropriate_protocol"),
)
MAX_TARGET_CHARS = 260


class UnrecognisedLine(ValueError):
    """A line mentions a handshake marker but matches no rule."""


def classify_message(message: str) -> str:
    """The ``reason`` label for the message of a ``handshakeFailed()`` line."""
    alert = _ALERT.search(message)
    if alert:
        name = alert.group("name")
        return name if _ALERT_NAME.fullmatch(name) else "other"
    for text, reason in FIXED_REASONS:
        if text in message:
            return reason
    return "other"


def normalise_address(address: str) -> str:
    """Java's InetSocketAddress rendering -> ``host:port``.

    ``hostname/10.1.2.3:443`` -> ``hostname:443``; ``/10.1.2.3:443`` and ``10.1.2.3:443`` ->
    ``10.1.2.3:443``; an IPv6 address is bracketed. Anything else -> ``unknown``.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return "unknown"
    name, _, ip = host.partition("/")
    host = name or ip
    if not host:
        return "unknown"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"[:MAX_TARGET_CHARS]


def parse_context(block: str) -> Context:
    """``org:a env:b api:c rev:1 messageid:x`` -> Context; missing keys are ``""``."""
    fields = dict(token.split(":", 1) for token in block.split())
    return Context(
        org=fields.get("org", ""),
        env=fields.get("env", ""),
        api=fields.get("api", ""),
        rev=fields.get("rev", ""),
        message_id=fields.get("messageid", ""),
    )


# The prefilter: which lines mention a marker. How they are found (a compiled multi-literal search
# when the `fast` extra is installed, `find` passes otherwise) is daemon/search.py's business.
_FINDER = LineFinder(MARKERS)


def candidate_lines(
    buf: Union[bytes, bytearray], start: int = 0, end: Optional[int] = None
) -> Iterator[tuple[int, bytes]]:
    """The lines of ``buf[start:end]`` that mention a marker, as (offset, line without newline).

    The range holds whole lines. Each line is yielded once, in order, however many markers it has.
    """
    return _FINDER(buf, start, end)


class Parser:
    """Turns one candidate line into an event. ``tz`` None reads timestamps in local time."""

    def __init__(self, tz: Optional[tzinfo] = None) -> None:
        self._tz = tz
        self._minute = ""  # "yyyy-mm-dd hh:mm" of the last timestamp read, and its epoch
        self._minute_epoch = 0.0
        self._context = Context()

    def parse(self, raw: bytes) -> Optional[Event]:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        record = _RECORD_FAST.match(line)
        if record is not None:
            ts, org, env, api, rev, message_id, thread, body = record.groups()
            context = self._context
            if org is None:
                context = Context()
            elif message_id != context.message_id or (org, env, api, rev) != (
                context.org,
                context.env,
                context.api,
                context.rev,
            ):
                context = self._context = Context(org, env, api, rev, message_id)
        else:
            record = _RECORD.match(line)
            if record is None:
                if _CONTINUATION.match(line):
                    return None  # a stack frame or exception line: part of a record already seen
                raise UnrecognisedLine(line[:200])
            ts, body, thread = record.group("ts", "body", "thread")
            context = parse_context(record.group("ctx"))
        if "SSLInfo: " in body:
            info = _SSLINFO.match(body)
            if info:
                alias = info.group("alias")
                return SSLInfo(context, thread, "" if alias == "null" else alias)
        elif "handshake failed, message: " in body:
            failed = _FAILED.match(body)
            if failed:
                remote = _REMOTE_HOST.search(failed.group("chan"))
                reason = classify_message(failed.group("message"))
                return self._failure(ts, context, thread, remote, reason)
        elif "handshake timeout" in body:
            timeout = _TIMEOUT.match(body)
            if timeout:
                remote = _REMOTE.search(timeout.group("chan"))
                return self._failure(ts, context, thread, remote, "handshake_timeout")
        if any(marker in body for marker in _MARKER_TEXT):
            raise UnrecognisedLine(line[:200])
        return None  # a marker only in the context block or thread name: not a handshake line

    def _failure(
        self,
        ts: str,
        context: Context,
        thread: str,
        remote: Optional[re.Match[str]],
        reason: str,
    ) -> HandshakeFailure:
        target = normalise_address(remote.group("addr")) if remote else "unknown"
        return HandshakeFailure(self._timestamp(ts), context, thread, target, reason)

    def _timestamp(self, text: str) -> float:
        """``yyyy-mm-dd hh:mm:ss,SSS`` -> epoch seconds; the minute's epoch is cached."""
        minute = text[:16]
        if minute != self._minute:
            moment = datetime(
                int(text[0:4]),
                int(text[5:7]),
                int(text[8:10]),
                int(text[11:13]),
                int(text[14:16]),
                tzinfo=self._tz,
            )
            self._minute, self._minute_epoch = minute, moment.timestamp()
        return self._minute_epoch + int(text[17:19]) + int(text[20:23]) / 1000
