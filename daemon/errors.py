"""The one error every command turns into its exit code 2: bad arguments or an unreadable input.

A root leaf (it imports nothing), so that any stage may raise it and ``scan`` loads nothing more.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad arguments or an unreadable input: one line on stderr, exit 2."""
