"""Does the exporter read this log? What ``check-config --log`` reports: lines, records, failures,
unrecognised lines, and the first record lines whose head it could not read.

A line is a record line when the head reads it; a continuation line (``\\tat …``, ``Caused by:``,
an exception class) is part of the record above. Any other line is an *unread* line: most often a
record whose head the built-in renderings (or the site's ``record_head``) do not cover.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Optional

from .correlate import Correlator
from .events import Failure
from .head import RecordHead
from .lines import LineSplitter
from .parse import Parser, is_continuation
from .pipeline import LogPipeline
from .stats import FileStats

EXAMPLES = 5
_EXAMPLE_CHARS = 200
BUILT_IN = (
    "yyyy-MM-dd HH:mm:ss[,SSS] [zone] [org:… env:… api:… rev:… messageid:…] THREAD LEVEL "
    "LOGGER - message (comma or dot, any fraction or none, T or a space; zone Z, +0000, "
    "+00:00, UTC or an IANA name)"
)


@dataclass
class Survey:
    lines: int = 0
    records: int = 0
    failures: int = 0
    unrecognised: int = 0  # handshake lines no rule matches: what the format_drift alert counts
    unread: int = 0  # lines neither a record the head reads nor a continuation line
    examples: list[tuple[int, str]] = field(default_factory=list)  # the first unread lines

    @property
    def reads(self) -> bool:
        """Whether the log is read: records are recognised, and no handshake line is missed."""
        return (self.records > 0 or self.lines == 0) and self.unrecognised == 0


def survey(
    blocks: Iterable[bytes],
    *,
    head: Optional[RecordHead] = None,
    tz: Optional[tzinfo] = None,
    max_line_bytes: int = 1 << 20,
    window_lines: int = 1000,
) -> Survey:
    """Read ``blocks`` (the log's bytes, in order) as the daemon does, and count."""
    head = head or RecordHead()
    result = Survey()
    stats = FileStats()
    failures: list[Failure] = []
    splitter = LineSplitter(max_line_bytes, stats)
    pipeline = LogPipeline(
        stats, Parser(tz, head), Correlator(window_lines, None), [failures.append]
    )
    number = 0
    pieces = (b[i : i + max_line_bytes] for b in blocks for i in range(0, len(b), max_line_bytes))
    for block in pieces:  # the splitter takes at most max_line_bytes at a time
        for buf, start, end in splitter.feed(block):
            for raw in bytes(buf[start:end]).split(b"\n")[:-1]:
                number += 1
                _look(result, head, raw, number)
            pipeline.process(buf, start, end)
    if splitter.partial:  # a last line without its newline
        raw = splitter.partial + b"\n"
        splitter.reset()
        number += 1
        _look(result, head, raw[:-1], number)
        pipeline.process(raw)
    pipeline.finish()
    result.lines = stats.lines
    result.failures = len(failures)
    result.unrecognised = stats.unrecognised
    return result


def _look(result: Survey, head: RecordHead, raw: bytes, number: int) -> None:
    line = raw.decode("utf-8", errors="replace").rstrip("\r")
    if head.read(line) is not None:
        result.records += 1
    elif line.strip() and not is_continuation(line):
        result.unread += 1
        if len(result.examples) < EXAMPLES:
            result.examples.append((number, line[:_EXAMPLE_CHARS]))
