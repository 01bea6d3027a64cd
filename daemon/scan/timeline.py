"""The "failures over time" part of ``scan --format table``: when did it start, and for whom."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, tzinfo
from typing import Optional

from .plan import ScanResult

MINUTE_SPAN = 180  # minutes: up to three hours of failures are shown per minute, longer per hour
MAX_ROWS = 200  # beyond that many buckets, only those with failures are shown
TOP = 5


def over_time(result: ScanResult, tz: Optional[tzinfo], top: int = TOP) -> list[str]:
    """Failures per minute or per hour (whichever fits the span), in all and for the top
    targets; the lines of the table, or none when there were no failures."""
    by_target: dict[str, Counter[int]] = {}
    for labels, minutes in result.timeline.items():
        by_target.setdefault(labels[4], Counter()).update(minutes)
    everything: Counter[int] = Counter()
    for minutes in by_target.values():
        everything.update(minutes)
    if not everything:
        return []
    first, last = min(everything), max(everything)
    step = 1 if last - first < MINUTE_SPAN else 60
    targets = sorted(by_target, key=lambda t: (-sum(by_target[t].values()), t))[:top]
    columns = [everything, *(by_target[t] for t in targets)]
    buckets: list[Counter[int]] = []
    for column in columns:
        bucketed: Counter[int] = Counter()
        for minute, n in column.items():
            bucketed[minute - minute % step] += n
        buckets.append(bucketed)
    start, stop = first - first % step, last - last % step
    rows = list(range(start, stop + step, step))
    sparse = len(rows) > MAX_ROWS
    if sparse:
        rows = sorted(buckets[0])
    unit = "minute" if step == 1 else "hour"
    zone = "local time" if tz is None else f"time zone {tz}"
    out = [
        "",
        f"Failures over time (per {unit}, {zone}"
        + (", only the " + unit + "s with failures" if sparse else "")
        + f"), in all and for the top {len(targets)} targets:",
    ]
    out += [f"  [{i}] {target}" for i, target in enumerate(targets, 1)]
    header = ["TIME", "ALL", *(f"[{i}]" for i in range(1, len(targets) + 1))]
    table = [header]
    for bucket in rows:
        moment = datetime.fromtimestamp(bucket * 60, tz)
        table.append([moment.strftime("%Y-%m-%d %H:%M"), *(str(b[bucket]) for b in buckets)])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]
        out.append("  " + "  ".join(cells))
    return out
