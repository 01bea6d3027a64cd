"""The process collector (``process_*`` metrics), working under systemd's ``ProcSubset=pid``."""

from __future__ import annotations

import time

from prometheus_client import ProcessCollector

__all__ = ["BootTimeProcessCollector"]


class BootTimeProcessCollector(ProcessCollector):
    """prometheus_client's ProcessCollector, working without /proc/stat.

    The stock collector reads the boot time from /proc/stat and exports nothing at all when it
    cannot; under the unit's ``ProcSubset=pid`` only per-process files are visible. The boot
    time is the wall clock minus CLOCK_BOOTTIME, the clock /proc/<pid>/stat start times count in.
    """

    def _boot_time(self) -> float:
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
