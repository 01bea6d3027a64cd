"""Logging configuration: JSON lines or console output, level filter, UTC timestamps, redaction."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import structlog
from apigee_tls_exporter.log import configure_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo the process-wide configuration after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    """The JSON objects written so far, one per line."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_when_not_a_terminal() -> None:
    """A non-terminal stream gets one JSON object per event with event, level and context."""
    out = io.StringIO()
    configure_logging("info", stream=out)

    structlog.get_logger().info("config loaded", files=2)

    [line] = lines(out)
    assert line["event"] == "config loaded"
    assert line["level"] == "info"
    assert line["files"] == 2


def test_timestamp_is_iso_utc() -> None:
    """Timestamps are ISO 8601 in UTC, close to now."""
    out = io.StringIO()
    configure_logging(stream=out)
    before = datetime.now(timezone.utc)

    structlog.get_logger().warning("slow scrape")

    stamp = str(lines(out)[0]["timestamp"])
    assert stamp.endswith("Z")
    parsed = datetime.fromisoformat(stamp.removesuffix("Z") + "+00:00")
    assert abs((parsed - before).total_seconds()) < 60


def test_level_filter_drops_lower_levels() -> None:
    """At level warning, info and debug events are dropped and warning and error kept."""
    out = io.StringIO()
    configure_logging("WARNING", stream=out)
    log = structlog.get_logger()

    log.debug("a")
    log.info("b")
    log.warning("c")
    log.error("d")

    assert [line["event"] for line in lines(out)] == ["c", "d"]


def test_reconfigure_changes_level_of_existing_loggers() -> None:
    """A second call (as after a reload) applies the new level to loggers already obtained."""
    out = io.StringIO()
    configure_logging("info", stream=out)
    log = structlog.get_logger()
    log.debug("hidden")

    configure_logging("debug", stream=out)
    log.debug("shown")

    assert [line["event"] for line in lines(out)] == ["shown"]


def test_console_renderer_when_asked() -> None:
    """json_output=False gives a readable, non-JSON line holding the event and its context."""
    out = io.StringIO()
    configure_logging("info", json_output=False, stream=out)

    structlog.get_logger().info("listening", address="127.0.0.1:9847")

    text = out.getvalue()
    assert "listening" in text
    assert "address=127.0.0.1:9847" in text
    assert not text.lstrip().startswith("{")


def test_secrets_are_redacted() -> None:
    """Values of keys naming secrets never reach the output, even one level down."""
    out = io.StringIO()
    configure_logging(stream=out)

    structlog.get_logger().info(
        "auth", password="hunter2", headers={"Authorization": "Basic Zm9vOmJhcg=="}, user="alice"
    )

    text = out.getvalue()
    assert "hunter2" not in text
    assert "Zm9vOmJhcg" not in text
    assert lines(out)[0]["user"] == "alice"


def test_stdlib_logging_uses_the_same_format() -> None:
    """Records from the standard library's logging come out as the same JSON lines."""
    out = io.StringIO()
    configure_logging("info", stream=out)

    logging.getLogger("watchdog.observers").warning("inotify watch limit reached")

    [line] = lines(out)
    assert line["event"] == "inotify watch limit reached"
    assert line["level"] == "warning"
    assert line["logger"] == "watchdog.observers"


def test_reconfigure_does_not_duplicate_stdlib_handler() -> None:
    """Configuring twice leaves one handler, so stdlib records are not written twice."""
    out = io.StringIO()
    configure_logging(stream=out)
    configure_logging(stream=out)

    logging.getLogger("x").error("once")

    assert len(lines(out)) == 1


def test_unknown_level_is_a_clear_error() -> None:
    """An unknown level name raises ValueError listing the valid ones."""
    with pytest.raises(ValueError, match="unknown log level 'loud'; expected one of: debug, info"):
        configure_logging("loud")


def test_journald_gets_priority_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When stdout is the journal stream ($JOURNAL_STREAM), lines carry an <N> priority prefix."""
    path = tmp_path / "journal"
    with path.open("w") as out:
        st = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging("info", stream=out)
        log = structlog.get_logger()
        log.info("started")
        log.error("failed")

    first, second = path.read_text().splitlines()
    assert first.startswith("<6>{")
    assert second.startswith("<3>{")
    assert json.loads(second[3:])["event"] == "failed"
