# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shared by every unit test: the network guard, and the collection on sys.path
when pytest runs straight from a checkout instead of under ansible-test."""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# pytest's tmp_path directories go under tests/output (which ansible-test and `make clean` remove), not /tmp, where
# pytest would keep the last three runs' (ansible-test units passes no TMPDIR through).
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", os.path.join(ROOT, "tests", "output", ".tmp"))
os.makedirs(os.environ["PYTEST_DEBUG_TEMPROOT"], exist_ok=True)

sys.path.insert(0, os.path.join(ROOT, "tests", "guard"))
import sitecustomize  # noqa: E402  pylint: disable=wrong-import-position

sitecustomize.install()


def _collection_on_path():
    try:
        import ansible_collections.imds.scheduled_events  # noqa: F401  pylint: disable=unused-import
        return
    except ImportError:
        pass
    base = os.path.join(ROOT, ".build", "collections")
    link = os.path.join(base, "ansible_collections", "imds", "scheduled_events")
    if not os.path.lexists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        try:
            os.symlink(ROOT, link)
        except FileExistsError:  # another xdist worker made it first
            pass
    sys.path.insert(0, base)


_collection_on_path()


@pytest.fixture(autouse=True)
def own_pace_directory(tmp_path_factory, monkeypatch):
    """Each test paces its IMDS requests in a directory of its own (the shared pacing file, module_utils/imds.py):
    no test waits for another's requests or sees an endpoint warmed up by another that had the same port."""
    monkeypatch.setenv("IMDS_SE_PACE_DIR", str(tmp_path_factory.mktemp("pace")))
