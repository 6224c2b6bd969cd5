# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import base64
import collections
import json

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import control_plane as cp
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import NamedVms
from ansible_collections.imds.scheduled_events.plugins.module_utils.kql import SCHEDULED_EVENTS_TYPE
from ansible_collections.imds.scheduled_events.tests.unit.utils.arm_simulator import Clock
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

SUB = "11111111-2222-3333-4444-555555555555"
EVENT = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
OTHER = "A626E37F-793E-44E1-89B5-99AE0B96044C"
AccessToken = collections.namedtuple("AccessToken", "token expires_on")


CLIENT_ID = "5a1d0000-0000-4000-8000-00000000c1d0"
OBJECT_ID = "0b1d0000-0000-4000-8000-000000000b1d"
TENANT = "7e570000-0000-4000-8000-00000000e570"


def jwt(**claims):
    """An access token shaped like Entra ID's (unsigned: clients never verify one)."""
    def part(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return "%s.%s.sig" % (part({"typ": "JWT", "alg": "RS256"}), part(claims))


class FakeCredential(object):
    """azure-identity's side of the contract: get_token(scope[, claims=]) -> (token, expires_on). Like the real
    credentials it caches: the same token until `claims` are passed (a claims challenge bypasses the cache). Every
    instance is a new sign-in with an empty cache; `issued` counts the tokens of every instance."""

    issued = 0

    def __init__(self, expires_on=4102444800):
        self.scopes = []
        self.claims = []
        self.expires_on = expires_on
        self.cached = None

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(scopes)
        self.claims.append(kwargs.get("claims"))
        if self.cached is None or kwargs.get("claims"):
            FakeCredential.issued += 1
            self.cached = AccessToken(jwt(appid=CLIENT_ID, oid=OBJECT_ID, tid=TENANT, aud="https://management.azure.com",
                                          n=FakeCredential.issued), self.expires_on)
        return self.cached


def bearer(request):
    """The claims of the token a request carried."""
    return cp.token_claims(request["headers"]["Authorization"].split(" ", 1)[1])


def row(event_id=EVENT, kind="virtualMachineScaleSets", owner="web", status="Scheduled", resources=("web_0",),
        **props):
    properties = {"EventId": event_id, "EventType": "Reboot", "ResourceType": "VirtualMachine",
                  "Resources": list(resources), "EventStatus": status,
                  "NotBefore": "" if status != "Scheduled" else "Mon, 11 Apr 2050 22:26:58 GMT",
                  "Description": "", "EventSource": "Platform", "DurationInSeconds": -1}
    properties.update(props)
    return {"id": "/subscriptions/%s/resourcegroups/rg-web/providers/Microsoft.Compute/%s/%s/providers/"
                  "Microsoft.Maintenance/scheduledevents/%s" % (SUB, kind, owner, event_id),
            "name": event_id, "type": SCHEDULED_EVENTS_TYPE, "subscriptionId": SUB, "resourceGroup": "rg-web",
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
    assert bearer(server.requests[0])["appid"] == CLIENT_ID and bearer(server.requests[1]) == bearer(server.requests[0])


def test_a_row_repeated_on_the_next_page_counts_once(server, client):
    server.script(answer(200, {"data": [row()], "$skipToken": "t"}), answer(200, {"data": [row()]}))
    assert len(cp.query_events(client, "q", management_groups=["mg"]).events) == 1


def test_throttling_waits_what_retry_after_says_then_succeeds(server, client):
    server.script(answer(429, {"error": {"code": "RateLimiting", "message": "slow down"}},
                         headers={"Retry-After": "7", "x-ms-user-quota-remaining": "0",
                                  "x-ms-user-quota-resets-after": "00:00:07"}),
                  answer(503, "busy"), answer(200, {"data": []}))
    assert cp.query_events(client, "q", subscriptions=[SUB]).events == []
    assert client.sleeps == [7.0, 4], "the wait for Retry-After is the quota's wait too: not waited twice"
    assert client.quota.as_dict() == {"remaining": None, "resets_after": 7.0, "waited": 11.0, "throttled": 1,
                                      "queries": 3}


def test_a_429_without_retry_after_waits_for_the_quota_reset(server, client):
    server.script(answer(429, headers={"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:00:09"}),
                  answer(200, {"data": []}))
    cp.query_events(client, "q", subscriptions=[SUB])
    assert client.sleeps == [9.0]


def quota(remaining, resets_after):
    return {"x-ms-user-quota-remaining": str(remaining), "x-ms-user-quota-resets-after": resets_after}


def test_pages_are_paced_by_the_quota_resource_graph_announces(server):
    clock = Clock()
    arm = cp.ArmClient(FakeCredential(), endpoint=server.endpoint, timeout=10, retries=3, sleep=clock.sleep,
                       clock=clock)
    server.script(answer(200, {"data": [], "$skipToken": "2"}, headers=quota(3, "00:00:08")),
                  answer(200, {"data": [], "$skipToken": "3"}, headers=quota(0, "00:00:04")),
                  answer(200, {"data": [], "$skipToken": "4"}, headers=quota(14, "00:00:05")),
                  answer(200, {"data": []}, headers=quota(13, "00:00:05")))
    assert cp.query_events(arm, "q", subscriptions=[SUB]).pages == 4
    # 3 left for 8 s: the next waits 8/4; none left: the next waits for the reset; 14 left for 5 s: 5/15
    assert clock.sleeps == [2.0, 4.0, pytest.approx(5.0 / 15)]
    assert arm.quota.as_dict() == {"remaining": 13, "resets_after": 5.0, "waited": 6.333, "throttled": 0,
                                   "queries": 4}
    server.script(answer(200, {"value": "Successfully Approved"}, headers=quota(0, "00:00:05")))
    cp.acknowledge(arm, cp.Owner(SUB, "rg-web", "virtualMachines", "solo"), [EVENT])
    assert len(clock.sleeps) == 3, "the quota is Resource Graph's: other ARM calls neither wait for it nor spend it"
    assert arm.quota.remaining == 13


@pytest.mark.parametrize("text, seconds", [("00:00:05", 5.0), ("01:02:03", 3723.0), ("00:00:01.5", 1.5),
                                           ("5", None), ("00:61:00", None), ("", None), (None, None)])
def test_quota_durations(text, seconds):
    assert cp.parse_duration(text) == seconds


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


REFUSED = answer(401, {"error": {"code": "AuthenticationFailed", "message": "Authentication failed."}})


def test_a_401_with_a_claims_challenge_gets_a_token_with_those_claims(server, client):
    """Continuous access evaluation (a revoked token): the claims are what makes azure-identity skip its cache."""
    claims = '{"access_token": {"nbf": {"essential": true, "value": "1700000000"}}}'
    challenge = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                 'error="insufficient_claims", claims="%s"' % base64.b64encode(claims.encode()).decode())
    server.script(answer(401, {"error": {"code": "InvalidAuthenticationToken", "message": "revoked"}},
                         headers={"WWW-Authenticate": challenge}), answer(200, {"data": []}))
    cp.query_events(client, "q", subscriptions=[SUB])
    assert client.credential.claims == [None, claims]
    assert client.credential.scopes == [(server.endpoint + "/.default",)] * 2
    first, second = (bearer(r)["n"] for r in server.requests)
    assert second != first


def test_a_401_without_a_challenge_signs_in_afresh(server):
    renewed = []

    def renew():
        renewed.append(FakeCredential())
        return renewed[-1]

    arm = cp.ArmClient(FakeCredential(), endpoint=server.endpoint, retries=0, renew=renew)
    server.script(REFUSED, answer(200, {"data": []}))
    cp.query_events(arm, "q", subscriptions=[SUB])
    assert len(renewed) == 1 and arm.credential is renewed[0]
    first, second = (bearer(r)["n"] for r in server.requests)
    assert second != first


def test_a_credential_that_hands_back_the_refused_token_is_not_asked_to_try_again(server, client):
    server.script(REFUSED)
    with pytest.raises(cp.ControlPlaneError) as caught:
        cp.query_events(client, "q", subscriptions=[SUB])
    assert len(server.requests) == 1 and caught.value.status == 401
    assert "the credential gave the refused token again" in str(caught.value)


def test_a_second_401_says_authentication_failed_who_was_refused_and_what_to_check(server):
    arm = cp.ArmClient(FakeCredential(), endpoint=server.endpoint, retries=3, renew=FakeCredential,
                       identity="auth_source=msi, client_id=%s" % CLIENT_ID)
    server.script(REFUSED, REFUSED)
    with pytest.raises(cp.ControlPlaneError) as caught:
        cp.query_events(arm, "q", subscriptions=[SUB])
    assert len(server.requests) == 2
    message = cp.explain(caught.value)
    assert message.startswith("POST /providers/Microsoft.ResourceGraph/resources: 401 AuthenticationFailed: "
                              "Authentication failed (refused again with a fresh token). Authentication failed (401)")
    assert "auth_source=msi, client_id=%s, client id %s, object id %s, tenant %s, audience https://management.azure.com" \
        % (CLIENT_ID, CLIENT_ID, OBJECT_ID, TENANT) in message
    assert "tenant of the subscriptions" in message and "revoked" in message and "clock" in message
    assert "role" not in message and ".." not in message and not message.endswith(".")
    for request in server.requests:
        assert request["headers"]["Authorization"].split(" ", 1)[1] not in message


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


OWNER_ID = "/subscriptions/%s/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachineScaleSets/web" % SUB


@pytest.mark.parametrize("method, path, remedy", [
    ("POST", "/providers/Microsoft.ResourceGraph/resources",
     "Assign it Reader on the subscriptions or management groups queried"),
    ("POST", OWNER_ID + "/providers/Microsoft.Maintenance/scheduledevents",
     "Assign it the \"Scheduled Events Contributor\" role (action "
     "Microsoft.Maintenance/scheduledevents/acknowledge/action) on " + OWNER_ID),
    ("POST", OWNER_ID + "/providers/Microsoft.Maintenance/scheduledevents/%s/acknowledge" % EVENT,
     "\"Scheduled Events Contributor\""),
    ("PATCH", OWNER_ID, "Microsoft.Compute/virtualMachineScaleSets/write on " + OWNER_ID),
    ("GET", OWNER_ID, "Assign it Reader on " + OWNER_ID),
])
def test_a_403_names_the_identity_and_the_role_the_request_needs(server, client, method, path, remedy):
    message = "The client '%s' with object id '%s' does not have authorization to perform action" % (
        CLIENT_ID, OBJECT_ID)
    server.script(answer(403, {"error": {"code": "AuthorizationFailed", "message": message + "."}}))
    with pytest.raises(cp.ControlPlaneError) as caught:
        client.request(method, path, "2025-04-01")
    explained = cp.explain(caught.value)
    assert "Authorisation failed (403): the identity (client id %s, object id %s" % (CLIENT_ID, OBJECT_ID) in explained
    assert remedy in explained and "Authentication failed" not in explained and ".." not in explained
    assert len(server.requests) == 1, "a 403 is not retried"
