"""The control-plane face over real loopback HTTP: the token endpoint (also through the real azure-identity),
authentication, Resource Graph with paging, the opt-in policy on ARM resources, acknowledge, throttling."""

from __future__ import annotations

import base64
import json

import pytest

from imds_simulator import ControlClient, ControlError
from simhelpers import GRAPH_QUERY, TOKEN_PATH

from ansible_collections.imds.scheduled_events.tests.unit.utils.arm_simulator import sign_in_to

SUB = "00000000-0000-0000-0000-000000000000"
RG = "/subscriptions/%s/resourceGroups/imds-sim-rg" % SUB
E_SS = "B0000000-0000-4000-8000-000000000001"
E_AS = "B0000000-0000-4000-8000-000000000002"
E_VM = "B0000000-0000-4000-8000-000000000003"
GRAPH = "/providers/Microsoft.ResourceGraph/resources?api-version=2024-04-01"
ACK = "/providers/Microsoft.Maintenance/scheduledevents"
V_ACK = "2023-10-01-preview"
V_LIST = "2025-10-01-preview"


def scenario(**control):
    return {
        "start_time": "2016-09-19T18:14:47Z",
        "clock": "manual",
        "seed": 11,
        "scale_sets": [{"name": "web", "instances": 3}],
        "vms": [{"name": "a", "availability_set": "as1"}, {"name": "b", "availability_set": "as1"}, {"name": "c"}],
        "events": [
            {"id": E_SS, "type": "Reboot", "scale_set": "web", "notice": 900, "started_for": 600},
            {"id": E_AS, "type": "Freeze", "resources": ["a", "b"], "notice": 900, "started_for": 300},
            {"id": E_VM, "type": "Redeploy", "resources": ["c"], "notice": 600, "cancel_at": 120},
        ],
        "control_plane": dict({"opted_in": "all", "retention": 1800}, **control),
    }


@pytest.fixture(name="arm")
def arm_fixture(start_sim):
    """A simulator with the control-plane face; returns its test Client."""

    def factory(data=None, **kwargs):
        return start_sim(scenario() if data is None else data, arm_port=0, **kwargs)

    return factory


def statuses(client, **body):
    status, payload = client.graph(**body)
    assert status == 200, payload
    return {row["name"]: row["properties"]["EventStatus"] for row in payload["data"]}


def ack_path(kind, name, event_id, version=V_ACK):
    return f"{RG}/providers/Microsoft.Compute/{kind}/{name}{ACK}/{event_id}/acknowledge?api-version={version}"


# -- the token endpoint and authentication --------------------------------------------------------------


def test_token_endpoint_issues_tokens_to_callers_with_the_identity_header(arm):
    client = arm()
    status, _headers, raw = client.arm_raw("GET", TOKEN_PATH + "&client_id=x&principal_id=y",
                                           headers={"X-IDENTITY-HEADER": client.sim.identity_header})
    body = json.loads(raw)
    assert status == 200 and body["token_type"] == "Bearer" and body["resource"] == "https://management.azure.com/"
    assert body["access_token"] and int(body["expires_on"]) > 0 and isinstance(body["expires_on"], str)
    assert client.arm_raw("GET", TOKEN_PATH)[0] == 400
    assert client.arm_raw("GET", TOKEN_PATH, headers={"X-IDENTITY-HEADER": "wrong"})[0] == 401
    assert client.arm_raw("GET", "/msi/token?api-version=2017-09-01&resource=r",
                          headers={"X-IDENTITY-HEADER": client.sim.identity_header})[0] == 400
    assert client.arm_raw("GET", "/msi/token?api-version=2019-08-01",
                          headers={"X-IDENTITY-HEADER": client.sim.identity_header})[0] == 400


