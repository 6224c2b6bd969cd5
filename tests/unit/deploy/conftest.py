"""deploy/ is not a Python package of the collection: its bootstrap and the template evaluator of tests/harness are
imported from their directories."""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
for _path in (os.path.join(ROOT, "deploy"), os.path.join(ROOT, "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
