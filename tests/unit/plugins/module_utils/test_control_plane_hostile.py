# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The hostile-input table (tests/unit/utils/hostile.py) through the control plane: kql_string, the one way a value
reaches a KQL query; every user option that reaches the query; every field of a Resource Graph row, served by the
simulator's ARM face (an `arm_fields` fault writes the value over every row) to the three control-plane modules
with the real azure-identity credential.

Why: an operator's option or a row's field must never change the query, the ARM path a request goes to, or which
events are acknowledged; each value is kept as data (in the query as a string literal, in the result verbatim) or
refused with a clear error naming it."""

from __future__ import annotations

import json
import os
import urllib.parse

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import control_plane as cp
from ansible_collections.imds.scheduled_events.plugins.modules import (
    control_plane_event_approve, control_plane_event_info, control_plane_policy)
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile
from ansible_collections.imds.scheduled_events.tests.unit.utils.fault_matrix import (  # noqa: F401  pylint: disable=unused-import
    SIMULATOR_DIR)  # importing fault_matrix puts the simulator on sys.path
from ansible_collections.imds.scheduled_events.tests.unit.utils.module_runner import run_module

from imds_simulator import kql  # pylint: disable=import-error,wrong-import-order  # fault_matrix put it on sys.path
from imds_simulator.simulator import Simulator  # pylint: disable=import-error,wrong-import-order

CANARY = "/tmp/imds-cp-canary-%d" % os.getpid()
STRINGS = hostile.strings(CANARY)
TYPES = hostile.wrong_types()
SUB = "00000000-0000-0000-0000-000000000000"
RG = "imds-sim-rg"
MINE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
THEIRS = "A626E37F-793E-44E1-89B5-99AE0B96044C"
WEB = "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/web" % (SUB, RG)
SCENARIO = {"name": "cp-hostile", "clock": "manual", "start_time": "2025-06-15T15:00:00Z",
            "vms": [{"name": "web"}, {"name": "db"}],
            "events": [{"id": MINE, "type": "Reboot", "resources": ["web"], "notice": 900},
                       {"id": THEIRS, "type": "Reboot", "resources": ["db"], "notice": 900}],
            "control_plane": {"opted_in": "all"}}
# Module options: ansible-core cannot pass a lone surrogate to a module at all (it refuses to decode the arguments,
# or fails logging them, before the module runs), so that value is kql_string's and the rows' only.
OPTIONS = [v for v in STRINGS + TYPES if v.name != "lone-surrogate"]
# What the KQL of build_query can carry, and what the refusal says for the rest.
UNWRITABLE = ("nul-byte", "ansi-escapes", "lone-surrogate")


@pytest.fixture(autouse=True)
def no_canary():
    hostile.clear(CANARY)
    yield
    hostile.assert_no_trace(CANARY)


# --- kql_string: the one escaping function ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, literal", [
    ("rg-web", '"rg-web"'),
    ("it's", '"it\'s"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash\\", '"back\\\\slash\\\\"'),
    ('end\\"', '"end\\\\\\""'),
    ("a | take 1 // b", '"a | take 1 // b"'),
    ("line\nnext\r\ttab", '"line\\nnext\\r\\ttab"'),
    ("Zürich 東京 \U0001F4A5", '"Zürich 東京 \U0001F4A5"'),
    ("", '""'),
])
def test_kql_string_escapes_quotes_backslashes_and_line_breaks(value, literal):
    assert cp.kql_string(value) == literal
    (token, end) = kql.tokenize(literal)
    assert token.kind == "string" and token.value == value and end.kind == "end"


@pytest.mark.parametrize("value", ["nul\x00", "esc\x1b[31m", "bell\x07", "del\x7f", "lone \udcff"])
def test_kql_string_refuses_what_no_literal_carries_naming_the_value(value):
    with pytest.raises(ValueError, match="resource group .* holds the character U\\+"):
        cp.kql_string(value, "resource group")


@pytest.mark.parametrize("value", TYPES, ids=hostile.ids(TYPES))
def test_kql_string_refuses_what_is_not_a_string(value):
    with pytest.raises(ValueError, match="is a .*, not a string"):
        cp.kql_string(value.value, "event type")


@pytest.mark.parametrize("case", STRINGS, ids=hostile.ids(STRINGS))
@pytest.mark.parametrize("option, field", [("types", "properties.EventType"), ("statuses", "properties.EventStatus"),
                                           ("sources", "properties.EventSource"), ("resource_groups", "resourceGroup")])
def test_build_query_keeps_every_value_a_string_literal(case, option, field):
    try:
        query = cp.build_query(**{option: [case.value, "Reboot"]})
    except ValueError as exc:
        assert case.name in UNWRITABLE and "cannot carry" in str(exc)
        return
    parsed = kql.parse(query)  # one where per filter, nothing else
    assert [c.field for c in parsed.conditions] == ["type", field]
    assert parsed.conditions[1].values == (case.value, "Reboot")
    assert parsed.project is not None and parsed.limit is None


# --- the modules, against the simulator's ARM face -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sim():
    simulator = Simulator.from_scenario(SCENARIO, port=0, control_port=None, arm_port=0)
    simulator.start()
    simulator.world.advance(1)
    saved = dict((k, os.environ.get(k)) for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "NO_PROXY"))
    os.environ.update(IDENTITY_ENDPOINT=simulator.identity_endpoint, IDENTITY_HEADER=simulator.identity_header,
                      NO_PROXY="127.0.0.1")
    yield simulator
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    simulator.stop()


@pytest.fixture
def arm(sim):
    """The simulator as every case finds it: no faults, nothing acknowledged, an empty request log."""
    if sim.world.approvals:
        sim.reset()
        sim.world.advance(1)
    sim.world.clear_faults()
    sim.arm.request_log.clear()
    yield sim
    sim.world.clear_faults()


def cp_args(sim, **more):
    return dict({"auth_source": "msi", "management_endpoint": sim.arm_url, "subscriptions": [SUB], "retries": 0},
                **more)


def sent_queries(sim):
    return [e for e in sim.arm.request_log.query(None, None, None) if "ResourceGraph" in e["path"]]


def check_refusal(result, value):
    """A refusal of ours names the value; one of Azure's is its message, on one line."""
    msg = result["msg"]
    assert "Traceback" not in msg and msg.strip() and "\n" not in msg, msg
    if result.get("status") is None and isinstance(value, str) and 0 < len(value) < 200 and value.strip():
        assert repr(value)[1:-1][:40] in msg or value[:40] in msg, msg


