# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleet_report_data filter: reading registered results out of hostvars. The report's
content is tested in tests/unit/plugins/module_utils/test_fleet.py."""

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.imds.scheduled_events.plugins.filter.fleet_report_data import fleet_report_data
from ansible_collections.imds.scheduled_events.plugins.filter.fleet_report_data import FilterModule

NOW = "2050-04-11T22:00:00Z"
REBOOT = "4CAEA225-A741-474D-A72E-428C86FCD853"


def ev(resources):
    return {"EventId": REBOOT, "EventType": "Reboot", "Resources": resources, "EventStatus": "Scheduled",
            "NotBefore": "Mon, 11 Apr 2050 22:26:58 GMT"}


def watcher(vm, *events):
    return {"held": False, "holds": {"targets": [], "reasons": []}, "service": {"state": "active"},
            "journal": {"entries": []}, "event_info": {"this_vm": vm, "events": list(events)}}


HOSTVARS = {
    "web-0": {"as": "as-web", "gathered": watcher("web-0", ev(["web-0"]))},
    "web-1": {"as": "as-web", "gathered": {"unreachable": True, "msg": "no route"}},
    "db-0": {"gathered": watcher("db-0"), "separate": {"this_vm": "db-0", "events": [ev(["db-0"])]}},
}


def test_reads_the_registered_results_in_the_given_order():
    report = fleet_report_data(HOSTVARS, result_key="gathered", hosts=["db-0", "web-0", "web-1", "absent"],
                               group_by="as", title="T", now=NOW)
    assert [h["host"] for h in report["hosts"]] == ["db-0", "web-0", "web-1", "absent"]
    assert [h["status"] for h in report["hosts"]] == ["ok", "ok", "unreachable", "no data"]
    assert [h["group"] for h in report["hosts"]] == [None, "as-web", "as-web", None]
    assert report["title"] == "T" and report["events"][0]["hosts"] == ["web-0"]


def test_separately_registered_events():
    report = fleet_report_data(HOSTVARS, result_key="gathered", events_key="separate", hosts=["db-0"], now=NOW)
    assert report["events"][0]["hosts"] == ["db-0"]


def test_default_hosts_are_the_input_keys():
    assert [h["host"] for h in fleet_report_data(HOSTVARS, result_key="gathered", now=NOW)["hosts"]] == list(HOSTVARS)


@pytest.mark.parametrize("data, kwargs, message", [
    ([], {"result_key": "x"}, "expects hostvars"),
    ({}, {}, "result_key"),
    ({}, {"result_key": "x", "now": "soon"}, "not a date"),
])
def test_errors(data, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        fleet_report_data(data, **kwargs)


def test_registered_name():
    assert FilterModule().filters() == {"fleet_report_data": fleet_report_data}


def test_the_control_plane_alone_needs_no_result_key():
    cp = {"changed": False, "problems": [], "events": [
        {"EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123", "EventType": "Freeze", "ResourceType": "VirtualMachine",
         "Resources": ["web_0"], "EventStatus": "Canceled", "NotBefore": "", "owner": {"name": "web"}}]}
    report = fleet_report_data({}, hosts=[], control_plane=cp, now="2050-01-01T00:00:00Z")
    assert [(e["status"], e["finished"], e["sources"]) for e in report["events"]] == [
        ("Canceled", True, ["resource_graph"])]
    with pytest.raises(AnsibleFilterError, match="result_key .* or control_plane"):
        fleet_report_data({}, hosts=[])
