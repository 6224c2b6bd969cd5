"""The control plane in the pure world: scale sets, event owners, opt-in, Completed/Canceled rows and retention,
acknowledgement through the control plane. No sockets, no sleeps: a manual clock."""

from __future__ import annotations

import pytest

from imds_simulator import document
from imds_simulator.kql import parse
from imds_simulator.scenario import ScenarioError, parse_scenario
from imds_simulator.world import ControlPlaneError

SUB = "00000000-0000-0000-0000-000000000000"
SUB2 = "11111111-2222-3333-4444-555555555555"
E_SS = "A0000000-0000-4000-8000-000000000001"
E_AS = "A0000000-0000-4000-8000-000000000002"
E_VM = "A0000000-0000-4000-8000-000000000003"
E_D = "A0000000-0000-4000-8000-000000000004"


def scenario(**control):
    data = {
        "start_time": "2016-09-19T18:14:47Z",
        "clock": "manual",
        "seed": 7,
        "scale_sets": [{"name": "web", "instances": 3}],
        "vms": [{"name": "a", "availability_set": "as1"}, {"name": "b", "availability_set": "as1"}, {"name": "c"},
                {"name": "d", "subscription": SUB2, "resource_group": "rg-other", "location": "northeurope"}],
        "events": [
            {"id": E_SS, "type": "Reboot", "scale_set": "web", "notice": 900, "started_for": 600},
            {"id": E_AS, "type": "Freeze", "resources": ["a", "b"], "notice": 900, "started_for": 300},
            {"id": E_VM, "type": "Redeploy", "resources": ["c"], "notice": 600, "cancel_at": 120},
            {"id": E_D, "type": "Reboot", "resources": ["d"], "at": 50},
        ],
    }
    if control:
        data["control_plane"] = control
    return data


def rows_by_name(world):
    return {row["name"]: row for row in world.control_plane_rows()}


def test_scale_set_instances_are_vms_that_see_each_others_events(make_world):
    world = make_world(scenario())
    assert [name for name in world.vms if name.startswith("web")] == ["web_0", "web_1", "web_2"]
    assert [event["EventId"] for event in world.document("web_1")["Events"]] == [E_SS]
    assert world.document("web_1")["Events"][0]["Resources"] == ["web_0", "web_1", "web_2"]
    assert world.document("c")["Events"][0]["EventId"] == E_VM
    assert world.vm_metadata("web_2")["scale_set"] == "web" and world.vm_metadata("c")["scale_set"] == ""
    assert world.vm_metadata("d")["subscription_id"] == SUB2 and world.vm_metadata("d")["location"] == "northeurope"
    compute = document.compute_metadata(world.vms["web_2"], "2021-02-01", world.vm_metadata("web_2"))
    assert compute["vmScaleSetName"] == "web" and compute["name"] == "web_2"
    assert compute["resourceId"].endswith("/resourceGroups/imds-sim-rg/providers/Microsoft.Compute/"
                                          "virtualMachineScaleSets/web/virtualMachines/2")


def test_every_event_has_one_owner(make_world):
    data = scenario()
    data["events"] += [{"type": "Freeze", "resources": ["c", "web_0"], "id": "A0000000-0000-4000-8000-000000000005"},
                       {"type": "Freeze", "resources": ["web_0", "a"], "id": "A0000000-0000-4000-8000-000000000006"},
                       {"type": "Freeze", "resources": ["b"], "id": "A0000000-0000-4000-8000-000000000007"}]
    world = make_world(data)
    owners = {event.id[-1]: (event.owner.kind, event.owner.name) for event in world.events.values()}
    assert owners == {"1": ("virtualMachineScaleSets", "web"), "2": ("availabilitySets", "as1"),
                      "3": ("virtualMachines", "c"), "4": ("virtualMachines", "d"),
                      "5": ("virtualMachines", "c"), "6": ("virtualMachineScaleSets", "web"),
                      "7": ("availabilitySets", "as1")}
    assert world.event(E_D).owner.id == f"/subscriptions/{SUB2}/resourceGroups/rg-other/providers/Microsoft.Compute/virtualMachines/d"


def test_nothing_is_published_until_an_owner_opts_in(make_world):
    world = make_world(scenario())
    assert world.control_plane_rows() == []
    assert len(world.control_plane_rows(opted_in_only=False)) == 3  # E_D appears at 50
    world.set_policy(world.resource("virtualMachineScaleSets", "WEB"), world.publishing_policy(True))
    assert list(rows_by_name(world)) == [E_SS]
    world.set_policy(world.resource("virtualMachineScaleSets", "web"), world.publishing_policy(False))
    assert world.control_plane_rows() == []


