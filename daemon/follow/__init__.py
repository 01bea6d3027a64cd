"""One log across rotations: every byte of every file it passes through, read once.

In: a path. Out: segments of whole lines (``follower``). ``logfile`` reads one file by content,
``ledger`` remembers each file read and how far, ``watch`` wakes the follower on file events.
"""
