"""A held-out-like MP ``system.log`` for ``make bench`` (issue 24): what real logs add to the
generator's records.

The generator's records (``daemon/demo/generator.py``, 1 % failure records) with, between them:

- long lines: a record line with a message body of 64 to 192 KiB (a logged payload), about one
  line in 450, which carries a few bytes that are not UTF-8;
- invalid UTF-8 in about one short line in 100;
- dense stack traces: about one record in 30 is an ERROR record with 40 to 120 frames, some of
  them frames of the TLS channel's ``handshakeFailed`` method (candidate lines that are no
  failure);

so that about 5 % of the lines are candidates (hold a marker), as on the held-out log of issue
24 (877 MB, 2 M lines, 1 % failures). The lines added between a failure and its SSLInfo line can
push a few past the pairing window, so the generator's truth is not this log's: ``make bench``
checks ``scan`` against the serial pure-Python scan of the same file instead.

Like ``write_log``, one generated block is written as many times as needed, each copy a day
later.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

from apigee_tls_exporter.demo.generator import LogGenerator
from apigee_tls_exporter.records.parse import MARKERS

LONG_EVERY = 450  # lines, on average, per long line
INVALID_EVERY = 100  # short lines, on average, per line with invalid UTF-8
TRACE_EVERY = 30  # records, on average, per dense stack trace
HANDSHAKE_FRAME_SHARE = 0.065  # of a dense trace's frames
HANDSHAKE_FRAME = (
    b"\tat com.apigee.protocol.http.io.SSLClientChannel$SSLHandshakeStateMachine."
    b"handshakeFailed(SSLClientChannel.java:%d) ~[http-1.0.0.jar:na]"
)
FRAMES = (
    b"\tat com.apigee.messaging.adaptors.http.flow.HTTPRequest.onException(HTTPRequest.java:%d)",
    b"\tat com.apigee.flow.execution.ExecutionContextImpl.resume(ExecutionContextImpl.java:%d)",
    b"\tat java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(Thread.java:%d)",
    b"\tat com.apigee.nio.handlers.NIOThread.run(NIOThread.java:%d) ~[nio-1.0.0.jar:na]",
)
INVALID = b" user-agent=\xff\xfe\xc3( cookie=\xed\xa0\x80"


@dataclass(frozen=True)
class HeldOutLog:
    path: str
    n_bytes: int
    n_lines: int
    n_candidates: int
    n_long: int
    copies: int


def _junk(rng: random.Random, size: int) -> bytes:
    """A logged payload: JSON-like text (it compresses about as well as a log does), a few bytes
    that are not UTF-8 in it, and no newline."""
    words = [b'"id"', b'"name"', b'"amount"', b'"currency"', b'"items"', b'"status"', b'"EUR"']
    words += [b'"accountNumber"', b'"description"', b"true", b"null", b"{", b"}", b"[", b"]"]
    parts: list[bytes] = []
    length = 0
    while length < size:
        part = rng.choice(words) + b":" + str(rng.randrange(10 ** rng.randint(1, 9))).encode()
        parts.append(part + b",")
        length += len(part) + 1
    data = bytearray(b"".join(parts)[:size])
    for _ in range(size // 4096):
        data[rng.randrange(size)] = rng.choice((0xFF, 0xFE, 0xC3, 0x80))
    return bytes(data)


def _block(seed: int, limit: int) -> tuple[bytes, int, int, int]:
    """About ``limit`` bytes of whole records: (data, lines, candidates, long lines)."""
    rng = random.Random(seed)
    gen = LogGenerator(seed, failure_fraction=0.01)
    pool = _junk(rng, 256 << 10)
    out: list[bytes] = []
    size = lines = candidates = long = 0

    def add(line: bytes) -> None:
        nonlocal size, lines, candidates
        out.append(line)
        size += len(line) + 1
        lines += 1
        if any(marker in line for marker in MARKERS):
            candidates += 1

    records = gen.records()
    while size < limit:
        record = [line.encode() for line in next(records)]
        stamp = record[0][:23]
        before = lines
        for line in record:
            if rng.random() < 1 / INVALID_EVERY and not any(m in line for m in MARKERS):
                line += INVALID
            add(line)
        if rng.random() < 1 / TRACE_EVERY:
            add(
                stamp + b" NIOThread@1 ERROR HTTP.CLIENT - HTTPClient$Context.onException() : "
                b"java.io.IOException: Connection reset by peer"
            )
            for _ in range(rng.randint(40, 120)):
                frame = (
                    HANDSHAKE_FRAME if rng.random() < HANDSHAKE_FRAME_SHARE else rng.choice(FRAMES)
                )
                add(frame % rng.randint(1, 2000))
        if rng.random() < (lines - before) / LONG_EVERY:
            n = rng.randint(64 << 10, 192 << 10)
            at = rng.randrange(len(pool) - n) if n < len(pool) else 0
            add(
                stamp
                + b" NIOThread@3 INFO  HTTP.SERVICE - MessageLogger.log() : body="
                + pool[at : at + n]
            )
            long += 1
    tail = [line.encode() for line in gen.drain()]
    for line in tail:
        add(line)
    return b"\n".join(out) + b"\n", lines, candidates, long


def write_heldout(
    path: Path, n_bytes: int, seed: int = 2026, block_bytes: int = 64 << 20
) -> HeldOutLog:
    """Writes a held-out-like log of at least ``n_bytes``."""
    data, lines, candidates, long = _block(seed, min(n_bytes, block_bytes))
    start = LogGenerator(seed)._start.date()
    marker = b"\n" + start.isoformat().encode() + b" "
    copies = -(-n_bytes // len(data))
    with open(path, "wb") as out:
        for i in range(copies):
            if i == 0:
                out.write(data)
            else:
                moved = b"\n" + (start + dt.timedelta(days=i)).isoformat().encode() + b" "
                out.write((b"\n" + data).replace(marker, moved)[1:])
    return HeldOutLog(
        str(path), len(data) * copies, lines * copies, candidates * copies, long * copies, copies
    )


if __name__ == "__main__":
    import sys

    log = write_heldout(Path(sys.argv[1]), int(float(sys.argv[2]) * 1e6))
    print(log)
