# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Fixtures for client tests: a scripted loopback server and fake clocks."""

from __future__ import annotations

import time

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import imds
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer


class FakeSleep(object):
    """Records the backoff the client asks for instead of sleeping it."""

    def __init__(self, clock):
        self.calls = []
        self._clock = clock

    def __call__(self, seconds):
        self.calls.append(seconds)
        self._clock.now += seconds


class FakeClock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class RealClockFakeSleep(object):
    """Real time plus what was slept, for a client that waits on real sockets: what a server makes it wait counts,
    and its backoff is recorded (in `calls`) and counted without being slept."""

    def __init__(self):
        self.calls = []
        self._slept = 0.0

    def __call__(self):
        return time.monotonic() + self._slept

    def sleep(self, seconds):
        self.calls.append(seconds)
        self._slept += seconds


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def cold_process():
    """Each test starts as a fresh process would: no endpoint warmed up yet."""
    imds._WARMED.clear()
    yield
    imds._WARMED.clear()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def sleep(clock):
    return FakeSleep(clock)


@pytest.fixture
def make_client(server, clock, sleep):
    def make(**kwargs):
        # Generous timeouts: a loopback answer on a loaded machine can take seconds. Tests of timeouts set their own.
        options = dict(endpoint=server.endpoint, timeout=30.0, first_timeout=60.0, clock=clock, sleep=sleep,
                       jitter=lambda: 1.0)
        options.update(kwargs)
        return imds.ImdsClient(**options)
    return make


@pytest.fixture
def real_clock():
    return RealClockFakeSleep()
