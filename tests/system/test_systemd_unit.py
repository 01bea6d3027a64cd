"""The systemd unit and sysusers file, checked with systemd's own tools (systemd-analyze, sysusers).

``systemd-analyze verify`` checks that the binaries a unit names exist, so the unit is verified as
installed in a scratch root (``--root``) that holds it, stand-ins for those binaries and the
system's own units. Beware: with ``--root``, a unit given as a path outside the root is silently
ignored and the unit of that name inside the root is verified instead; the negative test below
guards against checking nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.systemd_unit import (
    SYSUSERS,
    TARGET_EXPOSURE,
    UNIT,
    UNIT_NAME,
    exposure,
    make_root,
    run,
    verify,
)


def test_verify_prints_nothing(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit without a word on stderr."""
    result = verify(make_root(tmp_path, UNIT.read_text()))

    assert (result.returncode, result.stderr) == (0, "")


def test_verify_reads_our_unit(tmp_path: Path) -> None:
    """The same check reports an unknown key slipped into the installed copy (not a no-op)."""
    bad = UNIT.read_text().replace("[Service]\n", "[Service]\nNoSuchSetting=yes\n")

    result = verify(make_root(tmp_path, bad))

    assert "Unknown key 'NoSuchSetting'" in result.stderr


def test_verify_reports_missing_executable(tmp_path: Path) -> None:
    """Without the installed binary, verify complains: the check does look for ExecStart."""
    root = make_root(tmp_path, UNIT.read_text())
    (root / "opt/apigee-tls-exporter/bin/apigee-tls-exporter").unlink()

    result = verify(root)

    assert "is not executable: No such file or directory" in result.stderr


def test_security_exposure_at_most_target(tmp_path: Path) -> None:
    """systemd-analyze security --offline=yes rates the unit at 1.5 or lower."""
    assert exposure(make_root(tmp_path, UNIT.read_text())) <= TARGET_EXPOSURE


def test_documented_ip_allow_list_drop_in_lowers_exposure(tmp_path: Path) -> None:
    """The IP allow-list drop-in of docs/securing-metrics.md is valid and brings exposure to 1.0
    or lower."""
    root = make_root(tmp_path, UNIT.read_text())
    drop_in = root / "etc/systemd/system" / f"{UNIT_NAME}.d" / "ip-allow-list.conf"
    drop_in.parent.mkdir()
    drop_in.write_text(
        "[Service]\nIPAddressDeny=any\nIPAddressAllow=localhost 192.0.2.10 198.51.100.0/24\n"
    )
    before = exposure(make_root(tmp_path / "plain", UNIT.read_text()))

    assert verify(root).stderr == ""
    after = exposure(root)
    assert after < before
    assert after <= 1.0


@pytest.mark.parametrize(
    "setting",
    [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "StateDirectory=apigee-tls-exporter",
        "User=apigee-tls-exporter",
        "SupplementaryGroups=apigee",
    ],
)
def test_unit_has_the_service_contract(setting: str) -> None:
    """The unit carries the settings the daemon's behaviour relies on."""
    assert setting in UNIT.read_text().splitlines()


def test_unit_runs_check_config_before_start() -> None:
    """ExecStartPre validates the same config file that ExecStart runs with."""
    lines = UNIT.read_text().splitlines()
    pre = [line for line in lines if line.startswith("ExecStartPre=")]
    start = [line for line in lines if line.startswith("ExecStart=")]

    assert pre == [
        "ExecStartPre=/opt/apigee-tls-exporter/bin/apigee-tls-exporter check-config"
        " /etc/apigee-tls-exporter/config.yml"
    ]
    assert start == [
        "ExecStart=/opt/apigee-tls-exporter/bin/apigee-tls-exporter run"
        " --config /etc/apigee-tls-exporter/config.yml"
    ]


def test_sysusers_creates_a_system_user_without_login(tmp_path: Path) -> None:
    """systemd-sysusers makes apigee-tls-exporter a system user with nologin and its own group."""
    (tmp_path / "etc").mkdir()
    result = run("systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS))

    assert result.returncode == 0, result.stderr
    [entry] = [
        line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
        if line.startswith("apigee-tls-exporter:")
    ]
    assert entry[5:] == ["/var/lib/apigee-tls-exporter", "/usr/sbin/nologin"]
    assert int(entry[2]) < 1000  # a system UID
    assert f"apigee-tls-exporter:x:{entry[3]}:" in (tmp_path / "etc/group").read_text()
    assert "apigee:" not in (tmp_path / "etc/group").read_text()
