"""The head of a record line: its timestamp (in any rendering logback writes), context and thread.

A record line is ``<time>[ <zone>] [org:… env:… api:… rev:… messageid:…] <thread> <LEVEL> <logger> -
<body>``. The time is ``yyyy-MM-dd``, ``T`` or a space, ``HH:mm:ss``, then optionally a comma or a
dot and a fraction of 1 to 9 digits; the zone, optional, follows with or without a space: ``Z``,
an offset (``+0000``, ``+00:00``, ``+00``, ``UTC+1``), ``UTC``/``GMT``, an IANA name
(``Europe/Berlin``) or an abbreviation (``CET``). A zone that names a fixed offset or an IANA zone
gives the time; an abbreviation that names neither (``CEST``, ``PDT``: they are ambiguous) and no
zone at all read the time in the configured ``timezone``.

A site whose logback pattern writes another head gives its own regular expression
(``RecordHead(pattern)``, the config's ``logs[].record_head``): named groups ``ts`` and ``thread``
are required; ``zone`` and ``org``/``env``/``api``/``rev``/``messageid`` are optional; the body
is the rest of the line after the match. Its ``ts`` must still be a time as above.

``is_record`` is the one answer to "does a record start on this line" (a continuation line,
``\\tat …``, ``Caused by: …``, an exception class, does not).
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, timezone, tzinfo
from typing import NamedTuple, Optional, Union

Buffer = Union[bytes, bytearray]

LEVELS = r"(?:TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL)"
TIME = r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[,.]\d{1,9})?"
ZONE = (
    r"Z|[+-]\d\d(?::?\d\d)?|(?:UTC|GMT)(?:[+-]\d\d?(?::?\d\d)?)?"
    r"|[A-Z][A-Za-z]+/[A-Za-z_]+(?:/[A-Za-z_]+)?|[A-Z]{3,5}"
)
# The usual shape, context keys in their usual order: one match gives every field.
_FAST = (
    rf"(?P<ts>{TIME})(?: ?(?P<zone>{ZONE}))? +"
    r"(?:org:(?P<org>\S*) +env:(?P<env>\S*) +api:(?P<api>\S*) +rev:(?P<rev>\S*)"
    r" +messageid:(?P<messageid>\S*) +)?"
    rf"(?P<thread>\S+) +{LEVELS} +\S+ +- +"
)
# Any order of the context keys, any of them missing.
_ANY_ORDER = (
    rf"(?P<ts>{TIME})(?: ?(?P<zone>{ZONE}))? +"
    r"(?P<ctx>(?:(?:org|env|api|rev|messageid):\S* +)*)"
    rf"(?P<thread>\S+) +{LEVELS} +\S+ +- +"
)
_TIME_ZONE = re.compile(rf"(?P<ts>{TIME})(?: ?(?P<zone>{ZONE}))?")
_STAMP = re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")
_OFFSET = re.compile(r"(?:UTC|GMT)?(?P<sign>[+-])(?P<h>\d\d?)(?::?(?P<m>\d\d))?")
_CONTEXT_KEYS = ("org", "env", "api", "rev", "messageid")
_UTC_NAMES = frozenset({"Z", "UTC", "GMT", "UT"})


class BadTime(ValueError):
    """A timestamp that names no real time (February 30, hour 24, second 60, year 0)."""


class Head(NamedTuple):
    """What the head of a record line says."""

    ts: str  # the time as written, without its zone
    zone: str  # "" when none
    context: Optional[tuple[str, str, str, str, str]]  # org, env, api, rev, messageid; or None
    thread: str
    body: str  # the rest of the line


class RecordHead:
    """Reads record heads: the built-in renderings, or a site's own ``pattern``."""

    def __init__(self, pattern: Optional[str] = None) -> None:
        self.pattern = pattern
        if pattern is None:
            self._fast: Optional[re.Pattern[str]] = re.compile(_FAST)
            self._any = re.compile(_ANY_ORDER)
        else:
            self._fast = None
            self._any = re.compile(pattern)  # checked by config.check_head_pattern

    def is_record(self, line: Buffer) -> bool:
        """Whether ``line`` (bytes, a line without its newline) starts a record."""
        if self.pattern is None:
            return _STAMP.match(line) is not None
        return self._any.match(bytes(line).decode("utf-8", errors="replace")) is not None

    def read(self, line: str) -> Optional[Head]:
        """The head of the record line ``line``, or None when it is not one."""
        if self._fast is not None:
            found = self._fast.match(line)
            if found is not None:
                ts, zone, org, env, api, rev, mid, thread = found.groups()
                context = None if org is None else (org, env, api, rev, mid)
                return Head(ts, zone or "", context, thread, line[found.end() :])
        found = self._any.match(line)
        if found is None:
            return None
        groups = found.groupdict()
        if "ctx" in groups:  # the built-in pattern's context block, keys in any order
            fields = dict(t.split(":", 1) for t in (groups["ctx"] or "").split())
        else:  # a site's pattern: a group per key
            fields = {k: groups[k] for k in _CONTEXT_KEYS if groups.get(k) is not None}
        context = None
        if fields:
            org, env, api, rev, mid = (fields.get(k, "") for k in _CONTEXT_KEYS)
            context = (org, env, api, rev, mid)
        ts, zone = groups["ts"], groups.get("zone") or ""
        if not zone:  # a site's pattern may leave the zone inside its ``ts`` group
            split = _TIME_ZONE.fullmatch(ts)
            if split is not None and split.group("zone"):
                ts, zone = split.group("ts"), split.group("zone")
        return Head(ts, zone, context, groups["thread"], line[found.end() :])


