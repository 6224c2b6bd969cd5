# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""tests/kusto runs outside ansible-test (make kql): the network guard, the collection, tests/ (its harness) and
the simulator on sys.path, as tests/unit/conftest.py does for the unit tests."""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

for _path in (os.path.join(ROOT, "tests", "guard"), os.path.join(ROOT, "tests"), os.path.join(ROOT, "simulator"),
              os.path.join(ROOT, ".build", "collections")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import sitecustomize  # noqa: E402  pylint: disable=wrong-import-position

sitecustomize.install()
