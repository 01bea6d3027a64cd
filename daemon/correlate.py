"""Events -> failures: pair each handshake failure with the SSLInfo line that names its key alias.

A failure waits in a pairing window for the first SSLInfo line of the same thread and the same
message id. It closes with that line's alias; or with ``""`` (unpaired) when the same thread logs
another failure for the same message id first, when the window passes (``window_lines`` lines or
``window_seconds`` of wall time, whichever comes first), or at the end of the input. An SSLInfo line
with no failure waiting is an orphan. A failure waits until ``window_lines`` lines after its own,
so at most ``window_lines + 1`` failures wait at once per log: memory stays bounded whatever the
message ids do.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from .events import Context, Event, Failure, HandshakeFailure

Key = tuple[str, str]  # (thread, message id)


@dataclass
class _Pending:
    failure: HandshakeFailure
    line: int
    since: float  # wall clock (monotonic) when the failure was read


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
        self.unpaired = 0
        self.orphans = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else 0.0

    def feed(self, event: Event, line: int) -> list[Failure]:
        """Take the event read at ``line``; return the failures it closes."""
        closed = self.advance(line - 1)
        key = (event.thread, event.context.message_id)
        waiting = self._pending.pop(key, None)
        if isinstance(event, HandshakeFailure):
            if waiting is not None:
                closed.append(self._unpaired(waiting))
            self._pending[key] = _Pending(event, line, self._now())
        elif waiting is not None:
            closed.append(Failure.from_event(waiting.failure, event.key_alias))
        else:
            self.orphans += 1
        return closed

    def advance(self, line: int) -> list[Failure]:
        """All lines up to ``line`` have been read: close the windows that have passed."""
        closed: list[Failure] = []
        now = self._now()
        while self._pending:
            oldest = next(iter(self._pending.values()))
            by_lines = line - oldest.line >= self.window_lines
            by_time = self.window_seconds is not None and now - oldest.since >= self.window_seconds
            if not (by_lines or by_time):
                break
            self._pending.popitem(last=False)
            closed.append(self._unpaired(oldest))
        return closed

    def close_all(self) -> list[Failure]:
        """End of input: every window closes."""
        closed = [self._unpaired(p) for p in self._pending.values()]
        self._pending.clear()
        return closed

    def _unpaired(self, pending: _Pending) -> Failure:
        self.unpaired += 1
        return Failure.from_event(pending.failure, None)

    def snapshot(self) -> dict[str, Any]:
        """The open pairings and counts, for the checkpoint (plain JSON types)."""
        return {
            "unpaired": self.unpaired,
            "orphans": self.orphans,
            "pending": [
                {"line": p.line, **p.failure._asdict(), "context": p.failure.context._asdict()}
                for p in self._pending.values()
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what ``snapshot`` saved; open windows restart their wall-time clock now."""
        self.unpaired = int(state.get("unpaired", 0))
        self.orphans = int(state.get("orphans", 0))
        self._pending.clear()
        now = self._now()
        for item in state.get("pending", []):
            failure = HandshakeFailure(
                timestamp=float(item["timestamp"]),
                context=Context(**item["context"]),
                thread=str(item["thread"]),
                target=str(item["target"]),
                reason=str(item["reason"]),
            )
            key = (failure.thread, failure.context.message_id)
            self._pending[key] = _Pending(failure, int(item["line"]), now)
