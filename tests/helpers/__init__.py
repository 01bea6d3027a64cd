"""What the tests share: servers they start, log text they write, the exporter processes they run,
one fake clock, one free-port helper."""
