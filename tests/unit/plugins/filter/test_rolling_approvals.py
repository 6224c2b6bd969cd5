# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The rolling_approvals filter: how it reads hostvars or a host -> result mapping and the grouping
options, and that Ansible finds it by its FQCN and runs it in a template. The planning rules
themselves are tested in tests/unit/plugins/module_utils/test_waves.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import pytest

from ansible.errors import AnsibleFilterError
from ansible.plugins.loader import filter_loader, init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

from ansible_collections.imds.scheduled_events.plugins.filter.rolling_approvals import dig, rolling_approvals

A = "A0000000-0000-4000-8000-00000000000A"
B = "B0000000-0000-4000-8000-00000000000B"
C = "C0000000-0000-4000-8000-00000000000C"


def ev(event_id, resources, status="Scheduled"):
    return {"EventId": event_id, "EventType": "Reboot", "Resources": resources, "EventStatus": status,
            "NotBefore": "" if status == "Started" else "Mon, 11 Apr 2050 22:26:58 GMT"}


def result(vm, *events):
    return {"this_vm": vm, "events": list(events)}


class HostVarsLike(Mapping):
    """Like Ansible's HostVars: a mapping that raises KeyError for an unknown host."""

    def __init__(self, data):
        self.data = data

    def __getitem__(self, key):
        return self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)


HOSTVARS = HostVarsLike({
    "a1": {"availability_set": "as-a", "ud": "0", "report": {"event_info": result("a1", ev(A, ["a1"]))}},
    "a2": {"availability_set": "as-a", "ud": "1", "report": {"event_info": result("a2", ev(B, ["a2"]))}},
    "b1": {"availability_set": "as-b", "ud": "0", "report": {"event_info": result("b1", ev(C, ["b1"]))}},
    "new": {"availability_set": "as-b"},
})


def test_hostvars_with_a_dotted_result_key_and_a_hostvar_grouping():
    plan = rolling_approvals(HOSTVARS, result_key="report.event_info", hosts=["a1", "a2", "b1"],
                             group_by="availability_set", max_hosts=1)
    assert [a["event_id"] for a in plan["approve"]] == [A, C]
    assert plan["by_host"] == {"a1": [A], "b1": [C]} and sorted(plan["groups"]) == ["as-a", "as-b"]
    assert [d["event_id"] for d in plan["deferred"]] == [B]


def test_a_host_without_the_result_counts_as_busy():
    plan = rolling_approvals(HOSTVARS, result_key="report.event_info", hosts=["b1", "new"],
                             group_by="availability_set", max_hosts=1)
    assert plan["unknown"] == ["new"] and plan["approve"] == []
    plan = rolling_approvals(HOSTVARS, result_key="report.event_info", hosts=["b1", "new", "not-in-inventory"],
                             group_by="availability_set", max_hosts=1, unknown_busy=False)
    assert plan["by_host"] == {"b1": [C]} and plan["unknown"] == ["new", "not-in-inventory"]


def test_plain_mapping_of_results_and_a_mapping_grouping():
    results = {"a1": result("a1", ev(A, ["a1"])), "a2": result("a2", ev(B, ["a2"]))}
    plan = rolling_approvals(results, group_by={"a1": "x", "a2": "y"}, max_hosts=1)
    assert sorted(plan["by_host"]) == ["a1", "a2"]
    plan = rolling_approvals(results, max_hosts=1)
    assert list(plan["groups"]) == ["all"] and plan["by_host"] == {"a1": [A]}


def test_inventory_groups_ignore_all():
    groups = {"all": ["a1", "a2", "b1"], "ud_0": ["a1", "b1"], "ud_1": ["a2"]}
    plan = rolling_approvals(HOSTVARS, result_key="report.event_info", hosts=["a1", "a2", "b1"],
                             inventory_groups=groups, max_hosts=1)
    assert sorted(plan["groups"]) == ["ud_0", "ud_1"] and sorted(plan["by_host"]) == ["a1", "a2"]


def test_percent():
    plan = rolling_approvals(HOSTVARS, result_key="report.event_info", hosts=["a1", "a2", "b1"], max_percent=50)
    assert plan["groups"]["all"]["limit"] == 1


@pytest.mark.parametrize("kwargs, message", [
    ({}, "max_hosts, max_percent"),
    ({"max_hosts": 1, "group_by": "x", "inventory_groups": {}}, "not both"),
    ({"max_hosts": 1, "inventory_groups": ["g"]}, "must map group names"),
    ({"max_percent": 150}, "between 0 and 100"),
])
def test_errors(kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        rolling_approvals({}, **kwargs)


def test_input_must_be_a_mapping():
    with pytest.raises(AnsibleFilterError, match="expects a mapping"):
        rolling_approvals(["a1"], max_hosts=1)


def test_dig():
    assert dig({"a": {"b": 1}}, "a.b") == 1 and dig({"a": 1}, "a.b") is None and dig(None, "a") is None
    assert dig({"a": {}}, "a.b") is None


def _collections_root():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "..", "..", ".build", "collections")


@pytest.fixture(scope="module")
def loaded():
    """Ansible's own plugin loader, as the ansible CLI sets it up (see tests/unit/plugins/lookup/test_events.py)."""
    if AnsibleCollectionConfig.collection_finder is None:
        for name in [n for n in sys.modules if n == "ansible_collections" or n.startswith("ansible_collections.")]:
            del sys.modules[name]
        init_plugin_loader([os.path.abspath(_collections_root())])


def test_found_by_fqcn_and_used_in_a_template(loaded):  # pylint: disable=unused-argument,redefined-outer-name
    from ansible.template import Templar, trust_as_template  # pylint: disable=import-outside-toplevel
    assert filter_loader.get("imds.scheduled_events.rolling_approvals") is not None
    templar = Templar(loader=None, variables={"results": {"a1": result("a1", ev(A, ["a1"])),
                                                          "a2": result("a2", ev(B, ["a2"]))}})
    plan = templar.template(trust_as_template(
        "{{ results | imds.scheduled_events.rolling_approvals(max_hosts=1) }}"))
    assert plan["by_host"] == {"a1": [A]}
