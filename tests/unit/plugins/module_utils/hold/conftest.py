# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Fixtures for the hold library: a fake machine, a fake clock and a state directory
owned by whoever runs the tests (the library is told to trust that uid)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import HoldManager
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.hold.fakes import FakeSystem, FakeTime

UID = os.getuid()


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def state_dir(tmp_path):
    path = tmp_path / "state"
    path.mkdir(mode=0o755)
    os.chmod(str(path), 0o755)
    return path


@pytest.fixture
def state_file(state_dir):
    return str(state_dir / "holds.json")


@pytest.fixture
def system(fake_time, tmp_path):
    return FakeSystem(fake_time, puppet_lock=str(tmp_path / "agent_disabled.lock"))


@pytest.fixture
def make_manager(state_file, system, fake_time):
    def make(**kwargs):
        options = dict(state_file=state_file, run=system.run, clock=fake_time.clock, monotonic=fake_time.monotonic,
                       sleep=fake_time.sleep, owner_uid=UID, environ={"PATH": "/usr/bin:/bin"})
        options.update(kwargs)
        return HoldManager(**options)
    return make


@pytest.fixture
def manager(make_manager):
    return make_manager()
