"""What the daemon knows: counts, alert state, the checkpoint, and the metric families.

In: ``Failure`` values and file health. Out: Prometheus metric families (``metrics``), alert state
(``alerts``) and the state file (``checkpoint``).
"""
