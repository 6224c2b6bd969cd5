# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The three control-plane modules against a scripted ARM on loopback (the credential is a stand-in; the
integration targets use the real azure-identity against the simulator)."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from ansible.module_utils import basic

from ansible_collections.imds.scheduled_events.plugins.module_utils import control_plane
from ansible_collections.imds.scheduled_events.plugins.modules import (
    control_plane_event_approve, control_plane_event_info, control_plane_policy)
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.test_control_plane import (
    CLIENT_ID, EVENT, OTHER, SUB, FakeCredential, row)
from ansible_collections.imds.scheduled_events.tests.unit.utils.module_runner import run_module
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

STARTED = "9B1D2C3E-0000-4000-8000-000000000001"
DONE = "9B1D2C3E-0000-4000-8000-000000000002"
VM_ID = "/subscriptions/%s/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/solo" % SUB


@pytest.fixture
def server():
    srv = ScriptedServer()
    with mock.patch.object(control_plane, "credential", lambda *a: FakeCredential()):
        yield srv
    srv.stop()


def args(server, **more):
    base = {"management_endpoint": server.endpoint, "subscriptions": [SUB], "retries": 1}
    base.update(more)
    return base


def policy_args(server, **more):
    base = {"management_endpoint": server.endpoint, "retries": 1}
    base.update(more)
    return base


def graph(*rows):
    return answer(200, {"totalRecords": len(rows), "count": len(rows), "data": list(rows), "resultTruncated": "false"})


FLEET = [row(EVENT, resources=("web_0", "web_1")), row(OTHER, kind="virtualMachines", owner="solo",
                                                       resources=("solo",)),
         row(STARTED, status="Started", resources=("web_2",)), row(DONE, status="Completed", resources=("web_3",))]


# --- control_plane_event_info ---------------------------------------------------------------------------------------


def test_info_returns_every_event_with_owner_and_finished(server):
    server.script(graph(*FLEET))
    failed, result = run_module(control_plane_event_info.main, args(server, event_types=["Reboot"]))
    assert not failed, result
    assert [e["EventId"] for e in result["events"]] == [EVENT, OTHER, STARTED, DONE]
    assert result["counts"] == {"Scheduled": 2, "Started": 1, "Completed": 1}
    assert [e["finished"] for e in result["events"]] == [False, False, False, True]
    assert result["events"][1]["owner"] == {"id": VM_ID, "kind": "virtualMachines", "name": "solo",
                                            "resource_group": "rg-web", "subscription": SUB}
    assert "tostring(properties.EventType) in~ (\"Reboot\")" in result["query"]
    assert json.loads(server.requests[0]["body"])["query"] == result["query"]
    assert result["changed"] is False and result["problems"] == []


def test_info_narrows_to_named_vms_and_says_their_scope(server):
    server.script(graph(*FLEET))
    failed, result = run_module(control_plane_event_info.main, args(server, vm_names=["web_0"]))
    assert [(e["EventId"], e["scope"]) for e in result["events"]] == [(EVENT, "shared")]


def test_info_reports_unreadable_rows_and_warns(server, monkeypatch):
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, text: warnings.append(text))
    server.script(graph(row(), {"id": "/subscriptions/x", "properties": {}}))
    failed, result = run_module(control_plane_event_info.main, args(server))
    assert not failed and len(result["events"]) == 1
    assert result["problems"][0]["id"] == "/subscriptions/x"
    assert warnings == ["1 row(s) of Resource Graph could not be read: see problems"]


def test_info_fails_with_what_to_do_and_the_query(server):
    server.script(answer(403, {"error": {"code": "AuthorizationFailed", "message": "no access"}}))
    failed, result = run_module(control_plane_event_info.main, args(server))
    assert failed and result["status"] == 403 and "Authorisation failed (403)" in result["msg"]
    assert "Assign it Reader on the subscriptions or management groups queried" in result["msg"]
    assert "Scheduled Events Contributor" not in result["msg"], "acknowledging is not what failed"
    assert result["query"].startswith("maintenanceresources")


