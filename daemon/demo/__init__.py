"""The demo: a Message Processor ``system.log`` generator that knows its own truth, and the
``demo`` command that runs the daemon on it.
"""
