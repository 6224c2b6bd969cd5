# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import collections
import json

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import control_plane as cp
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import NamedVms
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

SUB = "11111111-2222-3333-4444-555555555555"
EVENT = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
OTHER = "A626E37F-793E-44E1-89B5-99AE0B96044C"
AccessToken = collections.namedtuple("AccessToken", "token expires_on")


class FakeCredential(object):
    """azure-identity's side of the contract: get_token(scope) -> (token, expires_on)."""

    def __init__(self, expires_on=4102444800):
        self.scopes = []
        self.expires_on = expires_on

    def get_token(self, *scopes):
        self.scopes.append(scopes)
        return AccessToken("token-%d" % len(self.scopes), self.expires_on)


def row(event_id=EVENT, kind="virtualMachineScaleSets", owner="web", status="Scheduled", resources=("web_0",),
        **props):
    properties = {"EventId": event_id, "EventType": "Reboot", "ResourceType": "VirtualMachine",
                  "Resources": list(resources), "EventStatus": status,
                  "NotBefore": "" if status != "Scheduled" else "Mon, 11 Apr 2050 22:26:58 GMT",
                  "Description": "", "EventSource": "Platform", "DurationInSeconds": -1}
    properties.update(props)
    return {"id": "/subscriptions/%s/resourcegroups/rg-web/providers/Microsoft.Compute/%s/%s/providers/"
                  "Microsoft.Maintenance/scheduledevents/%s" % (SUB, kind, owner, event_id),
            "name": event_id, "type": cp.ROW_TYPE, "subscriptionId": SUB, "resourceGroup": "rg-web",
            "location": "westeurope", "properties": properties}


@pytest.fixture
def server():
    srv = ScriptedServer()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    sleeps = []
    arm = cp.ArmClient(FakeCredential(), endpoint=server.endpoint, timeout=10, retries=3, sleep=sleeps.append)
    arm.sleeps = sleeps
    return arm


# --- the query ------------------------------------------------------------------------------------------------------


def test_the_query_filters_in_azure_with_checked_values():
    query = cp.build_query(event_ids=[EVENT], types=["Reboot", "Redeploy"], statuses=["Scheduled"],
                           sources=["User"], resource_groups=["rg-web"])
    assert query.splitlines() == [
        "maintenanceresources",
        '| where type == "microsoft.maintenance/scheduledevents"',
        '| where name in~ ("%s")' % EVENT,
        '| where tostring(properties.EventType) in~ ("Reboot", "Redeploy")',
        '| where tostring(properties.EventStatus) in~ ("Scheduled")',
        '| where tostring(properties.EventSource) in~ ("User")',
        '| where resourceGroup in~ ("rg-web")',
        "| project id, name, type, subscriptionId, resourceGroup, location, properties",
        "| order by id asc",
    ]


def test_values_stay_string_literals():
    query = cp.build_query(types=['Reboot") | take 1 //'], resource_groups=["rg\nweb"])
    assert '| where tostring(properties.EventType) in~ ("Reboot\\") | take 1 //")' in query.splitlines()
    assert '| where resourceGroup in~ ("rg\\nweb")' in query.splitlines()


@pytest.mark.parametrize("kwargs, message", [
    ({"event_ids": ["not-a-guid"]}, "not an EventId"),
    ({"resource_groups": ["rg\x00web"]}, "a KQL string cannot carry"),
])
def test_values_no_query_can_carry_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cp.build_query(**kwargs)


# --- rows ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, canonical", [("virtualMachines", "virtualMachines"),
                                             ("VIRTUALMACHINESCALESETS", "virtualMachineScaleSets"),
                                             ("availabilitySets", "availabilitySets")])
def test_a_row_is_an_event_and_its_owner(kind, canonical):
    found = cp.ControlPlaneEvent.from_row(row(kind=kind))
    assert found.owner.kind == canonical and found.owner.name == "web" and found.owner.subscription == SUB
    assert found.owner.id == "/subscriptions/%s/resourceGroups/rg-web/providers/Microsoft.Compute/%s/web" % (
        SUB, canonical)
    assert found.event.event_id == EVENT and found.event.is_scheduled


