"""Every ``apigee_tls_*`` metric family the exporter exposes: name, type, help and labels, once.

The collectors (``state.metrics``, ``state.alerts``, ``web.serve``, ``run.app``,
``diagnosis.inventory``, ``diagnosis.endpoint``) take their families from here, so that a name or
a help text has one home and the list of what the exporter exposes is this file. A counter is named
without its ``_total`` suffix, as prometheus_client wants it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .counts import FAILURE_LABELS, LAST_LABELS

PATH = ("path",)
ALERT_LABELS = ("alertname", "severity", "org", "env", "target", "key_alias", "reason", "cause")


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...] = ()

    def new(self, value: Optional[float] = None) -> Union[CounterMetricFamily, GaugeMetricFamily]:
        """An empty family to fill with ``add_metric`` (labelled), or one sample (``value``)."""
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        if self.labels:
            return cls(self.name, self.help, labels=list(self.labels))
        return cls(self.name, self.help, value=value)

    def counter(self, registry: Optional[CollectorRegistry] = None) -> Counter:
        """A prometheus_client counter of this family, registered on ``registry``."""
        assert self.kind == "counter", self.name
        return Counter(self.name, self.help, list(self.labels), registry=registry)

    def gauge(self, registry: Optional[CollectorRegistry] = None) -> Gauge:
        """A prometheus_client gauge of this family, registered on ``registry``."""
        assert self.kind == "gauge", self.name
        return Gauge(self.name, self.help, list(self.labels), registry=registry)


# The failures, the followed files, pairing, the checkpoint and the build (``state.metrics``).
HANDSHAKE_FAILURES = Family(
    "apigee_tls_handshake_failures",
    "counter",
    "Southbound TLS handshake failures logged by the Message Processor.",
    FAILURE_LABELS,
)
LAST_HANDSHAKE_FAILURE_TIMESTAMP_SECONDS = Family(
    "apigee_tls_last_handshake_failure_timestamp_seconds",
    "gauge",
    "Log timestamp of the latest handshake failure of the series.",
    LAST_LABELS,
)
LOG_ROTATIONS = Family(
    "apigee_tls_log_rotations",
    "counter",
    "Rotations of the followed log file seen, by kind.",
    ("path", "kind"),
)
LOG_READ_ERRORS = Family(
    "apigee_tls_log_read_errors",
    "counter",
    "Errors opening or reading the followed log file, by kind.",
    ("path", "error"),
)
SERIES_OVERFLOW = Family(
    "apigee_tls_series_overflow",
    "counter",
    "Failures counted under the all-'other' series: the label-set bound was reached.",
)
PAIRING_PENDING = Family(
    "apigee_tls_pairing_pending", "gauge", "Failures waiting for their SSLInfo line."
)
PAIRING_UNPAIRED = Family(
    "apigee_tls_pairing_unpaired",
    "counter",
    "Failures whose pairing window closed without an SSLInfo line (key_alias is empty).",
)
PAIRING_ORPHANS = Family(
    "apigee_tls_pairing_orphans", "counter", "SSLInfo lines with no failure waiting for them."
)
BUILD_INFO = Family(
    "apigee_tls_build_info",
    "gauge",
    "Version of apigee-tls-exporter; compiled: whether its compiled parts are in use.",
    ("version", "compiled"),
)
CHECKPOINT_WRITE_ERRORS = Family(
    "apigee_tls_checkpoint_write_errors",
    "counter",
    "Writes of the state file that failed (positions and counts not saved).",
)
CHECKPOINT_AGE_SECONDS = Family(
    "apigee_tls_checkpoint_age_seconds",
    "gauge",
    "Seconds since the state file was last written (since start-up if never).",
)
LOG_LINES = Family(
    "apigee_tls_log_lines", "counter", "Lines read from the followed log file.", PATH
)
LOG_BYTES_READ = Family(
    "apigee_tls_log_bytes_read", "counter", "Bytes read from the followed log file.", PATH
)
LOG_FILE_SIZE_BYTES = Family(
    "apigee_tls_log_file_size_bytes", "gauge", "Size in bytes of the followed log file.", PATH
)
LOG_OFFSET_BYTES = Family(
    "apigee_tls_log_offset_bytes",
    "gauge",
    "Byte offset read so far in the followed log file.",
    PATH,
)
UNRECOGNISED_LINES = Family(
    "apigee_tls_unrecognised_lines",
    "counter",
    "Lines of the followed log file that mention handshakeFailed, handshakeTimeout or "
    "SSLInfo but match no rule.",
    PATH,
)
LOG_LINES_TRUNCATED = Family(
    "apigee_tls_log_lines_truncated",
    "counter",
    "Lines of the followed log file longer than max_line_bytes, cut to it.",
    PATH,
)
LOG_EQUAL_HEADS = Family(
    "apigee_tls_log_equal_heads",
    "counter",
    "Rotated files of the followed log file that begin like a content read before but hold none "
    "of it (told apart by all the bytes read, not by the first ones).",
    PATH,
)

# Alert state (``state.alerts``).
ALERT_FIRING = Family(
    "apigee_tls_alert_firing",
    "gauge",
    "1 while the daemon's alert fires (absent once resolved).",
    ALERT_LABELS,
)
ALERT_TRANSITIONS = Family(
    "apigee_tls_alert_transitions",
    "counter",
    "Alerts that started firing or resolved, by rule.",
    ("alertname", "state"),
)

# The HTTP server (``web.serve``).
HTTP_REQUESTS = Family(
    "apigee_tls_http_requests", "counter", "HTTP requests answered, by status code.", ("code",)
)
HTTP_REJECTED = Family(
    "apigee_tls_http_rejected",
    "counter",
    "Connections and requests the HTTP server refused or cut short, by reason.",
    ("reason",),
)
HTTP_CONNECTIONS = Family("apigee_tls_http_connections", "gauge", "Open HTTP connections.")
HTTP_CONNECTIONS_OPENED = Family(
    "apigee_tls_http_connections_opened",
    "counter",
    "HTTP connections accepted (fewer than requests when clients keep them alive).",
)

# The configuration reloads (``run.app``).
CONFIG_LAST_RELOAD_SUCCESSFUL = Family(
    "apigee_tls_config_last_reload_successful",
    "gauge",
    "Whether the last configuration reload succeeded (1) or was refused (0).",
)
CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS = Family(
    "apigee_tls_config_last_reload_success_timestamp_seconds",
    "gauge",
    "When the configuration was last loaded successfully.",
)

# The keystore inventory and the background diagnoses (``diagnosis.inventory``).
CLIENT_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS = Family(
    "apigee_tls_client_certificate_expiry_timestamp_seconds",
    "gauge",
    "Expiry (notAfter) of the leaf certificate of each keystore alias, from the management API.",
    ("org", "env", "keystore", "alias"),
)
INVENTORY_ERRORS = Family(
    "apigee_tls_inventory_errors",
    "counter",
    "Keystore inventory refreshes that failed, by kind of error.",
    ("error",),
)
INVENTORY_LAST_SUCCESS_TIMESTAMP_SECONDS = Family(
    "apigee_tls_inventory_last_success_timestamp_seconds",
    "gauge",
    "When every configured keystore was last read successfully.",
)
DIAGNOSIS_INFO = Family(
    "apigee_tls_diagnosis_info",
    "gauge",
    "Cause decided by the last diagnosis of a failing target (value is always 1).",
    ("org", "env", "target", "key_alias", "cause"),
)
DIAGNOSES = Family(
    "apigee_tls_diagnoses",
    "counter",
    "Diagnoses run, by result: a cause, or error when the diagnosis itself failed.",
    ("result",),
)
DIAGNOSES_SKIPPED = Family(
    "apigee_tls_diagnoses_skipped",
    "counter",
    "Diagnosis requests not run, by reason (recent, pending, queue_full, closed).",
    ("reason",),
)

# ``/probe``: the answer of one probe, and the daemon's count of probe requests
# (``diagnosis.endpoint``).
PROBE_ERROR = Family(
    "apigee_tls_probe_error",
    "gauge",
    "1 for what kept the probe from deciding (the management API failed, or a bug).",
    ("error",),
)
PROBE_CAUSE = Family(
    "apigee_tls_probe_cause", "gauge", "The cause diagnose decides (value is always 1).", ("cause",)
)
PROBE_REQUESTS = Family(
    "apigee_tls_probe_requests",
    "counter",
    "/probe requests, by outcome (probed, cached, joined, timeout, busy, bad_request).",
    ("outcome",),
)
PROBE_SUCCESS = Family(
    "apigee_tls_probe_success",
    "gauge",
    "Whether the MP's handshake with this backend would succeed (see /probe docs).",
)
PROBE_TIMED_OUT = Family(
    "apigee_tls_probe_timed_out",
    "gauge",
    "1 when the probe did not finish within the scrape timeout.",
)
PROBE_DURATION_SECONDS = Family(
    "apigee_tls_probe_duration_seconds", "gauge", "How long the probe took."
)
PROBE_CHECKED_TIMESTAMP_SECONDS = Family(
    "apigee_tls_probe_checked_timestamp_seconds",
    "gauge",
    "When the probe ran (results are shared by the scrapes of one cache period).",
)
PROBE_TLS_VERSION_INFO = Family(
    "apigee_tls_probe_tls_version_info",
    "gauge",
    "The TLS version the backend negotiated with the MP's settings (value 1).",
    ("version",),
)
PROBE_JAVA_SENDS_CERTIFICATE = Family(
    "apigee_tls_probe_java_sends_certificate",
    "gauge",
    "Whether Java's key manager would send the client certificate for the CA names the "
    "backend accepts.",
)
PROBE_CERTIFICATE_REQUESTED = Family(
    "apigee_tls_probe_certificate_requested",
    "gauge",
    "Whether the backend asks for a client certificate.",
)
PROBE_SERVER_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS = Family(
    "apigee_tls_probe_server_certificate_expiry_timestamp_seconds",
    "gauge",
    "Expiry (notAfter) of the backend's certificate.",
)
PROBE_CLIENT_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS = Family(
    "apigee_tls_probe_client_certificate_expiry_timestamp_seconds",
    "gauge",
    "Expiry (notAfter) of the client certificate of the key alias.",
)

# Every family above, in the order declared.
ALL = tuple(value for value in list(globals().values()) if isinstance(value, Family))
