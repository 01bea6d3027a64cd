"""What the stages count, as plain values: failures by label set, each file's health, pairing.

Owned by the stages (``FailureStore`` by the daemon or a scan, ``FileStats`` by the follower, the
pairing counts by the correlators), so that a checkpoint can save and restore them exactly, and
free of the Prometheus client, which ``scan`` loads only to print its result; ``metrics`` turns
them into metric families at scrape time.
"""

from __future__ import annotations

import math
import threading
from typing import Union, cast

from pydantic import BaseModel, ConfigDict, StrictStr, model_validator

from ..records.events import Failure
from ..records.stats import Count

FAILURE_LABELS = ("org", "env", "api", "rev", "target", "reason", "key_alias")
LAST_LABELS = ("org", "env", "target", "reason", "key_alias")
OVERFLOW = ("other",) * len(FAILURE_LABELS)
# Where the last-failure gauge's labels are among the failure labels.
_LAST_POSITIONS = tuple(FAILURE_LABELS.index(name) for name in LAST_LABELS)
_N_LABELS = len(FAILURE_LABELS)

Row = list[Union[StrictStr, float]]  # label values, then the value


def _rows(rows: list[Row], width: int, what: str, *, counts: bool) -> list[Row]:
    for row in rows:
        labels, value = row[:-1], row[-1] if row else None
        if len(labels) != width or not all(isinstance(v, str) for v in labels):
            raise ValueError(f"{what}: a row is not {width} labels and a value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{what}: a value is not a number")
        if not math.isfinite(value) or (counts and value < 0):
            raise ValueError(f"{what}: impossible value {value!r}")
    return rows


class StoreState(BaseModel):
    """A ``FailureStore`` in the state file: one row per label set."""

    model_config = ConfigDict(extra="forbid")
    counts: list[Row]
    last: list[Row]
    overflow: Count

    @model_validator(mode="after")
    def _rows_fit(self) -> StoreState:
        _rows(self.counts, len(FAILURE_LABELS), "counts", counts=True)
        _rows(self.last, len(LAST_LABELS), "last", counts=False)
        return self


def failure_labels(failure: Failure) -> tuple[str, ...]:
    """The values of ``FAILURE_LABELS`` of a failure (its first fields, in that order)."""
    return cast("tuple[str, ...]", failure[:_N_LABELS])


def last_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    """The values of ``LAST_LABELS`` among the values of ``FAILURE_LABELS``."""
    return tuple(labels[i] for i in _LAST_POSITIONS)


class FailureStore:
    """Counts of failures by label set, bounded to ``max_series`` label sets.

    Past the bound a new label set is counted under one series whose labels are all ``other``, and
    ``overflow`` counts those failures. Series never expire.
    """

    def __init__(self, max_series: int = 5000) -> None:
        self.max_series = max_series
        self.counts: dict[tuple[str, ...], float] = {}
        self.last: dict[tuple[str, ...], float] = {}
        self.overflow = 0
        self._lock = threading.Lock()

    def record(self, failure: Failure) -> tuple[str, ...]:
        """Count one failure; return the label values it was counted under."""
        return self.add(failure_labels(failure), 1.0, failure.timestamp)

    def add(self, labels: tuple[str, ...], count: float, last: float) -> tuple[str, ...]:
        """Count ``count`` failures of one label set, the latest logged at ``last``; return the
        label values they were counted under (``OVERFLOW`` for a new label set past the bound)."""
        with self._lock:
            if labels not in self.counts and len(self.counts) >= self.max_series:
                labels = OVERFLOW
                self.overflow += int(count)
            self.counts[labels] = self.counts.get(labels, 0.0) + count
            short = last_labels(labels)
            self.last[short] = max(self.last.get(short, 0.0), last)
        return labels

    def precreate(self, labels: tuple[str, ...]) -> None:
        """Make a series exist at 0 so that its first failure is a step, not a new series."""
        with self._lock:
            self.counts.setdefault(labels, 0.0)

    def items(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return list(self.counts.items())

    def last_items(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return list(self.last.items())

    def total(self) -> float:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> StoreState:
        with self._lock:
            return StoreState(
                counts=[[*k, v] for k, v in self.counts.items()],
                last=[[*k, v] for k, v in self.last.items()],
                overflow=self.overflow,
            )

    def restore(self, state: StoreState) -> None:
        with self._lock:
            self.counts = {tuple(map(str, row[:-1])): float(row[-1]) for row in state.counts}
            self.last = {tuple(map(str, row[:-1])): float(row[-1]) for row in state.last}
            self.overflow = state.overflow