DEFAULT = RecordHead()


def is_record_line(line: Buffer) -> bool:
    """Whether ``line`` starts a record in the built-in rendering (see ``RecordHead.is_record``)."""
    return DEFAULT.is_record(line)


@functools.lru_cache(maxsize=256)
def zone_of(name: str) -> Optional[tzinfo]:
    """The time zone a head's zone text names, or None when it names none for certain (an
    abbreviation such as ``CEST``: then the configured time zone applies)."""
    if name in _UTC_NAMES:
        return timezone.utc
    offset = _OFFSET.fullmatch(name)
    if offset is not None:
        hours, minutes = int(offset["h"]), int(offset["m"] or 0)
        if hours > 23 or minutes > 59:
            return None
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if offset["sign"] == "-" else delta)
    from zoneinfo import ZoneInfo

    try:
        return ZoneInfo(name)
    except (LookupError, ValueError, OSError):
        return None


class Clock:
    """Head times -> epoch seconds, in ``tz`` (None: local time) when the head gives no zone.

    The epoch of the last minute read is kept: records come in order, most share a minute.
    """

    def __init__(self, tz: Optional[tzinfo] = None) -> None:
        self.tz = tz
        self._minute: tuple[str, str] = ("", "")
        self._minute_epoch = 0.0

    def epoch(self, ts: str, zone: str = "") -> float:
        """``yyyy-MM-dd[T ]HH:mm:ss[,.fraction]`` in ``zone`` -> epoch seconds; ``BadTime``."""
        minute = (ts[:16], zone)
        if minute != self._minute:
            tz = (zone_of(zone) or self.tz) if zone else self.tz
            try:
                moment = datetime(
                    int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]), int(ts[14:16]),
                    tzinfo=tz,
                )  # fmt: skip
                epoch = moment.timestamp()
            except (ValueError, OverflowError, OSError):
                raise BadTime(ts) from None
            self._minute, self._minute_epoch = minute, epoch
        seconds = int(ts[17:19])
        if seconds > 59:
            raise BadTime(ts)
        fraction = ts[20:]
        return (
            self._minute_epoch + seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0)
        )
