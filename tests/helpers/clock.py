"""The tests' one fake clock."""

from __future__ import annotations


class FakeClock:
    """A clock that moves only when the test says so (``clock.now = …``, ``advance``), or when the
    code under test sleeps on it (``sleep``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    sleep = advance