def test_info_says_a_refused_token_is_an_authentication_failure_and_whose(server):
    refused = answer(401, {"error": {"code": "AuthenticationFailed", "message": "Authentication failed."}})
    server.script(refused, refused)
    failed, result = run_module(control_plane_event_info.main, args(server, auth_source="msi", client_id=CLIENT_ID))
    assert failed and result["status"] == 401 and len(server.requests) == 2
    assert "Authentication failed (401)" in result["msg"] and "role" not in result["msg"]
    assert "auth_source=msi, client_id=%s, client id %s" % (CLIENT_ID, CLIENT_ID) in result["msg"]
    assert ".." not in result["msg"]


def test_info_returns_the_resource_graph_quota(server):
    page = graph(*FLEET)
    server.script(page._replace(headers={"x-ms-user-quota-remaining": "11", "x-ms-user-quota-resets-after": "00:00:04"}))
    failed, result = run_module(control_plane_event_info.main, args(server))
    assert not failed and result["resource_graph_quota"] == {"remaining": 11, "resets_after": 4.0, "waited": 0.0,
                                                             "throttled": 0, "queries": 1}


def test_info_needs_a_scope(server):
    failed, result = run_module(control_plane_event_info.main, {"management_endpoint": server.endpoint})
    assert failed and "one of the following is required: subscriptions, management_groups" in result["msg"]
    assert server.requests == []


# --- control_plane_event_approve ------------------------------------------------------------------------------------


def test_approve_only_what_lists_the_named_vms_alone(server):
    server.script(graph(*FLEET), answer(200, {"value": "Successfully Approved"}))
    failed, result = run_module(control_plane_event_approve.main, args(server, vm_names=["solo", "web_0"]))
    assert not failed, result
    assert result["approved"] == [{"EventId": OTHER, "owner": VM_ID, "Resources": ["solo"]}]
    reasons = dict((s["EventId"], s["reason"]) for s in result["not_approved"])
    assert reasons == {EVENT: "also lists other VMs"}  # STARTED and DONE list VMs not named: never candidates
    ack = server.requests[1]
    assert ack["method"] == "POST" and ack["path"] == VM_ID + "/providers/Microsoft.Maintenance/scheduledevents"
    assert json.loads(ack["body"]) == {"value": [OTHER]} and ("api-version", "2025-10-01-preview") in ack["query"]
    assert result["changed"] is True and result["requests"] == 1


def test_approve_by_id_is_idempotent_for_started_and_finished(server):
    server.script(graph(*FLEET))
    failed, result = run_module(control_plane_event_approve.main, args(server, event_ids=[STARTED, DONE.lower()]))
    assert not failed and result["changed"] is False and result["approved"] == []
    assert sorted(s["reason"] for s in result["not_approved"]) == ["already finished", "already started"]
    assert len(server.requests) == 1, "nothing acknowledged"


def test_approve_shared_only_when_told_and_by_single_calls_on_the_old_api(server):
    server.default = answer(200, {"value": "Successfully Approved"})
    server.script(graph(*FLEET))
    failed, result = run_module(control_plane_event_approve.main, args(
        server, vm_names=["web_0"], allow_shared=True, api_version="2023-10-01-preview"))
    assert not failed and [a["EventId"] for a in result["approved"]] == [EVENT]
    assert server.requests[1]["path"].endswith("/scheduledevents/%s/acknowledge" % EVENT)


def test_approve_check_mode_acknowledges_nothing(server):
    server.script(graph(*FLEET))
    failed, result = run_module(control_plane_event_approve.main, args(server, event_ids=[EVENT]), check_mode=True)
    assert not failed and result["changed"] is True and [a["EventId"] for a in result["approved"]] == [EVENT]
    assert len(server.requests) == 1


def test_approve_missing_ids_fail_unless_missing_ok(server):
    absent = "00000000-0000-4000-8000-00000000dead"
    server.script(graph(*FLEET), graph(*FLEET))
    failed, result = run_module(control_plane_event_approve.main, args(server, event_ids=[absent]))
    assert failed and "not in Resource Graph" in result["msg"] and EVENT in result["msg"]
    failed, result = run_module(control_plane_event_approve.main, args(server, event_ids=[absent], missing_ok=True))
    assert not failed and result["not_approved"] == [{"EventId": absent, "reason": "not in the document"}]


