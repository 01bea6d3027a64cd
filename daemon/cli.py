"""The command line: the only place that parses argv and sets exit codes.

Exit codes: 0 success; 1 an invalid config (check-config, run); 2 bad usage or an unreadable input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Optional, TextIO

from . import __version__
from .errors import UsageError
from .records.pipeline import timezone_of
from .scan.plan import ScanResult, default_jobs, scan
from .state.counts import FAILURE_LABELS

if TYPE_CHECKING:
    from .config import Config

# The daemon, the config models and the TLS libraries are imported by the commands that use them,
# so that `scan` starts fast.

PROG = "apigee-tls-exporter"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Southbound TLS handshake failures from the Apigee MP system.log, "
        "as Prometheus metrics.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("scan", help="read logs from start to end and print the final metrics")
    p.add_argument("files", nargs="+", metavar="FILE", help="a log file, or - for standard input")
    p.add_argument(
        "--format",
        choices=("prometheus", "json", "table", "backfill"),
        default="prometheus",
        help="prometheus text (default), json, a table for a person (with failures over time), "
        "or backfill: OpenMetrics with the log's timestamps for promtool tsdb "
        "create-blocks-from openmetrics",
    )
    p.add_argument("--timezone", help="IANA zone of the log's timestamps (default: local time)")
    p.add_argument("--max-series", type=int, default=5000, help="bound on failure series")
    p.add_argument("--window-lines", type=int, default=1000, help="pairing window in lines")
    p.add_argument(
        "--record-head",
        metavar="PATTERN",
        help="the site's own record head, as the config's logs[].record_head: a regular "
        "expression with the groups (?P<ts>...) and (?P<thread>...) (default: the built-in "
        "renderings)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        help=f"processes reading the files (default: the cores, here {default_jobs()})",
    )
    p.add_argument(
        "--since",
        metavar="TIME",
        help="count failures logged at or after TIME: an ISO time in the log's time zone "
        "(2026-11-27T10:00) or a duration before now (90m, 2h, 1d)",
    )
    p.add_argument("--until", metavar="TIME", help="count failures logged before TIME (as --since)")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="backfill: a label added to every series, e.g. job=apigee-tls, instance=mp1:9847 "
        "(repeatable)",
    )

    p = sub.add_parser("run", help="follow the log(s) and serve /metrics")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config (installed: /etc/apigee-tls-exporter/config.yml, every key commented)",
    )
    p.add_argument("--log", action="append", metavar="PATH", help="log to follow (repeatable)")
    p.add_argument("--listen", metavar="HOST:PORT", help="default :9847")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        default=None,
        help="read a log the state file does not know from its start, not its end",
    )
    p.add_argument("--state-file", metavar="PATH", help="default $STATE_DIRECTORY/state.json")
    p.add_argument("--timezone", help="IANA zone of the log's timestamps (default: local time)")
    p.add_argument(
        "--web-config",
        "--web.config.file",
        dest="web_config",
        metavar="FILE",
        help="TLS and basic auth for /metrics (exporter-toolkit format)",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", choices=("auto", "json", "console"))

    p = sub.add_parser(
        "check-config",
        help="validate a config file, or whether the exporter reads a log (--log); exit 1 when not",
    )
    p.add_argument("file", metavar="FILE", nargs="?", help="the config file")
    p.add_argument(
        "--log",
        metavar="LOG",
        help="read this MP log as the daemon would (with FILE's settings for it) and report lines, "
        "records, failures, unrecognised lines and the first lines it could not read",
    )

    p = sub.add_parser(
        "diagnose",
        help="find why a backend rejects the client certificate (bad_certificate)",
        add_help=False,
    )
    # A stub for the command list: its options (and pyOpenSSL) are loaded only when it runs.

    p = sub.add_parser("targets", help="write Prometheus file_sd targets for /probe")
    p.add_argument("--config", required=True, metavar="FILE", help="the daemon's config")
    p.add_argument("--env", required=True, action="append", dest="envs", metavar="ORG/ENV")
    p.add_argument("-o", "--output", metavar="FILE", help="file to replace (default: stdout)")
    p.add_argument("--target-endpoints", action="store_true", help="also deployed TargetEndpoints")

    sub.add_parser(
        "demo", help="run the daemon on a built-in demo log (what `make run` does)", add_help=False
    )  # a stub like diagnose's: the demo's generator is loaded only when it runs
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["diagnose"]:
            return _diagnose(argv[1:])  # its own parser: see the stub in _parser()
        if argv[:1] == ["demo"]:
            return _demo(argv[1:])  # the same
        args = _parser().parse_args(argv)
        if args.command == "scan":
            return _scan(args)
        if args.command == "check-config":
            if args.log is not None:
                return _check_log(args.log, args.file)
            if args.file is None:
                raise UsageError("check-config: give a config FILE, or --log LOG")
            return _check_config(args.file)
        if args.command == "run":
            return _run(args)
        if args.command == "targets":
            from .diagnosis import discovery

            return discovery.command(args)
    except UsageError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)


# --- scan -------------------------------------------------------------------------------------


def _scan(args: argparse.Namespace) -> int:
    try:
        tz = timezone_of(args.timezone)
    except (LookupError, ValueError):  # zoneinfo's ZoneInfoNotFoundError is a LookupError
        raise UsageError(f"timezone: unknown time zone {args.timezone!r}") from None
    if args.max_series < 1 or args.window_lines < 1:
        raise UsageError("--max-series and --window-lines must be at least 1")
    jobs = default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    now = time.time()
    since = None if args.since is None else parse_time(args.since, tz, now, "--since")
    until = None if args.until is None else parse_time(args.until, tz, now, "--until")
    if since is not None and until is not None and since >= until:
        raise UsageError("--since must be before --until")
    labels = backfill_labels(args.label)
    if args.record_head is not None:
        from .config import check_head_pattern

        try:
            check_head_pattern(args.record_head)
        except ValueError as err:
            raise UsageError(f"--record-head: {err}") from None
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    try:
        result = scan(
            args.files,
            tz=tz,
            max_series=args.max_series,
            window_lines=args.window_lines,
            progress=progress,
            jobs=jobs,
            since=since,
            until=until,
            timeline=args.format in ("table", "backfill"),
            meanwhile=lambda: _load_output(args.format),
            record_head=args.record_head,
        )
    except OSError as err:
        name = err.filename if err.filename is not None else "input"
        raise UsageError(f"cannot read {name}: {err.strerror or err}") from None
    finally:
        if progress is not None:
            progress.done()
    try:
        _write_scan(result, args.format, sys.stdout, tz, labels, until)
        sys.stdout.flush()
    except BrokenPipeError:  # `scan ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's last flush is quiet
        return 141  # as a shell reports a command ended by SIGPIPE
    return 0


def _load_output(fmt: str) -> None:
    """Imports what writing ``fmt`` needs (``scan`` calls it while its workers read)."""
    if fmt == "prometheus":
        from .state import metrics  # noqa: F401 (with the Prometheus client)

        _no_created_series()


def _write_scan(
    result: ScanResult,
    fmt: str,
    out: TextIO,
    tz: Optional[tzinfo],
    labels: dict[str, str],
    until: Optional[float],
) -> None:
    _load_output(fmt)
    if fmt == "prometheus":
        from prometheus_client import generate_latest

        out.write(generate_latest(result.registry()).decode())
    elif fmt == "json":
        json.dump(scan_json(result), out, indent=2, sort_keys=True)
        out.write("\n")
    elif fmt == "backfill":
        from .scan import backfill

        backfill.write(result, out, labels, until)
    else:
        from .scan.timeline import over_time

        out.write(scan_table(result))
        lines = over_time(result, tz)
        if lines:
            out.write("\n".join(lines) + "\n")


def parse_time(text: str, tz: Optional[tzinfo], now: float, option: str) -> float:
    """``--since``/``--until``: an ISO time (naive: in the log's zone ``tz``, None for local time)
    or a duration before ``now`` such as ``90m``, ``2h``, ``1d12h``; epoch seconds."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value.replace(",", ".").replace("Z", "+00:00"))
    except ValueError:
        from .config import duration_seconds  # the one duration grammar (imported when needed)

        seconds = duration_seconds(value)
        if seconds is not None:
            return now - seconds
        raise UsageError(
            f"{option}: cannot read {text!r}: give an ISO time such as 2026-11-27T10:00 "
            "(in the log's time zone) or a duration before now such as 90m, 2h, 1d"
        ) from None
    if moment.tzinfo is None and tz is not None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()


def backfill_labels(pairs: list[str]) -> dict[str, str]:
    """``--label NAME=VALUE`` options -> labels; a bad one is a usage error."""
    from .scan.backfill import LABEL_NAME

    labels: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise UsageError(f"--label: {pair!r} is not NAME=VALUE with a Prometheus label name")
        if name in FAILURE_LABELS:
            raise UsageError(f"--label: {name} is a label of the failure series already")
        labels[name] = value
    return labels


class _Progress:
    """A one-line progress bar on a terminal, for inputs worth waiting for."""

    MIN_BYTES = 64 << 20

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._shown = False
        self._last = 0.0
        self._start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if total < self.MIN_BYTES or now - self._last < 0.2:
            return
        self._last = now
        share = min(1.0, done / total)
        rate = done / max(now - self._start, 1e-9) / 1e6
        bar = "#" * int(share * 30)
        self._stream.write(f"\r[{bar:<30}] {share:6.1%} {done / 1e6:,.0f} MB  {rate:,.0f} MB/s")
        self._stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def scan_json(result: ScanResult) -> dict[str, Any]:
    failures = [
        {**dict(zip(FAILURE_LABELS, labels)), "count": int(value)}
        for labels, value in sorted(result.store.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return {
        "failures": failures,
        "total_failures": int(result.store.total()),
        "series_overflow": result.store.overflow,
        "pairing": {
            "unpaired": result.pairing.unpaired,
            "orphans": result.pairing.orphans,
        },
        "files": {
            path: {
                "lines": s.lines,
                "bytes": s.bytes_read,
                "unrecognised_lines": s.unrecognised,
                "truncated_lines": s.truncated_lines,
            }
            for path, s in result.files.items()
        },
    }


def scan_table(result: ScanResult) -> str:
    """A summary for a person: totals by target, reason and key alias, then every series."""
    rows: list[dict[str, Any]] = [
        {**dict(zip(FAILURE_LABELS, labels)), "count": int(v)} for labels, v in result.store.items()
    ]
    lines = sum(s.lines for s in result.files.values())
    unrecognised = sum(s.unrecognised for s in result.files.values())
    out = [
        f"{int(result.store.total())} handshake failures in {lines} lines "
        f"({unrecognised} unrecognised handshake lines, {result.pairing.unpaired} failures "
        f"without an SSLInfo line, {result.pairing.orphans} orphan SSLInfo lines)",
    ]
    if not rows:
        return "\n".join(out) + "\n"
    for title, key in (("target", "target"), ("reason", "reason"), ("key alias", "key_alias")):
        totals: Counter[str] = Counter()
        for row in rows:
            totals[row[key] or "-"] += row["count"]
        out += ["", f"By {title}:"]
        out += [f"  {count:>9}  {name}" for name, count in totals.most_common()]
    out += ["", "By proxy, target, reason and key alias:"]
    header = ("FAILURES", "TARGET", "REASON", "KEY ALIAS", "PROXY")
    table = [header]
    for row in sorted(rows, key=lambda r: (-int(r["count"]), str(r["target"]), str(r["reason"]))):
        proxy = "/".join(str(row[x]) for x in ("org", "env", "api") if row[x]) or "-"
        if row["rev"]:
            proxy += f" rev {row['rev']}"
        table.append(
            (
                str(row["count"]),
                str(row["target"]),
                str(row["reason"]),
                str(row["key_alias"] or "-"),
                proxy,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        cells = [r[0].rjust(widths[0])] + [c.ljust(w) for c, w in zip(r[1:], widths[1:])]
        out.append("  " + "  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


# --- check-config and run -----------------------------------------------------------------------


def _diagnose(arguments: list[str]) -> int:
    from . import diagnosis

    parser = argparse.ArgumentParser(
        prog=f"{PROG} diagnose",
        description="Probe a backend and the client identity the MP uses; tell why the TLS "
        "handshake fails (bad_certificate and the like) and what to change.",
    )
    diagnosis.configure_parser(parser)
    return diagnosis.command(parser.parse_args(arguments))


def _check_config(path: str) -> int:
    """The config, and the files it names that the daemon reads at start (web config, secrets)."""
    from .config import ConfigError, load_config
    from .web.webconfig import WebConfigError, load_web_config

    problems: list[str] = []
    try:
        config = load_config(path)
    except ConfigError as err:
        problems = err.problems
    else:
        if config.web_config:
            try:
                load_web_config(config.web_config)
            except WebConfigError as err:
                problems += [f"web_config: {problem}" for problem in err.problems]
        problems += _check_record_heads(config)
        diagnosis = config.diagnosis
        for key in ("password_file", "token_file", "ca_file", "backend_ca_file"):
            name = getattr(diagnosis, key)
            if diagnosis.enabled and name and not os.access(name, os.R_OK):
                problems.append(f"diagnosis.{key}: cannot read {name}")
    if problems:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    logs = ", ".join(
        c.path if os.path.exists(c.path) else f"{c.path} (does not exist yet: waited for)"
        for c in config.log_paths()
    )
    print(f"{path}: OK (logs: {logs}; listen {config.listen})")
    return 0


HEAD_CHECK_BYTES = 1 << 18  # a record_head is tried on the log's first lines: 256 KiB of them


def _check_record_heads(config: Config) -> list[str]:
    """Each log's ``record_head`` against the first lines of its log, when it can be read."""
    from .records.head import RecordHead
    from .records.survey import survey

    problems = []
    for i, log in enumerate(config.log_paths()):
        if log.record_head is None:
            continue
        try:
            with open(log.path, "rb") as handle:
                first = handle.read(HEAD_CHECK_BYTES)
        except OSError:
            continue  # not there yet: the daemon waits for it
        cut = first.rfind(b"\n") + 1 if len(first) == HEAD_CHECK_BYTES else len(first)
        found = survey([first[:cut]], head=RecordHead(log.record_head))
        if found.lines and not found.records:
            example = found.examples[0][1] if found.examples else ""
            problems.append(
                f"logs[{i}].record_head: reads none of the first {found.lines} lines of "
                f"{log.path} (line 1: {example[:80]!r})"
            )
    return problems


def _check_log(path: str, config_path: Optional[str]) -> int:
    """``check-config --log LOG [FILE]``: does the exporter read this log?"""
    from .config import ConfigError, load_config
    from .records.head import RecordHead
    from .records.survey import BUILT_IN, survey

    head, tz, options = RecordHead(), None, {}
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as err:
            print(f"{config_path}: invalid configuration", file=sys.stderr)
            for problem in err.problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        tz = timezone_of(config.timezone)
        options = {
            "max_line_bytes": config.max_line_bytes,
            "window_lines": config.pairing.window_lines,
        }
        for log in config.log_paths():
            if os.path.abspath(log.path) == os.path.abspath(path) and log.record_head:
                head = RecordHead(log.record_head)
    try:
        with open(path, "rb") as handle:
            blocks = iter(lambda: handle.read(1 << 20), b"")
            found = survey(blocks, head=head, tz=tz, **options)
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None
    print(
        f"{path}: {found.lines} lines, {found.records} records, {found.failures} failures, "
        f"{found.unrecognised} unrecognised lines (format drift), {found.unread} lines neither a "
        "record it reads nor a stack trace line"
    )
    if found.examples:
        print("  first lines it could not read:")
        for number, line in found.examples:
            print(f"    line {number}: {line}")
        expected = BUILT_IN if head.pattern is None else f"the record_head {head.pattern}"
        print(f"  expected a record head: {expected}")
    if found.reads:
        print(f"{path}: the exporter reads this log")
        return 0
    why = "no record it can read" if not found.records else "handshake lines no rule matches"
    print(f"{path}: the exporter does not read this log: {why}", file=sys.stderr)
    return 1


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (if any) with the command-line options on top."""
    from .config import Config, load_config, validate

    base = load_config(args.config) if args.config else Config()
    overrides: dict[str, Any] = {}
    if args.log:
        overrides["logs"] = [{"path": p} for p in args.log]
    for key in (
        "listen",
        "from_beginning",
        "state_file",
        "timezone",
        "web_config",
        "log_level",
        "log_format",
    ):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    data = base.model_dump(exclude_unset=True)
    data.update(overrides)
    return validate(data, args.config or "command line")


def _no_created_series() -> None:
    """No ``_created`` series beside the counters (loaded by the commands that print metrics:
    the Prometheus client is not imported at start-up, so that ``scan`` starts fast)."""
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]


def _run(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .log import configure_logging
    from .run.app import JSON_OUTPUT, Service
    from .web.webconfig import WebConfigError

    _no_created_series()
    try:
        service = Service(lambda: config_from_args(args))
    except ConfigError as err:
        print(f"{PROG}: invalid configuration: {err}", file=sys.stderr)
        return 1
    config = service.config
    configure_logging(config.log_level, json_output=JSON_OUTPUT[config.log_format])
    try:
        return service.run()
    except WebConfigError as err:
        print(f"{PROG}: invalid web config: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{PROG}: cannot listen on {config.listen}: {err.strerror or err}", file=sys.stderr)
        return 2


def _demo(arguments: list[str]) -> int:
    """A demo writer appends realistic MP records to a log; the daemon follows it (demo.py)."""
    from .demo import command as demo

    _no_created_series()
    parser = argparse.ArgumentParser(
        prog=f"{PROG} demo",
        description="Run the daemon on a built-in demo log (what `make run` does).",
    )
    demo.configure_parser(parser)
    args = parser.parse_args(arguments)
    try:
        return demo.command(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
