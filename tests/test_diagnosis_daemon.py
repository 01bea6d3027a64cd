"""The daemon end to end with diagnosis: an alert for a target makes the daemon diagnose it.

The Edge management API is the local stand-in of ``mgmt_standin`` (the one component that cannot
run here); the backend is a real TLS server demanding a client certificate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import records
from mgmt_standin import Standin, chain_info
from support import Daemon, samples, wait_for
from tls_backends import Pki, PythonBackend


def failure(n: int, target: str) -> str:
    """A bad_certificate failure to ``target`` (an IP address and port) with key alias mpKey."""
    ctx, thread = records.context(f"m-{n}"), "NIOThread@1"
    return records.text(
        [
            records.failed(
                remote=f"/{target}", ctx=ctx, thread=thread, stamp=f"2026-11-27 10:00:0{n},000"
            ),
            records.ssl_info(
                alias="mpKey", ctx=ctx, thread=thread, stamp=f"2026-11-27 10:00:0{n},001"
            ),
        ]
    )


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
            config.write_text(
                f"logs: [{{path: {log}}}]\n"
                f"state_file: {tmp_path / 'state.json'}\n"
                "alerts:\n  client_certificate_rejected: {min_failures: 2, window: 5m}\n"
                "diagnosis:\n  enabled: true\n"
                f"  management_url: {standin.url}\n"
                f"  username: {standin.username}\n  password_file: {password_file}\n"
                "  timeout: 5s\n"
            )
            with Daemon("--config", str(config)) as daemon:
                with log.open("a") as f:
                    f.write(failure(1, backend.target))
                    f.write(failure(2, backend.target))
                key = {"org": "acme", "env": "prod", "target": backend.target, "key_alias": "mpKey"}

                def firing_cause() -> str | None:
                    for name, labels, value in samples(daemon.scrape()):
                        if (
                            name == "apigee_tls_alert_firing"
                            and value == 1
                            and all(labels.get(k) == v for k, v in key.items())
                        ):
                            return labels.get("cause") or None
                    return None

                assert wait_for(firing_cause, what="the alert with its cause") == "ca_mismatch"
                info = daemon.value("apigee_tls_diagnosis_info", cause="ca_mismatch", **key)
                assert info == 1
                output = daemon.stop()[1]
    assert standin.password not in output
