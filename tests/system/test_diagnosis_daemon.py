"""The daemon end to end with diagnosis: an alert for a target makes the daemon diagnose it.

The Edge management API is the local stand-in of ``apigee_tls_exporter.demo.standin`` (the one
component that cannot run here); the backends are real TLS servers (a Python ssl server, nginx).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest
from apigee_tls_exporter.demo.standin import Standin, chain_info
from helpers import records
from helpers.support import ExporterProcess, samples, wait_for
from helpers.tls_backends import Nginx, NginxSite, Pki, PythonBackend


def failure(n: int, target: str, message: str = "Received fatal alert: bad_certificate") -> str:
    """A failure to ``target`` (an IP address and port) with key alias mpKey."""
    ctx, thread = records.context(f"m-{n}"), "NIOThread@1"
    second, milli = divmod(n, 1000)
    return records.text(
        [
            records.failed(
                remote=f"/{target}",
                ctx=ctx,
                thread=thread,
                message=message,
                stamp=f"2026-11-27 10:00:{second:02d},{milli:03d}",
            ),
            records.ssl_info(
                alias="mpKey",
                ctx=ctx,
                thread=thread,
                stamp=f"2026-11-27 10:00:{second:02d},{milli:03d}",
            ),
        ]
    )


def config_text(tmp_path: Path, standin: Standin, password_file: Path, extra: str = "") -> str:
    return (
        f"logs: [{{path: {tmp_path / 'system.log'}}}]\n"
        f"state_file: {tmp_path / 'state.json'}\n"
        "alerts:\n  client_certificate_rejected: {min_failures: 2, window: 5m}\n"
        "  handshake_failures: {min_failures: 2, window: 5m}\n"
        "diagnosis:\n  enabled: true\n"
        f"  management_url: {standin.url}\n"
        f"  username: {standin.username}\n  password_file: {password_file}\n"
        "  timeout: 5s\n" + extra
    )


def firing_cause(daemon: ExporterProcess, alertname: str, key: dict[str, str]) -> Optional[str]:
    """The cause label of the firing alert ``alertname`` for ``key``, once it has one."""
    for name, labels, value in samples(daemon.scrape()):
        if (
            name == "apigee_tls_alert_firing"
            and value == 1
            and labels.get("alertname") == alertname
            and all(labels.get(k) == v for k, v in key.items())
        ):
            return labels.get("cause") or None
    return None


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_firing_alert_is_diagnosed_as_ca_mismatch(tmp_path: Path, version: str) -> None:
    """bad_certificate failures for a backend whose CA list lacks the keystore leaf's issuer
    give apigee_tls_diagnosis_info{cause="ca_mismatch"}, and the firing alert carries the cause."""
    pki = Pki(tmp_path)
    cert, _ = pki.client(pki.other_ca, "mp")
    password_file = tmp_path / "mgmt-password"
    with Standin() as standin:
        password_file.write_text(standin.password + "\n")
        standin.env("acme", "prod").keystores["mpKeystore"] = {
            "mpKey": chain_info(Path(cert).read_bytes())
        }
        accepted = pki.ca_file(pki.accepted_ca, name="accepted.pem")
        with PythonBackend(pki, version, trust=accepted, ca_names=accepted) as backend:
            log, config = tmp_path / "system.log", tmp_path / "config.yml"
            log.touch()
            config.write_text(config_text(tmp_path, standin, password_file))
            with ExporterProcess("--config", str(config)) as daemon:
                with log.open("a") as f:
                    f.write(failure(1, backend.target))
                    f.write(failure(2, backend.target))
                key = {"org": "acme", "env": "prod", "target": backend.target, "key_alias": "mpKey"}
                cause = wait_for(
                    lambda: firing_cause(daemon, "client_certificate_rejected", key),
                    what="the alert with its cause",
                )
                assert cause == "ca_mismatch"
                info = daemon.value("apigee_tls_diagnosis_info", cause="ca_mismatch", **key)
                assert info == 1
                output = daemon.stop()[1]
    assert standin.password not in output


def test_warning_alert_is_diagnosed_with_the_targets_protocols(tmp_path: Path) -> None:
    """A warning (handshake_failures, protocol_version) about a TLS 1.3-only nginx, with the
    target's protocols configured as the TargetServer has them (TLSv1.2), is diagnosed too: the
    firing warning carries cause protocol_mismatch."""
    pki = Pki(tmp_path)
    cert, _ = pki.client(pki.accepted_ca, "mp")
    accepted = pki.ca_file(pki.accepted_ca, name="accepted.pem")
    site = NginxSite(pki.server_cert, pki.server_key, client_ca=accepted, protocols="TLSv1.3")
    password_file = tmp_path / "mgmt-password"
    with Standin() as standin, Nginx(tmp_path / "nginx", [site]):
        password_file.write_text(standin.password + "\n")
        standin.env("acme", "prod").keystores["mpKeystore"] = {
            "mpKey": chain_info(Path(cert).read_bytes())
        }
        log, config = tmp_path / "system.log", tmp_path / "config.yml"
        log.touch()
        targets = f"  targets:\n    '{site.target}': {{protocols: [TLSv1.2]}}\n"
        config.write_text(config_text(tmp_path, standin, password_file, targets))
        with ExporterProcess("--config", str(config)) as daemon:
            with log.open("a") as f:
                for n in (1, 2):
                    f.write(failure(n, site.target, "Received fatal alert: protocol_version"))
            key = {"org": "acme", "env": "prod", "target": site.target, "key_alias": "mpKey"}
            cause = wait_for(
                lambda: firing_cause(daemon, "handshake_failures", key),
                what="the warning with its cause",
            )
            assert cause == "protocol_mismatch"
            assert daemon.value("apigee_tls_diagnosis_info", cause="protocol_mismatch", **key) == 1
