"""`make install DESTDIR=...`: the installed tree runs, the unit verifies there, config is kept.

One install (wheelhouse built from this tree, then the venv installed offline from it, as on an MP
node) is shared by the tests of this module; it takes some seconds, so the module is marked slow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from apigee_tls_exporter.demo import LogGenerator
from test_systemd_unit import TARGET_EXPOSURE, UNIT_NAME, exposure, make_root, verify

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PREFIX = "opt/apigee-tls-exporter"
CONFIG = "etc/apigee-tls-exporter/config.yml"


def make_install(dest: Path, wheelhouse: Path) -> subprocess.CompletedProcess[str]:
    """`make install` into dest, building with the Python and venv running the tests."""
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            "install",
            f"DESTDIR={dest}",
            f"WHEELHOUSE={wheelhouse}",
            f"VENV={sys.prefix}",
            "STAMP=",  # the venv running the tests is ready; do not (re)build it
            f"PYTHON={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def destdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DESTDIR after one `make install`."""
    dest = tmp_path_factory.mktemp("destdir")
    result = make_install(dest, tmp_path_factory.mktemp("build") / "wheelhouse")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dest


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated MP system.log with some handshake failures in it."""
    path = tmp_path_factory.mktemp("log") / "system.log"
    generator = LogGenerator(7, failure_fraction=0.05)
    path.write_text("".join(line + "\n" for line in generator.take(3000)))
    assert generator.n_failures > 0
    return path


def scan(executable: list[str], log: Path) -> subprocess.CompletedProcess[str]:
    """`scan LOG` with the given command, in a fixed time zone."""
    return subprocess.run(
        [*executable, "scan", "--timezone", "UTC", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_installed_scan_matches_the_source_tree(destdir: Path, small_log: Path) -> None:
    """The installed daemon's `scan` prints the same metrics as the package under test."""
    installed = scan([str(destdir / PREFIX / "bin/apigee-tls-exporter")], small_log)
    source = scan([sys.executable, "-m", "apigee_tls_exporter"], small_log)

    assert installed.returncode == 0, installed.stderr
    assert "apigee_tls" in installed.stdout
    assert installed.stdout == source.stdout


def test_installed_tree_is_relocatable(destdir: Path, tmp_path: Path) -> None:
    """Copied elsewhere (as a package manager would), the launcher still finds its venv."""
    moved = tmp_path / "elsewhere"
    shutil.copytree(destdir / PREFIX, moved, symlinks=True)

    result = subprocess.run(
        [str(moved / "bin/apigee-tls-exporter"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stdout.split()[0]) == (0, "apigee-tls-exporter")


def test_installed_scripts_point_at_prefix(destdir: Path) -> None:
    """pip's scripts name the final PREFIX's Python, not the staging DESTDIR."""
    first_line = (destdir / PREFIX / "bin/pip").read_text().splitlines()[0]

    assert first_line.startswith("#!/opt/apigee-tls-exporter/bin/python")


def test_installed_files(destdir: Path) -> None:
    """The unit, sysusers file and default config land where systemd and the unit expect them."""
    assert (destdir / "etc/systemd/system" / UNIT_NAME).read_text() == (
        REPO / "systemd" / UNIT_NAME
    ).read_text()
    assert (destdir / "etc/sysusers.d/apigee-tls-exporter.conf").read_text() == (
        REPO / "systemd/apigee-tls-exporter.sysusers.conf"
    ).read_text()
    assert (destdir / CONFIG).read_text() == (REPO / "config/apigee-tls-exporter.yml").read_text()


def test_installed_config_passes_check_config(destdir: Path) -> None:
    """The default config as installed is valid for the installed daemon (ExecStartPre)."""
    result = subprocess.run(
        [str(destdir / PREFIX / "bin/apigee-tls-exporter"), "check-config", str(destdir / CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_installed_unit_verifies_and_scores(destdir: Path, tmp_path: Path) -> None:
    """systemd-analyze verify is silent on the unit as installed, with the installed binary,
    and its offline exposure is within the target."""
    root = tmp_path / "root"
    shutil.copytree(destdir, root, symlinks=True)
    make_root(root, (destdir / "etc/systemd/system" / UNIT_NAME).read_text())
    # make_root adds stand-ins only for missing executables: the daemon's is the installed one.
    assert "#!/bin/sh\nexec " in (root / PREFIX / "bin/apigee-tls-exporter").read_text()

    result = verify(root)

    assert (result.returncode, result.stderr) == (0, "")
    assert exposure(root) <= TARGET_EXPOSURE


def test_reinstall_keeps_an_edited_config(
    destdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second `make install` (an upgrade) leaves an existing config.yml alone."""
    config = destdir / CONFIG
    edited = config.read_text() + "\n# edited by the operator\n"
    config.write_text(edited)

    result = make_install(destdir, tmp_path_factory.mktemp("build2") / "wheelhouse")

    assert result.returncode == 0, result.stderr[-3000:]
    assert config.read_text() == edited
