"""apigee-tls-exporter: southbound TLS handshake failures in the Apigee MP log, as metrics."""

from __future__ import annotations

__version__ = "0.1.0"
