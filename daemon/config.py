"""The YAML configuration: pydantic models, strict (unknown keys are errors), and ``load_config``.

Every command-line option of ``run`` has a key here; the command line wins over the file.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

MP_LOGS = (
    "/opt/apigee/var/log/edge-message-processor/logs/system.log",
    "/opt/apigee/var/log/edge-message-processor/system.log",
)
DEFAULT_LISTEN = ":9847"
DEFAULT_STATE_DIR = "/var/lib/apigee-tls-exporter"

# The one duration grammar (the config's durations, `scan --since 90m`): parts of a number and a
# unit, largest first or not: 250ms, 30s, 5m, 1h, 1d12h, 2w.
_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)"
_DURATION = re.compile(rf"(?:{_DURATION_PART})+")
_PARTS = re.compile(_DURATION_PART)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def duration_seconds(text: str) -> Optional[float]:
    """``"250ms"``, ``"90m"``, ``"1d12h"``, ``"2w"`` -> seconds; None when ``text`` is not one."""
    value = text.strip()
    if _DURATION.fullmatch(value) is None:
        return None
    return sum(float(n) * _UNITS[unit] for n, unit in _PARTS.findall(value))


def parse_duration(value: Any) -> float:
    """A duration (``duration_seconds``) or a number of seconds -> seconds, positive."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        found = duration_seconds(str(value))
        if found is None:
            raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {value!r}")
        seconds = found
    if not math.isfinite(seconds):  # .nan, .inf in YAML: NaN passes every comparison
        raise ValueError("a duration must be a finite number of seconds")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def parse_listen(value: str) -> tuple[str, int]:
    """Split a listen address "HOST:PORT" into (host, port).

    ":9847" and "[::]:9847" mean all interfaces (host ""), "127.0.0.1:9847" one IPv4 address,
    "[::1]:9847" one IPv6 address, "localhost:9847" a name. ValueError with a clear message
    otherwise.
    """
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep or not host:
            raise ValueError(f"invalid listen address {value!r}: expected [IPV6]:PORT")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid listen address {value!r}: expected HOST:PORT, e.g. :9847")
        if ":" in host:
            raise ValueError(
                f"invalid listen address {value!r}: put an IPv6 address in brackets, [::1]:9847"
            )
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {value!r}: port must be a number 0-65535")
    if host == "::":
        host = ""
    return host, int(port_text)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


HEAD_GROUPS = ("ts", "thread")  # required in a site's record head pattern
CONTEXT_GROUPS = ("org", "env", "api", "rev", "messageid")  # optional ones, and ``zone``


def check_head_pattern(pattern: str) -> re.Pattern[str]:
    """A site's record head pattern, compiled; ValueError saying what is wrong with it."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"not a regular expression: {err}") from None
    if any(group not in compiled.groupindex for group in HEAD_GROUPS):
        raise ValueError("needs the named groups (?P<ts>...) and (?P<thread>...)")
    unknown = set(compiled.groupindex) - {*HEAD_GROUPS, *CONTEXT_GROUPS, "zone"}
    if unknown:
        raise ValueError(
            f"unknown named group {sorted(unknown)[0]!r}: use ts, zone, thread, "
            + ", ".join(CONTEXT_GROUPS)
        )
    return compiled


class LogConfig(Model):
    path: str
    # More places of rotated files, beside the default names (follow.discovery.rotated_globs):
    # globs, or directories (logrotate's olddir). One string is taken as a list of one.
    rotated: list[str] = []
    # The site's own record head, when its logback pattern writes one the built-in reader cannot
    # read: a regular expression matching from the line's start to the message (see
    # docs/reasons.md, "Which logs it reads"); `check-config` tries it on the log's first lines.
    record_head: Optional[str] = None

    @field_validator("record_head")
    @classmethod
    def _head(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            check_head_pattern(value)
        return value

    @field_validator("rotated", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value


class PairingConfig(Model):
    window_lines: int = Field(1000, ge=1, le=1_000_000)
    window: float = 2.0  # seconds of wall time; accepts 2s, 500ms, ...

    @field_validator("window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


# --- alerts: (the daemon's own alert rules, see alerts.py) ----------------------------------

Duration = Annotated[float, BeforeValidator(parse_duration)]
Severity = Annotated[str, Field(pattern=r"^[a-z][a-z_]{0,19}$")]
CLIENT_CERTIFICATE_REASONS = (
    "bad_certificate",
    "certificate_required",
    "unknown_ca",
    "certificate_unknown",
    "certificate_expired",
)


class ClientCertificateRule(Model):
    """At least ``min_failures`` failures with a reason in ``reasons`` within ``window`` (log time)
    for one (org, env, target, key_alias); resolved after ``resolve_after`` without one."""

    enabled: bool = True
    reasons: tuple[str, ...] = CLIENT_CERTIFICATE_REASONS
    min_failures: int = Field(3, ge=1, le=10_000)
    window: Duration = 300.0
    resolve_after: Optional[Duration] = None  # default: window
    severity: Severity = "page"


class HandshakeFailuresRule(Model):
    """Failures of any other reason: ``min_failures`` within ``window`` (log time) for one
    (org, env, target, key_alias, reason)."""

    enabled: bool = True
    min_failures: int = Field(10, ge=1, le=10_000)
    window: Duration = 300.0
    resolve_after: Optional[Duration] = None  # default: window
    severity: Severity = "warning"


class LogStalledRule(Model):
    """A followed log not read for ``after`` (wall time) while its file holds unread data (or,
    with ``quiet_is_stalled``, at all)."""

    enabled: bool = True
    after: Duration = 300.0
    quiet_is_stalled: bool = False
    severity: Severity = "warning"


class FormatDriftRule(Model):
    """At least ``min_lines`` unrecognised handshake lines within ``window`` (wall time)."""

    enabled: bool = True
    min_lines: int = Field(1, ge=1)
    window: Duration = 900.0
    severity: Severity = "warning"


class KnownTarget(Model):
    """A (proxy, target, key alias) whose failure series exist at 0 from the start."""

    org: str
    env: str
    api: str
    rev: str = ""
    target: str  # host:port, as the metrics show it
    key_alias: str = ""
    reasons: tuple[str, ...] = ("bad_certificate",)


class AlertsConfig(Model):
    enabled: bool = True
    client_certificate_rejected: ClientCertificateRule = ClientCertificateRule()
    handshake_failures: HandshakeFailuresRule = HandshakeFailuresRule()
    log_stalled: LogStalledRule = LogStalledRule()
    format_drift: FormatDriftRule = FormatDriftRule()
    known_targets: list[KnownTarget] = Field(default_factory=list)
    max_tracked: int = Field(1000, ge=1)  # bound on (org, env, target, key_alias[, reason]) keys


# --- diagnosis: (the management API, background diagnoses, keystore inventory) --------------


class DiagnosisTarget(Model):
    """How the MP reaches one backend: its keystore, the SNI name it sends (default: the host
    name, none for an IP; "" for none) and the TargetServer's <SSLInfo> protocols and ciphers."""

    keystore: Optional[str] = None  # NAME or ref://REF
    servername: Optional[str] = None
    protocols: list[str] = Field(default_factory=list)  # e.g. [TLSv1.2]; empty: the JVM's
    ciphers: list[str] = Field(default_factory=list)  # Java cipher suite names; empty: the JVM's
    target_server: Optional[str] = None  # its sSLInfo gives keystore, alias, protocols, ciphers


