"""The shipped systemd unit checked by systemd's own tools: a root with the unit installed,
``systemd-analyze verify`` and ``systemd-analyze security`` run on it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "apigee-tls-exporter.service"
SYSUSERS = REPO / "systemd" / "apigee-tls-exporter.sysusers.conf"
UNIT_NAME = UNIT.name
TARGET_EXPOSURE = 1.5
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def make_root(root: Path, unit_text: str) -> Path:
    """A scratch root with the unit installed, stand-in executables and the system units."""
    (root / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    (root / "etc/systemd/system" / UNIT_NAME).write_text(unit_text)
    if not (root / "usr/lib/systemd/system").exists():
        shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for line in unit_text.splitlines():
        if re.match(r"Exec(Start|StartPre|Reload)=", line):
            executable = line.split("=", 1)[1].split()[0].lstrip("-@:+!")
            path = root / executable.lstrip("/")
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("#!/bin/sh\n")
                path.chmod(0o755)
    return root


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify of the unit inside root."""
    return run("systemd-analyze", "verify", "--man=no", f"--root={root}", UNIT_NAME)


def exposure(root: Path) -> float:
    """The "Overall exposure level" of the unit inside root, offline."""
    result = run("systemd-analyze", "security", "--offline=yes", f"--root={root}", UNIT_NAME)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, f"no exposure line in: {result.stdout[-500:]} {result.stderr}"
    return float(match.group(1))
