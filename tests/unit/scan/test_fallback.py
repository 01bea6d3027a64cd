"""The compiled parts (``ahocorasick_rs``, ``isal``) and the pure-Python fallback: the same output,
byte for byte, when they are in use, turned off, or cannot be imported; a failed import is said
once."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apigee_tls_exporter.cli import scan_json
from apigee_tls_exporter.demo.generator import LogGenerator
from apigee_tls_exporter.records import parse
from apigee_tls_exporter.records.parse import MARKERS
from apigee_tls_exporter.records.search import PURE_ENV, LineFinder
from apigee_tls_exporter.scan import pieces
from apigee_tls_exporter.scan.plan import scan
from helpers.compiled import BLOCKED, WARNING
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]


def environment(extra: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != PURE_ENV}, **extra}


def cli(args: list[str], *, blocked: bool = False, pure: bool = False) -> tuple[bytes, str]:
    command = [sys.executable, "-c", BLOCKED] if blocked else [sys.executable, "-m"]
    if not blocked:
        command.append("apigee_tls_exporter")
    done = subprocess.run(
        [*command, *args],
        capture_output=True,
        env=environment({PURE_ENV: "1"} if pure else {}),
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout, done.stderr.decode()


def held_out_like(seed: int, n_lines: int) -> bytes:
    """Generated records with what real logs add: lines over 64 KiB, invalid UTF-8, markers
    inside stack frames and long lines."""
    gen = LogGenerator(seed, failure_fraction=0.05)
    out = []
    for i, line in enumerate(gen.take(n_lines)):
        data = line.encode()
        if i % 97 == 0:
            data += b" payload=" + bytes(range(128, 256)) * 520  # 66 KiB of invalid UTF-8
        if i % 89 == 0:
            data += b" \xff\xfe handshakeFailed in a body \xc3"
        out.append(data)
        if i % 53 == 0:
            out.append(b"\tat com.apigee.SSLClientChannel.handshakeFailed(SSLClientChannel.java:1)")
    return b"\n".join(out) + b"\n"


def test_a_failed_import_gives_the_same_output_and_is_said_once(tmp_path: Path) -> None:
    """With ``ahocorasick_rs`` and ``isal`` unimportable, ``scan`` prints the same bytes as with
    them, for a plain and a gzip log, serial and on two cores, in every format; stderr holds
    one warning naming both, and nothing else."""
    data = held_out_like(3, 6000)
    plain = tmp_path / "system.log"
    plain.write_bytes(data)
    packed = tmp_path / "system.log.1.gz"
    packed.write_bytes(gzip.compress(data))
    for fmt in ("prometheus", "json", "table", "backfill"):
        for jobs in ("1", "2"):
            args = ["scan", "--timezone", "UTC", "--format", fmt, "--jobs", jobs]
            args += [str(plain), str(packed)]
            fast, quiet = cli(args)
            slow, said = cli(args, blocked=True)
            assert slow == fast
            assert quiet == ""
            warnings = said.splitlines()
            assert len(warnings) == 1, said
            assert WARNING in warnings[0]
            assert "ahocorasick_rs" in warnings[0] and "isal" in warnings[0]
    total = json.loads(cli(["scan", "--format", "json", str(plain)])[0])["total_failures"]
    assert total > 100  # precondition: failures were counted


def test_turning_the_compiled_parts_off_is_not_a_warning(tmp_path: Path) -> None:
    """``APIGEE_TLS_EXPORTER_PURE_PYTHON=1`` asks for pure Python: no warning, same output."""
    path = tmp_path / "system.log"
    path.write_bytes(held_out_like(4, 2000))
    args = ["scan", "--format", "json", "--jobs", "1", str(path)]
    pure, said = cli(args, pure=True)
    assert said == ""
    assert pure == cli(args)[0]


line = st.one_of(
    st.sampled_from(
        [
            "2026-11-20 09:00:00,001 org:o env:e api:a rev:1 messageid:m1 NIOThread@1 ERROR "
            "HTTP.CLIENT - SSLClientChannel$SSLHandshakeStateMachine.handshakeFailed() : "
            "SSLClientChannel[C:[HostAndPort(host=b.example, port=443)]@1 "
            "Remote host:10.0.0.1:443]@2 useCount=1 bytesRead=0 bytesWritten=0 age=1ms "
            "lastIO=1ms isOpen=true handshake failed, message: Received fatal alert: "
            "handshake_failure",
            "2026-11-20 09:00:00,002 org:o env:e api:a rev:1 messageid:m1 NIOThread@1 INFO "
            "HTTP.CLIENT - SSLClientChannel.getSSLInfo() : SSLInfo: Protocol:TLSv1.2 "
            "KeyAlias:k1",
            "\tat sun.security.ssl.Alert.createSSLException(Alert.java:131)",
            "javax.net.ssl.SSLHandshakeException: Received fatal alert: bad_certificate",
            "2026-11-20 09:00:01,000 NIOThread@2 INFO HTTP - traffic",
        ]
    ),
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ").decode("latin-1")),
    st.sampled_from(MARKERS).map(lambda m: "x" * 70_000 + m.decode()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(line, max_size=60), newline_at_end=st.booleans())
def test_compiled_and_pure_python_scans_count_the_same_on_generated_logs(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], newline_at_end: bool
) -> None:
    """Any mix of record lines, stack frames, random bytes and long lines with a marker at the
    end: the scan with the compiled search and inflater and the pure-Python one give the same
    result, plain and gzipped."""
    data = "\n".join(lines).encode("latin-1") + (b"\n" if newline_at_end else b"")
    folder = tmp_path_factory.mktemp("logs")
    plain = folder / "system.log"
    plain.write_bytes(data)
    packed = folder / "system.log.1.gz"
    packed.write_bytes(gzip.compress(data))
    paths = [str(plain), str(packed)]
    assert parse._FINDER.accelerated  # precondition: the compiled search is in use
    fast = scan_json(scan(paths, window_lines=5))
    finders, inflaters = (parse._FINDER, parse._PARSED), pieces.inflaters
    parse._FINDER = LineFinder(MARKERS, accelerate=False)
    parse._PARSED = LineFinder(MARKERS, accelerate=False, not_indented=parse.HANDSHAKE_MARKERS)
    pieces.inflaters = lambda: ("zlib", None, None, pieces._GZIP_ERRORS)  # type: ignore[assignment]
    try:
        pure = scan_json(scan(paths, window_lines=5))
    finally:
        (parse._FINDER, parse._PARSED), pieces.inflaters = finders, inflaters  # type: ignore[method-assign]
    assert pure == fast
