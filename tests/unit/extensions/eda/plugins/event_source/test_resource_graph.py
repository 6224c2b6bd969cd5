# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The resource_graph source against a scripted Azure Resource Manager on loopback: one poll() at a time."""

from __future__ import annotations

import json
import logging

import pytest

from ansible_collections.imds.scheduled_events.extensions.eda.plugins.event_source import resource_graph as source
from ansible_collections.imds.scheduled_events.plugins.module_utils import control_plane as cp
from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import ArgumentError
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.test_control_plane import (
    EVENT, OTHER, SUB, FakeCredential, row)
from ansible_collections.imds.scheduled_events.tests.unit.utils.arm_simulator import SUB as SIM_SUB
from ansible_collections.imds.scheduled_events.tests.unit.utils.arm_simulator import EVENTS, ArmSimulators, Clock
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

DONE = "9B1D2C3E-0000-4000-8000-000000000002"
NOW = 1900000000.0


def graph(*rows):
    return answer(200, {"totalRecords": len(rows), "count": len(rows), "data": list(rows), "resultTruncated": "false"})


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.stop()


def make(server, **args):
    client = cp.ArmClient(FakeCredential(), endpoint=server.endpoint, timeout=10, retries=0, sleep=lambda s: None)
    return source.ResourceGraphSource(dict({"subscriptions": [SUB], "poll_interval": 30}, **args), client=client,
                                      clock=lambda: NOW)


def changes(events):
    return [(e["change"], e.get("event_id"), e.get("outcome")) for e in events]


def test_polls_become_lifecycle_events_and_repeat_nothing(server):
    server.script(graph(row(EVENT), row(DONE, status="Completed")), graph(row(EVENT), row(DONE, status="Completed")),
                  graph(row(EVENT, status="Started")), graph(row(EVENT, status="Completed")))
    src = make(server, vms=["web_0"])
    first = src.poll()
    assert changes(first) == [("appeared", EVENT, None)]  # the finished row is history from before the start
    assert first[0]["source"] == "resource_graph"
    assert first[0]["scheduled_event"]["owner"]["kind"] == "virtualMachineScaleSets"
    assert first[0]["scheduled_event"]["affects_this_vm"] is True
    assert src.poll() == []
    assert changes(src.poll()) == [("approved", EVENT, None), ("started", EVENT, None)]  # NotBefore is in 2050
    assert changes(src.poll()) == [("gone", EVENT, "completed")]
    body = json.loads(server.requests[0]["body"])
    assert body["subscriptions"] == [SUB] and body["query"] == cp.build_query()


def test_finished_rows_on_the_first_poll_when_asked(server):
    server.script(graph(row(DONE, status="Canceled")))
    assert changes(make(server, skip_finished_on_start=False).poll()) == [("gone", DONE, "cancelled")]


def test_the_query_narrows_in_azure(server):
    server.script(graph())
    make(server, event_types=["reboot"], resource_groups=["rg-web"]).poll()
    query = json.loads(server.requests[0]["body"])["query"]
    assert query == cp.build_query(types=["Reboot"], resource_groups=["rg-web"])


def test_an_unreadable_row_is_told_once(server):
    bad = dict(row(OTHER), id="/subscriptions/x/elsewhere")
    server.script(graph(bad, row(EVENT)), graph(bad, row(EVENT)))
    src = make(server)
    events = src.poll()
    assert [e["change"] for e in events] == ["unreadable", "appeared"]
    assert "is not a scheduled event" in events[0]["problem"] and events[0]["row_id"] == "/subscriptions/x/elsewhere"
    assert src.poll() == []


def test_a_failed_query_is_logged_and_backs_off(server, caplog):
    server.script(answer(500, {"error": {"code": "InternalServerError", "message": "try later"}}), graph(row(EVENT)))
    src = make(server, poll_interval=1, max_backoff=30)
    with caplog.at_level(logging.WARNING):
        assert src.poll() is None
    assert src.next_delay() == 1.0
    assert "the Resource Graph query failed" in caplog.text and "InternalServerError" in caplog.text
    assert changes(src.poll()) == [("appeared", EVENT, None)]


@pytest.mark.parametrize("args, message", [
    ({"subscriptions": None}, "name subscriptions or management_groups"),
    ({"poll_interval": 0.5}, "between 1 and 3600"),
    ({"poll_interval": 100, "max_backoff": 50}, "max_backoff must be at least poll_interval"),
    ({"resource_groups": ['rg\x00drop']}, "a KQL string cannot carry"),
    ({"auth_source": "password"}, "must be one of auto, msi, env, cli, credentials"),
    ({"subscription": [SUB]}, "unknown argument(s) subscription"),
])
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ArgumentError) as caught:
        source.ResourceGraphSource(dict({"subscriptions": [SUB]}, **args), client=object())
    assert message in str(caught.value)


def test_a_revoked_token_does_not_stop_the_polls(monkeypatch):
    """The source lives for days with one client: after Azure revokes its token, azure-identity's cache would hand
    the same token back at every poll. The claims challenge gets a new one, so the next poll reads the fleet."""
    pytest.importorskip("azure.identity")
    simulators = ArmSimulators(monkeypatch, Clock())
    try:
        sim, control = simulators.start()
        src = source.ResourceGraphSource({"subscriptions": [SIM_SUB], "auth_source": "msi",
                                          "management_endpoint": sim.arm_url}, clock=lambda: NOW)
        assert sorted(e["event_id"] for e in src.poll()) == EVENTS
        control.revoke_tokens()
        control.advance(900)  # the freezes start
        assert sorted(e["event_id"] for e in src.poll() if e["change"] == "started") == EVENTS
        assert sim.arm.tokens_issued == 2
    finally:
        simulators.stop()