def test_opted_in_by_name_and_all(make_world):
    assert set(rows_by_name(make_world(scenario(opted_in=["as1", "c"])))) == {E_AS, E_VM}
    world = make_world(scenario(opted_in="all"))
    world.advance(50)
    assert set(rows_by_name(world)) == {E_SS, E_AS, E_VM, E_D}


def test_row_shape_is_the_imds_event_under_its_owner(make_world):
    world = make_world(scenario(opted_in="all"))
    world.advance(50)
    row = rows_by_name(world)[E_SS]
    assert row["id"] == (f"/subscriptions/{SUB}/resourcegroups/imds-sim-rg/providers/Microsoft.Compute/"
                         f"virtualMachineScaleSets/web/providers/Microsoft.Maintenance/scheduledevents/{E_SS}")
    assert (row["type"], row["location"], row["resourceGroup"], row["subscriptionId"], row["zones"]) == (
        "microsoft.maintenance/scheduledevents", "westeurope", "imds-sim-rg", SUB, None)
    assert row["properties"] == world.document("web_0")["Events"][0]
    assert set(row["properties"]) == {"EventId", "EventType", "ResourceType", "Resources", "EventStatus", "NotBefore",
                                      "Description", "EventSource", "DurationInSeconds"}
    other = rows_by_name(world)[E_D]
    assert (other["subscriptionId"], other["resourceGroup"], other["location"]) == (SUB2, "rg-other", "northeurope")


def test_fields_replace_what_imds_and_the_control_plane_show_but_not_the_world(make_world):
    """A scenario's `fields` (hostile-input tests): verbatim in the document and the row; who sees the event, and
    when it starts, stay those of the event as declared."""
    data = scenario(opted_in="all")
    hostile = {"Description": "{{ lookup('pipe', 'id') }}", "Resources": ["c", "*", {"x": 1}], "DurationInSeconds": "7"}
    data["events"][2] = dict(data["events"][2], fields=hostile)
    del data["events"][2]["cancel_at"]
    world = make_world(data)
    seen = world.document("c")["Events"][0]
    assert {k: seen[k] for k in hostile} == hostile and seen["EventType"] == "Redeploy"
    assert [e["EventId"] for e in world.document("a")["Events"]] == [E_AS]  # "*" in Resources shows it to nobody
    assert rows_by_name(world)[E_VM]["properties"] == seen
    world.advance(600)
    assert rows_by_name(world)[E_VM]["properties"]["EventStatus"] == "Started"
    assert world.event_state(world.events[E_VM])["fields"] == hostile


def test_lifecycle_acknowledged_started_completed_then_gone_after_retention(make_world):
    world = make_world(scenario(opted_in="all", retention=1000))
    web = world.resource("virtualMachineScaleSets", "web")
    world.advance(10)
    records = world.acknowledge(web, [E_SS.lower()], "2025-10-01-preview", "single")
    assert records[0]["result"] == "started" and records[0]["source"] == "control-plane" and records[0]["vm"] is None
    assert world.document("web_2")["Events"][0]["EventStatus"] == "Started"
    assert rows_by_name(world)[E_SS]["properties"]["EventStatus"] == "Started"
    assert rows_by_name(world)[E_SS]["properties"]["NotBefore"] == ""
    world.advance(600)
    assert world.document("web_0")["Events"] == []
    row = rows_by_name(world)[E_SS]
    assert row["properties"]["EventStatus"] == "Completed" and row["properties"]["NotBefore"] == ""
    assert world.control_plane_event(E_SS)["status"] == "Completed"
    world.advance(999)
    assert E_SS in rows_by_name(world)
    world.advance(1)
    assert E_SS not in rows_by_name(world)
    assert world.control_plane_event(E_SS) == {"id": E_SS, "owner": web.as_dict(), "status": None,
                                               "in_resource_graph": False, "row": None}


def test_cancelled_event_is_canceled_with_its_notbefore(make_world):
    world = make_world(scenario(opted_in="all", retention=60))
    scheduled_not_before = rows_by_name(world)[E_VM]["properties"]["NotBefore"]
    world.advance(120)
    row = rows_by_name(world)[E_VM]
    assert row["properties"]["EventStatus"] == "Canceled" and row["properties"]["NotBefore"] == scheduled_not_before
    assert world.document("c")["Events"] == []
    world.advance(60)
    assert E_VM not in rows_by_name(world)


