"""Finding the files of one log: the path and the names its rotated files may have, and a look at
each (``logfile.look``: identity hint and first bytes). Nothing here reads a file's content or
decides what is read; the follower does, by content (``follower``, ``ledger``). Kept apart as
Vector keeps ``file_server`` (finding) apart from ``file_watcher`` (reading one file).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Optional, Union

from .logfile import Look, look


def _beside(directory: str, name: str) -> list[str]:
    e = glob.escape
    stem, ext = os.path.splitext(name)
    found = [os.path.join(e(directory), e(name) + ".*"), os.path.join(e(directory), e(name) + "-*")]
    if ext:
        found += [os.path.join(e(directory), f"{e(stem)}{sep}*{e(ext)}*") for sep in (".", "-")]
    return found


def rotated_globs(path: str, extra: Union[str, Sequence[str], None] = None) -> list[str]:
    """Where the rotated files of ``path`` may be: ``<name>.*`` and ``<name>-*`` (logrotate, also
    ``dateext``), ``<stem>.*.<ext>*`` and ``<stem>-*.<ext>*`` (logback) beside the log; and
    ``extra``: more globs, or directories (logrotate ``olddir``) searched for the same names."""
    directory, name = os.path.split(os.path.abspath(path))
    globs = _beside(directory, name)
    real = os.path.realpath(path)
    if real != os.path.abspath(path):  # a link: its target's rotated files are beside the target
        globs += _beside(*os.path.split(real))
    for more in [extra] if isinstance(extra, str) else list(extra or []):
        if more.endswith("/") or os.path.isdir(more):
            globs += _beside(os.path.abspath(more), name)
        else:
            globs.append(os.path.abspath(os.path.join(directory, more)))
    return list(dict.fromkeys(globs))


class Discovery:
    """The files of the log at ``path``: ``here()`` looks at the path, ``rotated()`` at every
    rotated file (not the path itself), each time anew."""

    def __init__(self, path: str, rotated: Union[str, Sequence[str], None] = None) -> None:
        self.path = path
        self.globs = rotated_globs(path, rotated)
        absolute = os.path.abspath(path)
        self._itself = {absolute, path, os.path.realpath(absolute)}

    def here(self) -> Optional[Look]:
        return look(self.path)

    def names(self) -> set[str]:
        return {n for g in self.globs for n in glob.glob(g)} - self._itself

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """The rotated names with each one's inode and size: what changes when a rotation or a
        compressor does (a stat each, nothing opened)."""
        found = []
        for name in sorted(self.names()):
            try:
                st = os.stat(name)
            except OSError:
                continue
            found.append((name, st.st_ino, st.st_size))
        return tuple(found)

    def inodes(self) -> dict[tuple[int, int], int]:
        """The device and inode of the path and of every rotated name, empty files too, each
        with its modification time."""
        found = {}
        for name in [self.path, *self.names()]:
            try:
                st = os.stat(name)
            except OSError:
                continue
            found[(st.st_dev, st.st_ino)] = st.st_mtime_ns
        return found

    def rotated(self) -> list[Look]:
        return [p for p in map(look, sorted(self.names())) if p is not None]
