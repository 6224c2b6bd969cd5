"""Every fault kind, over real sockets; waits are recorded by a fake sleep instead of slept."""

from __future__ import annotations

import http.client
import json

import pytest

from simhelpers import META, SE_PATH, two_vm_scenario


def with_faults(*faults, **event):
    data = two_vm_scenario(**event)
    data["faults"] = list(faults)
    return data


def raw_get(sim, vm, path=SE_PATH):
    host, port = sim.address(vm)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", path, headers=META)
    return connection, connection.getresponse()


def test_status_fault_answers_instead_of_imds(start_sim):
    client = start_sim(with_faults({"kind": "status", "code": 500, "vm": "a"}))
    sim = client.sim
    status, body = client.call("a", "GET", SE_PATH)
    assert status == 500 and "Simulated fault" in json.loads(body)["error"]
    assert client.imds("b", "GET", SE_PATH)[0] == 200
    assert sim.request_log.query("a")[-1]["fault"] == "status"


def test_status_fault_blocks_approval(start_sim):
    client = start_sim(with_faults({"kind": "status", "code": 410, "method": "POST"}))
    event_id = client.document("a")["Events"][0]["EventId"]
    assert client.approve("a", event_id)[0] == 410
    assert client.document("a")["Events"][0]["EventStatus"] == "Scheduled"


def test_fault_window_follows_sim_clock(start_sim):
    client = start_sim(with_faults({"kind": "status", "code": 503, "from": 100, "until": 200}))
    sim = client.sim
    assert client.imds("a", "GET", SE_PATH)[0] == 200
    sim.world.advance(100)
    assert client.imds("a", "GET", SE_PATH)[0] == 503
    sim.world.advance(100)
    assert client.imds("a", "GET", SE_PATH)[0] == 200


def test_counted_fault_is_spent_after_its_requests(start_sim):
    client = start_sim(with_faults({"kind": "status", "code": 503, "vm": "a", "count": 2}))
    assert [client.imds("a", "GET", SE_PATH)[0] for dummy in range(3)] == [503, 503, 200]
    assert client.imds("b", "GET", SE_PATH)[0] == 200
    assert client.sim.world.faults == []


def test_path_filter(start_sim):
    client = start_sim(with_faults({"kind": "status", "code": 500, "path": "/metadata/instance"}))
    assert client.imds("a", "GET", SE_PATH)[0] == 200
    assert client.imds("a", "GET", "/metadata/instance/compute/name?api-version=2021-02-01&format=text")[0] == 500


def test_delay_fault_waits_then_answers(start_sim):
    client = start_sim(with_faults({"kind": "delay", "seconds": 3}))
    sim = client.sim
    fake = client.fake
    assert client.imds("a", "GET", SE_PATH)[0] == 200
    assert fake.sleeps == [3]
    assert sim.request_log.query("a")[-1]["fault"] == "delay"


def test_warmup_blocks_first_request_window(start_sim):
    client = start_sim(with_faults({"kind": "warmup", "seconds": 120, "path": "/metadata/scheduledevents"}))
    fake = client.fake
    assert client.imds("a", "GET", SE_PATH)[0] == 200
    assert fake.sleeps == [120]
    fake.now += 100  # still inside the window: the next request waits for the rest
    client.imds("a", "GET", SE_PATH)
    assert fake.sleeps == [120, 20]
    fake.now += 20
    client.imds("a", "GET", SE_PATH)
    assert fake.sleeps == [120, 20]
    client.imds("b", "GET", SE_PATH)  # every VM warms up on its own
    assert fake.sleeps == [120, 20, 120]


def test_malformed_fault(start_sim):
    client = start_sim(with_faults({"kind": "malformed"}))
    status, body = client.call("a", "GET", SE_PATH)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)


def test_non_object_fault(start_sim):
    client = start_sim(with_faults({"kind": "non_object"}))
    status, body = client.call("a", "GET", SE_PATH)
    assert status == 200 and isinstance(json.loads(body), list)


def test_huge_fault_is_valid_json_of_exact_size(start_sim):
    client = start_sim(with_faults({"kind": "huge", "bytes": 300000}))
    status, headers, body = client.imds("a", "GET", SE_PATH)
    assert status == 200 and len(body) == 300000 and headers["Content-Length"] == "300000"
    assert json.loads(body)["Events"][0]["EventType"] == "Reboot"


def test_truncated_fault_cuts_body(start_sim):
    sim = start_sim(with_faults({"kind": "truncated"})).sim
    connection, response = raw_get(sim, "a")
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    connection.close()


def test_drop_fault_closes_without_answer(start_sim):
    sim = start_sim(with_faults({"kind": "drop", "vm": ["a"]})).sim
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        raw_get(sim, "a")
    assert sim.request_log.query("a")[-1]["status"] is None
    assert sim.request_log.query("a")[-1]["fault"] == "drop"


def test_body_faults_leave_errors_alone(start_sim):
    client = start_sim(with_faults({"kind": "malformed"}))
    status, body = client.call("a", "GET", SE_PATH, headers={})
    assert status == 400 and json.loads(body)["error"]


def test_reset_incarnation_fault(start_sim):
    client = start_sim(with_faults({"kind": "reset_incarnation", "from": 50}))
    sim = client.sim
    assert client.document("a")["DocumentIncarnation"] == 2
    sim.world.advance(50)
    doc = client.document("a")
    assert doc["DocumentIncarnation"] == 1 and len(doc["Events"]) == 1


def test_faults_through_control_api(start_sim):
    client = start_sim(two_vm_scenario())
    status, fault = client.control("POST", "/faults", {"kind": "status", "code": 502, "vm": "b"})
    assert status == 201 and fault["id"] and fault["from"] == 0
    assert client.imds("b", "GET", SE_PATH)[0] == 502
    assert client.control("GET", "/faults")[1]["faults"][0]["code"] == 502
    status, removed = client.control("DELETE", "/faults")
    assert status == 200 and len(removed["removed"]) == 1
    assert client.imds("b", "GET", SE_PATH)[0] == 200
    fault = client.control("POST", "/faults", {"kind": "drop"})[1]
    assert client.control("DELETE", "/faults/" + fault["id"])[0] == 200
    assert client.control("DELETE", "/faults/nope")[0] == 404


def test_invalid_fault_through_control_api(start_sim):
    client = start_sim(two_vm_scenario())
    status, body = client.control("POST", "/faults", {"kind": "status"})
    assert status == 400 and "code: is required" in body["error"]


def test_fields_fault_writes_any_value_over_the_document_and_every_event(start_sim):
    client = start_sim(with_faults({"kind": "fields", "vm": "a", "fields": {
        "event": {"EventType": "$(x)\n", "DurationInSeconds": ["x"]}, "document": {"DocumentIncarnation": None}}}))
    document = client.document("a")
    assert document["DocumentIncarnation"] is None
    assert [(e["EventType"], e["DurationInSeconds"]) for e in document["Events"]] == [("$(x)\n", ["x"])]
    assert client.document("b")["Events"][0]["EventType"] != "$(x)\n"
    assert client.sim.request_log.query("a")[-1]["fault"] == "fields"


def test_fields_fault_needs_a_mapping_of_known_targets(start_sim):
    client = start_sim(two_vm_scenario())
    status, body = client.control("POST", "/faults", {"kind": "fields", "fields": {"row": {"id": "x"}}})
    assert status == 400 and "unknown key" in body["error"]
    status, body = client.control("POST", "/faults", {"kind": "fields"})
    assert status == 400 and "fields: is required" in body["error"]
