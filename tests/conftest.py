"""Shared fixtures. Others append their fixtures below; keep each one small and documented."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest
from apigee_tls_exporter.serve import MetricsServer, serve
from apigee_tls_exporter.webconfig import WebConfig
from prometheus_client import CollectorRegistry
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


@pytest.fixture
def start_server() -> Iterator[Callable[..., MetricsServer]]:
    """Starts metrics servers with ``serve()`` (127.0.0.1 and a free port unless told) and stops
    each one after the test, asserting its thread ends."""
    running: list[tuple[MetricsServer, threading.Thread]] = []

    def _start(
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 0,
        web_config: Optional[WebConfig] = None,
    ) -> MetricsServer:
        server, thread = serve(registry, host, port, web_config)
        running.append((server, thread))
        return server

    yield _start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


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


@pytest.fixture(scope="session")
def jsse_harness() -> Any:
    """The JSSE harness (tests/jsse.py) with its Java classes compiled once for the session; the
    test is skipped without a JDK, except with ``CI=true``, where that is a failure."""
    import jsse

    jsse.require_java()
    jsse.classes()
    return jsse
