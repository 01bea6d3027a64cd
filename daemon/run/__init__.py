"""The daemon's wiring: the stages of ``run`` built in one place, its threads, signals and systemd
notifications. The only package (with ``cli``) that touches process-global state.
"""