INFO_OPTIONS = ("event_types", "statuses", "sources", "resource_groups", "vm_names", "event_ids", "subscriptions",
                "management_groups")


@pytest.mark.parametrize("case", OPTIONS, ids=hostile.ids(OPTIONS))
@pytest.mark.parametrize("option", INFO_OPTIONS)
def test_info_options_are_string_literals_or_refused(arm, case, option):
    extra = {option: [case.value]}
    if option == "management_groups":
        extra["subscriptions"] = None
    failed, result = run_module(control_plane_event_info.main, cp_args(arm, **extra))
    hostile.assert_no_trace(CANARY, json.dumps(result))
    if failed:
        check_refusal(result, case.value)
        assert option in ("event_ids", "subscriptions", "management_groups") or case.name in UNWRITABLE or \
            case.kind == "type", result["msg"]
        return
    # the value matched nothing, or exactly what it names (the VM, group or subscription is not there)
    assert result["events"] == [] or (option, case.value) in (("event_types", "Reboot"),), result["events"]
    if option in ("event_types", "statuses", "sources", "resource_groups") and case.kind != "type":
        (condition,) = [c for c in kql.parse(result["query"]).conditions if c.field != "type"]
        assert condition.values == (str(case.value),)


@pytest.mark.parametrize("case", OPTIONS, ids=hostile.ids(OPTIONS))
@pytest.mark.parametrize("option", ["event_ids", "vm_names", "event_types"])
def test_approve_options_target_nothing_beyond_what_they_name(arm, case, option):
    extra = {"event_ids": [case.value]} if option == "event_ids" else {"vm_names": [case.value]}
    if option == "event_types":
        extra = {"vm_names": ["web"], "event_types": [case.value]}
    failed, result = run_module(control_plane_event_approve.main, cp_args(arm, **extra))
    hostile.assert_no_trace(CANARY, json.dumps(result))
    assert arm.world.approvals == []  # no event is named by a hostile value
    assert [e for e in arm.arm.request_log.query(None, None, None) if e["method"] == "POST"
            and "acknowledge" in e["path"].lower()] == []
    if failed:
        check_refusal(result, case.value)
    else:
        assert result["approved"] == [] and result["changed"] is False


