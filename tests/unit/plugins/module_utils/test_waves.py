# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The rolling-approval planner: limits, shared events, hosts without events or results, rounding."""

from __future__ import annotations

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import waves
from ansible_collections.imds.scheduled_events.plugins.module_utils.waves import PlanError, group_limit, plan

_IDS = {}


def eid(tag):
    """A stable GUID per short tag, so tests read as names."""
    if tag not in _IDS:
        _IDS[tag] = "%08X-0000-4000-8000-%012X" % (len(_IDS) + 1, len(_IDS) + 1)
    return _IDS[tag]


def ev(tag, resources, status="Scheduled", not_before="Mon, 11 Apr 2050 22:26:58 GMT", event_type="Reboot"):
    return {"EventId": eid(tag), "EventType": event_type, "ResourceType": "VirtualMachine",
            "Resources": list(resources), "EventStatus": status,
            "NotBefore": "" if status == "Started" else not_before, "EventSource": "Platform"}


def result(vm, *events):
    """What event_info returns (only the keys the planner reads, plus a derived one it must ignore)."""
    return {"this_vm": vm, "events": [dict(e, affects_this_vm=True) for e in events], "changed": False}


def fleet(events_by_host, hosts=None):
    """host -> result; every host reports the events that list it (as IMDS would with this_vm_only)."""
    names = hosts or sorted(set(h for e in events_by_host for h in e["Resources"]))
    return dict((h, result(h, *[e for e in events_by_host if h in e["Resources"]])) for h in names)


def approved_ids(p):
    return [a["event_id"] for a in p["approve"]]


def deferred(p):
    return dict((d["event_id"], d["reason"]) for d in p["deferred"])


# --- limits ------------------------------------------------------------------


@pytest.mark.parametrize("size, hosts, percent, expected", [
    (10, None, 25, 2),       # 2.5 rounds down
    (3, None, 50, 1),        # 1.5 rounds down
    (4, None, 50, 2),
    (1, None, 10, 1),        # at least one, or a small group never goes ahead
    (5, None, 0, 0),         # zero means none
    (0, None, 50, 0),        # an empty group has nothing to put in maintenance
    (100, None, 29, 29),     # exact: 100 * 0.29 is 28.999... in floating point
    (100, None, 29.0, 29),
    (7, None, 14.29, 1),
    (10, 3, 50, 3),          # both: the smaller wins
    (10, 8, 50, 5),
    (10, 0, None, 0),
    (10, 2, None, 2),
    (200, None, 100, 200),
    (3, None, 33.4, 1),
    (3, None, 66.7, 2),
])
def test_group_limit(size, hosts, percent, expected):
    assert group_limit(size, hosts, percent) == expected


@pytest.mark.parametrize("kwargs, message", [
    ({}, "max_hosts, max_percent"),
    ({"max_hosts": -1}, "0 or more"),
    ({"max_hosts": True}, "whole number"),
    ({"max_hosts": 1.5}, "whole number"),
    ({"max_percent": 101}, "between 0 and 100"),
    ({"max_percent": -5}, "between 0 and 100"),
    ({"max_percent": "lots"}, "between 0 and 100"),
    ({"max_hosts": 1, "ungrouped": "nowhere"}, "ungrouped"),
])
def test_bad_options(kwargs, message):
    with pytest.raises(PlanError, match=message):
        plan({}, **kwargs)


# --- one group -----------------------------------------------------------------


def test_one_host_at_a_time_soonest_first():
    events = [ev("a", ["vm1"], not_before="Mon, 11 Apr 2050 23:00:00 GMT"),
              ev("b", ["vm2"], not_before="Mon, 11 Apr 2050 22:00:00 GMT"),
              ev("c", ["vm3"], not_before="Mon, 11 Apr 2050 22:30:00 GMT")]
    p = plan(fleet(events), max_hosts=1)
    assert approved_ids(p) == [eid("b")]
    assert p["by_host"] == {"vm2": [eid("b")]} and p["wave_hosts"] == ["vm2"]
    assert deferred(p) == {eid("c"): waves.GROUP_AT_LIMIT, eid("a"): waves.GROUP_AT_LIMIT}
    assert [d["event_id"] for d in p["deferred"]] == [eid("c"), eid("a")], "deferred in the same order"
    assert p["groups"]["all"] == {"hosts": 3, "limit": 1, "in_maintenance": [], "after": ["vm2"]}


