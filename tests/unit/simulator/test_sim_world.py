"""The pure state machine: lifecycle, incarnations, availability sets, approvals. No sockets, no sleeps."""

from __future__ import annotations

import datetime
import re

import pytest

from simhelpers import FakeTime, two_vm_scenario
from imds_simulator.clock import ScaledClock, rfc1123
from imds_simulator.model import FaultSpec
from imds_simulator.scenario import parse_scenario
from imds_simulator.world import Conflict, UnknownEventIds, World

GUID_UPPER = re.compile(r"^[0-9A-F]{8}-(?:[0-9A-F]{4}-){3}[0-9A-F]{12}$")


def single(world, vm="a"):
    """The only event in a VM's document."""
    events = world.document(vm)["Events"]
    assert len(events) == 1, events
    return events[0]


def test_empty_document_starts_at_incarnation_1(make_world):
    world = make_world({"vms": [{"name": "myvm"}]})
    assert world.document("myvm") == {"DocumentIncarnation": 1, "Events": []}


def test_lifecycle_scheduled_started_gone_with_one_event_id(make_world):
    world = make_world(two_vm_scenario(at=10))
    assert world.document("a") == {"DocumentIncarnation": 1, "Events": []}
    world.advance(10)
    scheduled = single(world)
    assert scheduled["EventStatus"] == "Scheduled"
    assert scheduled["NotBefore"] == "Mon, 19 Sep 2016 18:29:57 GMT"
    assert world.incarnation("a") == 2
    world.advance(899)
    assert single(world)["EventStatus"] == "Scheduled"
    world.advance(1)  # NotBefore reached: starts on its own
    started = single(world)
    assert started["EventStatus"] == "Started"
    assert started["NotBefore"] == ""
    assert started["EventId"] == scheduled["EventId"]
    assert world.incarnation("a") == 3
    world.advance(599)
    assert single(world)["EventStatus"] == "Started"
    world.advance(1)  # started_for elapsed: the event vanishes, no Completed status
    assert world.document("a") == {"DocumentIncarnation": 4, "Events": []}


def test_every_change_bumps_incarnation_even_unobserved(make_world):
    world = make_world(two_vm_scenario())
    world.advance(10000)
    assert world.document("a") == {"DocumentIncarnation": 4, "Events": []}


def test_statuses_are_only_scheduled_or_started(make_world):
    world = make_world(two_vm_scenario(cancel_at=100))
    seen = set()
    for _attempt in range(40):
        seen.update(event["EventStatus"] for event in world.document("a")["Events"])
        world.advance(50)
    assert seen == {"Scheduled"}


def test_cancelled_event_vanishes_without_starting(make_world):
    world = make_world(two_vm_scenario(cancel_at=480))
    assert single(world)["EventStatus"] == "Scheduled"
    world.advance(480)
    assert world.document("a") == {"DocumentIncarnation": 3, "Events": []}
    event = next(iter(world.events.values()))
    assert event.started_at is None and event.gone_reason == "cancelled"


def test_cancel_through_api_and_conflict_when_started(make_world):
    world = make_world(two_vm_scenario())
    event_id = single(world)["EventId"]
    world.cancel_event(event_id.lower())
    assert world.document("a")["Events"] == []
    world2 = make_world(two_vm_scenario(notice=0))
    with pytest.raises(Conflict):
        world2.cancel_event(single(world2)["EventId"])


def test_hardware_failure_appears_started(make_world):
    world = make_world(two_vm_scenario(initial_status="Started", notice=None, at=5))
    world.advance(5)
    event = single(world)
    assert event["EventStatus"] == "Started" and event["NotBefore"] == ""
    assert event["Description"] == "Host server is undergoing an emergency repair."
    assert world.incarnation("a") == 2


def test_event_ids_are_upper_case_guids_reproducible_by_seed(make_world):
    first = single(make_world(two_vm_scenario()))["EventId"]
    again = single(make_world(two_vm_scenario()))["EventId"]
    assert GUID_UPPER.match(first) and first == again


