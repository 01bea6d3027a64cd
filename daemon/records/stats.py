"""What reading a log counts besides failures: each file's health and the pairing counts.

Plain values owned by the stages (``FileStats`` by the follower and the splitter, ``PairingStats``
by the correlators), so that a checkpoint can save and restore them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

Count = Annotated[StrictInt, Field(ge=0, le=1 << 62)]


class StatsState(BaseModel):
    """A ``FileStats`` in the state file (its counters; the gauges are measured again)."""

    model_config = ConfigDict(extra="forbid")
    lines: Count
    bytes_read: Count
    unrecognised: Count
    truncated_lines: Count
    equal_heads: Count = 0
    rotations: dict[str, Count]
    read_errors: dict[str, Count]


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

    def snapshot(self) -> StatsState:
        return StatsState(
            lines=self.lines,
            bytes_read=self.bytes_read,
            unrecognised=self.unrecognised,
            truncated_lines=self.truncated_lines,
            equal_heads=self.equal_heads,
            rotations=dict(self.rotations),
            read_errors=dict(self.read_errors),
        )

    def restore(self, state: StatsState) -> None:
        self.lines = state.lines
        self.bytes_read = state.bytes_read
        self.unrecognised = state.unrecognised
        self.truncated_lines = state.truncated_lines
        self.equal_heads = state.equal_heads
        self.rotations = dict(state.rotations)
        self.read_errors = dict(state.read_errors)


@dataclass
class PairingStats:
    pending: int = 0
    unpaired: int = 0
    orphans: int = 0
