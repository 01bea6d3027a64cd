"""A Daemon driven step by step in the test process, on temporary logs, with fake clocks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from apigee_tls_exporter.config import Config, validate
from apigee_tls_exporter.demo.generator import TruthKey
from apigee_tls_exporter.run.app import Daemon
from prometheus_client import CollectorRegistry

from helpers.clock import FakeClock

Series = dict[tuple[str, ...], float]


class Node:
    """A Daemon on temporary logs and state file, with fake clocks, as ``run`` would build it."""

    def __init__(self, tmp: Path, logs: list[Path], *, from_beginning: bool = True) -> None:
        self.config: Config = validate(
            {
                "logs": [{"path": str(p)} for p in logs],
                "state_file": str(tmp / "state" / "state.json"),
                "from_beginning": from_beginning,
            }
        )
        self.clock = FakeClock(100.0)
        self.wall = FakeClock(1_800_000_000.0)
        self.daemon = Daemon(self.config, CollectorRegistry(), clock=self.clock, wall=self.wall)

    def series(self) -> Series:
        return {k: v for k, v in self.daemon.store.items() if v}

    def run_to_end(self) -> None:
        """Step until nothing is new, then let every pairing window pass."""
        while self.daemon.step():
            pass
        self.clock.now += 10
        self.daemon.step()


def write(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def as_series(truth: Counter[TruthKey]) -> Series:
    return {tuple(k): float(v) for k, v in truth.items()}
