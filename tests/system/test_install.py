"""`make install DESTDIR=...`: the installed tree runs, the unit verifies there, config is kept.

One install (wheelhouse built from this tree, then the venv installed offline from it, as on an MP
node) is shared by the tests of this module; it takes some seconds, so the module is marked slow.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional

import pytest
from apigee_tls_exporter.demo.generator import LogGenerator
from helpers.components import require
from helpers.markdown import prose
from helpers.support import wait_for
from helpers.systemd_unit import TARGET_EXPOSURE, UNIT_NAME, exposure, make_root, verify
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PREFIX = "opt/apigee-tls-exporter"
CONFIG = "etc/apigee-tls-exporter/config.yml"
# The installed venv links to this interpreter, so it must be one the unit can run: Debian's
# system Python (the venv running the tests may be a pyenv one under /root).
SYSTEM_PYTHON = "/usr/bin/python3"


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """make in the repository, building with the venv running the tests."""
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            *args,
            f"VENV={sys.prefix}",
            "STAMP=",  # the venv running the tests is ready; do not (re)build it
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def make_install(
    dest: Path, wheelhouse: Path, python: str = SYSTEM_PYTHON
) -> subprocess.CompletedProcess[str]:
    """`make install` into dest for python."""
    return make("install", f"DESTDIR={dest}", f"WHEELHOUSE={wheelhouse}", f"PYTHON={python}")


def wheel_tags(wheelhouse: Path) -> set[str]:
    """The CPython tags (cp39, cp311, ...) of the version-specific wheels of a wheelhouse."""
    return {w.name.split("-")[-3] for w in wheelhouse.glob("*.whl") if "abi3" not in w.name} - {
        "py3",
        "py2.py3",
    }


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


def scan(
    executable: list[str], log: Path, env: Optional[dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    """`scan LOG` with the given command, in a fixed time zone."""
    return subprocess.run(
        [*executable, "scan", "--timezone", "UTC", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
    )


def test_installed_scan_matches_the_source_tree(destdir: Path, small_log: Path) -> None:
    """The installed daemon's `scan` prints the same metrics as the package under test, with
    its compiled parts (dependencies: no pure-Python fallback said)."""
    installed = scan([str(destdir / PREFIX / "bin/apigee-tls-exporter")], small_log)
    source = scan([sys.executable, "-m", "apigee_tls_exporter"], small_log)

    assert installed.returncode == 0, installed.stderr
    assert "compiled parts unavailable" not in installed.stderr
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
    reference = (REPO / "config/apigee-tls-exporter.yml").read_text()
    installed_default = reference.replace(
        'listen: ":9847"\n', 'listen: "127.0.0.1:9847"  # installed default: loopback only\n'
    )
    assert reference != installed_default
    assert (destdir / CONFIG).read_text() == installed_default


def test_installed_readme_links_land_in_the_installed_docs(destdir: Path) -> None:
    """The README installed on the node, and the pages of docs/ installed beside it, link only
    to files installed there: an operator reading them on the node finds every page."""
    root = destdir / PREFIX
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    assert len(docs) == 1 + len(list((REPO / "docs").glob("*.md")))
    dead = []
    for doc in docs:
        for link in re.findall(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)", prose(doc.read_text())):
            if not re.match(r"[a-z]+:", link) and not (doc.parent / link).exists():
                dead.append(f"{doc.relative_to(root)}: {link}")
    assert dead == []


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


def test_zipapp_scan_matches_the_source_tree(tmp_path: Path, small_log: Path) -> None:
    """The single-file zipapp runs `scan` with nothing installed, extracting its compiled
    modules to the cache directory once (the compiled parts import: no pure-Python fallback
    said), and prints the same metrics as the package under test."""
    pyz = tmp_path / "apigee-tls-exporter.pyz"
    built = make(
        str(pyz), f"PYZ={pyz}", f"WHEELHOUSE={tmp_path / 'wheelhouse'}", f"PYTHON={sys.executable}"
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    cache = tmp_path / "cache"
    env = {"APIGEE_TLS_EXPORTER_PYZ_CACHE": str(cache), "PYTHONNOUSERSITE": "1"}
    # The base interpreter without its site-packages (-S): only the standard library is there.
    bare_python = [str(Path(sys.base_prefix) / "bin" / "python3"), "-S"]

    with_pyz = scan([*bare_python, str(pyz)], small_log, env)
    again = scan([*bare_python, str(pyz)], small_log, env)
    source = scan([sys.executable, "-m", "apigee_tls_exporter"], small_log)

    assert with_pyz.returncode == 0, with_pyz.stderr
    assert "compiled parts unavailable" not in with_pyz.stderr
    assert with_pyz.stdout == source.stdout == again.stdout
    [extracted] = cache.iterdir()
    assert extracted.name.startswith("native-")


def test_a_new_target_rebuilds_the_wheelhouse_and_the_zipapp(tmp_path: Path) -> None:
    """After a build for this machine's Python, `make dist WHEEL_PYTHON=3.9` rebuilds: the
    wheelhouse holds cp39 wheels only and the zipapp says cp39; a `make install` after it builds
    for the installing Python again, and the installed daemon runs."""
    here = sys.version_info[:2]
    other = "3.9" if here != (3, 9) else "3.11"
    wheelhouse, pyz = tmp_path / "wheelhouse", tmp_path / "apigee-tls-exporter.pyz"
    paths = (f"WHEELHOUSE={wheelhouse}", f"PYZ={pyz}", f"PYTHON={sys.executable}")
    first = make("dist", *paths)
    assert first.returncode == 0, first.stderr[-3000:]
    assert wheel_tags(wheelhouse) == {f"cp{here[0]}{here[1]}"}
    assert make("-q", "dist", *paths).returncode == 0  # up to date for the same target
    assert make("-q", "dist", *paths, f"WHEEL_PYTHON={other}").returncode == 1
    assert make("-q", "dist", *paths, "WHEEL_ARCH=aarch64").returncode == 1

    second = make("dist", *paths, f"WHEEL_PYTHON={other}")

    assert second.returncode == 0, second.stderr[-3000:]
    assert wheel_tags(wheelhouse) == {"cp" + other.replace(".", "")}
    with zipfile.ZipFile(pyz) as archive:
        assert archive.read("_native/BUILD").decode().split() == [
            "cp" + other.replace(".", ""),
            "x86_64",
        ]
    dest = tmp_path / "dest"
    installed = make_install(dest, wheelhouse)
    assert installed.returncode == 0, installed.stderr[-3000:]
    version = subprocess.run(
        [str(dest / PREFIX / "bin/apigee-tls-exporter"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.returncode == 0, version.stderr


def test_install_refuses_an_interpreter_the_unit_cannot_run(tmp_path: Path) -> None:
    """`make install` with a Python outside the system's (here a copy under /tmp, which the
    unit's PrivateTmp= hides, as ProtectHome= hides /root and /home) stops with one line that
    says how to choose one, before building anything."""
    base = Path(os.path.realpath(SYSTEM_PYTHON))
    fake = tmp_path / "python"
    (fake / "bin").mkdir(parents=True)
    (fake / "lib").mkdir()
    shutil.copy(base, fake / "bin" / base.name)
    (fake / "lib" / base.name).symlink_to(f"/usr/lib/{base.name}")
    wheelhouse = tmp_path / "wheelhouse"

    result = make_install(tmp_path / "dest", wheelhouse, python=str(fake / "bin" / base.name))

    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert f"{fake / 'bin' / base.name} is" in line and "under /tmp" in line
    assert "PYTHON=/usr/bin/python3.9" in line
    assert not wheelhouse.exists() and not (tmp_path / "dest").exists()


@pytest.mark.parametrize(
    ("interpreter", "expected"),
    [
        ("/root/.pyenv/versions/3.11.7/bin/python3.11", "under /root"),
        ("/home/builder/.local/bin/python3.11", "under /home"),
        ("/srv/conda/bin/python3.11", "not the system Python"),
        ("/usr/bin/python3.11", ""),
    ],
)
def test_install_python_check_names_the_problem(
    interpreter: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check `make install` runs (packaging/check_python.py) refuses interpreters under /root
    or /home or outside /usr, and accepts the system's."""
    spec = importlib.util.spec_from_file_location(
        "check_python", REPO / "packaging/check_python.py"
    )
    assert spec and spec.loader
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    monkeypatch.setattr(sys, "_base_executable", interpreter, raising=False)
    monkeypatch.setattr(os.path, "realpath", lambda path: path)

    problem = check.problem("PYTHON", f"{sys.version_info[0]}.{sys.version_info[1]}")

    assert (expected in problem) if expected else problem == ""
    if expected:
        assert "PYTHON=/usr/bin/python3.9" in problem


