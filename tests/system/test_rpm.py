"""`make rpm`: an x86_64 RPM for RHEL 8/9 whose payload and scriptlets install like `make install`.

One RPM is built per module (its wheelhouse once, for this machine's /usr/bin/python3 so that it
can run here; the default target, RHEL's /usr/bin/python3.9, is checked on make's plan). Its
contents and scriptlets are read with `rpm -qlp` and `rpm -qp --scripts`; then its payload,
extracted with `rpm2cpio | cpio`, is installed into a scratch root (a container on the host's /usr
under an overlay, systemd-nspawn) by running the package's own %post, and `scan` runs there; an
upgrade and an erase run %post/%preun/%postun with the arguments rpm gives them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from apigee_tls_exporter.demo.generator import LogGenerator
from helpers.components import require

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TARGET_PYTHON = "/usr/bin/python3"  # Debian's system Python: the RPM must run here
PREFIX = "/opt/apigee-tls-exporter"
UNIT = "/usr/lib/systemd/system/apigee-tls-exporter.service"
SYSUSERS = "/usr/lib/sysusers.d/apigee-tls-exporter.conf"
CONFIG = "/etc/apigee-tls-exporter/config.yml"


def python_version(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def make_rpm(out: Path, *extra: str, dry_run: bool = False) -> subprocess.CompletedProcess[str]:
    """`make rpm` into ``out`` with the venv running the tests (its build area there too)."""
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            *(["-n", "-B"] if dry_run else []),
            "rpm",
            f"RPM={out / 'apigee-tls-exporter.x86_64.rpm'}",
            f"RPM_TOPDIR={out / 'topdir'}",
            f"RPM_WHEELHOUSE={out / 'wheelhouse'}",
            f"VENV={sys.prefix}",
            "STAMP=",
            f"PYTHON={sys.executable}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@dataclass
class Built:
    rpm: Path
    wheelhouse: Path
    payload: Path  # the payload, extracted with rpm2cpio | cpio


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The RPM for /usr/bin/python3, and its payload extracted."""
    for tool, package in (("rpmbuild", "rpm"), ("rpm2cpio", "rpm2cpio"), ("cpio", "cpio")):
        require(tool, package)
    out = tmp_path_factory.mktemp("rpm")
    version = python_version(TARGET_PYTHON)
    result = make_rpm(out, f"RPM_PYTHON={TARGET_PYTHON}", f"RPM_PYTHON_VERSION={version}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rpm = out / "apigee-tls-exporter.x86_64.rpm"
    payload = out / "payload"
    payload.mkdir()
    subprocess.run(
        f"rpm2cpio '{rpm}' | cpio -idm --quiet", shell=True, cwd=payload, check=True, timeout=60
    )
    return Built(rpm, out / "wheelhouse", payload)


def rpm_query(rpm: Path, *args: str) -> str:
    done = subprocess.run(
        ["rpm", "-qp", *args, str(rpm)], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_rpm_is_for_x86_64_and_requires_only_the_target_python(built: Built) -> None:
    """The package is x86_64, named and versioned as the project, and requires the target's
    Python and systemd, nothing that rpm guessed from the payload."""
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version
    assert rpm_query(built.rpm, "--qf", "%{NAME} %{VERSION} %{ARCH} %{OS}") == (
        f"apigee-tls-exporter {version[1]} x86_64 linux"
    )
    requires = {line.split()[0] for line in rpm_query(built.rpm, "-R").splitlines()}
    assert {r for r in requires if not r.startswith("rpmlib(")} == {
        TARGET_PYTHON,
        "systemd",
        "/bin/sh",
    }


def test_rpm_holds_the_wheelhouse_the_unit_the_sysusers_file_and_the_config(built: Built) -> None:
    """`rpm -qlp`: the wheelhouse (one wheel per dependency, binary ones for the target Python
    and x86_64 only), README and the pages of docs/ it links to, the unit, the sysusers file and
    the config, nothing else; the config is %config(noreplace)."""
    wheels = sorted(p.name for p in built.wheelhouse.glob("*.whl"))
    assert any(w.startswith("apigee_tls_exporter-") for w in wheels)
    tag = "cp" + python_version(TARGET_PYTHON).replace(".", "")
    for wheel in wheels:
        python_tag, abi, platform = wheel[:-4].split("-")[-3:]
        assert platform == "any" or platform.endswith("x86_64"), wheel
        assert python_tag.startswith("py") or abi == "abi3" or python_tag == tag, wheel
    for dependency in (
        *("pydantic_core", "cryptography", "pyyaml", "structlog", "watchdog"),
        *("ahocorasick_rs", "isal"),  # the compiled parts, ordinary dependencies
    ):
        assert any(w.lower().startswith(dependency + "-") for w in wheels), dependency
    expected = {
        "/etc/apigee-tls-exporter",
        CONFIG,
        PREFIX,
        f"{PREFIX}/README.md",
        f"{PREFIX}/docs",
        *(f"{PREFIX}/docs/{p.name}" for p in (REPO / "docs").glob("*.md")),
        f"{PREFIX}/wheelhouse",
        *(f"{PREFIX}/wheelhouse/{w}" for w in wheels),
        UNIT,
        SYSUSERS,
    }
    assert set(rpm_query(built.rpm, "-l").split()) == expected
    flags = dict(
        line.rsplit(" ", 1)
        for line in rpm_query(
            built.rpm, "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"
        ).splitlines()
    )
    assert {name for name, flag in flags.items() if "c" in flag} == {CONFIG}
    assert "n" in flags[CONFIG]


def test_payload_files_are_the_shipped_ones(built: Built) -> None:
    """The extracted payload's unit and sysusers file are the repository's, and its config is
    the reference config listening on loopback, as `make install` installs it."""
    assert (built.payload / UNIT.lstrip("/")).read_text() == (
        REPO / "systemd/apigee-tls-exporter.service"
    ).read_text()
    assert (built.payload / SYSUSERS.lstrip("/")).read_text() == (
        REPO / "systemd/apigee-tls-exporter.sysusers.conf"
    ).read_text()
    reference = (REPO / "config/apigee-tls-exporter.yml").read_text()
    assert (built.payload / CONFIG.lstrip("/")).read_text() == reference.replace(
        'listen: ":9847"\n', 'listen: "127.0.0.1:9847"  # installed default: loopback only\n'
    )


def test_scriptlets_install_offline_with_the_system_python_and_stop_cleanly(built: Built) -> None:
    """`rpm -qp --scripts`: %post makes the venv with the target Python and installs the
    wheelhouse offline; %preun stops and disables the service only on erase; %postun removes the
    venv on erase and restarts the service after an upgrade."""
    scripts = rpm_query(built.rpm, "--scripts")
    post = scripts.split("postinstall scriptlet")[1].split("preuninstall scriptlet")[0]
    preun = scripts.split("preuninstall scriptlet")[1].split("postuninstall scriptlet")[0]
    postun = scripts.split("postuninstall scriptlet")[1]
    assert f'{TARGET_PYTHON} -m venv "$prefix"' in post
    assert "--no-index" in post and '--find-links "$prefix/wheelhouse"' in post
    assert "systemd-sysusers /usr/lib/sysusers.d/apigee-tls-exporter.conf" in post
    assert '[ "$1" -eq 0 ]' in preun and "disable --now apigee-tls-exporter.service" in preun
    assert '[ "$1" -eq 0 ]' in postun and "try-restart apigee-tls-exporter.service" in postun


def in_scratch_root(built: Built, tmp_path: Path, script: str, log: Path) -> str:
    """``script`` (sh) in a container whose root holds the extracted payload, on the host's /usr
    under a writable overlay (the payload's /usr files in its upper layer); its output."""
    root = tmp_path / "scratch-root"
    shutil.copytree(built.payload, root, symlinks=True)
    usr_upper = tmp_path / "usr-upper"
    shutil.move(str(root / "usr"), usr_upper)
    (root / "usr").mkdir()
    for name in ("bin", "lib", "lib64", "sbin"):
        (root / name).symlink_to(f"usr/{name}")
    shutil.copy("/usr/lib/os-release", root / "etc/os-release")
    scripts = rpm_query(built.rpm, "--qf", "%{POSTIN}\n%%%%\n%{PREUN}\n%%%%\n%{POSTUN}")
    for name, body in zip(("post", "preun", "postun"), scripts.split("\n%%\n")):
        (root / f"{name}.sh").write_text(body + "\n")
    done = subprocess.run(
        [
            "systemd-nspawn",
            f"--directory={root}",
            f"--overlay=/usr:{usr_upper}:/usr",
            f"--machine=apigee-rpm-{os.getpid()}",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--quiet",
            f"--bind-ro={log}:/var/log/system.log",
            "/bin/sh",
            "-euc",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_payload_installs_and_runs_scan_from_a_scratch_root(built: Built, tmp_path: Path) -> None:
    """In a scratch root holding only the extracted payload (and the host's /usr), the
    package's %post creates the service user and the venv offline; the installed `scan` prints
    what the source tree's does; an upgrade's %post and %postun keep it working; an erase's
    %preun and %postun remove the venv."""
    require("systemd-nspawn", "systemd-container")
    log = tmp_path / "system.log"
    log.write_text(
        "".join(line + "\n" for line in LogGenerator(3, failure_fraction=0.05).take(2000))
    )
    scan = f"{PREFIX}/bin/apigee-tls-exporter scan --timezone UTC /var/log/system.log"
    out = in_scratch_root(
        built,
        tmp_path,
        f"""
        sh /post.sh 1
        getent passwd apigee-tls-exporter | cut -d: -f1,6
        echo '--- scan'; {scan}
        sh /post.sh 2; sh /postun.sh 1
        echo '--- after upgrade'; {scan}
        sh /preun.sh 0; sh /postun.sh 0
        echo '--- after erase'; ls {PREFIX}
        """,
        log,
    )
    source = subprocess.run(
        [sys.executable, "-m", "apigee_tls_exporter", "scan", "--timezone", "UTC", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.replace(str(log), "/var/log/system.log")
    user, rest = out.split("--- scan\n")
    first, rest = rest.split("--- after upgrade\n")
    second, after_erase = rest.split("--- after erase\n")
    assert user.strip().splitlines()[-1] == "apigee-tls-exporter:/var/lib/apigee-tls-exporter"
    assert "apigee_tls_handshake_failures_total{" in first
    assert first == source
    assert second == source
    # the package's own files
    assert sorted(after_erase.split()) == ["README.md", "docs", "wheelhouse"]


def test_default_rpm_targets_the_rhel_system_python(tmp_path: Path) -> None:
    """Without RPM_PYTHON, `make rpm` builds the wheelhouse for CPython 3.9 on x86_64 (glibc
    2.28: RHEL 8 and 9) and makes the package require /usr/bin/python3.9 (make's plan, -n)."""
    result = make_rpm(tmp_path, dry_run=True)
    assert result.returncode == 0, result.stderr
    plan = result.stdout
    assert "WHEEL_PYTHON=3.9 WHEEL_ARCH=x86_64 WHEEL_GLIBC=2.28" in plan
    assert "--define 'python /usr/bin/python3.9'" in plan
    assert "--target x86_64" in plan