class InventoryKeystore(Model):
    org: str
    env: str
    keystore: str  # NAME or ref://REF


class InventoryConfig(Model):
    interval: Duration = 3600.0
    keystores: list[InventoryKeystore] = Field(default_factory=list)


class DiagnosisConfig(Model):
    """Run ``diagnose`` when an alert starts firing; export the keystores' expiry dates.

    Credentials come from files (or environment variables), never from the config itself.
    """

    enabled: bool = False
    management_url: Optional[str] = None  # e.g. http://ms-host:8080/v1
    username: Optional[str] = None
    password_file: Optional[str] = None
    password_env: Optional[str] = None
    token_file: Optional[str] = None
    token_env: Optional[str] = None
    ca_file: Optional[str] = None  # CA bundle for an https management API
    insecure_skip_verify: bool = False
    backend_ca_file: Optional[str] = None  # the MP truststore as PEM: check the backend's chain
    timeout: Duration = 10.0
    min_interval: Duration = 600.0  # at most one diagnosis per (org, env, target, key alias)
    workers: int = Field(1, ge=1, le=2)
    default_keystore: Optional[str] = None
    targets: dict[str, DiagnosisTarget] = Field(default_factory=dict)
    inventory: InventoryConfig = InventoryConfig()

    @model_validator(mode="after")
    def _complete(self) -> DiagnosisConfig:
        if self.enabled and not self.management_url:
            raise ValueError("management_url is required when diagnosis is enabled")
        if self.management_url and not self.management_url.startswith(("http://", "https://")):
            raise ValueError("management_url must start with http:// or https://")
        return self


class Config(Model):
    logs: list[LogConfig] = Field(default_factory=list)  # empty: whichever MP log exists
    listen: str = DEFAULT_LISTEN
    from_beginning: bool = False
    state_file: Optional[str] = None  # default: $STATE_DIRECTORY/state.json
    timezone: Optional[str] = None  # IANA name; default: the node's local time
    max_series: int = Field(5000, ge=1)
    max_line_bytes: int = Field(1 << 20, ge=1024)
    pairing: PairingConfig = PairingConfig()
    web_config: Optional[str] = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    alerts: AlertsConfig = AlertsConfig()
    diagnosis: DiagnosisConfig = DiagnosisConfig()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    def log_paths(self) -> list[LogConfig]:
        """The configured logs, or the MP log that exists (the official path when neither does)."""
        if self.logs:
            return list(self.logs)
        for path in MP_LOGS:
            if os.path.exists(path):
                return [LogConfig(path=path)]
        return [LogConfig(path=MP_LOGS[0])]

    def state_path(self) -> str:
        if self.state_file:
            return self.state_file
        directory = os.environ.get("STATE_DIRECTORY", DEFAULT_STATE_DIR).split(":")[0]
        return os.path.join(directory, "state.json")


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists each as "location: message"."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate(data: Any, source: str = "config") -> Config:
    """A Config from parsed YAML, or ConfigError listing every problem with its location."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of keys to values"])
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            message = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(f"{_location(tuple(e['loc']))}: {message}")
        raise ConfigError(source, problems) from None


def read_yaml(path: Union[str, os.PathLike[str]]) -> Any:
    """The parsed YAML of a file; ConfigError with one problem when it cannot be read or parsed.

    Both the config and the web config are read here, so that both word these problems alike.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except OSError as err:
        raise ConfigError(str(path), [f"cannot read: {err.strerror or err}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not UTF-8 text"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(parse)"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(str(path), [f"{where}: invalid YAML: {problem}"]) from None


def load_config(path: str) -> Config:
    """Read and validate a YAML config file."""
    return validate(read_yaml(path), path)