POLICY_KEYS = ("id", "name", "resource_group", "subscription", "kind")


@pytest.mark.parametrize("case", OPTIONS, ids=hostile.ids(OPTIONS))
@pytest.mark.parametrize("key", POLICY_KEYS)
def test_policy_resources_never_reach_another_path(arm, case, key):
    spec = {"kind": "vm", "name": "web", "resource_group": RG, "subscription": SUB}
    if key == "id":
        spec = {"id": WEB[:-len("web")] + case.value if isinstance(case.value, str) else case.value}
    elif key == "name":
        spec["name"] = case.value
    else:
        spec[key] = case.value
    args = cp_args(arm, resources=[spec])
    del args["subscriptions"]
    failed, result = run_module(control_plane_policy.main, args)
    hostile.assert_no_trace(CANARY, json.dumps(result))
    paths = [urllib.parse.unquote(e["path"].split("?")[0]) for e in arm.arm.request_log.query(None, None, None)
             if not e["path"].startswith("/msi/")]
    if "id" in spec:
        named = str(spec["id"]).rstrip("/")
    else:
        named = "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s" % (
            spec["subscription"], spec["resource_group"], spec["name"])
    assert set(paths) <= {named}, (paths, named)  # the one resource the spec names, verbatim, or nothing
    if failed:
        check_refusal(result, case.value)
    else:
        assert [r["id"] for r in result["resources"]] == [named]


# Every field of a row: the event's properties, and the row's own columns.
PROPERTIES = ("EventId", "EventType", "ResourceType", "Resources", "EventStatus", "NotBefore", "Description",
              "EventSource", "DurationInSeconds")
COLUMNS = ("id", "name", "resourceGroup", "location", "subscriptionId")


def row_fault(arm, target, field, value):
    if field == "Resources":
        value = [value, "web"]
    arm.world.add_fault(_fault({"kind": "arm_fields", "fields": {target: {field: value}},
                                "path": "/providers/Microsoft.ResourceGraph"}, arm))
    return value


def _fault(data, arm):
    from imds_simulator import scenario  # pylint: disable=import-error,import-outside-toplevel
    return scenario.parse_fault(scenario.Checker("test"), data, "", list(arm.world.vms.values()))


def rows_fields():
    return [("properties", f) for f in PROPERTIES] + [("row", c) for c in COLUMNS]


@pytest.mark.parametrize("case", STRINGS + TYPES, ids=hostile.ids(STRINGS + TYPES))
@pytest.mark.parametrize("target, field", rows_fields(), ids=["%s.%s" % tf for tf in rows_fields()])
def test_row_fields_stay_data_and_acknowledge_only_the_named_vms_events(arm, case, target, field):
    value = row_fault(arm, target, field, case.value)
    failed, info = run_module(control_plane_event_info.main, cp_args(arm))
    hostile.assert_no_trace(CANARY, json.dumps(info))
    assert not failed, info["msg"]
    # every row: read, or a problem naming it (Resource Graph keeps to the subscriptions asked for)
    assert len(info["events"]) + len(info["problems"]) == (2 if field != "subscriptionId" or value == SUB else 0)
    for problem in info["problems"]:
        assert problem["problem"] and "Traceback" not in problem["problem"]
    for event in info["events"]:
        if target == "properties":
            assert event[field] == value  # verbatim
        elif field == "location":
            assert event["location"] == value
        elif field == "resourceGroup":  # the id names the group acknowledging goes to; the column its casing
            assert event["owner"]["resource_group"] == (value if str(value).lower() == RG else RG)
    failed, approve = run_module(control_plane_event_approve.main, cp_args(arm, vm_names=["web"]))
    hostile.assert_no_trace(CANARY, json.dumps(approve))
    acks = [e["path"].split("?")[0] for e in arm.arm.request_log.query(None, None, None) if e["method"] == "POST"
            and "acknowledge" in e["path"].lower()]
    assert all(p == WEB + "/providers/Microsoft.Maintenance/scheduledevents/%s/acknowledge" % MINE for p in acks), acks
    assert [a["event_id"] for a in arm.world.approvals] in ([], [MINE])
    if not failed:
        assert [a["EventId"] for a in approve["approved"]] in ([], [MINE])
