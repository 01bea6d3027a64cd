"""watch: the follower is woken by rotations, also where inotify is unavailable."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from apigee_tls_exporter.follow import watch
from helpers.support import wait_for
from watchdog.events import FileCreatedEvent, FileMovedEvent


def test_only_the_followed_file_wakes_the_follower(tmp_path: Path) -> None:
    """Events for other files of the directory are ignored; a move of the followed file, from
    or to its name, wakes the follower."""
    log = str(tmp_path / "system.log")
    wake = threading.Event()
    handler = watch._Wake({log}, wake)
    handler.dispatch(FileCreatedEvent(str(tmp_path / "gc.log")))
    handler.dispatch(FileMovedEvent(str(tmp_path / "gc.log"), str(tmp_path / "gc.log.1")))
    assert not wake.is_set()
    handler.dispatch(FileMovedEvent(log, log + ".1"))
    assert wake.is_set()
    wake.clear()
    handler.dispatch(FileMovedEvent(str(tmp_path / "system.log.new"), log))
    assert wake.is_set()


class _NoInotify:
    """watchdog's inotify observer where no inotify instance is left."""

    def start(self) -> None:
        raise OSError(24, "inotify instance limit reached")


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "no-inotify"])
def test_a_created_log_wakes_the_follower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inotify: bool
) -> None:
    """Creating (or rotating in) the followed file sets the wake event; where inotify cannot
    start, watchdog's polling observer takes over."""
    if not inotify:
        monkeypatch.setattr(watch, "Observer", _NoInotify)
    wake = threading.Event()
    watcher = watch.Watcher([str(tmp_path / "system.log")], wake)
    watcher.start()
    try:
        (tmp_path / "system.log").write_text("x\n")
        assert wait_for(wake.is_set, 10, "the wake event")
    finally:
        watcher.close()
