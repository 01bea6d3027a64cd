"""Bytes -> whole lines: the splitting shared by ``run`` (``tail``) and ``scan``."""

from __future__ import annotations

from typing import Optional, Union

from .stats import FileStats

Buffer = Union[bytes, bytearray]
Segment = tuple[Buffer, int, int]  # buf[start:end] holds whole lines, each ending in a newline


class LineSplitter:
    """Bytes -> segments of whole lines; holds a partial last line, cuts lines over ``limit``.

    ``feed`` hands out ranges of the buffer it was given rather than copies: the bulk of a read is
    one segment of the caller's buffer, and only the line that began in the held partial is joined
    into a small new one. The caller must process the segments before it reuses the buffer.
    """

    def __init__(self, limit: int, stats: FileStats) -> None:
        self.limit = limit
        self.stats = stats
        self.partial = b""
        self.discarding = False  # skipping the rest of a cut line

    def reset(self) -> None:
        self.partial = b""
        self.discarding = False

    def feed(self, data: Buffer, size: Optional[int] = None) -> list[Segment]:
        """Take ``data[:size]`` (at most ``limit`` bytes); return the segments of whole lines."""
        n = len(data) if size is None else size
        segments: list[Segment] = []
        first = data.find(b"\n", 0, n)
        if first < 0:
            self._hold(bytes(data[:n]), segments)
            return segments
        if self.discarding:
            self.discarding = False
        else:
            head = self.partial + bytes(data[: first + 1])
            if len(head) - 1 > self.limit:
                head = head[: self.limit] + b"\n"
                self.stats.truncated_lines += 1
            segments.append((head, 0, len(head)))
        self.partial = b""
        last = data.rfind(b"\n", 0, n)
        if last > first:  # reads are at most `limit` long: no line in here is over it
            segments.append((data, first + 1, last + 1))
        self._hold(bytes(data[last + 1 : n]), segments)
        return segments

    def _hold(self, piece: bytes, segments: list[Segment]) -> None:
        if self.discarding:
            return
        self.partial += piece
        if len(self.partial) > self.limit:
            cut = self.partial[: self.limit] + b"\n"
            segments.append((cut, 0, len(cut)))
            self.partial = b""
            self.discarding = True
            self.stats.truncated_lines += 1