def test_scenario_may_fix_event_id(make_world):
    world = make_world(two_vm_scenario(id="f020ba2e-3bc0-4c40-a10b-86575a9eabd5"))
    assert single(world)["EventId"] == "f020ba2e-3bc0-4c40-a10b-86575a9eabd5"


def test_approval_starts_event_for_every_resource(make_world):
    wall = FakeTime(1234.5)
    world = make_world(two_vm_scenario(), wall=wall)
    world.advance(30)
    event_id = single(world)["EventId"]
    records = world.approve("a", [event_id])
    assert records[0]["result"] == "started"
    for vm in ("a", "b"):
        assert single(world, vm)["EventStatus"] == "Started"
        assert world.incarnation(vm) == 3
    assert world.approvals == [{"event_id": event_id, "vm": "a", "sim_time": 30.0, "wall_time": 1234.5,
                                "api_version": "2020-07-01", "result": "started", "source": "imds"}]


def test_peer_in_availability_set_can_approve(make_world):
    world = make_world(two_vm_scenario(resources=["a"]))
    event_id = single(world, "b")["EventId"]
    world.approve("b", [event_id])
    assert single(world, "a")["EventStatus"] == "Started"


def test_approving_started_event_is_accepted_and_recorded(make_world):
    world = make_world(two_vm_scenario())
    event_id = single(world)["EventId"]
    world.approve("a", [event_id])
    incarnation = world.incarnation("a")
    assert world.approve("b", [event_id])[0]["result"] == "already_started"
    assert world.incarnation("a") == incarnation
    assert [record["vm"] for record in world.approvals] == ["a", "b"]


def test_unknown_event_id_is_refused_and_nothing_applies(make_world):
    world = make_world(two_vm_scenario())
    event_id = single(world)["EventId"]
    with pytest.raises(UnknownEventIds) as error:
        world.approve("a", [event_id, "00000000-0000-0000-0000-000000000000"])
    assert error.value.ids == ["00000000-0000-0000-0000-000000000000"]
    assert single(world)["EventStatus"] == "Scheduled"
    assert world.approvals == []


def test_vm_cannot_approve_event_it_cannot_see(make_world):
    world = make_world(two_vm_scenario())
    with pytest.raises(UnknownEventIds):
        world.approve("c", [single(world)["EventId"]])


def test_event_ids_compare_case_insensitively(make_world):
    world = make_world(two_vm_scenario())
    world.approve("a", [single(world)["EventId"].lower()])
    assert single(world)["EventStatus"] == "Started"


def test_approval_all_waits_for_every_resource(make_world):
    world = make_world(two_vm_scenario(approval="all"))
    event_id = single(world)["EventId"]
    assert world.approve("a", [event_id])[0]["result"] == "waiting_for_others"
    assert single(world)["EventStatus"] == "Scheduled"
    assert world.approve("b", [event_id])[0]["result"] == "started"
    assert single(world)["EventStatus"] == "Started"


def test_approval_delay(make_world):
    world = make_world(two_vm_scenario(approval_delay=60))
    event_id = single(world)["EventId"]
    assert world.approve("a", [event_id])[0]["result"] == "start_pending"
    world.advance(59)
    assert single(world)["EventStatus"] == "Scheduled"
    world.advance(1)
    assert single(world)["EventStatus"] == "Started"
    world.advance(900)  # the original NotBefore entry is stale and ignored
    assert world.document("a")["Events"] == []


def test_availability_set_visibility_and_incarnations(make_world):
    world = make_world(two_vm_scenario(resources=["b"]))
    assert single(world, "a")["Resources"] == ["b"]
    assert single(world, "b")["Resources"] == ["b"]
    assert world.document("c") == {"DocumentIncarnation": 1, "Events": []}


