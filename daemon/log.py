"""Logging: structlog configured once, by the CLI, for the whole process.

The rest of the code logs with ``structlog.get_logger()`` using short lowercase event names and
key-value context, e.g. ``log.info("config reloaded", files=2)``. Output goes to stdout:

- JSON lines when stdout is not a terminal (under systemd it is journald) or when asked for;
  under journald each line starts with an ``<N>`` priority prefix that journald strips and turns
  into the entry's PRIORITY, so ``journalctl -p warning`` works;
- a readable, coloured console rendering on a terminal.

Timestamps are ISO 8601 in UTC. Values of keys that name secrets (``password``,
``authorization``, ...) are replaced before rendering, as a last line of defence: never log a
secret in the first place.
Records from the standard library's ``logging`` (third-party libraries) get the same treatment.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Optional, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["LEVELS", "configure_logging"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Keys whose values are never rendered. Key aliases and key store names are not secrets.
SECRET_KEYS = frozenset(
    {
        "authorization",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "api_key",
        "private_key",
        "credentials",
        "cookie",
    }
)
REDACTED = "[redacted]"

# sd-daemon(3) priority prefixes, understood by journald on a service's stdout.
_SYSLOG_PRIORITY = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
}


class _HandlerMarker(logging.StreamHandler):  # type: ignore[type-arg]
    """Our root handler, so a second configure_logging() replaces it instead of adding one."""


def configure_logging(
    level: str = "info",
    json_output: Optional[bool] = None,
    stream: Optional[TextIO] = None,
) -> None:
    """Configure structlog and the standard library's logging for the whole process.

    level: one of LEVELS (case-insensitive); ValueError with the choices otherwise.
    json_output: None decides by whether the stream is a terminal.
    stream: where lines go; stdout by default (tests pass their own).

    Calling it again (e.g. after a reload changed the level) replaces the previous configuration.
    """
    levelno = LEVELS.get(level.lower())
    if levelno is None:
        choices = ", ".join(LEVELS)
        raise ValueError(f"unknown log level {level!r}; expected one of: {choices}")
    out = sys.stdout if stream is None else stream
    if json_output is None:
        json_output = not _isatty(out)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if json_output:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
        if _is_journal_stream(out):
            renderer = _JournalPriorityPrefix(renderer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        # Not cached, so that a reconfiguration (new level on reload) reaches existing loggers.
        cache_logger_on_first_use=False,
    )

    handler = _HandlerMarker(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _HandlerMarker)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any key naming a secret (see SECRET_KEYS), also one level down."""
    _redact(event_dict)
    for value in event_dict.values():
        if isinstance(value, MutableMapping):
            _redact(value)
    return event_dict


def _redact(mapping: MutableMapping[str, Any]) -> None:
    for key in mapping:
        if isinstance(key, str) and key.lower() in SECRET_KEYS:
            mapping[key] = REDACTED


class _JournalPriorityPrefix:
    """Wraps a renderer, prefixing each line with ``<N>`` from its level for journald."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        priority = _SYSLOG_PRIORITY.get(str(event_dict.get("level", "info")), 6)
        line = self._renderer(logger, method, event_dict)
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        return f"<{priority}>{line}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def _is_journal_stream(stream: TextIO) -> bool:
    """True when the stream is the journald connection systemd gave us ($JOURNAL_STREAM)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not device or not inode:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"
