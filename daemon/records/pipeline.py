"""One log's stages wired in a row: parse -> correlate -> sinks. Used by ``run`` and ``scan``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import tzinfo
from typing import Callable, Optional

from .correlate import Correlator
from .events import Failure
from .lines import Buffer
from .parse import (
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
        for begin, raw in candidate_lines(buf, start, end):
            line += buf.count(b"\n", at, begin)
            at = begin
            record = self._record_of(buf, start, begin, line) if needs_record(raw) else None
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
        found, up = record_above(buf, start, end)  # for the lines of the next blocks
        if found is not None:
            self.record, self.record_number = found, self.stats.lines + 1 - up
        self._emit(self.correlator.advance(self.stats.lines))

    def _record_of(self, buf: Buffer, start: int, begin: int, line: int) -> Optional[bytes]:
        """The record line that the continuation line ``line`` (at ``begin``) belongs to: the
        nearest above it within ``RECORD_LINES`` lines, in this block or in one before, so that
        where the reads end does not matter."""
        found, _ = record_above(buf, start, begin)
        if found is None and self.record is not None and line - self.record_number <= RECORD_LINES:
            return self.record
        return found

    def idle(self) -> None:
        """The log has been read to its end: the pairing windows' wall time runs; close those
        whose wall time has passed."""
        self._emit(self.correlator.idle())

    def finish(self) -> None:
        """End of input: close every window."""
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