@pytest.mark.parametrize("status", ["Completed", "Canceled"])
def test_finished_statuses_are_kept_as_such(status):
    found = cp.ControlPlaneEvent.from_row(row(status=status))
    described = found.describe()
    assert described["EventStatus"] == status and described["finished"] is True
    assert "problems" not in described and described["seconds_until_start"] is None
    assert not found.event.is_scheduled and not found.event.is_started


def test_describe_says_which_named_vms_an_event_lists():
    found = cp.ControlPlaneEvent.from_row(row(resources=("web_0", "web_1")))
    assert found.describe(NamedVms(["web_0"]))["scope"] == "shared"
    assert found.describe(NamedVms(["WEB_0", "web_1"]))["scope"] == "this_vm"
    assert found.describe(NamedVms(["db_0"]))["affects_this_vm"] is False
    assert found.describe()["owner"]["kind"] == "virtualMachineScaleSets"


@pytest.mark.parametrize("broken, message", [
    (dict(row(), id="/subscriptions/x/resourceGroups/y"), "is not a scheduled event"),
    (dict(row(), properties=None), "has no properties object"),
    (row(EventId=OTHER), "its id names event"),
    (dict(row(), properties={"EventType": "Reboot"}), "has no EventId"),
    (["not", "a", "row"], "not an object"),
])
def test_rows_that_cannot_be_read_say_why(broken, message):
    with pytest.raises(ValueError, match=message):
        cp.ControlPlaneEvent.from_row(broken)


# --- the client ------------------------------------------------------------------------------------------------------


def test_every_page_is_read_and_bad_rows_are_reported(server, client):
    server.script(
        answer(200, {"totalRecords": 3, "count": 2, "data": [row(), {"id": "/bad", "properties": {}}],
                     "resultTruncated": "false", "$skipToken": "page-2"}),
        answer(200, {"totalRecords": 3, "count": 1, "data": [row(OTHER, kind="availabilitySets", owner="db")],
                     "resultTruncated": "false"}))
    found = cp.query_events(client, "maintenanceresources", subscriptions=[SUB])
    assert [e.event.event_id for e in found.events] == [EVENT, OTHER]
    assert found.problems == [{"id": "/bad", "problem": "its id '/bad' is not a scheduled event of a VM, scale set "
                                                        "or availability set"}]
    assert (found.total_records, found.pages) == (3, 2)
    first, second = (json.loads(r["body"]) for r in server.requests)
    assert first == {"query": "maintenanceresources", "subscriptions": [SUB],
                     "options": {"$top": 1000, "resultFormat": "objectArray"}}
    assert second["options"]["$skipToken"] == "page-2" and second["query"] == first["query"]
    assert server.requests[0]["path"] == "/providers/Microsoft.ResourceGraph/resources"
    assert ("api-version", "2024-04-01") in server.requests[0]["query"]
    assert server.requests[0]["headers"]["Authorization"] == "Bearer token-1"


def test_a_row_repeated_on_the_next_page_counts_once(server, client):
    server.script(answer(200, {"data": [row()], "$skipToken": "t"}), answer(200, {"data": [row()]}))
    assert len(cp.query_events(client, "q", management_groups=["mg"]).events) == 1


def test_throttling_waits_what_retry_after_says_then_succeeds(server, client):
    server.script(answer(429, {"error": {"code": "RateLimiting", "message": "slow down"}},
                         headers={"Retry-After": "7", "x-ms-user-quota-remaining": "0"}),
                  answer(503, "busy"), answer(200, {"data": []}))
    assert cp.query_events(client, "q", subscriptions=[SUB]).events == []
    assert client.sleeps == [7.0, 4]


def test_retry_after_is_bounded(server, client):
    server.script(answer(429, headers={"Retry-After": "86400"}), answer(200, {"data": []}))
    cp.query_events(client, "q", subscriptions=[SUB])
    assert client.sleeps == [cp.MAX_RETRY_AFTER]


def test_errors_carry_arms_code_message_and_details(server, client):
    server.script(answer(400, {"error": {"code": "BadRequest", "message": "Please provide below info",
                                         "details": [{"code": "InvalidQuery", "message": "Query is invalid"}]}}))
    with pytest.raises(cp.ControlPlaneError) as caught:
        cp.query_events(client, "q", subscriptions=[SUB])
    assert caught.value.status == 400 and caught.value.code == "BadRequest"
    assert "InvalidQuery: Query is invalid" in str(caught.value)
    assert len(server.requests) == 1, "a 400 is not retried"


