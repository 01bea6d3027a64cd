"""Moved to ``apigee_tls_exporter.demo.standin`` (the demo serves it too); import it from there.

This name stays only because the README names it until its rewrite lands; delete it then.
"""

from apigee_tls_exporter.demo.standin import *  # noqa: F403
