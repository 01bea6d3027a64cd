"""``scan``: read files from start to end on every core, count, report.

In: paths (plain, gzip) or standard input. Out: a ``ScanResult`` and its renderings (table, JSON,
backfill OpenMetrics).
"""