def test_approval_through_imds_shows_started_on_the_control_plane(make_world):
    world = make_world(scenario(opted_in="all"))
    world.approve("a", [E_AS])
    assert rows_by_name(world)[E_AS]["properties"]["EventStatus"] == "Started"
    assert world.approvals[0]["source"] == "imds"


def test_acknowledge_refuses_foreign_unknown_and_not_scheduled_events_and_applies_nothing(make_world):
    world = make_world(scenario(opted_in="all"))
    web = world.resource("virtualMachineScaleSets", "web")
    aset = world.resource("availabilitySets", "as1")
    with pytest.raises(ControlPlaneError) as caught:
        world.acknowledge(aset, [E_SS], "2025-10-01-preview")
    assert caught.value.code == "NotFound"
    with pytest.raises(ControlPlaneError) as caught:
        world.acknowledge(world.resource("virtualMachines", "d"), [E_D], "2025-10-01-preview")  # not appeared yet
    assert caught.value.code == "NotFound"
    world.start_event(E_AS)
    with pytest.raises(ControlPlaneError) as caught:
        world.acknowledge(aset, [E_AS], "2025-10-01-preview", "list")
    assert caught.value.code == "Conflict" and "is Started" in caught.value.message
    with pytest.raises(ControlPlaneError) as caught:
        world.acknowledge(web, [E_SS, E_AS, "nope"], "2025-10-01-preview", "list")
    assert caught.value.code == "NotFound" and [item["code"] for item in caught.value.details] == ["NotFound", "NotFound"]
    assert [item["target"] for item in caught.value.details] == [E_AS, "nope"]
    assert world.event(E_SS).state == "Scheduled"
    assert [record["result"] for record in world.acknowledgements] == ["refused"] * 6


def test_acknowledge_satisfies_approval_all(make_world):
    data = scenario(opted_in="all")
    data["events"][1]["approval"] = "all"
    world = make_world(data)
    world.approve("a", [E_AS])
    assert world.event(E_AS).state == "Scheduled"
    world.acknowledge(world.resource("availabilitySets", "as1"), [E_AS], "2023-10-01-preview")
    assert world.event(E_AS).state == "Started"


def test_reset_restores_policies_and_features(make_world):
    world = make_world(scenario(opted_in=["web"], features_registered=False))
    assert not world.features_registered
    world.set_control_plane(features_registered=True, retention=5)
    world.set_policy(world.resource("virtualMachines", "c"), world.publishing_policy(True))
    epoch = world.expire_tokens()
    world.reset()
    assert not world.features_registered and world.retention == 3600
    assert [resource.name for resource in world.resources.values() if resource.opted_in] == ["web"]
    assert world.token_epoch == epoch  # tokens expired once stay expired


def test_expire_tokens_fault_happens_at_its_time(make_world):
    data = scenario()
    data["faults"] = [{"kind": "expire_tokens", "from": 100}]
    world = make_world(data)
    world.advance(99)
    assert world.token_epoch == 0
    world.advance(1)
    assert world.token_epoch == 1


def test_a_large_fleet_loads_and_answers_a_page():
    data = {"clock": "manual", "seed": 3, "fleet": {"count": 500, "prefix": "single-"},
            "scale_sets": [{"name": f"ss{index:02d}", "instances": 100} for index in range(45)],
            "events": ([{"type": "Reboot", "scale_set": f"ss{index:02d}"} for index in range(45)]
                       + [{"type": "Freeze", "resources": [f"ss{index % 45:02d}_{index % 100}"]} for index in range(100)]
                       + [{"type": "Redeploy", "resources": [f"single-{index}"]} for index in range(200)]),
            "control_plane": {"opted_in": "all"}}
    from imds_simulator.clock import ManualClock  # pylint: disable=import-outside-toplevel
    from imds_simulator.world import World  # pylint: disable=import-outside-toplevel
    world = World(parse_scenario(data), ManualClock())
    assert len(world.vms) == 5000
    query = parse('maintenanceresources | where type == "microsoft.maintenance/scheduledevents" '
                  '| where properties.EventType in ("Reboot", "Freeze") | order by id asc')
    rows = query.run(world.control_plane_rows())
    assert len(rows) == 145 and sum(len(row["properties"]["Resources"]) == 100 for row in rows) == 45