def test_started_events_count_and_a_group_at_its_limit_approves_nothing():
    events = [ev("running", ["vm1"], status="Started"), ev("next", ["vm2"])]
    p = plan(fleet(events), max_hosts=1)
    assert p["approve"] == [] and p["in_maintenance"] == ["vm1"]
    assert deferred(p) == {eid("next"): waves.GROUP_AT_LIMIT}
    assert "all has 1 of 2 hosts in maintenance (limit 1)" in p["deferred"][0]["detail"]


def test_approved_but_still_scheduled_counts_as_in_maintenance():
    events = [ev("done", ["vm1"]), ev("next", ["vm2"])]
    p = plan(fleet(events), max_hosts=1, approved=[eid("done").lower()])
    assert p["approve"] == [] and p["in_maintenance"] == ["vm1"]
    assert deferred(p) == {eid("next"): waves.GROUP_AT_LIMIT}
    assert eid("done") not in deferred(p), "an approved event is not planned again"


def test_hosts_without_events_count_in_the_group_size():
    events = [ev("a", ["vm1"]), ev("b", ["vm2"])]
    results = fleet(events, hosts=["vm1", "vm2", "vm3", "vm4"])
    assert results["vm3"]["events"] == []
    p = plan(results, max_percent=50)
    assert p["groups"]["all"]["limit"] == 2 and approved_ids(p) == [eid("a"), eid("b")]
    p = plan(fleet(events, hosts=["vm1", "vm2", "vm3"]), max_percent=50)
    assert p["groups"]["all"]["limit"] == 1 and approved_ids(p) == [eid("a")]


def test_a_host_with_two_events_counts_once():
    events = [ev("reboot", ["vm1"], not_before="Mon, 11 Apr 2050 22:00:00 GMT"),
              ev("freeze", ["vm1"], event_type="Freeze"), ev("other", ["vm2"])]
    p = plan(fleet(events), max_hosts=1)
    assert approved_ids(p) == [eid("reboot"), eid("freeze")]
    assert p["by_host"] == {"vm1": [eid("reboot"), eid("freeze")]} and p["wave_hosts"] == ["vm1"]
    assert deferred(p) == {eid("other"): waves.GROUP_AT_LIMIT}


def test_another_event_on_a_host_already_in_maintenance_adds_nobody():
    events = [ev("running", ["vm1"], status="Started"), ev("more", ["vm1"]), ev("other", ["vm2"])]
    p = plan(fleet(events), max_hosts=1)
    assert approved_ids(p) == [eid("more")] and p["wave_hosts"] == []
    assert deferred(p) == {eid("other"): waves.GROUP_AT_LIMIT}


def test_max_hosts_zero_approves_nothing():
    p = plan(fleet([ev("a", ["vm1"])]), max_hosts=0)
    assert p["approve"] == [] and deferred(p) == {eid("a"): waves.LARGER_THAN_LIMIT}


# --- shared events ---------------------------------------------------------------


def test_shared_event_is_approved_whole_and_counts_every_host():
    events = [ev("pair", ["vm1", "vm2"], not_before="Mon, 11 Apr 2050 22:00:00 GMT"), ev("solo", ["vm3"])]
    p = plan(fleet(events, hosts=["vm1", "vm2", "vm3", "vm4"]), max_hosts=2)
    assert approved_ids(p) == [eid("pair")]
    entry = p["approve"][0]
    assert entry["shared"] and entry["hosts"] == ["vm1", "vm2"] and entry["approver"] == "vm1"
    assert p["by_host"] == {"vm1": [eid("pair")]}, "approved once, from one of its hosts"
    assert deferred(p) == {eid("solo"): waves.GROUP_AT_LIMIT}


