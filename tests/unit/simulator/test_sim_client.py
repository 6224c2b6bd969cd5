"""ControlClient, the one client of the control API for other processes, against a live simulator."""

from __future__ import annotations

import pytest

from imds_simulator import ControlClient, ControlError


def test_drives_an_event_from_injection_to_gone(start_sim):
    sim = start_sim({"vms": [{"name": "myvm"}, {"name": "peer-vm"}], "clock": "manual"}).sim
    control = ControlClient(sim.control_url + "/")
    event = control.inject(type="Reboot", resources=["myvm"], notice=600, started_for=60)
    assert control.event(event["id"])["status"] == "Scheduled"
    assert [e["id"] for e in control.events(vm="myvm")] == [event["id"]]
    assert control.events(vm="peer-vm") == []
    assert control.start(event["id"])["status"] == "Started"
    control.advance(120)
    assert control.event(event["id"])["status"] == "gone" and control.live_events() == []
    assert control.state()["clock"]["now"] == 120


def test_faults_requests_and_approvals(start_sim):
    client = start_sim({"vms": [{"name": "myvm"}], "clock": "manual"})
    control = ControlClient(client.sim.control_url)
    fault = control.add_fault(kind="status", code=503, count=1)
    assert fault["id"]
    path = "/metadata/scheduledevents?api-version=2020-07-01"
    assert client.call("myvm", "GET", path)[0] == 503 and client.call("myvm", "GET", path)[0] == 200
    log = control.requests(vm="myvm")
    assert [r["status"] for r in log] == [503, 200]
    assert control.requests(vm="myvm", since=log[-1]["wall_time"] + 3600) == []
    assert control.approvals() == []
    control.clear_faults()
    assert control.reboot_vm("myvm", 30) is not None and not client.sim.is_listening("myvm")
    control.reset()
    assert client.sim.is_listening("myvm")


def test_errors_carry_the_status_and_the_simulators_reason(start_sim):
    control = ControlClient(start_sim({"vms": [{"name": "myvm"}], "clock": "manual"}).sim.control_url)
    with pytest.raises(ControlError, match="POST /events/NOPE/cancel: 404 .*NOPE"):
        control.cancel("NOPE")
    with pytest.raises(ControlError, match="POST /events: 400"):
        control.inject(type="Reboot", resources=["myvm"], notice="soon")
