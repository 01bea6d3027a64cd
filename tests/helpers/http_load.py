"""Hostile HTTP clients for the server's load tests, run as a separate process (so that their CPU
and GIL are not the server's): ``python http_load.py KIND --port P --clients N --seconds S``.

Kinds (loopback only; every client from its own 127.0.0.x source address when ``--spread``):
- ``slowloris``: each client sends a request head that never ends, one byte a second, and
  reconnects when the server closes it.
- ``idle``: each client connects and sends nothing (on a TLS port: never starts the handshake),
  reconnecting when closed.
- ``wrong-password``: each client guesses: requests with a new wrong password each time, over TLS
  (``--ca``) or plain HTTP, one after the other on a kept-alive connection, reconnecting when
  closed.
- ``slow-reader``: each client asks for ``/metrics`` once (a small receive buffer) and never
  reads the answer.

Prints one line ``started N`` once every client is connected, then at the end
``requests R connections C`` (answers received, connections made). ``start_load`` runs it from a
test; ``timed_scrapes`` is the Prometheus side.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional


def source(index: int, spread: bool) -> Optional[tuple[str, int]]:
    """127.0.0.(2+index) when spreading over source addresses, else the default."""
    if not spread:
        return None
    return (f"127.0.{2 + index // 250}.{2 + index % 250}", 0)


def start_load(kind: str, port: int, clients: int, seconds: float, *extra: str) -> Any:
    """The hostile clients of tests/helpers/http_load.py in their own process, once all
    connected."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__)),
            kind,
            "--port",
            str(port),
            "--clients",
            str(clients),
            "--seconds",
            str(seconds),
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("started ")
    return proc


def timed_scrapes(
    scrape: Callable[[], int], count: int, every: float = 0.5
) -> list[tuple[int, float]]:
    """``count`` scrapes, one every ``every`` seconds (Prometheus-style): (status, seconds)."""
    results = []
    next_at = time.monotonic()
    for _ in range(count):
        started = time.monotonic()
        try:
            status = scrape()
        except OSError:
            status = 0
        results.append((status, time.monotonic() - started))
        next_at += every
        time.sleep(max(0.0, next_at - time.monotonic()))  # the scrape interval
    return results


class Counts:
    requests = 0
    connections = 0


async def slowloris(port: int, index: int, spread: bool, until: float, counts: Counts) -> None:
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: "
    while time.monotonic() < until:
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=source(index, spread)
            )
        except OSError:
            await asyncio.sleep(0.5)
            continue
        counts.connections += 1
        sent = 0
        try:
            while time.monotonic() < until:
                writer.write(head[sent : sent + 1] if sent < len(head) else b"a")
                await writer.drain()
                sent += 1
                await asyncio.sleep(1.0)
        except OSError:
            pass  # closed by the server: come back
        finally:
            writer.close()


async def idle(port: int, index: int, spread: bool, until: float, counts: Counts) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=source(index, spread)
            )
        except OSError:
            await asyncio.sleep(0.5)
            continue
        counts.connections += 1
        try:
            await asyncio.wait_for(reader.read(), max(0.0, until - time.monotonic()))
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()


async def wrong_password(
    port: int,
    index: int,
    spread: bool,
    until: float,
    counts: Counts,
    context: Optional[ssl.SSLContext],
) -> None:
    guesses = 0

    def request() -> bytes:
        nonlocal guesses
        guesses += 1
        token = base64.b64encode(f"prometheus:wrong-{index}-{guesses}".encode()).decode()
        return f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n".encode()

    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=context,
                server_hostname="127.0.0.1" if context else None,
                local_addr=source(index, spread),
            )
        except (OSError, ssl.SSLError):
            await asyncio.sleep(0.2)
            continue
        counts.connections += 1
        try:
            while time.monotonic() < until:
                writer.write(request())
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                counts.requests += 1
                if b"connection: close" in head.lower():
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def slow_reader(port: int, index: int, spread: bool, until: float, counts: Counts) -> None:
    """Asks once and never reads: the answer stays in the server's buffers (or is cut off)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        if spread:
            sock.bind(source(index, spread) or ("127.0.0.1", 0))
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        _, writer = await asyncio.open_connection(sock=sock)
    except OSError:
        sock.close()
        return
    counts.connections += 1
    writer.transport.pause_reading()  # type: ignore[attr-defined]
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        await asyncio.sleep(max(0.0, until - time.monotonic()))
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    until = time.monotonic() + args.seconds
    counts = Counts()
    context = None
    if args.ca:
        context = ssl.create_default_context(cafile=args.ca)
    tasks = []
    for i in range(args.clients):
        if args.kind == "slowloris":
            coro = slowloris(args.port, i, args.spread, until, counts)
        elif args.kind == "idle":
            coro = idle(args.port, i, args.spread, until, counts)
        elif args.kind == "slow-reader":
            coro = slow_reader(args.port, i, args.spread, until, counts)
        else:
            coro = wrong_password(args.port, i, args.spread, until, counts, context)
        tasks.append(asyncio.ensure_future(coro))
    while counts.connections < args.clients and time.monotonic() < until:
        await asyncio.sleep(0.05)
    print(f"started {counts.connections}", flush=True)
    await asyncio.gather(*tasks)
    print(f"requests {counts.requests} connections {counts.connections}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["slowloris", "idle", "wrong-password", "slow-reader"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--spread", action="store_true")
    parser.add_argument("--ca")
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    except (ImportError, ValueError, OSError):
        pass
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
