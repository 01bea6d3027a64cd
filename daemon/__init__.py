"""apigee-tls-exporter: southbound TLS handshake failures from the Apigee MP log, as Prometheus metrics."""

from __future__ import annotations

__version__ = "0.1.0"