def test_every_arm_call_needs_an_issued_unexpired_token(arm):
    client = arm()
    status, _headers, raw = client.arm_raw("POST", GRAPH, {"query": GRAPH_QUERY})
    assert status == 401 and json.loads(raw)["error"]["code"] == "AuthenticationFailed"
    for header in ("Basic abc", "Bearer made-up"):
        status, _headers, raw = client.arm_raw("POST", GRAPH, {"query": GRAPH_QUERY}, {"Authorization": header})
        assert status == 401 and json.loads(raw)["error"]["code"] == "AuthenticationFailed"
    assert client.graph()[0] == 200
    assert ControlClient(client.sim.control_url).expire_tokens()["token_epoch"] == 1
    status, payload = client.graph()
    assert status == 401 and "expired" in payload["error"]["message"]
    client._token = None  # pylint: disable=protected-access
    assert client.graph()[0] == 200


def test_expire_tokens_fault(arm):
    data = scenario()
    data["faults"] = [{"kind": "expire_tokens", "from": 60}]
    client = arm(data)
    assert client.graph()[0] == 200
    client.sim.world.advance(60)
    assert client.graph()[0] == 401


def test_real_azure_identity_managed_identity_credential_reads_resource_graph(arm, monkeypatch):
    identity = pytest.importorskip("azure.identity")
    client = arm()
    sign_in_to(monkeypatch, client.sim)
    credential = identity.ManagedIdentityCredential()
    token = credential.get_token("https://management.azure.com/.default")
    assert token.token and token.expires_on > 0
    status, _headers, payload = client.arm("POST", GRAPH, {"query": GRAPH_QUERY}, token=token.token)
    assert status == 200 and payload["totalRecords"] == 3
    assert credential.get_token("https://management.azure.com/.default").token == token.token  # cached
    assert client.sim.arm.tokens_issued == 1


