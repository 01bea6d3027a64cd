"""``scan --format backfill``: the failures of the scanned logs as OpenMetrics text with the log's
timestamps, for ``promtool tsdb create-blocks-from openmetrics``.

One counter series per label set, ``apigee_tls_handshake_failures_total``, sampled on minute
boundaries: the sample at minute boundary ``T`` holds the failures logged before ``T``. A series
starts with a 0 at the minute of its first failure and steps at each minute in which it grew.
``increase()`` over a window is exact when the window has a sample at both ends (or starts before
the series, whose first sample is 0): Prometheus extrapolates otherwise. So a series is sampled at
every minute within ``DENSE_MINUTES`` of a minute in which it grew, and at every hour boundary in
between and up to the common end; ``increase(...[w])`` for a window that starts and ends on
minute boundaries is exact for ``w`` up to an hour, and for any ``w`` when both ends are on hour
boundaries. Quiet stretches cost one sample an hour.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from typing import Optional, TextIO

from .. import __version__
from ..state.counts import FAILURE_LABELS
from .pieces import Labels
from .plan import ScanResult

DENSE_MINUTES = 60
NAME = "apigee_tls_handshake_failures"
HELP = "Southbound TLS handshake failures logged by the Message Processor (backfilled by scan)."
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def sample_minutes(growth: list[int], end: int) -> Iterator[int]:
    """The minute boundaries to sample a series at, from its first growth minute to ``end``.

    ``growth``: the minutes in which it grew, sorted; ``end`` is at or after the dense tail of the
    last of them.
    """
    spans: list[list[int]] = []  # dense stretches [lo, hi], merged
    for g in growth:
        lo, hi = max(growth[0], g - DENSE_MINUTES), min(end, g + 1 + DENSE_MINUTES)
        if spans and lo <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    previous = None
    for lo, hi in spans:
        if previous is not None:  # the hour boundaries of the quiet stretch in between
            yield from range((previous // 60 + 1) * 60, lo, 60)
        yield from range(lo, hi + 1)
        previous = hi
    assert previous is not None
    yield from range((previous // 60 + 1) * 60, end + 1, 60)


def series_samples(minutes: Counter[int], end: int) -> Iterator[tuple[int, int]]:
    """(epoch seconds, value) of one series: failures logged before each sampled boundary."""
    growth = sorted(minutes)
    total = 0
    i = 0
    for k in sample_minutes(growth, end):
        while i < len(growth) and growth[i] < k:
            total += minutes[growth[i]]
            i += 1
        yield k * 60, total


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write(
    result: ScanResult, out: TextIO, extra: dict[str, str], until: Optional[float] = None
) -> int:
    """Writes the OpenMetrics text; the number of samples written. ``until`` (``--until``, epoch
    seconds) ends every series at the minute boundary at or after it, so that the backfill holds
    no sample for the time a live exporter counts (the series' end otherwise: an hour boundary
    past the dense tail of the last failure).

    After the failures, ``apigee_tls_build_info`` every minute of the span (with the ``extra``
    labels), as a live exporter has it: the shipped dashboard lists its nodes from it.
    """
    out.write(f"# HELP {NAME} {HELP}\n# TYPE {NAME} counter\n")
    timeline = {labels: m for labels, m in result.timeline.items() if m}
    written = 0
    if timeline:
        first = min(min(m) for m in timeline.values())
        last = max(max(m) for m in timeline.values())
        end = ((last + 1 + DENSE_MINUTES) // 60 + 1) * 60  # an hour boundary after every tail
        if until is not None:
            end = min(end, math.ceil(until / 60))  # every failure counted is before `until`
        for labels in sorted(timeline):
            text = _labels(labels, extra)
            for ts, value in series_samples(timeline[labels], end):
                out.write(f"{NAME}_total{{{text}}} {value} {ts}\n")
                written += 1
        info = ",".join(f'{k}="{escape(v)}"' for k, v in [*extra.items(), ("version", __version__)])
        out.write(
            "# HELP apigee_tls_build_info Version of apigee-tls-exporter.\n"
            "# TYPE apigee_tls_build_info gauge\n"
        )
        for minute in range(first, end + 1):
            out.write(f"apigee_tls_build_info{{{info}}} 1 {minute * 60}\n")
            written += 1
    out.write("# EOF\n")
    return written


def _labels(labels: Labels, extra: dict[str, str]) -> str:
    pairs = [*extra.items(), *zip(FAILURE_LABELS, labels)]
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs)
