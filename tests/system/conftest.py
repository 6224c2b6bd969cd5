"""System tests: run against a real systemd machine (see docs/testing-real-systemd.md)."""

import sys
from pathlib import Path

TESTS_DIR = str(Path(__file__).resolve().parent.parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)  # makes tests/harness importable as `harness`

# The fixtures, and the hooks that make one leg per Debian release (--debian, IMDS_SE_TEST_RELEASES).
from harness.pytest_container import (  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
    debian_release, pytest_addoption, pytest_collection_modifyitems, pytest_configure, pytest_generate_tests,
    systemd_container, systemd_container_factory)