def test_approve_an_event_that_started_meanwhile_is_not_a_failure(server):
    server.script(graph(*FLEET), answer(409, {"error": {"code": "Conflict", "message": "is Started"}}),
                  graph(row(EVENT, status="Started", resources=("web_0", "web_1"))))
    failed, result = run_module(control_plane_event_approve.main, args(server, event_ids=[EVENT]))
    assert not failed, result
    assert result["approved"] == [] and result["not_approved"][-1]["reason"] == "already started"


def test_approve_a_real_refusal_fails(server):
    server.script(graph(*FLEET), answer(403, {"error": {"code": "AuthorizationFailed", "message": "no"}}),
                  graph(*FLEET))
    failed, result = run_module(control_plane_event_approve.main, args(server, event_ids=[EVENT]))
    assert failed and "acknowledging failed" in result["msg"] and "Scheduled Events Contributor" in result["msg"]


@pytest.mark.parametrize("extra, message", [
    ({}, "one of the following is required: event_ids, vm_names"),
    ({"event_ids": ["nope"]}, "not an EventId"),
])
def test_approve_refuses_before_any_request(server, extra, message):
    failed, result = run_module(control_plane_event_approve.main, args(server, **extra))
    assert failed and message in result["msg"] and server.requests == []


# --- control_plane_policy -------------------------------------------------------------------------------------------


def resource(policy=None):
    properties = {"scheduledEventsPolicy": policy} if policy is not None else {}
    return answer(200, {"id": VM_ID, "name": "solo", "type": "Microsoft.Compute/virtualMachines",
                        "properties": properties})


ON = {"scheduledEventsAdditionalPublishingTargets": {"eventGridAndResourceGraph": {
    "enable": True, "scheduledEventsApiVersion": "2020-07-01"}}}


def test_policy_opts_in_once_then_changes_nothing(server):
    server.script(resource(), resource(ON), resource(ON))
    spec = {"resources": [{"id": VM_ID}]}
    failed, result = run_module(control_plane_policy.main, policy_args(server, **spec), diff=True)
    assert not failed, result
    assert result["changed"] and result["resources"] == [{"id": VM_ID, "changed": True, "publishing": True,
                                                          "policy": ON}]
    assert result["diff"] == {"before": {VM_ID: {}}, "after": {VM_ID: ON}}
    patch = server.requests[1]
    assert patch["method"] == "PATCH" and json.loads(patch["body"]) == {"properties": {"scheduledEventsPolicy": ON}}
    assert ("api-version", "2025-04-01") in patch["query"]
    failed, result = run_module(control_plane_policy.main, policy_args(server, **spec))
    assert not failed and not result["changed"] and len(server.requests) == 3


def test_policy_check_mode_reads_only(server):
    server.script(resource())
    failed, result = run_module(control_plane_policy.main, policy_args(
        server, resources=[{"kind": "vm", "name": "solo", "resource_group": "rg-web", "subscription": SUB}]),
        check_mode=True)
    assert not failed and result["changed"] and result["resources"][0]["publishing"] is True
    assert [r["method"] for r in server.requests] == ["GET"]


def test_policy_says_to_register_the_feature(server):
    server.script(resource(), answer(400, {"error": {"code": "SubscriptionNotRegisteredForFeature", "message":
                                                     "Microsoft.Compute/SendScheduledEventsPolicy"}}))
    failed, result = run_module(control_plane_policy.main, policy_args(server, resources=[{"id": VM_ID}]))
    assert failed and "az feature register --namespace Microsoft.Compute --name SendScheduledEventsPolicy" \
        in result["msg"]


def test_policy_refuses_a_bad_resource(server):
    bad = {"kind": "disk", "name": "d", "resource_group": "rg", "subscription": SUB}
    failed, result = run_module(control_plane_policy.main, policy_args(server, resources=[bad]))
    assert failed and result["msg"].startswith("resources[0]: kind 'disk'") and server.requests == []