def claims_of(token):
    """The claims of an unverified JWT (a client's view: it never checks an access token's signature)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_tokens_name_the_managed_identity_tenant_and_audience(arm):
    client = arm()
    claims = claims_of(client.token())
    tenant = client.sim.world.scenario.control_plane.tenant_id
    assert claims["aud"] == "https://management.azure.com/" and claims["tid"] == tenant
    assert claims["iss"] == f"https://sts.windows.net/{tenant}/"
    assert (claims["appid"], claims["oid"]) == ("00000000-0000-4000-8000-00000000a11d",
                                                "00000000-0000-4000-8000-00000000a0b1")
    assert claims["exp"] - claims["iat"] == 24 * 3600


def test_a_revoked_token_earns_a_claims_challenge_a_new_one_works(arm):
    client = arm()
    control = ControlClient(client.sim.control_url)
    revoked = client.token()
    assert client.graph()[0] == 200
    assert control.revoke_tokens()["token_epoch"] == 1
    status, headers, payload = client.arm("POST", GRAPH, {"query": GRAPH_QUERY})
    assert status == 401 and payload["error"]["code"] == "InvalidAuthenticationToken"
    assert "revoked" in payload["error"]["message"]
    challenge = headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer authorization_uri="https://login.microsoftonline.com/')
    assert 'error="insufficient_claims"' in challenge
    encoded = challenge.split('claims="')[1].split('"')[0]
    claims = json.loads(base64.urlsafe_b64decode(encoded))
    assert claims["access_token"]["nbf"]["essential"] is True and int(claims["access_token"]["nbf"]["value"]) > 0
    client._token = None  # pylint: disable=protected-access
    assert client.token() != revoked and client.graph()[0] == 200
    assert control.expire_tokens()["token_epoch"] == 2
    status, headers, payload = client.arm("POST", GRAPH, {"query": GRAPH_QUERY})
    assert status == 401 and "WWW-Authenticate" not in headers and "expired" in payload["error"]["message"]
    assert client.arm("POST", GRAPH, {"query": GRAPH_QUERY}, token=revoked)[0] == 401  # revoked stays revoked


def test_real_azure_identity_answers_the_claims_challenge_with_a_new_token(arm, monkeypatch):
    """What the collection's client relies on: the managed-identity credential hands back its cached token, even a
    revoked one, unless the claims of the challenge are passed, which bypasses its cache."""
    identity = pytest.importorskip("azure.identity")
    client = arm()
    sign_in_to(monkeypatch, client.sim)
    credential = identity.ManagedIdentityCredential()
    scope = "https://management.azure.com/.default"
    first = credential.get_token(scope).token
    ControlClient(client.sim.control_url).revoke_tokens()
    status, headers, _payload = client.arm("POST", GRAPH, {"query": GRAPH_QUERY}, token=first)
    assert status == 401
    assert credential.get_token(scope).token == first  # the cache does not know
    encoded = headers["WWW-Authenticate"].split('claims="')[1].split('"')[0]
    fresh = credential.get_token(scope, claims=base64.urlsafe_b64decode(encoded).decode("utf-8")).token
    assert fresh != first and client.arm("POST", GRAPH, {"query": GRAPH_QUERY}, token=fresh)[0] == 200
    assert client.sim.arm.tokens_issued == 2


# -- Resource Graph -------------------------------------------------------------------------------------


def test_response_shape_and_quota_headers(arm):
    client = arm()
    status, headers, payload = client.arm("POST", GRAPH, {"query": GRAPH_QUERY, "subscriptions": [SUB]})
    assert status == 200 and headers["x-ms-user-quota-remaining"].isdigit()
    assert headers["x-ms-user-quota-resets-after"] == "00:00:05"
    assert {key: payload[key] for key in ("totalRecords", "count", "facets", "resultTruncated")} == {
        "totalRecords": 3, "count": 3, "facets": [], "resultTruncated": "false"}
    assert "$skipToken" not in payload
    row = next(item for item in payload["data"] if item["name"] == E_SS)
    assert row["id"].endswith(f"/virtualMachineScaleSets/web/providers/Microsoft.Maintenance/scheduledevents/{E_SS}")
    assert row["properties"] == client.document("web_0")["Events"][0]
    assert client.graph(version="2021-03-01")[0] == 200


def test_scopes(arm):
    client = arm()
    assert client.graph(subscriptions=["11111111-2222-3333-4444-555555555555"])[1]["totalRecords"] == 0
    assert client.graph(managementGroups=["MG-IMDS-SIM"])[1]["totalRecords"] == 3
    status, payload = client.graph(managementGroups=["other-mg"])
    assert status == 403 and payload["error"]["code"] == "AuthorizationFailed"


@pytest.mark.parametrize("body, code", [
    ({"query": GRAPH_QUERY, "options": {"resultFormat": "table"}}, "UnsupportedResultFormat"),
    ({"query": GRAPH_QUERY, "options": {"$top": 0}}, "InvalidTop"),
    ({"query": GRAPH_QUERY, "options": {"$top": 1001}}, "InvalidTop"),
    ({"query": GRAPH_QUERY, "options": {"$skip": -1}}, "InvalidSkip"),
    ({"query": GRAPH_QUERY, "options": {"$skipToken": "garbage"}}, "InvalidSkipToken"),
    ({"query": GRAPH_QUERY, "subscriptions": SUB}, "InvalidRequestContent"),
    ({"subscriptions": [SUB]}, "InvalidRequestContent"),
])
def test_graph_request_rejections(arm, body, code):
    client = arm()
    status, _headers, payload = client.arm("POST", GRAPH, body)
    assert status == 400 and payload["error"]["code"] == "BadRequest"
    assert payload["error"]["details"][0]["code"] == code


def test_graph_rejects_a_query_outside_the_subset_naming_the_token(arm):
    client = arm()
    status, payload = client.graph(GRAPH_QUERY + " | join (resources) on id")
    assert status == 400 and payload["error"]["code"] == "BadRequest"
    detail = payload["error"]["details"][0]
    assert detail["code"] == "InvalidQuery" and "'join'" in detail["message"] and detail["token"] == "join"
    assert detail["characterPositionInQuery"] == len(GRAPH_QUERY) + 3


def test_graph_rejects_bad_json_and_api_versions(arm):
    client = arm()
    status, _headers, raw = client.arm_raw("POST", GRAPH, b"{not json",
                                           {"Authorization": "Bearer " + client.token()})
    assert status == 400 and json.loads(raw)["error"]["code"] == "InvalidRequestContent"
    status, payload = client.graph(version="2019-04-01")
    assert status == 400 and payload["error"]["code"] == "InvalidApiVersionParameter"
    assert "2021-03-01" in payload["error"]["message"] and "2024-04-01" in payload["error"]["message"]


def test_paging_over_more_than_1000_rows_with_skip_token(arm):
    count = 1203
    data = {"clock": "manual", "seed": 5, "fleet": {"count": 10},
            "events": [{"type": "Freeze", "resources": [f"vm-{index % 10}"]} for index in range(count)],
            "control_plane": {"opted_in": "all"}}
    client = arm(data, imds=False)
    seen, token, pages = [], None, 0
    while True:
        options = {"$skipToken": token} if token else {}
        status, page = client.graph(GRAPH_QUERY + " | project id, name, properties", options=options)
        assert status == 200 and page["totalRecords"] == count and page["resultTruncated"] == "false"
        assert page["count"] == len(page["data"])
        seen.extend(row["id"] for row in page["data"])
        pages += 1
        token = page.get("$skipToken")
        if not token:
            break
    assert pages == 2 and len(seen) == count and seen == sorted(set(seen))
    first = client.graph(options={"$top": 500})[1]
    assert first["count"] == 500 and first["$skipToken"]
    status, payload = client.graph(GRAPH_QUERY + " | order by name asc", options={"$skipToken": first["$skipToken"]})
    assert status == 400 and payload["error"]["details"][0]["code"] == "InvalidSkipToken"
    status, payload = client.graph(subscriptions=[SUB], options={"$skipToken": first["$skipToken"]})
    assert status == 400
    second = client.graph(options={"$top": 500, "$skipToken": first["$skipToken"]})[1]
    assert second["data"][0]["id"] == seen[500]
    assert client.graph(options={"$skip": 1200})[1]["count"] == 3
    truncated = client.graph(GRAPH_QUERY + " | project name", options={"$top": 10})[1]
    assert truncated["resultTruncated"] == "true" and "$skipToken" not in truncated and truncated["count"] == 10


def test_resource_graph_quota_counts_down_and_refuses_when_spent_and_enforced(arm):
    client = arm(scenario(resource_graph_quota={"requests": 3, "window": 10, "enforce": True}))
    seen = []
    for _query in range(3):
        status, headers, _payload = client.arm("POST", GRAPH, {"query": GRAPH_QUERY})
        seen.append((status, headers["x-ms-user-quota-remaining"], headers["x-ms-user-quota-resets-after"]))
        client.fake.now += 2
    assert seen == [(200, "2", "00:00:10"), (200, "1", "00:00:08"), (200, "0", "00:00:06")]
    status, headers, payload = client.arm("POST", GRAPH, {"query": GRAPH_QUERY})
    assert status == 429 and payload["error"]["code"] == "RateLimiting"
    assert (headers["Retry-After"], headers["x-ms-user-quota-remaining"], headers["x-ms-user-quota-resets-after"]) == (
        "4", "0", "00:00:04")
    assert client.arm("POST", ack_path("availabilitySets", "as1", E_AS))[0] == 200  # ARM's other calls are not counted
    client.fake.now += 4
    status, headers, _payload = client.arm("POST", GRAPH, {"query": GRAPH_QUERY})
    assert status == 200 and headers["x-ms-user-quota-remaining"] == "2"
    assert [(entry["status"], entry["fault"]) for entry in ControlClient(client.sim.control_url).arm_requests()
            if "ResourceGraph" in entry["path"]][3:] == [(429, "quota"), (200, None)]


def test_resource_graph_quota_is_reported_but_not_enforced_by_default(arm):
    client = arm()
    answers = [client.arm("POST", GRAPH, {"query": GRAPH_QUERY}) for _query in range(16)]
    assert [status for status, _headers, _payload in answers] == [200] * 16
    assert [headers["x-ms-user-quota-remaining"] for _status, headers, _payload in answers][-3:] == ["1", "0", "0"]
    assert "x-ms-user-quota-remaining" not in client.arm("GET", resource_path("virtualMachines", "c"))[1]


# -- ARM resources: the scheduledEventsPolicy ----------------------------------------------------------


def resource_path(kind, name, version="2025-04-01", group="imds-sim-rg"):
    return f"/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.Compute/{kind}/{name}?api-version={version}"


POLICY = {"scheduledEventsAdditionalPublishingTargets": {"eventGridAndResourceGraph": {
    "enable": True, "scheduledEventsApiVersion": "2020-07-01"}}}


def test_opt_in_through_arm_publishes_the_owners_events(arm):
    client = arm(scenario(opted_in=[]))
    status, _headers, body = client.arm("GET", resource_path("virtualMachineScaleSets", "web"))
    assert status == 200 and body == {
        "id": f"{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/web", "name": "web",
        "type": "Microsoft.Compute/virtualMachineScaleSets", "location": "westeurope", "properties": {}}
    assert statuses(client) == {}
    status, _headers, body = client.arm("PATCH", resource_path("VirtualMachineScaleSets", "WEB").replace(
        "/resourceGroups/", "/resourcegroups/"), {"properties": {"scheduledEventsPolicy": POLICY}})
    assert status == 200 and body["properties"]["scheduledEventsPolicy"] == POLICY
    assert statuses(client) == {E_SS: "Scheduled"}
    status, _headers, body = client.arm("PUT", resource_path("availabilitySets", "as1"),
                                        {"location": "westeurope", "properties": {"scheduledEventsPolicy": {
                                            "userInitiatedReboot": {"automaticallyApprove": True}}}})
    assert status == 200 and "scheduledEventsAdditionalPublishingTargets" not in body["properties"]["scheduledEventsPolicy"]
    client.arm("PATCH", resource_path("availabilitySets", "as1"), {"properties": {"scheduledEventsPolicy": POLICY}})
    body = client.arm("GET", resource_path("availabilitySets", "as1"))[2]
    assert body["properties"]["scheduledEventsPolicy"]["userInitiatedReboot"] == {"automaticallyApprove": True}
    assert statuses(client) == {E_SS: "Scheduled", E_AS: "Scheduled"}
    assert client.arm("GET", resource_path("availabilitySets", "as1", "2024-07-01"))[2]["properties"] == {}
    off = {"properties": {"scheduledEventsPolicy": {"scheduledEventsAdditionalPublishingTargets": {
        "eventGridAndResourceGraph": {"enable": False}}}}}
    assert client.arm("PATCH", resource_path("virtualMachineScaleSets", "web"), off)[0] == 200
    assert statuses(client) == {E_AS: "Scheduled"}


@pytest.mark.parametrize("path, body, status, code, words", [
    (resource_path("virtualMachines", "ghost"), None, 404, "ResourceNotFound", "ghost"),
    (resource_path("virtualMachines", "web_0"), None, 404, "ResourceNotFound", "web_0"),
    (resource_path("virtualMachines", "c", group="rg-other"), None, 404, "ResourceNotFound", "rg-other"),
    (resource_path("virtualMachines", "c", "2024-07-01"), {"properties": {"scheduledEventsPolicy": POLICY}}, 400,
     "InvalidRequestContent", "Could not find member 'scheduledEventsPolicy'"),
    (resource_path("virtualMachines", "c"), b"{oops", 400, "InvalidRequestContent", "could not be deserialized"),
    (resource_path("virtualMachines", "c"), {"properties": {"scheduledEventsPolicy": {
        "scheduledEventsAdditionalPublishingTargets": {"eventGridAndResourceGraph": {"enable": "yes"}}}}}, 400,
     "InvalidParameter", "enable"),
    (resource_path("virtualMachines", "c").split("?", maxsplit=1)[0], None, 400, "MissingApiVersionParameter", "api-version"),
])
def test_resource_errors(arm, path, body, status, code, words):
    client = arm()
    if isinstance(body, bytes):
        got = client.arm_raw("PATCH", path, body, {"Authorization": "Bearer " + client.token()})
        answer = (got[0], json.loads(got[2]))
    else:
        got = client.arm("PATCH" if body is not None else "GET", path, body)
        answer = (got[0], got[2])
    assert answer[0] == status and answer[1]["error"]["code"] == code and words in answer[1]["error"]["message"]


def test_feature_not_registered(arm):
    client = arm(scenario(features_registered=False))
    status, _headers, body = client.arm("PATCH", resource_path("virtualMachines", "c"),
                                        {"properties": {"scheduledEventsPolicy": POLICY}})
    assert status == 400 and body["error"]["code"] == "SubscriptionNotRegisteredForFeature"
    assert "Microsoft.Compute/SendScheduledEventsPolicy" in body["error"]["message"]
    ControlClient(client.sim.control_url).register_feature(True)
    assert client.arm("PATCH", resource_path("virtualMachines", "c"), {"properties": {"scheduledEventsPolicy": POLICY}})[0] == 200


# -- acknowledge ------------------------------------------------------------------------------------------


def test_lifecycle_acknowledged_started_completed_gone_and_canceled(arm):
    client = arm()
    control = ControlClient(client.sim.control_url)
    assert statuses(client) == {E_SS: "Scheduled", E_AS: "Scheduled", E_VM: "Scheduled"}
    status, _headers, body = client.arm("POST", ack_path("virtualMachineScaleSets", "web", E_SS.lower()))
    assert status == 200 and body == {"value": "Successfully Approved"}
    assert [event["EventStatus"] for event in client.document("web_1")["Events"]] == ["Started"]
    assert statuses(client)[E_SS] == "Started"
    approval = control.approvals(event_id=E_SS)[0]
    assert approval["source"] == "control-plane" and approval["vm"] is None and approval["result"] == "started"
    assert approval["resource"].endswith("/virtualMachineScaleSets/web")
    assert [(ack["event_id"], ack["form"], ack["result"]) for ack in control.acknowledgements()] == [
        (E_SS, "single", "started")]
    control.advance(120)
    assert statuses(client)[E_VM] == "Canceled" and client.document("c")["Events"] == []
    control.advance(480)
    assert statuses(client)[E_SS] == "Completed" and client.document("web_0")["Events"] == []
    assert control.control_plane_event(E_SS)["status"] == "Completed"
    control.advance(1800)
    assert E_SS not in statuses(client) and E_VM not in statuses(client)
    assert control.control_plane_event(E_SS)["in_resource_graph"] is False


def test_imds_approval_shows_started_in_resource_graph(arm):
    client = arm()
    assert client.approve("a", E_AS)[0] == 200
    assert statuses(client)[E_AS] == "Started"


def test_acknowledge_errors(arm):
    client = arm()
    status, _headers, body = client.arm("POST", ack_path("availabilitySets", "as1", E_SS))
    assert status == 404 and body["error"]["code"] == "NotFound" and E_SS in body["error"]["message"]
    status, _headers, body = client.arm("POST", ack_path("availabilitySets", "nope", E_SS))
    assert status == 404 and body["error"]["code"] == "ResourceNotFound"
    status, _headers, body = client.arm("POST", ack_path("availabilitySets", "as1", E_AS, "2024-01-01"))
    assert status == 400 and body["error"]["code"] == "InvalidApiVersionParameter"
    assert "2023-10-01-preview,2025-10-01-preview" in body["error"]["message"]
    assert client.arm("POST", ack_path("availabilitySets", "as1", E_AS, V_LIST))[0] == 200
    status, _headers, body = client.arm("POST", ack_path("availabilitySets", "as1", E_AS))
    assert status == 409 and body["error"]["code"] == "Conflict" and "is Started" in body["error"]["message"]
    assert client.arm("GET", ack_path("availabilitySets", "as1", E_AS))[0] == 405


def test_acknowledge_list_form(arm):
    data = scenario()
    data["events"].append({"id": "B0000000-0000-4000-8000-000000000004", "type": "Freeze", "scale_set": "web"})
    client = arm(data)
    path = f"{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/web{ACK}?api-version={V_LIST}"
    status, _headers, body = client.arm("POST", path.replace(V_LIST, V_ACK), {"value": [E_SS]})
    assert status == 400 and body["error"]["code"] == "InvalidApiVersionParameter"
    for bad in ({"value": []}, {"value": [1]}, {"ids": [E_SS]}, [E_SS]):
        status, _headers, body = client.arm("POST", path, bad)
        assert status == 400 and body["error"]["code"] == "InvalidRequestContent", bad
    status, _headers, body = client.arm("POST", path, {"value": [E_SS, E_AS]})
    assert status == 404 and body["error"]["code"] == "NotFound"
    assert body["error"]["details"] == [{"target": E_AS, "code": "NotFound", "message": body["error"]["details"][0]["message"]}]
    assert statuses(client)[E_SS] == "Scheduled"
    status, _headers, body = client.arm("POST", path, {"value": [E_SS, "B0000000-0000-4000-8000-000000000004"]})
    assert status == 200 and body == {"value": "Successfully Approved"}
    assert set(statuses(client).values()) == {"Started", "Scheduled"} and statuses(client)[E_SS] == "Started"
    status, _headers, body = client.arm("POST", path, {"value": [E_SS]})
    assert status == 409 and body["error"]["details"][0]["target"] == E_SS


# -- faults -----------------------------------------------------------------------------------------------


def test_throttle_for_the_next_requests_then_recover(arm):
    client = arm()
    control = ControlClient(client.sim.control_url)
    fault = control.throttle(count=2, retry_after=3)
    assert fault["kind"] == "throttle" and "vm" not in fault
    for _attempt in range(2):
        status, headers, body = client.arm("POST", GRAPH, {"query": GRAPH_QUERY})
        assert status == 429 and body["error"]["code"] == "RateLimiting"
        assert headers["Retry-After"] == "3" and headers["x-ms-user-quota-remaining"] == "0"
        assert headers["x-ms-user-quota-resets-after"] == "00:00:03"
    status, headers, _body = client.arm("POST", GRAPH, {"query": GRAPH_QUERY})
    assert status == 200 and "x-ms-user-quota-remaining" in headers
    assert [entry["status"] for entry in control.arm_requests()][-3:] == [429, 429, 200]


def test_throttle_window_and_5xx_from_the_scenario(arm):
    data = scenario()
    data["faults"] = [{"kind": "throttle", "from": 100, "until": 200, "path": "/providers/Microsoft.ResourceGraph"},
                      {"kind": "arm_status", "code": 503, "count": 1, "path": "/subscriptions"}]
    client = arm(data)
    assert client.graph()[0] == 200
    assert client.arm("POST", ack_path("availabilitySets", "as1", E_AS))[0] == 503
    assert client.arm("POST", ack_path("availabilitySets", "as1", E_AS))[0] == 200
    client.sim.world.advance(100)
    assert client.graph()[0] == 429
    assert client.arm_raw("GET", TOKEN_PATH, headers={"X-IDENTITY-HEADER": client.sim.identity_header})[0] == 200
    client.sim.world.advance(100)
    assert client.graph()[0] == 200


# -- the control API and its client --------------------------------------------------------------------


def test_control_api_for_the_control_plane(arm):
    client = arm(scenario(opted_in=[]))
    control = ControlClient(client.sim.control_url)
    state = control.control_plane()
    assert state["arm"] == client.sim.arm_url and state["identity_endpoint"] == client.sim.arm_url + "/msi/token"
    assert state["features_registered"] is True and state["opted_in"] == [] and state["retention"] == 1800
    assert [res["id"] for res in control.opt_in("as1")] == [f"{RG}/providers/Microsoft.Compute/availabilitySets/as1"]
    assert control.control_plane()["opted_in"] == [f"{RG}/providers/Microsoft.Compute/availabilitySets/as1"]
    assert [row["name"] for row in control.control_plane_rows()] == [E_AS]
    assert len(control.control_plane_rows(all_rows=True)) == 3
    assert control.resources(kind="virtualMachineScaleSets")[0]["name"] == "web"
    assert control.set_control_plane(features_registered=False, retention=10)["features_registered"] is False
    event = control.control_plane_event(E_AS)
    assert event["status"] == "Scheduled" and event["in_resource_graph"] and event["row"]["name"] == E_AS
    assert control.event(E_AS)["owner"].endswith("/availabilitySets/as1")
    assert {vm["name"]: vm["scale_set"] for vm in control.state()["vms"]}["web_1"] == "web"
    with pytest.raises(ControlError, match="404"):
        control.opt_in("ghost")
    with pytest.raises(ControlError, match="400"):
        control.resources(kind="disks")
    control.reset()
    assert control.control_plane()["opted_in"] == [] and control.control_plane()["features_registered"] is True
