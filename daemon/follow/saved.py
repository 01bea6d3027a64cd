"""The follower's part of the state file, written once: ``Follower.snapshot()`` returns a
``FollowerState`` and ``Follower.restore()`` takes one; ``state.checkpoint`` composes it into the
whole file and checks every field when it is read back (an impossible value is a fresh start,
never a crash)."""

from __future__ import annotations

import base64
import zlib
from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from ..records.stats import Count, StatsState
from .logfile import HEAD_BYTES, TAIL_BYTES

MAX_ENTRIES = 1000
RECENT_BYTES = 1 << 16  # the last bytes read of an entry kept (``ledger.Entry.recent``)

Offset = Annotated[StrictInt, Field(ge=0, le=1 << 53)]
Sha = Annotated[str, Field(pattern=r"^([0-9a-f]{64})?$")]
Base64 = Annotated[str, Field(max_length=4 << 20, pattern=r"^[A-Za-z0-9+/]*={0,2}$")]


class EntryState(BaseModel):
    """One ledger entry (``ledger.Entry``)."""

    model_config = ConfigDict(extra="forbid")
    head_len: Annotated[StrictInt, Field(ge=0, le=HEAD_BYTES)]
    head_sha: Sha
    offset: Offset
    crc: Optional[Annotated[StrictInt, Field(ge=0, le=0xFFFFFFFF)]] = None  # None: older file
    tail_len: Annotated[StrictInt, Field(ge=0, le=TAIL_BYTES)]
    tail_sha: Sha
    dev: Count
    ino: Count
    done: StrictBool
    # the last bytes read, zlib-compressed (none in an older file), and the CRC-32 before them
    recent: Base64 = ""
    recent_crc: Optional[Annotated[StrictInt, Field(ge=0, le=0xFFFFFFFF)]] = None

    @model_validator(mode="after")
    def _tail_within(self) -> EntryState:
        if self.tail_len > self.offset:
            raise ValueError("tail_len is past the offset")
        if len(self.recent_bytes()) > min(self.offset, RECENT_BYTES):
            raise ValueError("recent is longer than what was read")
        return self

    def recent_bytes(self) -> bytes:
        """``recent`` decoded; ValueError when it is not what ``Entry.saved`` writes."""
        if not self.recent:
            return b""
        try:
            d = zlib.decompressobj()
            data = d.decompress(base64.b64decode(self.recent), RECENT_BYTES + 1)
        except (zlib.error, ValueError) as err:
            raise ValueError(f"recent is not readable: {err}") from None
        if not d.eof:
            raise ValueError("recent is not readable: cut short or too long")
        return data


class FollowerState(BaseModel):
    """Where a follower is: the ledger, the entry being read, the held partial line."""

    model_config = ConfigDict(extra="forbid")
    ledger: Annotated[list[EntryState], Field(max_length=MAX_ENTRIES)]
    open: Optional[Annotated[StrictInt, Field(ge=0)]]
    partial: Base64
    discarding: StrictBool
    stats: StatsState

    @model_validator(mode="after")
    def _open_in_ledger(self) -> FollowerState:
        if self.open is not None and self.open >= len(self.ledger):
            raise ValueError("open names no ledger entry")
        return self
