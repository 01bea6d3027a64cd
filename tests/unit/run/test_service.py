"""The daemon as a service: SIGHUP reload, the systemd notify protocol, the web config at start."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from apigee_tls_exporter.demo.generator import LogGenerator
from helpers.support import EXPORTER, ExporterProcess, wait_for


def write_config(path: Path, log: Path, state: Path, extra: str = "") -> None:
    path.write_text(
        f"logs:\n  - path: {log}\nstate_file: {state}\nfrom_beginning: true\n"
        f"log_format: json\n{extra}"
    )


def test_sighup_reload_keeps_every_count(tmp_path: Path) -> None:
    """Reloads with a valid and with an invalid config while lines keep coming lose no failure."""
    gen = LogGenerator(seed=11)
    log, state, config = tmp_path / "system.log", tmp_path / "state.json", tmp_path / "c.yml"
    log.write_text(gen.text(2000))
    write_config(config, log, state)
    with ExporterProcess("--config", str(config)) as daemon:
        assert daemon.proc is not None
        with log.open("a") as f:
            f.write(gen.text(2000))
        write_config(config, log, state, "pairing:\n  window_lines: 500\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.value("apigee_tls_config_last_reload_successful") == 1)
        with log.open("a") as f:
            f.write(gen.text(2000))
        config.write_text("listen: [not, a, string]\nnope: 1\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.value("apigee_tls_config_last_reload_successful") == 0)
        with log.open("a") as f:
            f.write(gen.text(2000))
        truth = {tuple(k): float(v) for k, v in gen.truth.items()}
        wait_for(lambda: daemon.failures() == truth, what="every failure counted once")
        code, output = daemon.stop()
    assert code == 0
    assert "reload refused, keeping the running config" in output
    assert "nope: unknown key" in output


def test_notify_protocol_in_order(tmp_path: Path) -> None:
    """Under systemd the daemon sends READY, STATUS, WATCHDOG, RELOADING+READY, STOPPING."""
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(10)
    log = tmp_path / "system.log"
    log.touch()
    env = {"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": ""}
    daemon = ExporterProcess("--log", str(log), "--state-file", str(tmp_path / "s.json"), env=env)
    messages: list[str] = []

    def receive_until(field: str) -> str:
        while True:
            message = sock.recv(4096).decode()
            messages.append(message)
            if field in message.split("\n"):
                return message

    with daemon:
        assert daemon.proc is not None
        ready = receive_until("READY=1")
        status = [line for line in ready.split("\n") if line.startswith("STATUS=")]
        assert status and all(word in status[0] for word in ("log(s)", "lines/s", "failures"))
        receive_until("WATCHDOG=1")
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = receive_until("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.split("\n"))
        receive_until("READY=1")
        daemon.proc.send_signal(signal.SIGTERM)
        receive_until("STOPPING=1")
        code, _ = daemon.stop()
    sock.close()
    assert code == 0
    order = [m.split("\n")[0] for m in messages if not m.startswith(("WATCHDOG", "STATUS"))]
    assert order == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]


def test_bad_web_config_is_a_clear_error(tmp_path: Path) -> None:
    """A web config naming a missing certificate stops ``run``: one clear message, exit 1."""
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    log = tmp_path / "system.log"
    log.touch()
    result = subprocess.run(
        [
            *EXPORTER,
            "run",
            "--log",
            str(log),
            "--state-file",
            str(tmp_path / "s.json"),
            "--listen",
            "127.0.0.1:0",
            "--web.config.file",
            str(web),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "cert_file" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
