"""Running the exporter with its compiled parts (``ahocorasick_rs``, ``isal``) unimportable, as
on a platform without their wheels: ``[sys.executable, "-c", BLOCKED, *arguments]``."""

from __future__ import annotations

BLOCKED = """
import sys
from importlib.abc import MetaPathFinder

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ahocorasick_rs", "isal"):
            raise ImportError(f"no module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, Block())
from apigee_tls_exporter.cli import main
sys.exit(main(sys.argv[1:]))
"""
WARNING = "compiled parts unavailable"
