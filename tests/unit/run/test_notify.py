"""The systemd notify protocol, against a datagram socket the test owns."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from apigee_tls_exporter.run.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket standing in for systemd, and its $NOTIFY_SOCKET value."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5.0)  # a deadline for recv, not a sleep
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    """One datagram, split into its assignments."""
    return sock.recv(4096).decode("utf-8").split("\n")


def test_ready_sends_ready_1(listener: tuple[socket.socket, str]) -> None:
    """ready() sends READY=1 to the socket named in $NOTIFY_SOCKET."""
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})

    assert notifier.ready() is True
    assert receive(sock) == ["READY=1"]


def test_ready_with_status_is_one_datagram(listener: tuple[socket.socket, str]) -> None:
    """ready(status) sends READY=1 and STATUS= together, in one datagram."""
    sock, path = listener
    Notifier({"NOTIFY_SOCKET": path}).ready("following 1 file")

    assert receive(sock) == ["READY=1", "STATUS=following 1 file"]


def test_status_newlines_cannot_inject_fields(listener: tuple[socket.socket, str]) -> None:
    """A newline in a status text is flattened, so it cannot smuggle in another assignment."""
    sock, path = listener
    Notifier({"NOTIFY_SOCKET": path}).status("bad\nREADY=1")

    assert receive(sock) == ["STATUS=bad READY=1"]


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    """reloading() sends RELOADING=1 with MONOTONIC_USEC from the injected monotonic clock."""
    sock, path = listener
    Notifier({"NOTIFY_SOCKET": path}, monotonic_ns=lambda: 12_345_678_999).reloading()

    assert receive(sock) == ["RELOADING=1", "MONOTONIC_USEC=12345678"]


def test_reloading_uses_the_real_monotonic_clock_by_default(
    listener: tuple[socket.socket, str],
) -> None:
    """By default MONOTONIC_USEC is CLOCK_MONOTONIC at the time of sending, in microseconds."""
    sock, path = listener
    before = time.monotonic_ns() // 1000
    Notifier({"NOTIFY_SOCKET": path}).reloading()
    after = time.monotonic_ns() // 1000

    fields = receive(sock)
    assert fields[0] == "RELOADING=1"
    usec = int(fields[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= after


def test_lifecycle_arrives_in_order(listener: tuple[socket.socket, str]) -> None:
    """A start, a watchdog ping, a reload and a stop arrive as separate datagrams, in order."""
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path}, monotonic_ns=lambda: 5_000_000)

    notifier.ready("started")
    notifier.watchdog()
    notifier.status("1 file, 10 lines/s, 0 failures")
    notifier.reloading()
    notifier.ready()
    notifier.stopping()

    received = [receive(sock) for _ in range(6)]
    assert received == [
        ["READY=1", "STATUS=started"],
        ["WATCHDOG=1"],
        ["STATUS=1 file, 10 lines/s, 0 failures"],
        ["RELOADING=1", "MONOTONIC_USEC=5000"],
        ["READY=1"],
        ["STOPPING=1"],
    ]


def test_abstract_socket_name() -> None:
    """A $NOTIFY_SOCKET starting with @ names an abstract socket."""
    name = f"apigee-tls-exporter-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5.0)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).stopping() is True
        assert receive(sock) == ["STOPPING=1"]
    finally:
        sock.close()


def test_no_notify_socket_is_a_no_op() -> None:
    """Without $NOTIFY_SOCKET every call returns False and nothing is sent."""
    notifier = Notifier({})

    assert notifier.enabled is False
    assert [
        notifier.ready(),
        notifier.status("x"),
        notifier.watchdog(),
        notifier.reloading(),
        notifier.stopping(),
    ] == [False] * 5


def test_invalid_notify_socket_is_ignored() -> None:
    """A $NOTIFY_SOCKET that is neither a path nor @name disables notifications."""
    assert Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled is False


def test_vanished_socket_returns_false_without_raising(tmp_path: Path) -> None:
    """A send to a socket that no longer exists returns False instead of raising."""
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})

    assert notifier.enabled is True
    assert notifier.watchdog() is False


def test_uses_os_environ_by_default(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an explicit mapping the Notifier reads $NOTIFY_SOCKET from the process."""
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)

    Notifier().watchdog()

    assert receive(sock) == ["WATCHDOG=1"]


def test_watchdog_interval_from_watchdog_usec() -> None:
    """$WATCHDOG_USEC with a matching (or absent) $WATCHDOG_PID gives the interval in seconds."""
    pid = str(os.getpid())

    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}).watchdog_interval() == 30.0
    assert Notifier({"WATCHDOG_USEC": "500000"}).watchdog_interval() == 0.5


def test_watchdog_interval_none_when_not_for_us() -> None:
    """No watchdog when unset, zero, malformed, or when $WATCHDOG_PID names another process."""
    other_pid = str(os.getpid() + 1)

    assert [
        Notifier({}).watchdog_interval(),
        Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval(),
        Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval(),
        Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": other_pid}).watchdog_interval(),
        Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}).watchdog_interval(),
    ] == [None, None, None, None, None]
