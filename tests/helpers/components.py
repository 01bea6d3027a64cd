"""The real components a test runs (Debian packages, tests/system/apt-packages.txt): without one
the test is skipped with one line saying what to install, except with ``CI=true``, where the
component must be there and its absence is a failure. ``make test`` installs them as root on
Debian."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def missing(what: str, install: str) -> None:
    """``what`` is not on this machine: fail in CI, else skip saying ``install``."""
    message = f"no {what}: {install}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require(tool: str, package: str) -> str:
    """The path of the program ``tool`` (from the Debian package ``package``)."""
    found = shutil.which(tool)
    if found is None:
        missing(tool, f"apt-get install --no-install-recommends {package}")
    assert found is not None
    return found
