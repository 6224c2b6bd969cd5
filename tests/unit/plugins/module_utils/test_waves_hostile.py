# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Rolling approvals with every hostile value (tests/unit/utils/hostile.py) as a VM's name, an inventory host's
name and a group: an event names hosts by exact resource name only, so a VM named `all`, `*`, `web:&db` or `!x`
puts that one host in the plan and no other; a name that cannot be a VM's is refused (the host counts as unknown)."""

from __future__ import annotations

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.events import normalize_resource_name
from ansible_collections.imds.scheduled_events.plugins.module_utils.waves import plan
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile

VALUES = hostile.strings("/nonexistent/canary")
NOT_BEFORE = "Mon, 11 Apr 2050 22:26:58 GMT"
EVENT = "4CAEA225-A741-474D-A72E-428C86FCD853"
PEER_EVENT = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"


def result(vm, *events):
    return {"this_vm": vm, "events": list(events)}


def event(event_id, *resources):
    return {"EventId": event_id, "EventType": "Reboot", "Resources": list(resources), "EventStatus": "Scheduled",
            "NotBefore": NOT_BEFORE}


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
def test_a_vm_named_like_a_pattern_selects_only_its_host(case):
    """The hostile VM reports an event for itself; a peer's IMDS shows another event for the hostile VM only."""
    results = {"hostile-vm": result(case.value, event(EVENT, case.value)),
               "peer": result("peer", event(PEER_EVENT, case.value)),
               "web_0": result("web_0"), "db_0": result("db_0"), "localhost": result("localhost")}
    groups = dict((name, [case.value if name == "hostile-vm" else name]) for name in results)
    wave = plan(results, groups=groups, max_hosts=1)
    if not case.value.strip():
        assert wave["unknown"] == ["hostile-vm"] and wave["approve"] == [], "a VM without a name is refused"
        return
    taken = dict((item["event_id"], item["hosts"]) for item in wave["approve"])
    assert taken.get(EVENT) == ["hostile-vm"], "its own event puts only itself in maintenance"
    assert PEER_EVENT not in taken, "a peer cannot approve what only another VM's IMDS may"
    assert wave["by_host"] == {"hostile-vm": [EVENT]} and wave["wave_hosts"] == ["hostile-vm"]


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
def test_an_inventory_host_named_like_a_pattern_is_matched_exactly(case):
    """An event lists the value; the inventory has a host of that very name, which reported nothing."""
    if not case.value.strip() or normalize_resource_name(case.value) in ("reporter", "bystander"):
        return
    results = {"reporter": result("reporter", event(EVENT, "reporter", case.value)), case.value: None,
               "bystander": result("bystander")}
    wave = plan(results, max_hosts=3, unknown_busy=False)
    assert [item["hosts"] for item in wave["approve"]] == [["reporter", case.value]]
    assert "bystander" not in wave["wave_hosts"]
