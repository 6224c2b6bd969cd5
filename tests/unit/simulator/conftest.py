"""Fixtures for the IMDS simulator tests: worlds on a manual clock, live simulators on ephemeral ports."""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SIMULATOR_DIR = os.path.abspath(os.path.join(HERE, "..", "..", "..", "simulator"))
for _path in (SIMULATOR_DIR, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# pylint: disable=wrong-import-position
from imds_simulator.clock import ManualClock  # noqa: E402
from imds_simulator.scenario import parse_scenario  # noqa: E402
from imds_simulator.simulator import Simulator  # noqa: E402
from imds_simulator.world import World  # noqa: E402
from simhelpers import EPOCH, Client, FakeTime  # noqa: E402


@pytest.fixture
def make_world():
    """Build a World from a scenario dict on a ManualClock whose second 0 is EPOCH."""

    def factory(data, wall=None):
        scenario = parse_scenario(data, "<test>")
        return World(scenario, ManualClock(epoch=EPOCH), wall=wall or FakeTime(1.5e9))

    return factory


@pytest.fixture
def start_sim():
    """Start Simulators on ephemeral ports, manual clock, frozen time; returns a Client with ``.sim`` and ``.fake``."""
    started = []

    def factory(data, **kwargs):
        fake = kwargs.pop("fake", None) or FakeTime()
        kwargs.setdefault("port", 0)
        kwargs.setdefault("control_port", 0)
        kwargs.setdefault("clock", "manual")
        sim = Simulator.from_scenario(data, wall=fake, monotonic=fake, sleep=fake.sleep, **kwargs)
        sim.start()
        started.append(sim)
        return Client(sim, fake)

    yield factory
    for sim in started:
        sim.stop()
