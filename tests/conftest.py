"""Shared fixtures. Others append their fixtures below; keep each one small and documented."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stack import Stack


@pytest.fixture(scope="session")
def prometheus_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real Prometheus and Alertmanager on 127.0.0.1, started once per session from the shipped
    configs (1 s intervals), scraping ``stack.exporter_port`` and notifying ``stack.webhook``."""
    stack = Stack(tmp_path_factory.mktemp("prometheus-stack"))
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults: a CLI test that configured logging onto its
    captured (then closed) stderr must not leak that configuration into the next test."""
    import logging

    import structlog

    yield
    structlog.reset_defaults()
    for handler in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(handler)
