"""The IMDS listeners over real sockets on 127.0.0.1 (ephemeral ports, manual clock)."""

from __future__ import annotations

import json

import pytest

from simhelpers import LATEST, SE_PATH, two_vm_scenario
from imds_simulator.document import SCHEDULED_EVENTS_VERSIONS


def test_microsoft_documented_approval_starts_event_for_all_resources(start_sim):
    """POST {"StartRequests": [{"EventId": id}]} with Metadata: true, exactly as the docs show."""
    client = start_sim(two_vm_scenario())
    sim = client.sim
    event = client.document("a")["Events"][0]
    assert event["EventStatus"] == "Scheduled" and event["Resources"] == ["a", "b"]
    status, body = client.call("a", "POST", SE_PATH, body=json.dumps(
        {"StartRequests": [{"EventId": event["EventId"]}]}).encode(), headers={"Metadata": "true"})
    assert status == 200, body
    for vm in ("a", "b"):
        doc = client.document(vm)
        assert doc["DocumentIncarnation"] == 3
        assert doc["Events"][0]["EventId"] == event["EventId"]
        assert doc["Events"][0]["EventStatus"] == "Started"
        assert doc["Events"][0]["NotBefore"] == ""
    approvals = client.control("GET", "/approvals")[1]["approvals"]
    assert [(record["event_id"], record["vm"], record["result"]) for record in approvals] == [
        (event["EventId"], "a", "started")]
    assert sim.world.approvals[0]["sim_time"] == 0.0


def test_get_document_is_json(start_sim):
    client = start_sim(two_vm_scenario())
    status, headers, body = client.imds("a", "GET", SE_PATH)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["DocumentIncarnation"] == 2


def test_missing_metadata_header_is_400_with_azure_body(start_sim):
    client = start_sim(two_vm_scenario())
    status, body = client.call("a", "GET", SE_PATH, headers={})
    assert status == 400
    assert json.loads(body) == {"error": "Bad request. Required metadata header not specified"}
    assert client.imds("a", "GET", SE_PATH, headers={"Metadata": "false"})[0] == 400


@pytest.mark.parametrize("query", ["", "?api-version=", "?api-version=2018-01-01", "?api-version=latest",
                                   "?format=json"])
def test_missing_or_unknown_scheduled_events_version_is_400(start_sim, query):
    client = start_sim(two_vm_scenario())
    status, body = client.call("a", "GET", "/metadata/scheduledevents" + query)
    assert status == 400
    assert "api-version" in json.loads(body)["error"]


@pytest.mark.parametrize("version", SCHEDULED_EVENTS_VERSIONS)
def test_every_known_version_is_accepted(start_sim, version):
    client = start_sim(two_vm_scenario())
    doc = client.document("a", version)
    assert doc["Events"][0]["Resources"] == (["_a", "_b"] if version == "2017-03-01" else ["a", "b"])


def test_x_forwarded_for_is_refused(start_sim):
    client = start_sim(two_vm_scenario())
    status = client.call("a", "GET", SE_PATH, headers={"Metadata": "true", "X-Forwarded-For": "127.0.0.9"})[0]
    assert status == 400


def test_duplicate_query_parameters_are_refused(start_sim):
    client = start_sim(two_vm_scenario())
    path = f"/metadata/scheduledevents?api-version={LATEST}&api-version={LATEST}"
    assert client.imds("a", "GET", path)[0] == 400


@pytest.mark.parametrize("method, path, expected", [
    ("PUT", SE_PATH, 405),
    ("DELETE", SE_PATH, 405),
    ("PATCH", SE_PATH, 405),
    ("FROB", SE_PATH, 405),
    ("POST", "/metadata/instance?api-version=2021-02-01", 405),
    ("GET", "/metadata/scheduledevents/", 404),
    ("GET", "/metadata/identity/oauth2/token?api-version=2018-02-01", 404),
    ("GET", "/", 404),
])
def test_methods_and_unknown_paths(start_sim, method, path, expected):
    client = start_sim(two_vm_scenario())
    assert client.imds("a", method, path)[0] == expected


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"StartRequests": []}', "non-empty"),
    (b'{"StartRequests": {"EventId": "x"}}', "non-empty list"),
    (b'{"StartRequests": [{"Id": "x"}]}', "EventId"),
    (b'{"StartRequests": [{"EventId": 5}]}', "EventId"),
    (b'{"StartRequests": [], "Extra": 1}', "Extra"),
    (b"", "not valid JSON"),
])
def test_malformed_post_bodies_are_400(start_sim, body, fragment):
    client = start_sim(two_vm_scenario())
    status, raw = client.call("a", "POST", SE_PATH, body=body)
    assert status == 400
    assert fragment in json.loads(raw)["error"]
    assert client.document("a")["Events"][0]["EventStatus"] == "Scheduled"


def test_unknown_event_id_is_400_naming_it(start_sim):
    client = start_sim(two_vm_scenario())
    event_id = client.document("a")["Events"][0]["EventId"]
    status, raw = client.approve("a", event_id, "11111111-2222-3333-4444-555555555555")
    assert status == 400
    body = json.loads(raw)
    assert "11111111-2222-3333-4444-555555555555" in body["error"]
    assert body["unknownEventIds"] == ["11111111-2222-3333-4444-555555555555"]
    assert client.document("a")["Events"][0]["EventStatus"] == "Scheduled"


def test_vm_cannot_approve_event_outside_its_document(start_sim):
    client = start_sim(two_vm_scenario())
    event_id = client.document("a")["Events"][0]["EventId"]
    assert client.approve("c", event_id)[0] == 400


