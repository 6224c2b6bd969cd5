# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import imds
from ansible_collections.imds.scheduled_events.plugins.modules import event_approve
from ansible_collections.imds.scheduled_events.tests.unit.utils.module_runner import run_module
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

MINE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
FREEZE = "0C1A8E52-2B8C-4F0E-9C64-3B0B6E9F7A11"
SHARED = "A626E37F-793E-44E1-89B5-99AE0B96044C"
PEERS = "28512AF7-C957-4500-9BC4-842D6FB531E4"
STARTED = "9B1D2C3E-0000-4000-8000-000000000001"
ABSENT = "00000000-0000-4000-8000-00000000dead"


def ev(event_id, resources, status="Scheduled", event_type="Reboot"):
    return {"EventId": event_id, "EventType": event_type, "ResourceType": "VirtualMachine", "Resources": resources,
            "EventStatus": status, "NotBefore": "" if status == "Started" else "Mon, 11 Apr 2050 22:26:58 GMT"}


DOC = {"DocumentIncarnation": 3, "Events": [
    ev(MINE, ["myvm"]), ev(FREEZE, ["MYVM"], event_type="Freeze"), ev(SHARED, ["myvm", "peer"]),
    ev(PEERS, ["peer"]), ev(STARTED, ["myvm"], status="Started")]}


@pytest.fixture
def server():
    srv = ScriptedServer()
    srv.default = answer(200, DOC)
    imds._WARMED.clear()
    yield srv
    srv.stop()


def run(server, check_mode=False, **args):
    args.setdefault("endpoint", server.endpoint)
    args.setdefault("vm_name", "myvm")
    return run_module(event_approve.main, args, check_mode=check_mode)


def posts(server):
    return [json.loads(r["body"]) for r in server.requests if r["method"] == "POST"]


def not_approved(result):
    return dict((s["EventId"], s["reason"]) for s in result["not_approved"])


def test_default_approves_every_scheduled_event_of_this_vm_alone_in_one_post(server):
    failed, result = run(server)
    assert not failed and result["changed"] is True
    assert result["approved"] == [MINE, FREEZE]
    assert posts(server) == [{"StartRequests": [{"EventId": MINE}, {"EventId": FREEZE}]}]
    assert not_approved(result) == {SHARED: "also lists other VMs", STARTED: "already started"}
    assert PEERS not in not_approved(result)  # never a candidate: it does not concern this VM


def test_by_type(server):
    failed, result = run(server, event_types=["freeze"])
    assert not failed and result["approved"] == [FREEZE]


def test_shared_events_need_allow_shared(server):
    failed, result = run(server, event_ids=[SHARED])
    assert not failed and result["changed"] is False and posts(server) == []
    assert result["not_approved"][0]["detail"] == "approving it would also start it for peer"
    failed, result = run(server, event_ids=[SHARED], allow_shared=True)
    assert not failed and result["approved"] == [SHARED]


def test_events_of_other_vms_are_never_approved(server):
    failed, result = run(server, event_ids=[PEERS], allow_shared=True)
    assert not failed and result["changed"] is False and posts(server) == []
    assert not_approved(result) == {PEERS: "does not list this VM"}


def test_check_mode_posts_nothing_and_reports_what_it_would_do(server):
    failed, result = run(server, check_mode=True, event_ids=[MINE])
    assert not failed and result["changed"] is True and result["approved"] == [MINE]
    assert posts(server) == []


def test_started_events_are_not_approved_again(server):
    failed, result = run(server, event_ids=[STARTED])
    assert not failed and result["changed"] is False and posts(server) == []


def test_malformed_ids_fail_before_any_request(server):
    failed, result = run(server, event_ids=[MINE, "$(reboot)"])
    assert failed and "'$(reboot)'" in result["msg"] and server.requests == []


def test_unknown_id_fails_and_lists_what_is_pending(server):
    failed, result = run(server, event_ids=[ABSENT])
    assert failed and ABSENT in result["msg"]
    assert MINE in result["msg"] and "Reboot" in result["msg"] and posts(server) == []


def test_unknown_id_is_skipped_when_missing_is_ok(server):
    failed, result = run(server, event_ids=[ABSENT, MINE], missing_ok=True)
    assert not failed and result["approved"] == [MINE]
    assert not_approved(result) == {ABSENT: "not in the document"}


def test_failed_post_for_an_event_that_started_meanwhile_is_not_a_failure(server):
    started = {"DocumentIncarnation": 4, "Events": [ev(MINE, ["myvm"], status="Started")]}
    server.script(answer(200, DOC), answer(400, "unknown event"), answer(200, started))
    failed, result = run(server, event_ids=[MINE])
    assert not failed and result["changed"] is False and result["approved"] == []
    assert not_approved(result) == {MINE: "already started"}


def test_failed_post_for_a_still_scheduled_event_fails(server):
    server.script(answer(200, DOC), answer(400, "bad request"), answer(200, DOC))
    failed, result = run(server, event_ids=[MINE])
    assert failed and "approving %s failed" % MINE in result["msg"] and result["status"] == 400


def test_a_dead_proxy_in_the_environment_is_ignored(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    failed, result = run(server, event_ids=[MINE])
    assert not failed and result["approved"] == [MINE]
