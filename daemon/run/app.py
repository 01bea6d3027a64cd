"""Wiring of ``run``: builds the stages in order (tail -> parse -> correlate -> metrics/alerts ->
serve), owns the threads, the checkpoint and the signals. ``scan`` has its own, smaller wiring in
``scan.py``."""

from __future__ import annotations

import os
import signal
import threading
import time
from base64 import b64decode, b64encode
from collections.abc import Iterator
from types import FrameType
from typing import Callable, Optional

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ..config import Config, ConfigError, LogConfig, parse_listen
from ..diagnosis import endpoint, inventory
from ..diagnosis.inventory import DiagnosisWorker, KeystoreInventory
from ..follow.follower import Follower
from ..follow.watch import Watcher
from ..log import configure_logging
from ..records.correlate import Correlator
from ..records.head import RecordHead
from ..records.parse import Parser
from ..records.pipeline import LogPipeline, Sink, pairing_stats, timezone_of
from ..records.stats import FileStats
from ..state import checkpoint, families
from ..state.alerts import AlertEngine, known_series
from ..state.counts import FailureStore, StoreState
from ..state.metrics import ExporterCollector
from ..web.process import BootTimeProcessCollector
from ..web.serve import OPENING, READY, RESTORING, serve
from ..web.status import (
    AlertStatus,
    DiagnosisStatus,
    LogStatus,
    PredictionStatus,
    Recent,
    RecentFailures,
    Status,
)
from ..web.webconfig import WebConfigError, load_web_config
from .notify import Notifier

log = structlog.get_logger()

# How often the follower looks for appended lines (watch.py says why appends are polled): the bound
# on the latency from a write to /metrics, at next to no CPU.
POLL_INTERVAL = 0.05

# config `log_format` -> configure_logging(json_output=...)
JSON_OUTPUT: dict[str, Optional[bool]] = {"auto": None, "json": True, "console": False}


