"""Bytes -> failures, with no I/O: shared by ``run`` and ``scan``.

In: buffers of whole lines (``lines``). Out: ``Failure`` values (``events``), file health and
pairing counts (``stats``). ``search`` finds candidate lines, ``parse`` reads them (the regexes live
there and only there), ``correlate`` pairs a failure with its SSLInfo line, ``pipeline`` wires them.
"""
