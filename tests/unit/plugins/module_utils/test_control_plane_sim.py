# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The control-plane client against the simulator's control plane, signed in with the real azure-identity
managed-identity credential (IDENTITY_ENDPOINT / IDENTITY_HEADER point at the simulator's token endpoint): what
it does when Azure revokes or expires its token, and how it paces Resource Graph by the quota Azure announces.
The simulator's quota window and the client's waits share one injected clock: nothing sleeps."""

from __future__ import annotations

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import control_plane as cp
from ansible_collections.imds.scheduled_events.tests.unit.utils.arm_simulator import EVENTS, SUB, ArmSimulators, Clock

pytest.importorskip("azure.identity")


@pytest.fixture(name="clock")
def clock_fixture():
    return Clock()


@pytest.fixture(name="start")
def start_fixture(clock, monkeypatch):
    """A simulator with the control-plane face, and the environment azure-identity reads to sign in there."""
    simulators = ArmSimulators(monkeypatch, clock)
    yield simulators.start
    simulators.stop()


def read(client):
    return sorted(found.event.event_id for found in cp.query_events(client, cp.build_query(), subscriptions=[SUB]).events)


@pytest.mark.parametrize("refusal", ["revoke_tokens", "expire_tokens"])
def test_a_refused_token_is_replaced_by_a_new_one_not_by_the_cached_one(start, refusal):
    """revoke: a claims challenge, answered through azure-identity's claims (its cache is bypassed); expire: no
    challenge, answered by signing in again (a new credential, a new cache). Either way one fresh token, one retry."""
    sim, control = start()
    client = cp.signed_in_client("msi", endpoint=sim.arm_url, retries=0)
    first = client.credential
    assert read(client) == EVENTS
    getattr(control, refusal)()
    assert read(client) == EVENTS
    assert [("token" if entry["path"].startswith("/msi/token") else "graph", entry["status"])
            for entry in control.arm_requests()] == [("token", 200), ("graph", 200), ("graph", 401), ("token", 200),
                                                     ("graph", 200)]
    assert sim.arm.tokens_issued == 2
    assert (client.credential is first) == (refusal == "revoke_tokens")


def test_resource_graph_pages_are_paced_by_the_quota_so_none_is_throttled(start, clock):
    """Azure's guidance: spread the queries over the window, and once the quota is spent wait for the reset. The
    simulator enforces 3 queries per 10 s; seven pages of one row never meet a 429."""
    sim, control = start(resource_graph_quota={"requests": 3, "window": 10, "enforce": True})
    client = cp.signed_in_client("msi", endpoint=sim.arm_url, retries=0, sleep=clock.sleep, clock=clock)
    found = cp.query_events(client, cp.build_query(), subscriptions=[SUB], page_size=1)
    assert sorted(e.event.event_id for e in found.events) == EVENTS and found.pages == 7
    graph = [entry for entry in control.arm_requests() if "ResourceGraph" in entry["path"]]
    assert [(entry["status"], entry["fault"]) for entry in graph] == [(200, None)] * 7
    # A window of 10 s opens with the first page: 3 queries left for 10 s, then 1 for 7 s (rounded up), then none
    # for 4 s: the wait is the share of the time left, then the whole rest; the next window starts over.
    assert clock.sleeps == [pytest.approx(10 / 3), 3.5, 4.0, pytest.approx(10 / 3), 3.5, 4.0]
    assert client.quota.as_dict() == {"remaining": 2, "resets_after": 10.0, "waited": 21.667, "throttled": 0,
                                      "queries": 7}


def test_without_pacing_the_same_pages_would_be_throttled(start, clock):
    """The simulator's quota is real: a client that ignores it meets 429 on the fourth query of the window."""
    sim, control = start(resource_graph_quota={"requests": 3, "window": 10, "enforce": True})
    client = cp.signed_in_client("msi", endpoint=sim.arm_url, retries=1, sleep=clock.sleep, clock=clock)
    client.quota.delay = lambda now: 0.0
    cp.query_events(client, cp.build_query(), subscriptions=[SUB], page_size=1)
    graph = [entry["status"] for entry in control.arm_requests() if "ResourceGraph" in entry["path"]]
    assert graph[:5] == [200, 200, 200, 429, 200] and client.quota.throttled >= 1
