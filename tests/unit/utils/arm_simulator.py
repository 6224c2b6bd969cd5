# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The simulator's control plane for the tests of its clients (module_utils/control_plane.py, the resource_graph
event source), signed in with the real azure-identity managed-identity credential: IDENTITY_ENDPOINT and
IDENTITY_HEADER point it at the simulator's token endpoint. Callers `pytest.importorskip("azure.identity")` first.

Seven Freeze events, one per VM, all opted in. The simulator's monotonic clock (its Resource Graph quota window)
is a Clock the test also gives the client, so a wait for the quota moves time without sleeping."""

from __future__ import annotations

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3))
if os.path.join(ROOT, "simulator") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "simulator"))

from imds_simulator import ControlClient, Simulator  # noqa: E402  pylint: disable=wrong-import-position,import-error

SUB = "00000000-0000-0000-0000-000000000000"
EVENTS = ["B0000000-0000-4000-8000-00000000000%d" % index for index in range(1, 8)]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "MSI_ENDPOINT",
                   "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "AZURE_CLIENT_ID")


def sign_in_to(monkeypatch, sim):
    """Point azure-identity's managed-identity credential at `sim`'s token endpoint, with no proxy and none of the
    variables that would pick another credential flavour."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", sim.identity_header)


class Clock(object):
    """A monotonic clock that moves when its sleep is called (the client's waits) or when the test says."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class ArmSimulators(object):
    """Starts simulators with a control-plane face (`control_plane` scenario keys as keyword arguments) and points
    azure-identity at the last one; stop() stops them all."""

    def __init__(self, monkeypatch, clock):
        self.monkeypatch = monkeypatch
        self.clock = clock
        self.started = []

    def start(self, **control):
        scenario = {"clock": "manual", "seed": 3, "vms": [{"name": "vm-%d" % index} for index in range(len(EVENTS))],
                    "events": [{"id": event_id, "type": "Freeze", "resources": ["vm-%d" % index], "notice": 900}
                               for index, event_id in enumerate(EVENTS)],
                    "control_plane": dict({"opted_in": "all"}, **control)}
        sim = Simulator.from_scenario(scenario, port=0, control_port=0, arm_port=0, imds=False, monotonic=self.clock)
        sim.start()
        self.started.append(sim)
        sign_in_to(self.monkeypatch, sim)
        return sim, ControlClient(sim.control_url)

    def stop(self):
        for sim in self.started:
            sim.stop()