def test_post_accepts_document_incarnation_and_no_content_type(start_sim):
    client = start_sim(two_vm_scenario())
    event_id = client.document("b")["Events"][0]["EventId"]
    body = json.dumps({"DocumentIncarnation": "2", "StartRequests": [{"EventId": event_id}]}).encode()
    status = client.call("b", "POST", "/metadata/scheduledevents?api-version=2017-03-01", body=body)[0]
    assert status == 200
    assert client.document("a")["Events"][0]["EventStatus"] == "Started"


def test_approving_already_started_event_is_200(start_sim):
    client = start_sim(two_vm_scenario())
    event_id = client.document("a")["Events"][0]["EventId"]
    assert client.approve("a", event_id)[0] == 200
    assert client.approve("b", event_id)[0] == 200


def test_version_gating_over_http(start_sim):
    client = start_sim(two_vm_scenario(type="Terminate"))
    assert client.document("a", "2017-11-01")["Events"] == []
    event = client.document("a", "2019-01-01")["Events"][0]
    assert set(event) == {"EventId", "EventStatus", "EventType", "ResourceType", "Resources", "NotBefore"}
    assert client.approve("a", event["EventId"], version="2017-11-01")[0] == 400


def test_instance_name_as_text(start_sim):
    client = start_sim(two_vm_scenario())
    status, headers, body = client.imds("b", "GET", "/metadata/instance/compute/name?api-version=2021-02-01&format=text")
    assert status == 200 and body == b"b"
    assert headers["Content-Type"].startswith("text/plain")


def test_instance_compute_json(start_sim):
    vm = {"name": "myvm", "availability_set": "s", "update_domain": 2, "fault_domain": 1, "computer_name": "myhost"}
    client = start_sim({"vms": [vm]})
    status, body = client.call("myvm", "GET", "/metadata/instance/compute?api-version=2021-02-01")
    compute = json.loads(body)
    assert status == 200
    assert compute["name"] == "myvm" and compute["vmScaleSetName"] == ""
    assert compute["platformFaultDomain"] == "1" and compute["platformUpdateDomain"] == "2"
    assert compute["osProfile"]["computerName"] == "myhost"
    assert compute["resourceId"].endswith("/virtualMachines/myvm")
    assert "placementGroupId" in compute and compute["vmId"]


def test_instance_document(start_sim):
    client = start_sim(two_vm_scenario())
    status, body = client.call("a", "GET", "/metadata/instance?api-version=2017-04-02")
    data = json.loads(body)
    assert status == 200 and set(data) == {"compute", "network"}
    assert data["compute"]["name"] == "a"


@pytest.mark.parametrize("query", ["", "?api-version=2017-03-01", "?api-version=latest"])
def test_instance_needs_valid_version(start_sim, query):
    client = start_sim(two_vm_scenario())
    status, body = client.call("a", "GET", "/metadata/instance/compute" + query)
    data = json.loads(body)
    assert status == 400 and data["error"] and data["newest-versions"]


def test_instance_leaf_needs_text_format_and_unknown_key_is_404(start_sim):
    client = start_sim(two_vm_scenario())
    assert client.imds("a", "GET", "/metadata/instance/compute/name?api-version=2021-02-01")[0] == 400
    assert client.imds("a", "GET", "/metadata/instance/compute/nope?api-version=2021-02-01")[0] == 404
    assert client.imds("a", "GET", "/metadata/instance/compute/name?api-version=2021-02-01&format=text",
                       headers={})[0] == 400


def test_rate_limit_429_beyond_five_per_second(start_sim):
    client = start_sim(two_vm_scenario())
    sim = client.sim
    fake = client.fake
    statuses = [client.imds("a", "GET", SE_PATH)[0] for _attempt in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    assert client.imds("b", "GET", SE_PATH)[0] == 200  # the budget is per VM
    fake.now += 0.5
    assert client.imds("a", "GET", SE_PATH)[0] == 429  # rejected requests count: still 7 in the window
    fake.now += 0.6
    assert client.imds("a", "GET", SE_PATH)[0] == 200
    log = sim.request_log.query("a")
    assert [entry["status"] for entry in log].count(429) == 3


def test_rate_limit_is_configurable(start_sim):
    client = start_sim(two_vm_scenario(), rate_limit=0)
    assert {client.imds("a", "GET", SE_PATH)[0] for _attempt in range(12)} == {200}


def test_notbefore_expiry_over_http(start_sim):
    client = start_sim(two_vm_scenario(started_for=60))
    sim = client.sim
    first = client.document("a")["Events"][0]
    sim.world.advance(900)
    started = client.document("a")["Events"][0]
    assert (started["EventId"], started["EventStatus"]) == (first["EventId"], "Started")
    sim.world.advance(60)
    assert client.document("a") == {"DocumentIncarnation": 4, "Events": []}


def test_request_line_and_headers_are_logged(start_sim):
    client = start_sim(two_vm_scenario())
    sim = client.sim
    client.imds("a", "GET", SE_PATH, headers={})
    entry = sim.request_log.query()[-1]
    assert entry["vm"] == "a" and entry["method"] == "GET" and entry["path"] == SE_PATH and entry["status"] == 400
    assert entry["sim_time"] == 0.0 and entry["wall_time"] == 1000.0


def test_metadata_header_value_check_is_case_sensitive_on_value(start_sim):
    client = start_sim(two_vm_scenario())
    assert client.imds("a", "GET", SE_PATH, headers={"metadata": "true"})[0] == 200
    assert client.imds("a", "GET", SE_PATH, headers={"Metadata": "True"})[0] == 400