def test_shared_event_is_never_split():
    events = [ev("trio", ["vm1", "vm2", "vm3"])]
    p = plan(fleet(events, hosts=["vm1", "vm2", "vm3", "vm4"]), max_hosts=2)
    assert p["approve"] == [] and p["wave_hosts"] == []
    assert deferred(p) == {eid("trio"): waves.LARGER_THAN_LIMIT}
    assert "3 hosts of all" in p["deferred"][0]["detail"]


def test_shared_event_that_would_overflow_waits_while_smaller_ones_go():
    events = [ev("pair", ["vm1", "vm2"], not_before="Mon, 11 Apr 2050 22:00:00 GMT"),
              ev("busy", ["vm3"], status="Started"), ev("solo", ["vm4"])]
    p = plan(fleet(events, hosts=["vm1", "vm2", "vm3", "vm4", "vm5"]), max_hosts=2)
    assert deferred(p) == {eid("pair"): waves.WOULD_EXCEED_LIMIT}
    assert approved_ids(p) == [eid("solo")], "a later single-host event still fits"


def test_shared_event_across_groups_must_fit_in_each():
    events = [ev("cross", ["a1", "b1"])]
    groups = {"a1": "as-a", "a2": "as-a", "b1": "as-b", "b2": "as-b"}
    results = fleet(events + [ev("b-busy", ["b2"], status="Started")], hosts=sorted(groups))
    p = plan(results, groups=groups, max_hosts=1)
    assert deferred(p) == {eid("cross"): waves.GROUP_AT_LIMIT} and p["deferred"][0]["groups"] == ["as-b"]
    p = plan(fleet(events, hosts=sorted(groups)), groups=groups, max_hosts=1)
    assert approved_ids(p) == [eid("cross")] and p["approve"][0]["groups"] == ["as-a", "as-b"]


def test_shared_events_can_be_refused():
    p = plan(fleet([ev("pair", ["vm1", "vm2"]), ev("solo", ["vm3"])]), max_hosts=5, allow_shared=False)
    assert approved_ids(p) == [eid("solo")] and deferred(p) == {eid("pair"): waves.SHARED_NOT_ALLOWED}


def test_event_listing_a_vm_outside_the_inventory_is_not_approved_unless_allowed():
    events = [ev("out", ["vm1", "stranger"])]
    results = {"vm1": result("vm1", events[0])}
    p = plan(results, max_hosts=5)
    assert deferred(p) == {eid("out"): waves.UNKNOWN_RESOURCES} and "stranger" in p["deferred"][0]["detail"]
    p = plan(results, max_hosts=5, allow_unknown_resources=True)
    assert approved_ids(p) == [eid("out")] and p["approve"][0]["hosts"] == ["vm1"]


def test_peer_sees_a_started_event_of_a_host_that_did_not_report():
    # vm2 is unreachable; vm1 sees vm2's Started event as an availability-set peer.
    peer = dict(ev("peer", ["vm2"], status="Started"))
    results = {"vm1": {"this_vm": "vm1", "events": [peer, ev("mine", ["vm1"])]}, "vm2": None, "vm3": result("vm3")}
    p = plan(results, max_hosts=1, unknown_busy=False)
    assert p["in_maintenance"] == ["vm2"] and p["unknown"] == ["vm2"]
    assert deferred(p) == {eid("mine"): waves.GROUP_AT_LIMIT}


# --- grouping ---------------------------------------------------------------------


def test_groups_are_independent():
    events = [ev("a1", ["a1"]), ev("a2", ["a2"]), ev("b1", ["b1"])]
    groups = {"a1": "as-a", "a2": "as-a", "b1": "as-b"}
    p = plan(fleet(events), groups=groups, max_hosts=1)
    assert approved_ids(p) == [eid("a1"), eid("b1")]
    assert deferred(p) == {eid("a2"): waves.GROUP_AT_LIMIT}
    assert p["groups"]["as-a"]["after"] == ["a1"] and p["groups"]["as-b"]["after"] == ["b1"]