def _b64(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else b64encode(data).decode("ascii")


class Daemon:
    """Follows the configured logs and keeps the metrics and the checkpoint; the HTTP server,
    signals and systemd are ``Service``'s."""

    def __init__(
        self,
        config: Config,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        checkpoint_interval: float = 1.0,
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall = wall
        self.checkpoint_interval = checkpoint_interval
        self.state_file = config.state_path()
        self.store = FailureStore(config.max_series)
        self.diagnosis: Optional[DiagnosisWorker] = None
        self.inventory: Optional[KeystoreInventory] = None
        if config.diagnosis.enabled:
            try:
                self.diagnosis, self.inventory = inventory.from_config(config.diagnosis, registry)
            except ValueError as err:
                raise ConfigError("diagnosis", [str(err)]) from None
        self.alerts = AlertEngine(
            config.alerts,
            lambda: [(p, f.stats) for p, f in self.followers.items()],
            clock=clock,
            wall=wall,
            cause_for=self.diagnosis.cause_for if self.diagnosis else None,
            on_firing=self._diagnose if self.diagnosis else None,
        )
        # For the status page: the last failures and the keys last sent to diagnosis.
        self.recent = RecentFailures()
        self.diagnosed: Recent[tuple[str, str, str, str]] = Recent()
        self.sinks: list[Sink] = [self.store.record, self.alerts.record, self.recent.record]
        self.followers: dict[str, Follower] = {}
        self.pipelines: dict[str, LogPipeline] = {}
        self._last_checkpoint: Optional[float] = None  # wall clock
        self._started = wall()
        self._dirty = False
        self._checkpoint_failing = False
        self.checkpoint_errors = 0
        self._status_mark: Optional[tuple[float, int]] = None  # (clock, lines) at the last status
        for log_config in config.log_paths():
            self._add_log(log_config)
        registry.register(
            ExporterCollector(
                self.store,
                lambda: [(p, f.stats) for p, f in self.followers.items()],
                lambda: pairing_stats(p.correlator for p in self.pipelines.values()),
                checkpoint_age=self.checkpoint_age,
                checkpoint_errors=lambda: self.checkpoint_errors,
            )
        )
        registry.register(self.alerts.collector())
        self._precreate()

    def _diagnose(self, org: str, env: str, target: str, key_alias: str) -> None:
        """A page or warning about a backend started firing: diagnose it in the background (the
        status page lists what was asked for)."""
        if self.diagnosis is not None:
            self.diagnosed.add((org, env, target, key_alias))
            received = self.alerts.firing_reason(org, env, target, key_alias)
            self.diagnosis.request(org, env, target, key_alias, received=received)

    def _precreate(self) -> None:
        """Known (target, key alias) series from ``alerts.known_targets`` exist at 0."""
        for labels in known_series(self.config.alerts):
            self.store.precreate(labels)

    def _add_log(self, log_config: LogConfig) -> None:
        path, rotated = os.path.abspath(log_config.path), log_config.rotated
        stats = FileStats()
        follower = Follower(
            path,
            stats=stats,
            rotated=rotated,
            max_line_bytes=self.config.max_line_bytes,
            from_beginning=self.config.from_beginning,
            clock=self.clock,
        )
        correlator = Correlator(
            self.config.pairing.window_lines, self.config.pairing.window, clock=self.clock
        )
        parser = Parser(timezone_of(self.config.timezone), RecordHead(log_config.record_head))
        self.followers[path] = follower
        self.pipelines[path] = LogPipeline(stats, parser, correlator, self.sinks)

    # --- checkpoint ---
    @property
    def checkpoint_failing(self) -> bool:
        return self._checkpoint_failing

    def checkpoint_age(self) -> float:
        """Seconds since the state file was last written (since start-up, when never)."""
        last = self._started if self._last_checkpoint is None else self._last_checkpoint
        return max(0.0, self.wall() - last)

    def restore(self) -> None:
        """Take the counters, positions and open pairings from the state file, if it is usable."""
        loaded = checkpoint.load(self.state_file)
        state = checkpoint.check(loaded, self.state_file) if loaded is not None else None
        if state is None:
            return
        try:
            self.store.restore(state.store)
            for path, saved in state.logs.items():
                if path in self.followers and saved.follower is not None:
                    self.followers[path].restore(saved.follower)
                    pipeline = self.pipelines[path]
                    pipeline.correlator.restore(saved.pairing)
                    pipeline.record = None if saved.record is None else b64decode(saved.record)
                    # (a state file without the number: taken as the last line read)
                    pipeline.record_number = saved.record_number or pipeline.stats.lines
            self.alerts.restore(state.alerts)
        except (KeyError, ValueError, TypeError, AttributeError) as err:
            log.warning(
                "state file corrupt, starting fresh", state_file=self.state_file, error=str(err)
            )
            self.store.restore(StoreState(counts=[], last=[], overflow=0))
            self.followers.clear()
            self.pipelines.clear()
            for log_config in self.config.log_paths():
                self._add_log(log_config)
            self.alerts.restore(None)
            self._precreate()
            return
        self._precreate()
        self._last_checkpoint = state.written_at
        log.info("state restored", state_file=self.state_file, failures=self.store.total())

    def snapshot(self) -> checkpoint.State:
        return checkpoint.State(
            version=checkpoint.VERSION,
            written_at=self.wall(),
            store=self.store.snapshot(),
            alerts=self.alerts.snapshot(),
            logs={
                path: checkpoint.LogState(
                    follower=follower.snapshot(),
                    pairing=self.pipelines[path].correlator.snapshot(),
                    record=_b64(self.pipelines[path].record),
                    record_number=self.pipelines[path].record_number,
                )
                for path, follower in self.followers.items()
            },
        )

    def save_checkpoint(self) -> None:
        try:
            checkpoint.save(self.state_file, self.snapshot())
        except checkpoint.CheckpointError as err:
            self.checkpoint_errors += 1
            if not self._checkpoint_failing:
                log.error(
                    "checkpoint failed: positions and counts will not survive a restart",
                    error=str(err),
                )
            self._checkpoint_failing = True
            return
        if self._checkpoint_failing:
            log.info("checkpoint written again", state_file=self.state_file)
        self._checkpoint_failing = False
        self._last_checkpoint = self.wall()
        self._dirty = False

    # --- following ---
    def step(self, stop: Callable[[], bool] = lambda: False) -> bool:
        """Poll every log once; process what is new. True when something was read.

        ``stop`` is asked after each read: when it says so, the step ends there (a large backlog
        is left for later), at a settled point, so the checkpoint written next is exact.
        """
        progressed = False
        for path, follower in self.followers.items():
            pipeline = self.pipelines[path]
            read_at = self.clock()  # all that was written by now is read by this poll
            for segment in follower.poll():
                pipeline.process(*segment)
                progressed = True
                self._dirty = True
                if follower.settled:  # never between the segments of one read
                    self.maybe_checkpoint()
                    if stop():
                        return progressed
            if follower.caught_up:  # not while a copy or a compressor is waited for
                pipeline.idle(read_at)  # (a stall since then is not the log's quiet time)
        self.alerts.evaluate()
        return progressed

    def maybe_checkpoint(self) -> None:
        if not self._dirty:
            return
        if (
            self._last_checkpoint is None
            or self.wall() - self._last_checkpoint >= self.checkpoint_interval
        ):
            self.save_checkpoint()

    def close(self) -> None:
        for follower in self.followers.values():
            follower.close()
        if self.diagnosis is not None:
            self.diagnosis.close(wait=False)

    def reconfigure(self, config: Config) -> None:
        """Apply a new config in place: counters, positions and open pairings stay.

        Logs no longer configured are dropped (their failures stay counted); new ones are
        followed, from their end unless ``from_beginning``. The listen address and the state file
        need a restart.
        """
        wanted = {os.path.abspath(c.path): c for c in config.log_paths()}
        for path in list(self.followers):
            if path not in wanted:
                self.followers.pop(path).close()
                del self.pipelines[path]
        self.config = config
        for path, log_config in wanted.items():
            if path not in self.followers:
                self._add_log(log_config)
        tz = timezone_of(config.timezone)
        for path, pipeline in self.pipelines.items():
            pipeline.parser = Parser(tz, RecordHead(wanted[path].record_head))
            pipeline.correlator.window_lines = config.pairing.window_lines
            pipeline.correlator.window_seconds = config.pairing.window
        self.store.max_series = config.max_series
        self.alerts.reconfigure(config.alerts)
        self._precreate()

    def status_line(self) -> str:
        """systemd's STATUS=: logs, lines read per second since the last call, failures."""
        lines = sum(f.stats.lines for f in self.followers.values())
        now = self.clock()
        rate = 0.0
        if self._status_mark is not None and now > self._status_mark[0]:
            rate = (lines - self._status_mark[1]) / (now - self._status_mark[0])
        self._status_mark = (now, lines)
        return (
            f"{len(self.followers)} log(s), {rate:.0f} lines/s, {lines} lines, "
            f"{int(self.store.total())} failures"
        )


def status_of(
    daemon: Daemon,
    *,
    reload_ok: bool,
    reload_time: Optional[float],
    reload_error: Optional[str],
    started: Optional[float],
    probe: Optional[endpoint.ProbeEndpoint] = None,
) -> Status:
    """A snapshot of the running daemon for the status page (a plain value: ``web`` never reads
    the daemon)."""
    now = daemon.clock()
    logs = []
    for path, follower in sorted(list(daemon.followers.items())):
        stats = follower.stats
        logs.append(
            LogStatus(
                path=path,
                size=stats.size,
                offset=stats.offset,
                last_read_age=max(0.0, now - stats.last_read) if stats.last_read else None,
                lines=stats.lines,
                rotations=dict(stats.rotations),
                errors=dict(stats.read_errors),
            )
        )
    alerts = tuple(
        AlertStatus(*labels) for labels, _ in daemon.alerts.firing_series() if len(labels) == 8
    )
    diagnoses = []
    if daemon.diagnosis is not None:
        for key in daemon.diagnosed.items():
            result = daemon.diagnosis.diagnosis_for(*key)
            if result is not None:
                diagnoses.append(
                    DiagnosisStatus(*key, result.cause, result.advice, result.checked_at)
                )
    return Status(
        now=daemon.wall(),
        logs=tuple(logs),
        failures=tuple(daemon.recent.items()),
        failures_total=daemon.store.total(),
        alerts=alerts,
        diagnoses=tuple(diagnoses),
        diagnosis_enabled=daemon.diagnosis is not None,
        predictions=tuple(
            PredictionStatus(r.org, r.env, r.target, r.key_alias, cause, ok, at)
            for r, cause, ok, at in (probe.predictions() if probe is not None else [])
        ),
        state_file=daemon.state_file,
        checkpoint_age=daemon.checkpoint_age(),
        checkpoint_failing=daemon.checkpoint_failing,
        reload_ok=reload_ok,
        reload_time=reload_time,
        reload_error=reload_error,
        started=started,
    )


class Service:
    """The ``run`` command: the daemon, its HTTP server, the watcher, signals and systemd.

    Signals only set flags; the loop acts on them between reads, so a reload or a stop never
    lands in the middle of a block: SIGHUP re-reads the config and applies it without losing
    counters, positions or open pairings (an invalid one is refused and the old one stays);
    SIGTERM/SIGINT write the checkpoint and exit 0.
    """

    def __init__(self, load: Callable[[], Config], notifier: Optional[Notifier] = None) -> None:
        self.load = load
        self.config = load()
        self.notifier = notifier or Notifier()
        self.registry = CollectorRegistry(auto_describe=True)
        BootTimeProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.reload_ok = True
        self.reload_time = time.time()
        self.reload_error: Optional[str] = None
        self.started = time.time()
        self.phase = RESTORING  # -> OPENING -> READY: /-/ready and /metrics follow it
        self.registry.register(_ReloadCollector(self))
        self.daemon = Daemon(self.config, self.registry)
        try:
            self.probe, self.routes = endpoint.from_config(self.config.diagnosis, self.registry)
        except ValueError as err:
            raise ConfigError("diagnosis", [str(err)]) from None
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._reload = threading.Event()

    def on_stop(self, signum: int, frame: Optional[FrameType]) -> None:
        log.info("signal received, stopping", signal=signal.Signals(signum).name)
        self.stop.set()
        self.wake.set()

    def on_reload(self, signum: int, frame: Optional[FrameType]) -> None:
        self._reload.set()
        self.wake.set()

    def run(self) -> int:
        # Signals first: a stop asked for during the start-up is seen by the loop, not lost.
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGHUP, self.on_reload)
        web_config = load_web_config(self.config.web_config) if self.config.web_config else None
        host, port = parse_listen(self.config.listen)
        server, server_thread = serve(
            self.registry,
            host,
            port,
            web_config,
            phase=lambda: self.phase,
            status=self.status,
            routes=self.routes,
        )
        self.server = server
        self.daemon.restore()
        self.phase = OPENING
        # Open the logs (an existing one at its end) before we say ready: one read each at most,
        # a backlog is read in the loop, where a stop is seen between reads.
        self.daemon.step(lambda: True)
        self.daemon.save_checkpoint()  # a state file that cannot be written is said at start-up
        self.phase = READY
        watcher = Watcher(self.daemon.followers, self.wake)
        watcher.start()
        log.info(
            "serving metrics",
            url=f"{server.scheme}://{host or '0.0.0.0'}:{server.port}/metrics",
            logs=list(self.daemon.followers),
            state_file=self.daemon.state_file,
        )
        self._start_inventory()
        self.notifier.ready(self.daemon.status_line())
        interval = self.notifier.watchdog_interval()
        ping_every = interval / 2 if interval else None
        last_ping = last_status = 0.0
        try:
            while not self.stop.is_set():
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                    watcher.close()
                    watcher = Watcher(self.daemon.followers, self.wake)
                    watcher.start()
                self.daemon.step(self.stop.is_set)
                self.daemon.maybe_checkpoint()
                now = time.monotonic()
                if ping_every and now - last_ping >= ping_every:
                    self.notifier.watchdog()  # the loop came round: the follower is not stalled
                    last_ping = now
                if now - last_status >= 5:
                    self.notifier.status(self.daemon.status_line())
                    watcher.refresh()
                    last_status = now
                self.wake.wait(POLL_INTERVAL)
                self.wake.clear()
        finally:
            self.notifier.stopping()
            watcher.close()
            self.daemon.save_checkpoint()
            self.daemon.close()
            self.probe.close()
            server.shutdown()
            server.server_close()
            server_thread.join(timeout=5)
        log.info("stopped")
        return 0

    def status(self) -> Status:
        """The status page's data (called from the HTTP server's threads)."""
        return status_of(
            self.daemon,
            reload_ok=self.reload_ok,
            reload_time=self.reload_time,
            reload_error=self.reload_error,
            started=self.started,
            probe=self.probe,
        )

    def _start_inventory(self) -> None:
        """Refresh the keystore inventory now and every interval, off the follower's thread."""
        keystore_inventory = self.daemon.inventory
        if keystore_inventory is None or not self.config.diagnosis.inventory.keystores:
            return
        every = self.config.diagnosis.inventory.interval

        def refresh() -> None:
            while True:
                keystore_inventory.refresh()
                if self.stop.wait(every):
                    return

        threading.Thread(target=refresh, name="inventory", daemon=True).start()

    def reload(self) -> None:
        """SIGHUP: apply a new config, or keep the old one when the new one is invalid."""
        self.notifier.reloading()
        try:
            config = self.load()
            web_config = load_web_config(config.web_config) if config.web_config else None
        except (ConfigError, WebConfigError) as err:
            log.error("reload refused, keeping the running config", error=str(err))
            self.reload_ok = False
            self.reload_error = str(err)
        else:
            for key in ("listen", "state_file", "diagnosis"):
                if getattr(config, key) != getattr(self.config, key):
                    log.warning("reload cannot change this, restart to apply", key=key)
            self.daemon.reconfigure(config)
            self.server.set_web_config(web_config)
            configure_logging(config.log_level, json_output=JSON_OUTPUT[config.log_format])
            self.config = config
            self.reload_ok = True
            self.reload_time = time.time()
            self.reload_error = None
            log.info("config reloaded", logs=list(self.daemon.followers))
        self.notifier.ready(self.daemon.status_line())


class _ReloadCollector(Collector):
    def __init__(self, service: Service) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        yield families.CONFIG_LAST_RELOAD_SUCCESSFUL.new(
            value=1.0 if self._service.reload_ok else 0.0
        )
        yield families.CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS.new(
            value=self._service.reload_time
        )
