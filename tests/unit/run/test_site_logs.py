"""``run`` on the logs of issue 21: a log with the site's own ``record_head``, and a ``General
SSLEngine problem`` whose exception record names its cause (through the Daemon, fake clocks)."""

from __future__ import annotations

from pathlib import Path

from apigee_tls_exporter.config import validate
from apigee_tls_exporter.run.app import Daemon
from helpers import records
from helpers.clock import FakeClock
from helpers.node import Node, write
from prometheus_client import CollectorRegistry

SITE_HEAD = r"\[(?P<ts>[^\]]+)\] \[(?P<thread>[^\]]+)\] \w+ \S+ - "


def site(line: str) -> str:
    """A record line of the built-in shape, without context, in the site's head."""
    stamp, rest = line[: len(records.STAMP)], line[len(records.STAMP) + 1 :]
    thread, level, logger, body = rest.replace(records.CTX, "").split(" ", 3)
    return f"[{stamp}] [{thread}] {level} {logger} {body}"


def test_run_reads_a_log_with_the_sites_record_head(tmp_path: Path) -> None:
    """The log's ``record_head`` is the daemon's: the site's failure is counted and paired."""
    log = tmp_path / "system.log"
    write(log, records.text([site(records.failed()), site(records.ssl_info())]).encode())
    config = validate(
        {
            "logs": [{"path": str(log), "record_head": SITE_HEAD}],
            "state_file": str(tmp_path / "state.json"),
            "from_beginning": True,
        }
    )
    clock = FakeClock(100.0)
    daemon = Daemon(config, CollectorRegistry(), clock=clock, wall=FakeClock(1_800_000_000.0))
    while daemon.step():
        pass
    clock.now += 10
    daemon.step()
    series = {k: v for k, v in daemon.store.items() if v}
    expected = {
        ("", "", "", "", "backend.example.com:443", "bad_certificate", "backend-client"): 1.0
    }
    assert series == expected
    assert daemon.followers[str(log)].stats.unrecognised == 0


def test_run_gives_a_general_sslengine_problem_the_cause_written_after_it(tmp_path: Path) -> None:
    """The failure and its SSLInfo line read, the log quiet a second, then the exception record
    with its Caused by: chain: one failure, with the cause's reason."""
    log = tmp_path / "system.log"
    general = "General SSLEngine problem"
    write(log, records.text([records.failed(message=general), records.ssl_info()]).encode())
    node = Node(tmp_path, [log])
    node.daemon.step()
    node.clock.now += 1.0
    node.daemon.step()
    trace = records.exception_record(
        f"javax.net.ssl.SSLHandshakeException: {general}",
        caused_by="java.security.cert.CertificateException: No subject alternative names present",
    )
    write(log, records.text(trace).encode())
    node.run_to_end()
    reasons = {k[5]: v for k, v in node.series().items()}
    assert reasons == {"hostname_mismatch": 1.0}