def test_a_host_in_several_groups_must_fit_in_each():
    events = [ev("x", ["x"]), ev("y", ["y"])]
    groups = {"x": ["web", "ud-0"], "y": ["db", "ud-0"]}
    p = plan(fleet(events), groups=groups, max_hosts=1)
    assert approved_ids(p) == [eid("x")] and deferred(p) == {eid("y"): waves.GROUP_AT_LIMIT}
    assert p["deferred"][0]["groups"] == ["ud-0"]


def test_ungrouped_hosts_share_a_group_or_stand_alone():
    events = [ev("s1", ["s1"]), ev("s2", ["s2"])]
    p = plan(fleet(events), groups={"s1": None, "s2": ""}, max_hosts=1)
    assert approved_ids(p) == [eid("s1")] and list(p["groups"]) == [waves.UNGROUPED]
    p = plan(fleet(events), groups={}, max_hosts=1, ungrouped="separate")
    assert approved_ids(p) == [eid("s1"), eid("s2")] and sorted(p["groups"]) == ["s1", "s2"]


def test_percent_per_group_with_rounding():
    hosts = ["h%d" % i for i in range(10)]
    events = [ev("e%d" % i, [h]) for i, h in enumerate(hosts)]
    groups = dict((h, "big" if i < 7 else "small") for i, h in enumerate(hosts))
    p = plan(fleet(events, hosts=hosts), groups=groups, max_percent=30)
    assert p["groups"]["big"]["limit"] == 2 and p["groups"]["small"]["limit"] == 1
    assert p["wave_hosts"] == ["h0", "h1", "h7"]


# --- hosts without a usable result ----------------------------------------------------


@pytest.mark.parametrize("bad", [
    None,
    {"unreachable": True, "msg": "ssh: connect refused"},
    {"failed": True, "msg": "IMDS said 500"},
    {"skipped": True},
    {"changed": False},
    {"this_vm": "vm2", "events": [{"EventType": "Reboot"}]},
])
def test_host_without_a_result_is_busy_by_default(bad):
    events = [ev("a", ["vm1"])]
    results = {"vm1": result("vm1", events[0]), "vm2": bad}
    p = plan(results, max_hosts=1)
    assert p["unknown"] == ["vm2"] and p["in_maintenance"] == ["vm2"] and p["problems"][0].startswith("vm2: ")
    assert deferred(p) == {eid("a"): waves.GROUP_AT_LIMIT}
    p = plan(results, max_hosts=1, unknown_busy=False)
    assert approved_ids(p) == [eid("a")] and p["in_maintenance"] == []


def test_resource_names_differ_from_inventory_names():
    # Inventory says web-0.example.com; Azure calls the VM web_0 (and 2017-03-01 prefixes "_").
    events = [ev("pair", ["web_0", "_WEB_1"])]
    results = {"web-0.example.com": result("web_0", events[0]), "web-1.example.com": result("web_1", events[0])}
    p = plan(results, max_hosts=2)
    assert approved_ids(p) == [eid("pair")]
    assert p["approve"][0]["hosts"] == ["web-0.example.com", "web-1.example.com"]


def test_events_for_other_vms_only_are_not_candidates():
    peer_event = ev("peer", ["vm9"])
    results = {"vm1": {"this_vm": "vm1", "events": [peer_event]}}
    p = plan(results, max_hosts=1, allow_unknown_resources=True)
    assert p["approve"] == [] and p["deferred"] == []


def test_unknown_status_is_treated_as_pending_not_done():
    odd = dict(ev("odd", ["vm1"]), EventStatus="Completed")
    p = plan({"vm1": result("vm1", odd), "vm2": result("vm2")}, max_hosts=1)
    assert approved_ids(p) == [eid("odd")]


def test_two_inventory_entries_for_one_vm_are_reported():
    results = {"a": result("vm1"), "b": result("vm1")}
    p = plan(results, max_hosts=1)
    assert any("both report the VM vm1" in line for line in p["problems"])
