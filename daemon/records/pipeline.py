"""One log's stages wired in a row: parse -> correlate -> sinks. Used by ``run`` and ``scan``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import tzinfo
from typing import Callable, Optional

from .correlate import Correlator
from .events import Failure
from .lines import Buffer
from .parse import (
    GENERAL_PROBLEM,
    RECORD_LINES,
    Parser,
    UnrecognisedLine,
    candidate_lines,
    needs_record,
    record_above,
    unreadable_target,
)
from .stats import FileStats, PairingStats

Sink = Callable[[Failure], object]


def timezone_of(name: Optional[str]) -> Optional[tzinfo]:
    if name is None:
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


class LogPipeline:
    """parse -> correlate -> sinks, for the blocks of one log."""

    def __init__(
        self,
        stats: FileStats,
        parser: Parser,
        correlator: Correlator,
        sinks: list[Sink],
    ) -> None:
        self.stats = stats
        self.parser = parser
        self.correlator = correlator
        self.sinks = sinks
        # The record line in force where the last block ended, and its line number
        # (checkpointed: an exception line read after a restart still has its record).
        self.record: Optional[bytes] = None
        self.record_number = 0

    def process(self, buf: Buffer, start: int = 0, end: Optional[int] = None) -> None:
        """``buf[start:end]`` holds whole lines: count them, parse the candidates, pair."""
        end = len(buf) if end is None else end
        line = self.stats.lines + 1  # the number of the line at `at`
        at = start
        traced = self._read_trace(buf, start, end) if self.parser.trace else start
        head = self.parser.head
        for begin, raw in candidate_lines(buf, start, end, head):  # none ``ignorable``
            line += buf.count(b"\n", at, begin)
            at = begin
            if (
                begin >= traced
                and GENERAL_PROBLEM in raw
                and not head.is_record(raw)
                and self.parser.open_trace(raw, self._record_of(buf, start, begin, line), line)
            ):
                traced = self._read_trace(buf, begin, end)
            record = self._record_of(buf, start, begin, line) if needs_record(raw, head) else None
            try:
                event = self.parser.parse(raw, record)
            except UnrecognisedLine:
                self.stats.unrecognised += 1
                continue
            if unreadable_target(event):
                self.stats.unrecognised += 1  # counted as a failure too: format drift shows
            if event is not None:
                self._emit(self.correlator.feed(event, line))
        self.stats.lines = line - 1 + buf.count(b"\n", at, end)
        found, up = record_above(
            buf, start, end, self.parser.head
        )  # for the lines of the next blocks
        if found is not None:
            self.record, self.record_number = found, self.stats.lines + 1 - up
        self._emit(self.correlator.advance(self.stats.lines))

    def _read_trace(self, buf: Buffer, at: int, end: int) -> int:
        """Read the open General SSLEngine problem trace from ``at`` on, to its end (the next
        record line, or ``RECORD_LINES`` lines) or to ``end``; where it stopped. At its end its
        cause, if it names one, goes to the correlator."""
        trace = self.parser.trace
        assert trace is not None
        head = self.parser.head
        while at < end:
            newline = buf.find(b"\n", at, end)
            line_end = newline if newline >= 0 else end
            raw = bytes(buf[at:line_end])
            if (trace.looked and head.is_record(raw)) or trace.looked >= RECORD_LINES:
                self._end_trace()
                return at
            trace.take(raw)
            at = line_end + 1
        return end

    def _record_of(self, buf: Buffer, start: int, begin: int, line: int) -> Optional[bytes]:
        """The record line that the continuation line ``line`` (at ``begin``) belongs to: the
        nearest above it within ``RECORD_LINES`` lines, in this block or in one before, so that
        where the reads end does not matter."""
        found, _ = record_above(buf, start, begin, self.parser.head)
        if found is None and self.record is not None and line - self.record_number <= RECORD_LINES:
            return self.record
        return found

    def _end_trace(self) -> None:
        """The open General SSLEngine problem trace is whole: its cause to the correlator."""
        trace, self.parser.trace = self.parser.trace, None
        cause = trace.cause() if trace is not None else None
        if trace is not None and cause is not None:
            self._emit(self.correlator.feed(cause, trace.line))

    def idle(self, read_at: Optional[float] = None) -> None:
        """The log has been read to its end (all written by ``read_at``): the pairing windows'
        wall time runs; close those whose wall time has passed. An open trace is whole (the MP
        writes a record and its stack trace together)."""
        self._end_trace()
        self._emit(self.correlator.idle(read_at))

    def finish(self) -> None:
        """End of input: close every window (a trace read to the end gives its cause first)."""
        self._end_trace()
        self._emit(self.correlator.close_all())

    def _emit(self, failures: list[Failure]) -> None:
        for failure in failures:
            for sink in self.sinks:
                sink(failure)


def pairing_stats(correlators: Iterable[Correlator]) -> PairingStats:
    stats = PairingStats()
    for c in correlators:
        stats.pending += c.pending
        stats.unpaired += c.unpaired
        stats.orphans += c.orphans
    return stats
