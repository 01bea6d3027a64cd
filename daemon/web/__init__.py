"""The HTTP side: ``/metrics``, health, the status page, and the web config (TLS, basic auth).

In: a registry and a status snapshot. Out: HTTP answers.
"""
