"""The demo's parts: the generator stands alone; the lab's backend rejects one alias."""

from __future__ import annotations

import subprocess
import sys

from apigee_tls_exporter.demo import lab
from apigee_tls_exporter.diagnosis.decide import run_diagnosis
from apigee_tls_exporter.diagnosis.identity import identity_from_management
from apigee_tls_exporter.diagnosis.mgmt import Credentials, ManagementClient


def test_the_generator_imports_nothing_of_the_daemon() -> None:
    """demo/generator.py (used by the tests and the bench) loads no daemon stage: the demo
    command lives in demo/command.py."""
    code = (
        "import sys, apigee_tls_exporter.demo.generator; "
        "print(sorted(m for m in sys.modules if m.startswith('apigee_tls_exporter.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(done.stdout)  # a printed list of module names
    assert loaded == ["apigee_tls_exporter.demo", "apigee_tls_exporter.demo.generator"]


def test_the_lab_backend_rejects_the_legacy_alias_and_accepts_the_new_one() -> None:
    """diagnose, with the stand-in's keystore, finds ca_mismatch for the alias from the legacy CA
    and nothing against the one from the partner CA; the stand-in says it is one."""
    running = lab.start("pw-Secret")
    try:
        client = ManagementClient(running.standin.url, Credentials(lab.USERNAME, "pw-Secret"))
        causes = {}
        for alias in (lab.REJECTED_ALIAS, lab.ACCEPTED_ALIAS):
            identity = identity_from_management(client, lab.ORG, lab.ENV, lab.KEYSTORE, alias)
            diagnosis = run_diagnosis(running.backend.target, identity=identity, timeout=5)
            causes[alias] = (diagnosis.cause, diagnosis.evaluation.java_sends)
    finally:
        running.close()
    assert causes == {
        lab.REJECTED_ALIAS: ("ca_mismatch", False),
        lab.ACCEPTED_ALIAS: ("unknown", True),
    }