def test_a_401_gets_one_fresh_token(server, client):
    server.script(answer(401, {"error": {"code": "AuthenticationFailed", "message": "expired"}}),
                  answer(200, {"data": []}))
    cp.query_events(client, "q", subscriptions=[SUB])
    assert [r["headers"]["Authorization"] for r in server.requests] == ["Bearer token-1", "Bearer token-2"]
    assert client.credential.scopes == [(server.endpoint + "/.default",)] * 2


def test_persistent_throttling_ends_with_an_error(server, client):
    server.script(*[answer(429, headers={"Retry-After": "1"})] * 5)
    with pytest.raises(cp.ControlPlaneError, match="429"):
        cp.query_events(client, "q", subscriptions=[SUB])
    assert len(server.requests) == client.retries + 1


def test_the_endpoint_must_be_a_base_url():
    with pytest.raises(cp.ControlPlaneError, match="must be a URL"):
        cp.ArmClient(FakeCredential(), endpoint="management.azure.com/path")


def test_no_scopes_no_query(client):
    with pytest.raises(cp.ControlPlaneError, match="name the subscriptions or management groups"):
        cp.query_events(client, "q")


# --- acknowledge and the policy -------------------------------------------------------------------------------------


def test_acknowledge_uses_the_list_form_where_the_api_has_it(server, client):
    owner = cp.Owner(SUB, "rg-web", "virtualMachineScaleSets", "web")
    server.default = answer(200, {"value": "Successfully Approved"})
    assert cp.acknowledge(client, owner, [EVENT, OTHER], "2025-10-01-preview") == 1
    assert cp.acknowledge(client, owner, [EVENT, OTHER], "2023-10-01-preview") == 2
    base = "/subscriptions/%s/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachineScaleSets/web/" \
           "providers/Microsoft.Maintenance/scheduledevents" % SUB
    assert [(r["path"], r["body"]) for r in server.requests] == [
        (base, json.dumps({"value": [EVENT, OTHER]}).encode()),
        (base + "/" + EVENT + "/acknowledge", b""), (base + "/" + OTHER + "/acknowledge", b"")]


def test_owner_from_an_id_or_a_spec():
    owner = cp.Owner.from_resource_id("/subscriptions/%s/resourceGroups/rg/providers/Microsoft.Compute/"
                                      "availabilitySets/db" % SUB)
    assert (owner.kind, owner.name) == ("availabilitySets", "db")
    assert cp.Owner.from_spec("scale_set", "web", "rg", SUB).kind == "virtualMachineScaleSets"
    with pytest.raises(ValueError, match="use vm, scale_set or availability_set"):
        cp.Owner.from_spec("disk", "web", "rg", SUB)
    with pytest.raises(ValueError, match="not a valid Azure name"):
        cp.Owner.from_spec("vm", "web/../x", "rg", SUB)
    with pytest.raises(ValueError, match="is not the id of"):
        cp.Owner.from_resource_id("/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/accounts/a")


def test_the_policy_changes_only_what_differs():
    wanted = cp.policy_patch(True)
    assert cp.policy_differs({}, wanted)
    current = wanted["properties"]["scheduledEventsPolicy"]
    assert not cp.policy_differs(current, wanted)
    assert cp.policy_differs(current, cp.policy_patch(True, reboot=True))
    assert not cp.policy_differs(dict(current, userInitiatedReboot={"automaticallyApprove": True}), wanted)
    assert not cp.policy_differs({}, cp.policy_patch(False))


def test_refusals_say_what_to_do():
    feature = cp.ControlPlaneError("400 SubscriptionNotRegisteredForFeature", status=400,
                                   code="SubscriptionNotRegisteredForFeature")
    assert "az feature register --namespace Microsoft.Compute --name SendScheduledEventsPolicy" in cp.explain(feature)
    old = cp.ControlPlaneError("400 InvalidRequestContent: Could not find member 'scheduledEventsPolicy'", status=400,
                               code="InvalidRequestContent")
    assert "2025-04-01 or later" in cp.explain(old)
    assert "Scheduled Events Contributor" in cp.explain(cp.ControlPlaneError("403", status=403))
