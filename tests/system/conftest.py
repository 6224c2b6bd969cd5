"""System tests: run against a real systemd machine (see docs/testing-real-systemd.md)."""

import sys
from pathlib import Path

TESTS_DIR = str(Path(__file__).resolve().parent.parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)  # makes tests/harness importable as `harness`

from harness.pytest_container import systemd_container, systemd_container_factory  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
