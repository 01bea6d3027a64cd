"""Shared fixtures. Others append their fixtures below; keep each one small and documented."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest
from apigee_tls_exporter.web.serve import MetricsServer, serve
from apigee_tls_exporter.web.webconfig import WebConfig
from helpers.stack import Stack
from prometheus_client import CollectorRegistry


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
    """Starts metrics servers with ``serve()`` (127.0.0.1 and a free port unless told; keyword
    options such as ``phase`` and ``status`` passed on) and stops each one after the test,
    asserting its thread ends."""
    running: list[tuple[MetricsServer, threading.Thread]] = []

    def _start(
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 0,
        web_config: Optional[WebConfig] = None,
        **options: Any,
    ) -> MetricsServer:
        server, thread = serve(registry, host, port, web_config, **options)
        running.append((server, thread))
        return server

    yield _start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


def _log_through_stdlib() -> None:
    """The daemon's log lines go to the standard library's logging, which pytest captures (shown
    with a failing test, level INFO: pyproject.toml's ``log_level``), never straight to the
    terminal: a line logged by a server thread between two tests would break into the progress
    output. The NullHandler keeps ``logging.lastResort`` from printing when no capture is on."""
    import logging

    import structlog

    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
        root.addHandler(logging.NullHandler())


def pytest_configure(config: pytest.Config) -> None:
    _log_through_stdlib()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with the tests' logging set-up: a CLI test that configured logging onto
    its captured (then closed) stderr must not leak that configuration into the next test."""
    import logging

    import structlog

    yield
    structlog.reset_defaults()
    for handler in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(handler)
    _log_through_stdlib()


@pytest.fixture(scope="session")
def jsse_harness() -> Any:
    """The JSSE harness (tests/helpers/jsse.py) with its Java classes compiled once for the
    session; the test is skipped without a JDK, except with ``CI=true``, where that is a failure."""
    from helpers import jsse

    jsse.require_java()
    jsse.classes()
    return jsse
