"""What reading a log counts besides failures: each file's health and the pairing counts.

Plain values owned by the stages (``FileStats`` by the follower and the splitter, ``PairingStats``
by the correlators), so that a checkpoint can save and restore them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FileStats:
    """Health of one followed file. Counters only grow; size and offset are gauges."""

    lines: int = 0
    bytes_read: int = 0
    size: int = 0
    offset: int = 0
    unrecognised: int = 0
    truncated_lines: int = 0
    equal_heads: int = 0  # files read that begin like another content read before
    rotations: dict[str, int] = field(default_factory=dict)
    read_errors: dict[str, int] = field(default_factory=dict)
    last_read: float = 0.0  # wall clock of the last read that returned data

    def snapshot(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "bytes_read": self.bytes_read,
            "unrecognised": self.unrecognised,
            "truncated_lines": self.truncated_lines,
            "equal_heads": self.equal_heads,
            "rotations": dict(self.rotations),
            "read_errors": dict(self.read_errors),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.lines = int(state.get("lines", 0))
        self.bytes_read = int(state.get("bytes_read", 0))
        self.unrecognised = int(state.get("unrecognised", 0))
        self.truncated_lines = int(state.get("truncated_lines", 0))
        self.equal_heads = int(state.get("equal_heads", 0))
        self.rotations = {str(k): int(v) for k, v in state.get("rotations", {}).items()}
        self.read_errors = {str(k): int(v) for k, v in state.get("read_errors", {}).items()}


@dataclass
class PairingStats:
    pending: int = 0
    unpaired: int = 0
    orphans: int = 0
