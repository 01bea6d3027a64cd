"""Which lines of a buffer hold one of a few literals: the mechanism of the parser's prefilter;
and which compiled parts this process uses.

``parse`` says *what* a candidate line holds (its markers); this module finds those lines fast.
Two implementations give the same lines, in the same order:

- ``ahocorasick_rs`` (a dependency, with binary wheels for manylinux x86_64 and aarch64): one pass
  over the bytes for every literal at once, in compiled code (SIMD).
- pure Python when it cannot be imported: one ``find`` pass (C speed) per group of literals that
  share a prefix (``handshakeFailed`` and ``handshakeTimeout`` are one search for ``handshake``,
  then a check of what follows).

``scan`` inflates gzip files with ``isal`` (also a dependency), zlib otherwise. Whether both
compiled parts are in use is ``accelerated()``, exported as ``apigee_tls_build_info``'s
``compiled`` label; one that could not be imported is said once in the log (``say_fallback``).

``APIGEE_TLS_EXPORTER_PURE_PYTHON=1`` in the environment turns every compiled part off, to compare
or to rule them out.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

Buffer = Union[bytes, bytearray]
PURE_ENV = "APIGEE_TLS_EXPORTER_PURE_PYTHON"
# The compiled parts: name -> the module imported to use it.
COMPILED = {"ahocorasick_rs": "ahocorasick_rs", "isal": "isal.isal_zlib"}
_MIN_SHARED_PREFIX = 4  # shorter shared prefixes find too many false hits to be worth a group
_log = logging.getLogger("apigee_tls_exporter")  # the CLI's structlog set-up renders it


def pure_python() -> bool:
    """True when the environment asks for no compiled parts."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


@functools.cache
def compiled_parts() -> dict[str, Optional[str]]:
    """Each compiled part -> None when this process uses it, else why not (imported once)."""
    parts: dict[str, Optional[str]] = {}
    for name, module in COMPILED.items():
        if pure_python():
            parts[name] = f"{PURE_ENV} is set"
            continue
        try:
            importlib.import_module(module)
        except ImportError as err:  # a platform without a wheel, a broken install
            parts[name] = f"cannot import {module}: {err}"
        else:
            parts[name] = None
    return parts


@functools.cache
def say_fallback() -> None:
    """Says once, as a warning, which compiled parts could not be imported (none when the
    environment turned them off). Called where the fallback is first used: ``run`` has set up
    its log by then; ``scan`` calls it before it starts its workers, which inherit the "once"."""
    if pure_python():
        return
    failed = [f"{name} ({why})" for name, why in compiled_parts().items() if why]
    if failed:
        _log.warning("compiled parts unavailable, using pure python: %s", "; ".join(failed))


def accelerated() -> bool:
    """Whether every compiled part is in use."""
    return not any(compiled_parts().values())


def _automaton(literals: Sequence[bytes]) -> Any:
    library: Any = importlib.import_module("ahocorasick_rs")
    # Leftmost-first: the automaton then runs its SIMD prefilter, which the standard match kind
    # turns off (4x slower with five literals, measured); which literal of a line matched does
    # not matter, only where the first one is.
    return library.BytesAhoCorasick(list(literals), matchkind=library.MATCHKIND_LEFTMOST_FIRST)


def _groups(literals: Sequence[bytes]) -> list[tuple[bytes, Optional[tuple[bytes, ...]]]]:
    """Literals -> (needle, what must follow it or None for anything), one search per needle."""
    groups: list[list[bytes]] = []
    for literal in sorted(set(literals)):
        if groups and len(_shared(groups[-1][0], literal)) >= _MIN_SHARED_PREFIX:
            groups[-1].append(literal)
        else:
            groups.append([literal])
    out: list[tuple[bytes, Optional[tuple[bytes, ...]]]] = []
    for group in groups:
        needle = group[0]
        for literal in group[1:]:
            needle = _shared(needle, literal)
        rests = tuple(literal[len(needle) :] for literal in group)
        out.append((needle, None if b"" in rests else rests))
    return out


def _members(
    needle: bytes, follows: Optional[tuple[bytes, ...]], literals: Sequence[bytes]
) -> set[bytes]:
    """The literals that the search for ``needle`` (then ``follows``) finds."""
    if follows is None:
        return {x for x in literals if x.startswith(needle)}
    return {needle + rest for rest in follows}


