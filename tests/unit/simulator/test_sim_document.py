"""Version gating and formats of what IMDS serves (pure functions)."""

from __future__ import annotations

import datetime

import pytest

from simhelpers import EPOCH
from imds_simulator import document
from imds_simulator.clock import ManualClock, ScaledClock, iso8601, rfc1123
from imds_simulator.model import EventSpec, Settings, VMSpec
from imds_simulator.world import Event


def make_event(event_type="Reboot", status="Scheduled", **spec):
    """A live Event in a given status, NotBefore = EPOCH."""
    event = Event(EventSpec(type=event_type, resources=("myvm",), notice=0.0, description="d", source="User",
                            duration=7, **spec), "C7061BAC-AFDC-4513-B24B-AA5F13A16123", ("myvm",))
    event.state = status
    return event


def render(event, version):
    return document.render_event(event, version, ManualClock(epoch=EPOCH).to_datetime)


def test_rfc1123_matches_azure_format():
    moment = datetime.datetime(2016, 9, 19, 18, 29, 47, tzinfo=datetime.timezone.utc)
    assert rfc1123(moment) == "Mon, 19 Sep 2016 18:29:47 GMT"
    assert iso8601(moment) == "2016-09-19T18:29:47Z"


@pytest.mark.parametrize("version, extra", [
    ("2017-08-01", []),
    ("2017-11-01", []),
    ("2019-01-01", []),
    ("2019-04-01", ["Description"]),
    ("2019-08-01", ["Description", "EventSource"]),
    ("2020-07-01", ["Description", "EventSource", "DurationInSeconds"]),
])
def test_fields_are_gated_by_version(version, extra):
    body = render(make_event(), version)
    base = ["EventId", "EventStatus", "EventType", "ResourceType", "Resources", "NotBefore"]
    assert list(body) == base + extra
    assert body["Resources"] == ["myvm"]
    assert body["ResourceType"] == "VirtualMachine"
    assert body["NotBefore"] == "Mon, 19 Sep 2016 18:14:47 GMT"


def test_2017_03_01_has_underscored_names_and_iso_not_before():
    body = render(make_event(), "2017-03-01")
    assert body["Resources"] == ["_myvm"]
    assert body["NotBefore"] == "2016-09-19T18:14:47Z"


def test_started_event_has_empty_not_before():
    for version in document.SCHEDULED_EVENTS_VERSIONS:
        assert render(make_event(status="Started"), version)["NotBefore"] == ""


@pytest.mark.parametrize("event_type, first_version", [("Preempt", "2017-11-01"), ("Terminate", "2019-01-01"),
                                                       ("Freeze", "2017-03-01"), ("Redeploy", "2017-03-01")])
def test_event_types_are_gated_by_version(event_type, first_version):
    for version in document.SCHEDULED_EVENTS_VERSIONS:
        doc = document.render_document(5, [make_event(event_type)], version, ManualClock(epoch=EPOCH).to_datetime)
        assert doc["DocumentIncarnation"] == 5
        assert len(doc["Events"]) == (1 if version >= first_version else 0), version


def test_instance_versions():
    assert document.is_instance_version("2017-04-02")
    assert document.is_instance_version("2025-04-07")
    assert not document.is_instance_version("2017-03-01")
    assert not document.is_instance_version("latest")
    assert not document.is_instance_version(None)


def test_compute_metadata_strings_and_gating():
    vm = VMSpec(name="myvm", availability_set="as", update_domain=3, fault_domain=1, computer_name="host1")
    compute = document.compute_metadata(vm, "2021-02-01", Settings().metadata())
    assert compute["name"] == "myvm"
    assert compute["platformUpdateDomain"] == "3" and compute["platformFaultDomain"] == "1"
    assert compute["vmScaleSetName"] == ""
    assert compute["osProfile"]["computerName"] == "host1"
    assert compute["resourceId"].endswith("/providers/Microsoft.Compute/virtualMachines/myvm")
    assert compute["vmId"] == document.vm_id_for("myvm") == compute["vmId"].lower()
    old = document.compute_metadata(vm, "2017-04-02", Settings().metadata())
    assert "osProfile" not in old and "resourceId" not in old and "placementGroupId" not in old


def test_scaled_clock_maps_sim_time_to_wall_time():
    wall = [1000.0]
    clock = ScaledClock(60, wall=lambda: wall[0])
    assert clock.now() == 0
    wall[0] += 2
    assert clock.now() == 120
    # NotBefore 900 sim seconds away is 15 real seconds after the start.
    assert clock.to_datetime(900).timestamp() == 1015.0
    clock.advance(60)
    assert clock.now() == 180
    assert clock.to_datetime(900).timestamp() == 1014.0
    clock.reset()
    assert clock.now() == 0


def test_manual_clock_refuses_going_backwards():
    clock = ManualClock(epoch=EPOCH)
    with pytest.raises(ValueError):
        clock.advance(-1)