def test_whole_set_event_lists_members(make_world):
    data = two_vm_scenario()
    data["events"] = [{"type": "Freeze", "availability_set": "as1"}]
    world = make_world(data)
    assert single(world, "a")["Resources"] == ["a", "b"]
    assert single(world, "b")["Resources"] == ["a", "b"]


def test_standalone_vm_event_is_private(make_world):
    world = make_world(two_vm_scenario(resources=["c"]))
    assert world.document("a")["Events"] == [] and len(world.document("c")["Events"]) == 1


def test_start_through_api(make_world):
    world = make_world(two_vm_scenario())
    event_id = single(world)["EventId"]
    world.start_event(event_id)
    assert single(world)["EventStatus"] == "Started"
    with pytest.raises(Conflict):
        world.start_event(event_id)


def test_version_gating_hides_events_from_approval(make_world):
    world = make_world(two_vm_scenario(type="Terminate"))
    event_id = single(world)["EventId"]
    with pytest.raises(UnknownEventIds):
        world.approve("a", [event_id], "2017-11-01")
    world.approve("a", [event_id], "2019-01-01")


def test_reset_incarnation_fault(make_world):
    data = two_vm_scenario()
    data["faults"] = [{"kind": "reset_incarnation", "from": 100, "vm": "a"}]
    world = make_world(data)
    assert world.incarnation("a") == 2
    world.advance(100)
    assert world.incarnation("a") == 1 and world.incarnation("b") == 2
    world.advance(800)
    assert world.incarnation("a") == 2


def test_outage_takes_resources_down(make_world):
    world = make_world(two_vm_scenario(resources=["a"], notice=10, outage=60))
    world.advance(10)
    assert world.down_vms() == {"a"}
    world.advance(60)
    assert world.down_vms() == set()


def test_reboot_marks_vm_down(make_world):
    world = make_world({"vms": [{"name": "myvm"}]})
    assert world.reboot("myvm", 30) == 30
    assert world.down_vms() == {"myvm"}
    world.advance(30)
    assert world.down_vms() == set()


def test_reset_restores_initial_state_and_ids(make_world):
    world = make_world(two_vm_scenario())
    event_id = single(world)["EventId"]
    world.approve("a", [event_id])
    world.advance(5000)
    world.reset()
    assert world.now() == 0
    assert single(world)["EventId"] == event_id
    assert single(world)["EventStatus"] == "Scheduled"
    assert world.approvals == []


def test_faults_match_window_vm_path_method(make_world):
    data = two_vm_scenario()
    world = make_world(data)
    world.add_fault(FaultSpec(kind="status", code=500, vms=("a",), start=10, until=20,
                              path="/metadata/scheduledevents", method="GET"))
    assert not world.active_faults("a", "/metadata/scheduledevents", "GET")
    world.advance(10)
    assert world.active_faults("a", "/metadata/scheduledevents", "GET")
    assert not world.active_faults("b", "/metadata/scheduledevents", "GET")
    assert not world.active_faults("a", "/metadata/scheduledevents", "POST")
    assert not world.active_faults("a", "/metadata/instance", "GET")
    world.advance(10)
    assert not world.active_faults("a", "/metadata/scheduledevents", "GET")


def test_scaled_clock_drives_lifecycle_without_sleeping():
    wall = FakeTime(5000.0)
    data = two_vm_scenario(notice=900, started_for=300)
    data.update(clock="scaled", time_scale=60)
    del data["start_time"]
    world = World(parse_scenario(data), ScaledClock(60, wall=wall), wall=wall)
    event = single(world)
    assert event["NotBefore"] == rfc1123(datetime.datetime.fromtimestamp(5015, datetime.timezone.utc))
    wall.now += 14.9
    assert single(world)["EventStatus"] == "Scheduled"
    wall.now += 0.1
    assert single(world)["EventStatus"] == "Started"
    wall.now += 5
    assert world.document("a") == {"DocumentIncarnation": 4, "Events": []}