def _shared(a: bytes, b: bytes) -> bytes:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


_INDENTS = (ord(" "), ord("\t"))


class LineFinder:
    """Finds the lines that hold any of ``literals`` (none may hold a newline).

    ``accelerate``: None uses the compiled search when ``compiled_parts`` does (decided at the
    first search, not when built: the parser builds one at import); False never; True requires it
    (ImportError when it cannot be imported).

    ``not_indented``: literals (of ``literals``) that find a line only when it does not start with
    a space or a tab: an indented line (a stack frame) holding none of the others is left out,
    before it is copied. (No literal may overlap another: each occurrence of each is seen.)
    """

    def __init__(
        self,
        literals: Sequence[bytes],
        accelerate: Optional[bool] = None,
        not_indented: Sequence[bytes] = (),
    ) -> None:
        if not literals or any(not x or b"\n" in x for x in literals):
            raise ValueError("literals must be non-empty and hold no newline")
        if not set(not_indented) <= set(literals):
            raise ValueError("not_indented must be literals")
        self.literals = tuple(literals)
        self._needles = _groups(self.literals)
        # the literal indexes of the compiled search, and the needles of the pure one, that find
        # an indented line only with another
        self._weak = frozenset(i for i, x in enumerate(self.literals) if x in not_indented)
        self._weak_needles = frozenset(
            needle
            for needle, follows in self._needles
            if _members(needle, follows, self.literals) <= set(not_indented)
        )
        if any(
            _members(needle, follows, self.literals) & set(not_indented)
            and needle not in self._weak_needles
            for needle, follows in self._needles
        ):
            raise ValueError("a pure-Python needle mixes not_indented literals and others")
        self._fast: Optional[Any] = None
        self._decided = accelerate is not None
        if accelerate:
            self._fast = _automaton(self.literals)

    @property
    def accelerated(self) -> bool:
        self._decide()
        return self._fast is not None

    def _decide(self) -> None:
        if not self._decided:
            self._decided = True
            say_fallback()
            if compiled_parts()["ahocorasick_rs"] is None:
                self._fast = _automaton(self.literals)

    def __call__(
        self, buf: Buffer, start: int = 0, end: Optional[int] = None
    ) -> Iterator[tuple[int, bytes]]:
        """The lines of ``buf[start:end]`` holding a literal, as (offset, line without newline).

        The range holds whole lines. Each line is yielded once, in order, however many literals
        it holds.
        """
        end = len(buf) if end is None else end
        if not self._decided:
            self._decide()
        if self._fast is not None:
            return self._accelerated(buf, start, end)
        return self._pure(buf, start, end)

    def _accelerated(self, buf: Buffer, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        with memoryview(buf) as view, view[start:end] as part:
            hits = self._fast.find_matches_as_indexes(part)  # type: ignore[union-attr]
        weak = self._weak
        line_end = begin = -1
        keep = False  # whether the line at `begin` is yielded
        for index, offset, _ in hits:
            at = start + offset
            if at < line_end:  # another literal of the same line
                keep = keep or index not in weak
                continue
            if keep:
                yield begin, bytes(buf[begin:line_end])
            begin = buf.rfind(b"\n", start, at) + 1 or start
            newline = buf.find(b"\n", at, end)
            line_end = newline if newline >= 0 else end
            keep = index not in weak or buf[begin] not in _INDENTS
        if keep:
            yield begin, bytes(buf[begin:line_end])

    def _pure(self, buf: Buffer, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        starts: set[int] = set()
        for needle, follows in self._needles:
            weak = needle in self._weak_needles
            at = buf.find(needle, start, end)
            while at >= 0:
                if follows is not None and not buf.startswith(follows, at + len(needle)):
                    at = buf.find(needle, at + 1, end)
                    continue
                begin = buf.rfind(b"\n", start, at) + 1 or start
                if not weak or buf[begin] not in _INDENTS:
                    starts.add(begin)
                newline = buf.find(b"\n", at, end)
                if newline < 0:
                    break
                at = buf.find(needle, newline, end)
        for begin in sorted(starts):
            newline = buf.find(b"\n", begin, end)
            yield begin, bytes(buf[begin : newline if newline >= 0 else end])
