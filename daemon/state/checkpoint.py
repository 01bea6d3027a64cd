"""The state file: positions, counters and open pairings, written atomically.

Written as JSON to a temporary file in the same directory, fsynced, renamed over the state file,
and the directory fsynced, so that a crash leaves either the old state or the new one. What is
read back is checked field by field (``State``): a file with impossible values (a negative or
astronomical offset, a count of NaN) is one warning and a fresh start, never a crash and never a
count corrupted by it.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from typing import Annotated, Any, Optional, Union

import structlog
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from ..follow.logfile import kind_of
from ..follow.saved import Base64, FollowerState
from ..records.correlate import PairingState
from ..records.stats import Count
from .alerts import AlertsState
from .counts import StoreState

VERSION = 2

Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogState(_Model):
    follower: Optional[FollowerState]
    pairing: PairingState
    record: Optional[Base64] = None  # the record line in force at the last read (``LogPipeline``)
    record_number: Optional[Count] = None  # its line number


class State(_Model):
    """The whole state file, as ``Daemon.snapshot`` writes it."""

    version: StrictInt
    written_at: Annotated[Finite, Field(ge=0)]
    store: StoreState
    alerts: Optional[AlertsState] = None
    logs: dict[str, LogState]


def check(state: dict[str, Any], path: str) -> Optional[State]:
    """``state`` with every field checked; None, after one warning, when a field is impossible."""
    try:
        checked = State.model_validate(state)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        log.warning(
            "state file corrupt, starting fresh",
            state_file=path,
            field=where,
            problem=first["msg"],
        )
        return None
    return checked


log = structlog.get_logger()


class CheckpointError(Exception):
    """The state file could not be written."""


def save(path: str, state: Union[State, dict[str, Any]]) -> None:
    """Write ``state`` to ``path`` atomically and durably."""
    if isinstance(state, State):
        state = state.model_dump(mode="json", exclude={"version"})
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = stat.S_IFREG
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"cannot write state file {path}: it is {kind_of(mode)}")
    data = json.dumps({"version": VERSION, **state}, separators=(",", ":")).encode()
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        # makedirs says "File exists" when a part of the directory is a file: say which.
        reason = err.strerror or str(err)
        if isinstance(err, FileExistsError) and not os.path.isdir(directory):
            reason = f"{err.filename} is not a directory"
        raise CheckpointError(f"cannot write state file {path}: {reason}") from err


def load(path: str) -> Optional[dict[str, Any]]:
    """The saved state, or None when there is none: one info line when it is missing (a first
    start), one warning when it is unreadable, corrupt or of another version."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the start
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                log.warning(
                    "state file is not a regular file, starting fresh",
                    state_file=path,
                    kind=kind_of(mode),
                )
                return None
            state = json.loads(f.read())
    except FileNotFoundError:
        log.info("no state file, starting fresh", state_file=path)
        return None
    except OSError as err:
        log.warning("state file unreadable, starting fresh", state_file=path, error=str(err))
        return None
    except ValueError:
        log.warning("state file corrupt, starting fresh", state_file=path)
        return None
    if not isinstance(state, dict):
        log.warning("state file corrupt, starting fresh", state_file=path)
        return None
    loaded: dict[str, Any] = state
    version = loaded.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        log.warning("state file corrupt, starting fresh", state_file=path)
        return None
    if version != VERSION:
        log.warning(
            "state file of another version, starting fresh",
            state_file=path,
            version=version,
            supported=VERSION,
        )
        return None
    return loaded
