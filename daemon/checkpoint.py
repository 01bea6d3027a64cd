"""The state file: positions, counters and open pairings, written atomically.

Written as JSON to a temporary file in the same directory, fsynced, renamed over the state file,
and the directory fsynced, so that a crash leaves either the old state or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Optional

import structlog

VERSION = 1

log = structlog.get_logger()


class CheckpointError(Exception):
    """The state file could not be written."""


def save(path: str, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically and durably."""
    directory = os.path.dirname(os.path.abspath(path))
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
        with open(path, "rb") as f:
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
