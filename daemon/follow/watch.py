"""Wake the follower when a followed file is created, moved or deleted: watchdog's inotify
observer, or its polling observer where inotify is unavailable.

Appends are not watched. A logger that writes each record with its own write() makes thousands of
IN_MODIFY events a second, and watchdog turns each into Python objects: a third of a core at 2,000
lines/s, measured. The follower polls for appends on a short timer instead (``POLL_INTERVAL`` in
``app``), which costs next to nothing, bounds the latency, and means that a lost event (inotify
queue overflow) only delays a read: it never stalls.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

import structlog
from watchdog.events import (
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

log = structlog.get_logger()

# What wakes the follower at once: a rotation, a deletion, a file that appears.
LIFECYCLE = [FileCreatedEvent, FileMovedEvent, FileDeletedEvent]


class _Wake(FileSystemEventHandler):
    def __init__(self, paths: set[str], wake: threading.Event) -> None:
        self._paths = paths
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if os.fsdecode(path) in self._paths:
                self._wake.set()
                return


class Watcher:
    """Sets ``wake`` whenever one of ``paths`` is written, created, moved or deleted."""

    def __init__(self, paths: Iterable[str], wake: threading.Event) -> None:
        self._paths = {os.path.abspath(p) for p in paths}
        self._handler = _Wake(self._paths, wake)
        self._observer: Any = None
        self._watched: set[str] = set()

    def start(self) -> None:
        try:
            self._observer = Observer()
            self._observer.start()
        except OSError as err:
            log.warning("inotify unavailable, polling for changes", error=str(err))
            self._observer = PollingObserver(timeout=0.25)
            self._observer.start()
        self.refresh()

    def refresh(self) -> None:
        """Watch the directories that exist now (a missing one is retried at the next call)."""
        if self._observer is None:
            return
        for directory in {os.path.dirname(p) for p in self._paths} - self._watched:
            if not os.path.isdir(directory):
                continue
            try:
                self._observer.schedule(
                    self._handler, directory, recursive=False, event_filter=LIFECYCLE
                )
            except OSError as err:
                log.warning("cannot watch directory, polling it", path=directory, error=str(err))
                continue
            self._watched.add(directory)

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
