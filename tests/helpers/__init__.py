"""What the tests share: servers they start, log text they write, the Daemon they run."""
