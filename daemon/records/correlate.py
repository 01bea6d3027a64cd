"""Events -> failures: pair each handshake failure with the SSLInfo line that names its key alias.

A failure waits in a pairing window for the first SSLInfo line of the same thread and the same
message id. It closes with that line's alias; or with ``""`` (unpaired) when the same thread logs
another failure for the same message id first, when the window passes, or at the end of the
input. An SSLInfo line with no failure waiting is an orphan. The window is ``window_lines`` lines
after the failure's own line, or ``window_seconds`` of wall time, whichever passes first; the wall
time counts only while everything written has been read: it starts at the first :meth:`idle`
after the failure was read, and only :meth:`idle` closes a window by it, by the time the read
before it began (all written by then was read; a stall after the read is not quiet time). So a
reader that fell behind (a stall, a wait for logrotate's copy or a compressor) pairs the lines
written meanwhile as an uninterrupted read does; the wall time is only there so that a failure
whose SSLInfo line never comes is counted soon when the log goes quiet. A failure waits until
``window_lines`` lines after its own, so at most ``window_lines + 1`` failures wait at once per
log: memory stays bounded whatever the message ids do.

An exception record carrying a received TLS alert (``AlertException``) is the same failure again
when a handshakeFailed line of its thread and message id came within ``window_lines`` lines before
it (the MP's ``RequestWriteListener.onException()`` repeats the alert of the failure it logged)
or comes within the window after it, and when another exception record of them came within
``window_lines`` lines before it (one failure logged in several records): then it is not counted.
Otherwise it is a failure of its own, counted once when its window passes, with ``key_alias=""``:
with TLS 1.3 a backend that rejects the client certificate does so after the client finished its
handshake, and the MP may log only the exception. It is not counted as ``unpaired`` (no SSLInfo
line is expected for it). Whether a record is a repeat is decided by lines only: it never
depends on how fast the log was written or read.

A ``General SSLEngine problem`` failure takes the reason of the ``Cause`` (the ``Caused by:`` chain
of the exception record of its thread and message id) that comes within ``window_lines`` lines
after the failure's own line, or before it: once paired with its SSLInfo line it waits for the
cause until its window passes (then it keeps ``general_sslengine_problem``), and a cause waits for
its failure as long. So it is counted once, with the same reason, whichever order the lines come
in.

Whether a record counts depends only on the records of the window before it and after it, never
on what was decided for a record further back (a burst of exception records, each within the
window of the one before, is one failure however long it lasts). So what waits at any line
follows from the two windows of lines before it: ``scan`` cut in pieces, each re-reading that
much before its start, counts what the serial scan counts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from .events import (
    GENERAL_SSLENGINE_PROBLEM,
    AlertException,
    Cause,
    Context,
    Event,
    Failure,
    HandshakeFailure,
)

Key = tuple[str, str]  # (thread, message id)


Line = Annotated[StrictInt, Field(ge=0, le=1 << 62)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class ContextState(BaseModel):
    """A ``Context`` in the state file."""

    model_config = ConfigDict(extra="forbid")
    org: StrictStr = ""
    env: StrictStr = ""
    api: StrictStr = ""
    rev: StrictStr = ""
    message_id: StrictStr = ""


class PendingState(BaseModel):
    """A failure waiting in its window (``_Pending``), with the line it was read at."""

    model_config = ConfigDict(extra="forbid")
    line: Line
    timestamp: Finite
    context: ContextState
    thread: StrictStr
    target: StrictStr
    reason: StrictStr
    key_alias: Optional[StrictStr] = None  # absent until paired with its SSLInfo line


class PairingState(BaseModel):
    """A ``Correlator`` in the state file: its counts and every open window."""

    model_config = ConfigDict(extra="forbid")
    unpaired: Line = 0
    orphans: Line = 0
    exception_only: Line = 0
    pending: list[PendingState] = []
    exceptions: list[PendingState] = []
    seen: list[tuple[StrictStr, StrictStr, Line]] = []  # thread, message id, line
    awaiting: list[PendingState] = []
    causes: list[tuple[StrictStr, StrictStr, StrictStr, Line]] = []  # ..., reason, line


@dataclass
class _Pending:
    failure: Union[HandshakeFailure, AlertException]
    line: int
    # wall clock (monotonic) of the first idle() after the failure was read: None until then
    since: Optional[float] = None
    key_alias: Optional[str] = None  # the SSLInfo line's alias, once paired


class Correlator:
    """Pairs the events of one log. Feed it events in log order with their line numbers."""

    def __init__(
        self,
        window_lines: int = 1000,
        window_seconds: Optional[float] = 2.0,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        self.window_lines = window_lines
        self.window_seconds = window_seconds
        self._clock = clock
        self._pending: OrderedDict[Key, _Pending] = OrderedDict()
        # exception records waiting to learn whether a handshakeFailed line accounts for them
        self._exceptions: OrderedDict[Key, _Pending] = OrderedDict()
        # the line of the last failure record (handshakeFailed line or exception record) of each
        # key in the window: an exception record of the key is its repeat, no failure of its own
        self._seen: OrderedDict[Key, int] = OrderedDict()
        # General SSLEngine problem failures, paired, waiting for their cause
        self._awaiting: OrderedDict[Key, _Pending] = OrderedDict()
        # causes waiting for their General SSLEngine problem failure: (reason, line)
        self._causes: OrderedDict[Key, tuple[str, int]] = OrderedDict()
        self.unpaired = 0
        self.orphans = 0
        self.exception_only = 0  # failures known only from an exception record

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._exceptions) + len(self._awaiting)

    def feed(self, event: Event, line: int) -> list[Failure]:
        """Take the event read at ``line``; return the failures it closes."""
        closed = self.advance(line - 1)
        key = (event.thread, event.context.message_id)
        if isinstance(event, Cause):
            return closed + self._cause(key, event.reason, line)
        if isinstance(event, AlertException):
            if key not in self._pending and key not in self._seen and key not in self._exceptions:
                self._exceptions[key] = _Pending(event, line)
            self._saw(key, line)
            return closed
        waiting = self._pending.pop(key, None)
        if isinstance(event, HandshakeFailure):
            if waiting is not None:
                closed.append(self._unpaired(waiting))
            self._exceptions.pop(key, None)  # the exception came first: this line counts it
            if event.reason == GENERAL_SSLENGINE_PROBLEM and key in self._causes:
                event = event._replace(reason=self._causes.pop(key)[0])
            self._pending[key] = _Pending(event, line)
            self._saw(key, line)
        elif waiting is not None:
            if waiting.failure.reason == GENERAL_SSLENGINE_PROBLEM:
                waiting.key_alias = event.key_alias  # its cause may still come
                self._awaiting.pop(key, None)
                self._awaiting[key] = waiting
            else:
                closed.append(Failure.from_event(waiting.failure, event.key_alias))
        else:
            self.orphans += 1
        return closed

    def _cause(self, key: Key, reason: str, line: int) -> list[Failure]:
        """The cause of a General SSLEngine problem failure of ``key``, read at ``line``."""
        awaiting = self._awaiting.pop(key, None)
        if awaiting is not None:
            failure = awaiting.failure._replace(reason=reason)
            return [Failure.from_event(failure, awaiting.key_alias)]
        pending = self._pending.get(key)
        if pending is not None and pending.failure.reason == GENERAL_SSLENGINE_PROBLEM:
            pending.failure = pending.failure._replace(reason=reason)
        else:
            self._causes.pop(key, None)
            self._causes[key] = (reason, line)
        return []

    def _saw(self, key: Key, line: int) -> None:
        """A failure record of ``key`` (a handshakeFailed line or an exception record) at ``line``:
        an exception record of the key within the window after it is its repeat."""
        self._seen.pop(key, None)
        self._seen[key] = line

    def advance(self, line: int) -> list[Failure]:
        """All lines up to ``line`` have been read: close the windows whose lines have passed."""
        closed: list[Failure] = []
        oldest = line - self.window_lines
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.line > oldest:
                break
            self._pending.popitem(last=False)
            closed.append(self._unpaired(first))
        closed += self._exception_only(lambda p: p.line <= oldest)
        closed += self._uncaused(lambda p: p.line <= oldest)
        while self._seen and next(iter(self._seen.values())) <= oldest:
            self._seen.popitem(last=False)
        while self._causes and next(iter(self._causes.values()))[1] <= oldest:
            self._causes.popitem(last=False)
        return closed

    def _uncaused(self, passed: Callable[[_Pending], bool]) -> list[Failure]:
        """The paired General SSLEngine problem failures, oldest first, as long as ``passed``
        says so: counted without a cause."""
        closed: list[Failure] = []
        while self._awaiting:
            first = next(iter(self._awaiting.values()))
            if not passed(first):
                break
            self._awaiting.popitem(last=False)
            closed.append(Failure.from_event(first.failure, first.key_alias))
        return closed

    def idle(self, read_at: Optional[float] = None) -> list[Failure]:
        """Everything written by ``read_at`` (by default: now) has been read: the windows opened
        since the last call start their wall time then; close those whose ``window_seconds``
        had passed by then. The time of the read, not of this call: a daemon held still between
        its read and this call (SIGSTOP, a starved VM) may have lines unread that were written
        within the window."""
        if self.window_seconds is None or self._clock is None:
            return []
        now = self._clock() if read_at is None else read_at
        for waiting in (self._pending, self._exceptions, self._awaiting):
            for p in reversed(waiting.values()):  # the newest are last: stop at a started one
                if p.since is not None:
                    break
                p.since = now
        passed = now - self.window_seconds
        closed: list[Failure] = []
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.since is None or first.since > passed:
                break
            self._pending.popitem(last=False)
            closed.append(self._unpaired(first))
        closed += self._exception_only(lambda p: p.since is not None and p.since <= passed)
        return closed + self._uncaused(lambda p: p.since is not None and p.since <= passed)

    def _exception_only(self, passed: Callable[[_Pending], bool]) -> list[Failure]:
        """The waiting exception records, oldest first, as long as ``passed`` says so: counted."""
        closed: list[Failure] = []
        while self._exceptions:
            first = next(iter(self._exceptions.values()))
            if not passed(first):
                break
            self._exceptions.popitem(last=False)
            self.exception_only += 1
            closed.append(Failure.from_event(first.failure, None))
        return closed

    def close_all(self) -> list[Failure]:
        """End of input: every window closes."""
        closed = [self._unpaired(p) for p in self._pending.values()]
        self._pending.clear()
        for waiting in self._exceptions.values():
            self.exception_only += 1
            closed.append(Failure.from_event(waiting.failure, None))
        self._exceptions.clear()
        closed += self._uncaused(lambda p: True)
        self._seen.clear()
        self._causes.clear()
        return closed

    def _unpaired(self, pending: _Pending) -> Failure:
        self.unpaired += 1
        return Failure.from_event(pending.failure, None)

    def snapshot(self) -> PairingState:
        """The open pairings and counts, for the checkpoint."""

        def rows(pending: OrderedDict[Key, _Pending]) -> list[PendingState]:
            return [
                PendingState(
                    line=p.line,
                    timestamp=p.failure.timestamp,
                    context=ContextState(**p.failure.context._asdict()),
                    thread=p.failure.thread,
                    target=p.failure.target,
                    reason=p.failure.reason,
                    key_alias=p.key_alias,
                )
                for p in pending.values()
            ]

        return PairingState(
            unpaired=self.unpaired,
            orphans=self.orphans,
            exception_only=self.exception_only,
            pending=rows(self._pending),
            exceptions=rows(self._exceptions),
            seen=[(thread, mid, line) for (thread, mid), line in self._seen.items()],
            awaiting=rows(self._awaiting),
            causes=[(t, mid, reason, line) for (t, mid), (reason, line) in self._causes.items()],
        )

    def restore(self, state: PairingState) -> None:
        """Take back what ``snapshot`` saved; the wall time of open windows starts again at the
        next :meth:`idle`."""
        self.unpaired = state.unpaired
        self.orphans = state.orphans
        self.exception_only = state.exception_only
        self._pending.clear()
        self._exceptions.clear()
        self._seen.clear()
        self._awaiting.clear()
        self._causes.clear()
        for kind, into, saved in (
            (HandshakeFailure, self._pending, state.pending),
            (AlertException, self._exceptions, state.exceptions),
            (HandshakeFailure, self._awaiting, state.awaiting),
        ):
            for item in saved:
                failure = kind(
                    timestamp=item.timestamp,
                    context=Context(**item.context.model_dump()),
                    thread=item.thread,
                    target=item.target,
                    reason=item.reason,
                )
                key = (failure.thread, failure.context.message_id)
                into[key] = _Pending(failure, item.line, None, item.key_alias)
        for thread, message_id, line in state.seen:
            self._seen[(thread, message_id)] = line
        for thread, message_id, reason, line in state.causes:
            self._causes[(thread, message_id)] = (reason, line)