@pytest.mark.parametrize("change, where, problem", [
    ({"scale_sets": [{"name": "bad name", "instances": 2}]}, "scale_sets[0].name", "invalid scale set name"),
    ({"scale_sets": [{"name": "s", "instances": 0}]}, "scale_sets[0].instances", "must be at least 1"),
    ({"scale_sets": [{"name": "s", "instances": 1, "size": 2}]}, "scale_sets[0].size", "unknown key 'size'"),
    ({"scale_sets": [{"name": "s", "instances": 1}, {"name": "S", "instances": 1}]}, "scale_sets[1].name",
     "duplicate scale set name 'S'"),
    ({"vms": [{"name": "s_0"}], "scale_sets": [{"name": "s", "instances": 1}]}, "scale_sets[0]",
     "duplicate VM name 's_0'"),
    ({"vms": [{"name": "x", "subscription": "sub-1"}]}, "vms[0].subscription", "is not a subscription id"),
    ({"vms": [{"name": "x", "resource_group": "bad/rg"}]}, "vms[0].resource_group", "invalid resource group name"),
    ({"control_plane": {"opted_in": ["ghost"]}}, "control_plane.opted_in[0]",
     "unknown VM, scale set or availability set 'ghost'"),
    ({"control_plane": {"opted_in": "some"}}, "control_plane.opted_in", "expected 'all' or a list"),
    ({"control_plane": {"retention": -1}}, "control_plane.retention", "must be at least 0"),
    ({"control_plane": {"features_registered": "yes"}}, "control_plane.features_registered", "expected true or false"),
    ({"control_plane": {"opt_in": "all"}}, "control_plane.opt_in", "unknown key 'opt_in'"),
    ({"events": [{"type": "Reboot", "scale_set": "ghost"}]}, "events[0].scale_set", "no scale set 'ghost'"),
    ({"events": [{"type": "Reboot", "scale_set": "s", "resources": ["x"]}]}, "events[0]", "give exactly one of"),
    ({"faults": [{"kind": "throttle", "vm": "x"}]}, "faults[0].vm", "not used by kind 'throttle'"),
    ({"faults": [{"kind": "arm_status", "code": 404}]}, "faults[0].code", "must be at least 500"),
    ({"faults": [{"kind": "arm_status"}]}, "faults[0].code", "is required for kind 'arm_status'"),
    ({"faults": [{"kind": "expire_tokens", "until": 5}]}, "faults[0].until", "happens once"),
    ({"faults": [{"kind": "status", "code": 503, "retry_after": 5}]}, "faults[0].retry_after", "not used by kind"),
    ({"control_plane": {"resource_graph_quota": {"requests": 0}}}, "control_plane.resource_graph_quota.requests",
     "must be at least 1"),
    ({"control_plane": {"resource_graph_quota": {"window": 0}}}, "control_plane.resource_graph_quota.window",
     "greater than 0"),
    ({"control_plane": {"resource_graph_quota": {"per": 5}}}, "control_plane.resource_graph_quota.per", "unknown key"),
])
def test_scenario_errors(change, where, problem):
    data = {"vms": [{"name": "x"}], "scale_sets": [{"name": "s", "instances": 1}]}
    data.update(change)
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data, "<t>")
    assert caught.value.path == where and problem in caught.value.message


def test_scenario_defaults_and_fault_views():
    parsed = parse_scenario({"scale_sets": [{"name": "s", "instances": 2, "resource_group": "rg-ss"}],
                             "faults": [{"kind": "throttle", "count": 2}, {"kind": "arm_status", "code": 503}]})
    assert parsed.control_plane.opted_in == () and parsed.control_plane.features_registered
    assert parsed.control_plane.retention == 3600 and parsed.control_plane.management_group == "mg-imds-sim"
    assert (parsed.control_plane.quota_requests, parsed.control_plane.quota_window,
            parsed.control_plane.quota_enforced) == (15, 5.0, False)
    assert [vm.name for vm in parsed.vms] == ["s_0", "s_1"] and parsed.vms[0].resource_group == "rg-ss"
    assert parsed.faults[0].as_dict() == {"id": None, "kind": "throttle", "from": 0.0, "until": None, "path": "/",
                                          "method": None, "count": 2, "retry_after": 5}
    assert parsed.faults[1].matches(None, "/SUBSCRIPTIONS/x", "POST", 0)
    assert not parsed.faults[1].matches(None, "/msi/token", "GET", 0)
