"""The control API over real sockets."""

from __future__ import annotations

import http.client

import pytest

from simhelpers import SE_PATH, two_vm_scenario


def test_state_shows_clock_vms_views_and_events(start_sim):
    client = start_sim(two_vm_scenario(resources=["b"]))
    sim = client.sim
    status, state = client.control("GET", "/state")
    assert status == 200
    assert state["clock"]["mode"] == "manual" and state["clock"]["now"] == 0
    assert state["clock"]["time"] == "Mon, 19 Sep 2016 18:14:47 GMT"
    vms = {vm["name"]: vm for vm in state["vms"]}
    event_id = state["events"][0]["id"]
    assert vms["a"]["events"] == [event_id] and vms["c"]["events"] == []
    assert vms["a"]["document_incarnation"] == 2 and vms["c"]["document_incarnation"] == 1
    assert vms["a"]["endpoint"] == sim.endpoint("a") and vms["a"]["listening"] is True
    assert state["events"][0]["status"] == "Scheduled" and state["events"][0]["viewers"] == ["a", "b"]
    assert state["control"] == sim.control_url
    only_c = client.control("GET", "/state?vm=c")[1]
    assert [vm["name"] for vm in only_c["vms"]] == ["c"] and only_c["events"] == []


def test_inject_event_then_cancel(start_sim):
    client = start_sim({"vms": [{"name": "myvm"}], "clock": "manual"})
    status, event = client.control("POST", "/events", {"type": "Redeploy", "resources": ["myvm"], "notice": 600,
                                                       "description": "injected"})
    assert status == 201 and event["status"] == "Scheduled" and event["not_before"] == 600
    doc = client.document("myvm")
    assert doc["Events"][0]["EventId"] == event["id"] and doc["Events"][0]["Description"] == "injected"
    status, cancelled = client.control("POST", f"/events/{event['id']}/cancel")
    assert status == 200 and cancelled["status"] == "gone" and cancelled["gone_reason"] == "cancelled"
    assert client.document("myvm") == {"DocumentIncarnation": 3, "Events": []}
    assert client.control("POST", f"/events/{event['id']}/cancel")[0] == 409


def test_inject_at_current_sim_time_and_fixed_id(start_sim):
    client = start_sim({"vms": [{"name": "myvm"}]})
    sim = client.sim
    sim.world.advance(100)
    event = client.control("POST", "/events", {"type": "Preempt", "resources": ["myvm"],
                                               "id": "A123BC45-1234-5678-AB90-ABCDEF123456"})[1]
    assert event["at"] == 100 and event["not_before"] == 130
    assert client.control("GET", "/events/a123bc45-1234-5678-ab90-abcdef123456")[1]["type"] == "Preempt"
    assert client.control("POST", "/events", {"type": "Preempt", "resources": ["myvm"],
                                              "id": "A123BC45-1234-5678-AB90-ABCDEF123456"})[0] == 409


def test_inject_invalid_event_is_400(start_sim):
    client = start_sim({"vms": [{"name": "myvm"}]})
    status, body = client.control("POST", "/events", {"type": "Restart", "resources": ["myvm"]})
    assert status == 400 and "unknown event type 'Restart'" in body["error"]
    status, body = client.control("POST", "/events", {"type": "Reboot", "resources": ["ghost"]})
    assert status == 400 and "unknown VM 'ghost'" in body["error"]
    status, body = client.control("POST", "/events", b"{broken")
    assert status == 400


def test_start_event_and_clock_advance(start_sim):
    client = start_sim(two_vm_scenario(started_for=30))
    event_id = client.document("a")["Events"][0]["EventId"]
    status, event = client.control("POST", f"/events/{event_id}/start")
    assert status == 200 and event["status"] == "Started" and event["started_at"] == 0
    assert client.document("b")["Events"][0]["EventStatus"] == "Started"
    status, clock = client.control("POST", "/clock/advance", {"seconds": 30})
    assert status == 200 and clock["clock"]["now"] == 30
    assert client.document("a")["Events"] == []
    assert client.control("POST", "/clock/advance", {"seconds": -1})[0] == 400
    assert client.control("POST", "/clock/advance", {"secs": 1})[0] == 400


