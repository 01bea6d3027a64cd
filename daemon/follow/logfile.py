"""One log file read by content, plain or compressed: what the follower opens and looks at.

A file is known by what it holds, not by its name: ``head`` is its first bytes (at most
``HEAD_BYTES``; of the decompressed content for a compressed file). gzip, xz and bzip2 are told
by their first bytes (their magic), whatever the name says. A compressed file is read as a stream
that may still be growing (a compressor writing it): ``CompressedSource.read`` returns what can be
decoded so far and ``complete`` says whether the end of the stream was reached. A file in a
format that cannot be read here (zstd, lz4) is never taken for a plain log. Nothing here decides
what to read; the follower (``tail``) does, from the ledger (``ledger``).
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import stat as stat_mod
import zlib
from dataclasses import dataclass
from typing import Callable, Optional, Union

HEAD_BYTES = 1024
TAIL_BYTES = 128
RAW_CHUNK = 1 << 16  # compressed bytes read at a time from a .gz

Decompressor = Union["zlib._Decompress", lzma.LZMADecompressor, bz2.BZ2Decompressor]
GZIP_MAGIC = b"\x1f\x8b"
# The compressed formats read, by their first bytes; and those told but not read.
DECOMPRESSORS: dict[bytes, Callable[[], Decompressor]] = {
    GZIP_MAGIC: lambda: zlib.decompressobj(31),
    b"\xfd7zXZ\x00": lzma.LZMADecompressor,
    b"BZh": bz2.BZ2Decompressor,
}
UNREADABLE_MAGIC = (b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18")  # zstd, lz4
# Names of compressed files: an empty one is a compressor that has just started (waited for, as
# one whose start cannot be decoded yet); the name decides nothing else.
COMPRESSED_NAMES = (".gz", ".xz", ".bz2", ".zst", ".lz4")
# What a corrupt compressed stream raises.
DECODE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, lzma.LZMAError, EOFError, OSError)

Buffer = Union[bytearray, memoryview]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NotRegularFile(OSError):
    """The name is a FIFO, a directory, a socket or a device: never opened for reading."""


def kind_of(mode: int) -> str:
    for test, name in (
        (stat_mod.S_ISFIFO, "a FIFO"),
        (stat_mod.S_ISDIR, "a directory"),
        (stat_mod.S_ISSOCK, "a socket"),
        (stat_mod.S_ISCHR, "a character device"),
        (stat_mod.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(name: str) -> int:
    """A read-only descriptor of ``name``; ``NotRegularFile`` for anything but a regular file.

    Opened with ``O_NONBLOCK`` so that a FIFO never blocks the open; the type is checked on the
    descriptor, so a name replaced in between cannot slip through.
    """
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    mode = os.fstat(fd).st_mode
    if not stat_mod.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(f"{name} is {kind_of(mode)}")
    return fd


class PlainSource:
    """A plain file; its offset is the file offset."""

    compressed = False

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        st = os.fstat(fd)
        self.dev, self.ino = st.st_dev, st.st_ino
        self.offset = 0
        self.complete = False  # a plain file can always grow

    def read(self, buf: Buffer) -> int:
        """Read into ``buf`` at the offset; the number of bytes (0 at the end for now)."""
        n = os.preadv(self.fd, [buf], self.offset) if hasattr(os, "preadv") else self._pread(buf)
        self.offset += n
        return n

    def _pread(self, buf: Buffer) -> int:  # pragma: no cover - platforms without preadv
        data = os.pread(self.fd, len(buf), self.offset)
        buf[: len(data)] = data
        return len(data)

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset) if size > 0 else b""

    def head(self) -> bytes:
        """The first bytes read or passed (at most ``HEAD_BYTES``)."""
        return self.read_at(0, min(self.offset, HEAD_BYTES))

    def tail(self) -> bytes:
        """The bytes just before the offset (at most ``TAIL_BYTES``)."""
        n = min(self.offset, TAIL_BYTES)
        return self.read_at(self.offset - n, n)

    def seek(self, offset: int) -> bool:
        """Go to ``offset``; False when the file is shorter."""
        if os.fstat(self.fd).st_size < offset:
            return False
        self.offset = offset
        return True

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def nlink(self) -> int:
        return os.fstat(self.fd).st_nlink

    def dup(self) -> PlainSource:
        return PlainSource(self.name, os.dup(self.fd))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class CompressedSource:
    """A compressed file read as the content it holds, as far as it can be decoded now.

    A compressor may still be writing it: ``read`` then returns 0 and a later call goes on from
    there. ``complete`` is True once the stream ended (concatenated streams are read on). One of
    ``DECODE_ERRORS`` is raised for a corrupt file.
    """

    compressed = True

    def __init__(self, name: str, fd: int, magic: bytes) -> None:
        self.name = name
        self.fd = fd
        st = os.fstat(fd)
        self.dev, self.ino = st.st_dev, st.st_ino
        self.offset = 0  # of the content
        self.complete = False
        self._raw = 0  # compressed bytes consumed
        self._magic = magic
        self._new = DECOMPRESSORS[magic]
        self._d = self._new()
        self._input = b""
        self._head = b""
        self._last = b""

    def read(self, buf: Buffer) -> int:
        data = self._decode(len(buf))
        buf[: len(data)] = data
        return len(data)

    def _decode(self, size: int) -> bytes:
        while not self.complete:
            d = self._d
            if isinstance(d, (lzma.LZMADecompressor, bz2.BZ2Decompressor)) and not d.needs_input:
                out = d.decompress(b"", size)  # output it holds from input already given
            else:
                if not self._input:
                    self._input = os.pread(self.fd, RAW_CHUNK, self._raw)
                    self._raw += len(self._input)
                    if not self._input:
                        return b""  # nothing more for now
                out = d.decompress(self._input, size)
                # zlib keeps what it did not take; lzma and bz2 take it all into their buffer
                self._input = getattr(d, "unconsumed_tail", b"")
            if d.eof:
                self._next_member()
            if out:
                self.offset += len(out)
                if len(self._head) < HEAD_BYTES:
                    self._head += out[: HEAD_BYTES - len(self._head)]
                self._last = (self._last + out[-TAIL_BYTES:])[-TAIL_BYTES:]
                return out
        return b""

    def _next_member(self) -> None:
        rest = self._d.unused_data + self._input
        if not rest:
            rest = os.pread(self.fd, RAW_CHUNK, self._raw)
            self._raw += len(rest)
        if not rest.strip(b"\0"):
            self.complete = True  # the end (zero padding after it is tolerated, as gzip does)
            self._input = b""
        elif rest.startswith(self._magic[: len(rest)]):
            self._d = self._new()  # another stream follows (concatenated gzip, xz, bzip2)
            self._input = rest
        else:
            raise zlib.error("trailing garbage after the compressed stream")

    def head(self) -> bytes:
        return self._head

    def tail(self) -> bytes:
        return self._last

    def seek(self, offset: int) -> bool:
        """Decode up to ``offset`` (only forward); False when the content so far is shorter."""
        while self.offset < offset:
            if not self._decode(min(1 << 20, offset - self.offset)):
                return False
        return self.offset == offset

    def length(self) -> int:
        """Decode to the end of what is there; the content length so far."""
        while self._decode(1 << 20):
            pass
        return self.offset

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def nlink(self) -> int:
        return os.fstat(self.fd).st_nlink

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


Source = Union[PlainSource, CompressedSource]


def read_prefix(src: Source, n: Optional[int] = None) -> Optional[int]:
    """Read ``src`` from its start to ``n`` (to its end for now when None): the CRC-32 of those
    bytes, ``src`` left at ``n`` (its ``head()`` and ``tail()`` then those of the prefix); None
    when the content is shorter than ``n`` (for now). What tells two contents that begin alike
    apart: every byte of the prefix counts, not only the first ones."""
    crc = 0
    if isinstance(src, PlainSource):
        size = src.size()
        end = size if n is None else n
        if size < end:
            return None
        at = 0
        while at < end:
            data = src.read_at(at, min(1 << 20, end - at))
            if not data:
                return None
            crc = zlib.crc32(data, crc)
            at += len(data)
        src.offset = end
        return crc
    buf = bytearray(1 << 20)
    while n is None or src.offset < n:
        want = len(buf) if n is None else min(len(buf), n - src.offset)
        got = src.read(memoryview(buf)[:want])
        if not got:
            return crc if n is None else None
        crc = zlib.crc32(memoryview(buf)[:got], crc)
    return crc


class UnreadableFormat(OSError):
    """A compressed format this reader has no decoder for (zstd, lz4)."""


class NotYetTold(OSError):
    """All the file holds yet is the start of a compressed format's magic (a compressor wrote
    its first byte): plain or compressed cannot be told yet."""


def open_source(name: str) -> Source:
    """``name`` opened as plain or compressed content, told by its first bytes (not its name)."""
    fd = open_regular(name)
    try:
        start = os.pread(fd, 6, 0)
    except OSError:
        os.close(fd)
        raise
    for magic in DECOMPRESSORS:
        if start.startswith(magic):
            return CompressedSource(name, fd, magic)
    if start and any(len(start) < len(m) and m.startswith(start) for m in DECOMPRESSORS):
        os.close(fd)
        raise NotYetTold(f"{name} holds only the start of a compressed file yet")
    if start.startswith(UNREADABLE_MAGIC):
        os.close(fd)
        raise UnreadableFormat(f"{name} is compressed in a format that cannot be read here")
    return PlainSource(name, fd)


@dataclass(frozen=True)
class Look:
    """What a look at a file shows: its identity hint and the first bytes of its content.

    ``head`` is None for a compressed file whose first ``HEAD_BYTES`` cannot be decoded yet (a
    compressor is still writing it), since it cannot be told from the file it is a copy of.
    """

    name: str
    dev: int
    ino: int
    compressed: bool
    size: int  # of the file on disk
    mtime_ns: int  # a hint for the order of files read in a row, never for what is read
    head: Optional[bytes]


def look(name: str) -> Optional[Look]:
    """A look at ``name``; None when it is gone, unreadable, empty or not a regular file."""
    try:
        src = open_source(name)
    except NotYetTold:
        try:
            st = os.stat(name)
        except OSError:
            return None
        return Look(name, st.st_dev, st.st_ino, True, st.st_size, st.st_mtime_ns, None)
    except OSError:
        return None
    try:
        st = os.fstat(src.fd)
        size = st.st_size
        if size == 0:
            if name.endswith(COMPRESSED_NAMES):  # a compressor has just created it: wait for it
                return Look(name, src.dev, src.ino, True, 0, st.st_mtime_ns, None)
            return None
        if isinstance(src, PlainSource):
            head: Optional[bytes] = src.read_at(0, HEAD_BYTES)
        else:
            buf = bytearray(HEAD_BYTES)
            got = b""
            while len(got) < HEAD_BYTES:
                n = src.read(memoryview(buf)[: HEAD_BYTES - len(got)])
                if not n:
                    break
                got += bytes(buf[:n])
            if not got and src.complete:
                return None  # an empty content
            head = got if len(got) == HEAD_BYTES or src.complete else None
        return Look(name, src.dev, src.ino, src.compressed, size, st.st_mtime_ns, head)
    except DECODE_ERRORS:
        return None
    finally:
        src.close()
