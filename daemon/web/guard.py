"""Basic auth under attack: who gets a bcrypt check, when, and how long a failing source waits.

A credential verified recently is accepted without bcrypt, and one refused recently is refused
without it (``BasicAuth.cached``). Every other request is checked with bcrypt: a source that keeps
failing is never refused unchecked, because the right password may come from the same address
as the guesses (a scraper beside a guesser, after a restart or a SIGHUP, with no cached login).
What a failing source gets instead:

- its checks queue behind those of sources with fewer failures (``PrioritySlots``; a check
  refused for want of room counts as a failure; among equals the latest goes first), so that a
  flood of wrong passwords from many addresses does not stand in front of a clean login;
- at most ``PER_SOURCE_PENDING`` of its checks wait or run at a time (more are refused without
  bcrypt, ``auth_busy``, after ``BUSY_DELAY``);
- its 401 answers are delayed (``SourceLimiter.delay``: after ``threshold`` consecutive failures,
  1 s doubling up to 8 s), which slows a guesser that waits for each answer; a connection waiting
  so is evictable like an idle one.

The bcrypt work is bounded: ``BCRYPT_WORKERS`` threads for sources that have failed, and one
more (``CLEAN_WORKERS``) kept for sources that have not, so that a clean login never waits for a
flood's check to finish. In each lane no more checks wait than its threads can finish within
``AUTH_WAIT`` (from the measured cost of one check): when the queue is full, a newcomer takes the
place of the waiting check with the most failures (the oldest among equals) unless all have
fewer than its own; the one left out is answered 401 (``auth_busy``, after ``BUSY_DELAY``, so
that a flood does not spin); a check that waited ``AUTH_WAIT`` anyway gives up the same way. So
a right login from a clean address is answered within ``AUTH_WAIT`` plus one check, under
Prometheus's default 10 s scrape timeout, however many addresses guess.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import ipaddress
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from .webconfig import BasicAuth

__all__ = [
    "AUTH_WAIT",
    "BCRYPT_WORKERS",
    "Guard",
    "PrioritySlots",
    "SourceLimiter",
    "Verdict",
    "source_of",
]

AUTH_WAIT = 7.0  # seconds a login may wait for bcrypt: under Prometheus's 10 s scrape timeout
BCRYPT_WORKERS = 2  # bcrypt checks at once of failing sources: a flood takes at most 2 CPUs
CLEAN_WORKERS = 1  # and of sources without a failure (a new address counts once)
PER_SOURCE_PENDING = 4  # bcrypt checks of one source address waiting or running
BUSY_DELAY = 1.0  # seconds before a 401 for want of room in the queue: a flood slows itself


def source_of(peer: Any) -> str:
    """The address a client is limited by: IPv4 as is, IPv6 by its /64 (one host's share)."""
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except (ValueError, TypeError, IndexError):
        return str(peer)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass
class _Source:
    failures: int = 0  # consecutive failed or refused logins
    pending: int = 0  # checks waiting or running


class SourceLimiter:
    """Consecutive failed logins per source address; a success clears the source.

    After ``threshold`` failures the source's 401 answers wait ``backoff`` seconds, doubling with
    each further ``threshold`` failures up to ``max_backoff``. At most ``max_sources`` sources
    are remembered (least recently seen forgotten first), so memory stays bounded whatever the
    number of addresses."""

    def __init__(
        self,
        threshold: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 8.0,
        max_sources: int = 4096,
        max_pending: int = PER_SOURCE_PENDING,
    ) -> None:
        self.threshold = threshold
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_sources = max_sources
        self.max_pending = max_pending
        self._sources: collections.OrderedDict[str, _Source] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def priority(self, source: str) -> int:
        """Lower goes first: the consecutive failures of this source."""
        entry = self._sources.get(source)
        return 0 if entry is None else entry.failures

    def delay(self, source: str) -> float:
        """Seconds the 401 to this source waits: 0 below ``threshold`` failures."""
        failures = self.priority(source)
        if failures < self.threshold:
            return 0.0
        return float(min(self.backoff * 2 ** (failures // self.threshold - 1), self.max_backoff))

    def begin(self, source: str) -> bool:
        """A check of this source starts waiting; False (do not check) when it has too many."""
        entry = self._entry(source)
        if entry.pending >= self.max_pending:
            return False
        entry.pending += 1
        return True

    def end(self, source: str, ok: Optional[bool]) -> None:
        """The check ended: ok True/False, or None when it was abandoned."""
        entry = self._sources.get(source)
        if entry is None:
            return
        entry.pending = max(0, entry.pending - 1)
        if ok is True:
            entry.failures = 0
        elif ok is False:
            entry.failures += 1

    def refused(self, source: str) -> None:
        """A check of this source was refused for want of room: it counts as a failure, so
        that a source that keeps the queue full goes behind those that do not."""
        self._entry(source).failures += 1

    def _entry(self, source: str) -> _Source:
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source()
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        return entry


class PrioritySlots:
    """``size`` slots handed out lowest priority first, the latest first among equals (a login
    arriving during a flood's first burst is not queued behind all of it; a check left waiting
    gives up at ``AUTH_WAIT``), for bcrypt.

    At most ``max_waiting`` wait: a newcomer to a full queue takes the place of the waiting one
    with the highest priority (the oldest among equals) unless all of them have a lower
    priority than its own, when it is refused. ``acquire`` says whether the slot was given."""

    def __init__(self, size: int, max_waiting: int = 64) -> None:
        self.max_waiting = max_waiting
        self._free = size
        self._waiting: list[tuple[int, int, asyncio.Future[bool]]] = []  # (priority, -order, ..)
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def acquire(self, priority: int) -> bool:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (priority, -next(self._order), future)
        if len(self._waiting) >= self.max_waiting:
            worst = max(self._waiting, key=lambda e: (e[0], -e[1]))
            if worst[0] < priority:
                return False
            self._waiting.remove(worst)
            heapq.heapify(self._waiting)
            worst[2].set_result(False)
        heapq.heappush(self._waiting, entry)
        try:
            return await future
        except asyncio.CancelledError:
            if entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            elif future.done() and not future.cancelled() and future.result():
                self.release()  # handed over just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(True)
                return
        self._free += 1


class Verdict(NamedTuple):
    """What to answer a request's credentials: ``reason`` "" when they are right, else the
    rejected reason (``auth_failed``, ``auth_busy``); ``delay`` seconds before a 401."""

    reason: str
    delay: float = 0.0


class Guard:
    """The bcrypt queue, its threads and the failures per source; one per server."""

    def __init__(self, limiter: Optional[SourceLimiter] = None) -> None:
        self.limiter = limiter or SourceLimiter()
        # lanes: (slots, threads) for sources that failed, and for sources that have not
        self.failing = (PrioritySlots(BCRYPT_WORKERS), BCRYPT_WORKERS)
        self.clean = (PrioritySlots(CLEAN_WORKERS), CLEAN_WORKERS)
        self._pool: Optional[ThreadPoolExecutor] = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(
            BCRYPT_WORKERS + CLEAN_WORKERS, thread_name_prefix="http-bcrypt"
        )

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def check(self, auth: BasicAuth, header: Optional[str], source: str) -> Verdict:
        cached = auth.cached(header)
        if cached is True:
            return Verdict("")
        if cached is False:
            return Verdict("auth_failed", self.limiter.delay(source))
        if not self.limiter.begin(source):
            self.limiter.refused(source)
            return Verdict("auth_busy", BUSY_DELAY)
        priority = self.limiter.priority(source)
        slots, threads = self.clean if priority == 0 else self.failing
        # As many waiting checks as the lane's threads can finish within AUTH_WAIT.
        slots.max_waiting = max(1, int(AUTH_WAIT * threads / auth.check_seconds))
        ok: Optional[bool] = None
        try:
            try:
                granted = await asyncio.wait_for(slots.acquire(priority), AUTH_WAIT)
            except asyncio.TimeoutError:
                granted = False
            if not granted:
                self.limiter.refused(source)
                return Verdict("auth_busy", BUSY_DELAY)
            try:
                assert self._pool is not None
                loop = asyncio.get_running_loop()
                ok = await loop.run_in_executor(self._pool, auth.verify, header)
            finally:
                slots.release()
        finally:
            self.limiter.end(source, ok)
        if ok:
            return Verdict("")
        return Verdict("auth_failed", self.limiter.delay(source))