def test_reboot_refuses_connections_until_over(start_sim):
    client = start_sim(two_vm_scenario())
    sim = client.sim
    status, body = client.control("POST", "/vms/a/reboot", {"seconds": 120})
    assert status == 200 and body["down_until"] == 120
    assert not sim.is_listening("a")
    with pytest.raises(ConnectionRefusedError):
        client.imds("a", "GET", SE_PATH)
    assert client.imds("b", "GET", SE_PATH)[0] == 200
    client.control("POST", "/clock/advance", {"seconds": 119})
    with pytest.raises(ConnectionRefusedError):
        client.imds("a", "GET", SE_PATH)
    client.control("POST", "/clock/advance", {"seconds": 1})
    assert sim.is_listening("a")
    assert client.imds("a", "GET", SE_PATH)[0] == 200
    assert client.control("POST", "/vms/ghost/reboot", {"seconds": 1})[0] == 404


def test_event_outage_takes_listener_down(start_sim):
    client = start_sim(two_vm_scenario(resources=["a"], outage=60))
    sim = client.sim
    event_id = client.document("a")["Events"][0]["EventId"]
    assert client.approve("a", event_id)[0] == 200
    sim.settle()
    with pytest.raises(ConnectionRefusedError):
        client.imds("a", "GET", SE_PATH)
    client.control("POST", "/clock/advance", {"seconds": 60})
    assert client.document("a")["Events"][0]["EventStatus"] == "Started"  # the same EventId after the reboot


def test_requests_log_filters(start_sim):
    client = start_sim(two_vm_scenario())
    fake = client.fake
    client.imds("a", "GET", SE_PATH)
    fake.now += 10
    client.imds("b", "GET", SE_PATH)
    client.imds("a", "GET", SE_PATH, headers={})
    body = client.control("GET", "/requests?vm=a")[1]
    assert [(entry["vm"], entry["status"]) for entry in body["requests"]] == [("a", 200), ("a", 400)]
    body = client.control("GET", "/requests?since=1005")[1]
    assert [entry["vm"] for entry in body["requests"]] == ["b", "a"]
    assert body["requests"][0]["wall_time"] == 1010 and body["requests"][0]["sim_time"] == 0
    body = client.control("GET", "/requests?limit=1")[1]
    assert len(body["requests"]) == 1
    assert client.control("GET", "/requests?since=yesterday")[0] == 400


def test_request_log_is_bounded(start_sim):
    client = start_sim(two_vm_scenario(), request_log_size=3, rate_limit=0)
    sim = client.sim
    for _attempt in range(5):
        client.imds("a", "GET", SE_PATH)
    assert [entry["seq"] for entry in sim.request_log.query()] == [3, 4, 5]


def test_approvals_filter(start_sim):
    client = start_sim(two_vm_scenario())
    event_id = client.document("a")["Events"][0]["EventId"]
    client.approve("b", event_id)
    body = client.control("GET", "/approvals?vm=b&event=" + event_id.lower())[1]
    assert len(body["approvals"]) == 1 and body["approvals"][0]["vm"] == "b"
    assert client.control("GET", "/approvals?vm=a")[1]["approvals"] == []


def test_reset(start_sim):
    client = start_sim(two_vm_scenario())
    sim = client.sim
    event_id = client.document("a")["Events"][0]["EventId"]
    client.approve("a", event_id)
    client.control("POST", "/vms/b/reboot", {"seconds": 100})
    client.control("POST", "/clock/advance", {"seconds": 50})
    status, body = client.control("POST", "/reset")
    assert status == 200 and body["clock"]["now"] == 0
    assert sim.is_listening("b")
    assert client.document("a")["Events"][0]["EventStatus"] == "Scheduled"
    assert client.document("a")["Events"][0]["EventId"] == event_id
    assert client.control("GET", "/approvals")[1]["approvals"] == []
    assert len(client.control("GET", "/requests")[1]["requests"]) == 2


def test_control_errors(start_sim):
    client = start_sim(two_vm_scenario())
    assert client.control("GET", "/nope")[0] == 404
    assert client.control("DELETE", "/state")[0] == 405
    assert client.control("GET", "/events/00000000-0000-0000-0000-000000000000")[0] == 404
    assert client.control("GET", "/state?vm=ghost")[0] == 404
    assert client.control("GET", "/metadata/scheduledevents?api-version=2020-07-01")[0] == 404


def test_control_listens_on_127_0_0_1_only(start_sim):
    sim = start_sim(two_vm_scenario(), host="::1").sim
    assert sim.control_url.startswith("http://127.0.0.1:")
    assert sim.endpoint("a").startswith("http://[::1]:")
    host, port = sim.address("a")
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", SE_PATH, headers={"Metadata": "true"})
    assert connection.getresponse().status == 200
    connection.close()