# ---------------------------------------------------------------------------------------------
# The installed unit under a real systemd, booted in a container (systemd-nspawn) on the host's
# own /usr: the hardening is applied for real and the daemon must still read the MP log through
# the apigee group, notify READY, serve, reload and stop cleanly.

APIGEE_GID = 1500
SYSUSERS_NAME = "apigee-tls-exporter.conf"
PORT = 19847


def inside(container_init: int, *args: str, timeout: float = 60) -> str:
    """A command inside the container's namespaces; its stdout, failing on a non-zero exit."""
    result = subprocess.run(
        ["nsenter", "-t", str(container_init), "-a", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{args}: {result.stdout} {result.stderr}"
    return result.stdout.strip()


def child_named(parent: int, name: str) -> Optional[int]:
    """The pid of a direct child of parent with the given command name, if any."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == parent and comm == name:
            return int(entry.name)
    return None


def failures_total(text: str) -> float:
    """The sum of apigee_tls_handshake_failures_total over its series."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "apigee_tls_handshake_failures_total"
    )


def test_unit_runs_the_daemon_under_systemd(tmp_path: Path) -> None:
    """Installed with the system Python, the hardened unit starts under systemd (READY), reads
    the 0640 root:apigee log through SupplementaryGroups, counts every failure, runs sandboxed
    (seccomp, no new privileges, no capabilities), reloads, and stops with exit status 0."""
    require("systemd-nspawn", "systemd-container")
    dest = tmp_path / "dest"
    result = make_install(dest, tmp_path / "wheelhouse")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    logs = tmp_path / "logs"
    logs.mkdir()
    generator = LogGenerator(5, failure_fraction=0.05)
    log = logs / "system.log"
    log.write_text("".join(line + "\n" for line in generator.take(2000)))
    for path, mode in ((logs, 0o750), (log, 0o640)):
        os.chown(path, 0, APIGEE_GID)
        path.chmod(mode)
    config = tmp_path / "config.yml"
    config.write_text(
        "logs:\n  - path: /opt/apigee/var/log/edge-message-processor/logs/system.log\n"
        f'listen: "127.0.0.1:{PORT}"\nfrom_beginning: true\ntimezone: UTC\n'
    )
    group = tmp_path / "apigee.conf"
    group.write_text(f"g apigee {APIGEE_GID}\n")
    binds = {
        dest / PREFIX: "/opt/apigee-tls-exporter",
        dest / "etc/systemd/system" / UNIT_NAME: f"/etc/systemd/system/{UNIT_NAME}",
        dest
        / "etc/sysusers.d/apigee-tls-exporter.conf": "/etc/sysusers.d/apigee-tls-exporter.conf",
        group: "/etc/sysusers.d/apigee.conf",
        config: "/etc/apigee-tls-exporter/config.yml",
        Path("/dev/null"): "/etc/systemd/system/systemd-firstboot.service",
    }
    console = (tmp_path / "console.log").open("wb")  # the container's output, for a failure
    container = subprocess.Popen(
        [
            "systemd-nspawn",
            "--directory=/",
            "--volatile=yes",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--console=passive",
            "--quiet",
            *(f"--bind-ro={source}:{target}" for source, target in binds.items()),
            f"--bind={logs}:/opt/apigee/var/log/edge-message-processor/logs",
            "--boot",
            "systemd.unit=basic.target",
        ],
        stdout=console,
        stderr=subprocess.STDOUT,
    )
    try:
        init = wait_for(
            lambda: child_named(container.pid, "systemd"), 60, "the container's systemd"
        )
        wait_for(
            lambda: (
                subprocess.run(
                    ["nsenter", "-t", str(init), "-a", "systemctl", "is-system-running"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                ).stdout.strip()
                in ("running", "degraded")
            ),
            90,
            "the container to boot",
        )

        inside(init, "systemctl", "start", UNIT_NAME)  # returns once READY=1 arrived

        fetch = (
            "import urllib.request; print(urllib.request.urlopen("
            f"'http://127.0.0.1:{PORT}/metrics', timeout=10).read().decode())"
        )
        python = "/opt/apigee-tls-exporter/bin/python3"
        wait_for(
            lambda: failures_total(inside(init, python, "-c", fetch)) == generator.n_failures,
            30,
            "every failure of the log to be counted",
        )
        main_pid = inside(init, "systemctl", "show", "-p", "MainPID", "--value", UNIT_NAME)
        status = inside(init, "cat", f"/proc/{main_pid}/status")
        assert "Seccomp:\t2" in status
        assert "NoNewPrivs:\t1" in status
        assert "CapEff:\t0000000000000000" in status

        inside(init, "systemctl", "reload", UNIT_NAME)
        inside(init, "systemctl", "stop", UNIT_NAME)
        shown = inside(
            init,
            "systemctl",
            "show",
            "-p",
            "Result",
            "-p",
            "ExecMainStatus",
            "-p",
            "NRestarts",
            UNIT_NAME,
        )
        assert sorted(shown.splitlines()) == ["ExecMainStatus=0", "NRestarts=0", "Result=success"]
    finally:
        if container.poll() is None:
            container.terminate()  # SIGTERM to nspawn powers the container off
        try:
            container.wait(timeout=60)
        except subprocess.TimeoutExpired:
            container.kill()
            container.wait(timeout=10)
        console.close()
