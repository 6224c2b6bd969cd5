"""Scenario files: the shipped ones load, and mistakes give clear, located errors."""

from __future__ import annotations

import glob
import os

import pytest

from imds_simulator.scenario import ScenarioError, build_scenario, load_scenario, parse_scenario

SCENARIOS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "simulator", "scenarios"))
REQUIRED = ("demo", "freeze", "preempt", "cancelled", "hardware-failure", "availability-set", "faults", "fleet", "control-plane")


@pytest.mark.parametrize("name", REQUIRED)
def test_shipped_scenarios_load(name):
    scenario = load_scenario(os.path.join(SCENARIOS, name + ".yaml"))
    assert scenario.vms and scenario.settings.name == name


def test_every_shipped_scenario_is_valid():
    for path in glob.glob(os.path.join(SCENARIOS, "*.yaml")):
        load_scenario(path)


def test_demo_has_myvm_reboot_and_shared_freeze():
    scenario = load_scenario(os.path.join(SCENARIOS, "demo.yaml"))
    vms = {vm.name: vm for vm in scenario.vms}
    assert "myvm" in vms
    reboot = [event for event in scenario.events if event.type == "Reboot"]
    assert reboot and reboot[0].resources == ("myvm",)
    assert reboot[0].notice / scenario.settings.time_scale <= 60  # a short compressed notice
    freeze = [event for event in scenario.events if event.type == "Freeze"][0]
    peers = [name for name in freeze.resources if name != "myvm"]
    assert "myvm" in freeze.resources and peers
    assert vms["myvm"].availability_set is not None
    assert all(vms[peer].availability_set == vms["myvm"].availability_set for peer in peers)


def write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("text, where, problem", [
    ("vms: [{name: a}]\ntime_scal: 60\n", ":2: time_scal:", "unknown key 'time_scal'"),
    ("vms: [{name: a}]\ntime_scale: fast\n", ":2: time_scale:", "expected a number, got a string"),
    ("vms: [{name: a}]\nevents:\n  - type: Restart\n    resources: [a]\n", ":3: events[0].type:",
     "unknown event type 'Restart' (expected one of Freeze, Reboot, Redeploy, Preempt, Terminate)"),
    ("vms: [{name: a}]\nevents:\n  - type: Reboot\n    resources: [b]\n", ":4: events[0].resources[0]:", "unknown VM 'b'"),
    ("vms: [{name: a}]\nevents:\n  - {type: Reboot, resources: [a], notice: 60, cancel_at: 90}\n",
     ":3: events[0].cancel_at:", "must fall after 'at'"),
    ("vms: [{name: a}]\nevents:\n  - {type: Reboot, resources: [a], initial_status: Started, notice: 5}\n",
     ":3: events[0].notice:", "not allowed with initial_status Started"),
    ("vms: [{name: a}]\nfaults:\n  - {kind: delay, code: 500, seconds: 1}\n", ":3: faults[0].code:",
     "not used by kind 'delay'"),
    ("vms: [{name: a}]\nfaults:\n  - {kind: status}\n", ":3: faults[0].code:", "is required for kind 'status'"),
    ("vms: [{name: a}]\nfaults:\n  - {kind: explode}\n", ":3: faults[0].kind:", "unknown fault kind 'explode'"),
    ("vms: [{name: a}, {name: a}]\n", ":1: vms[1].name:", "duplicate VM name 'a'"),
    ("vms: [{name: a, address: 10.0.0.1}]\n", ":1: vms[0].address:", "not a loopback address"),
    ("vms: [{name: a}]\nvms: []\n", ":2: vms:", "duplicate key"),
    ("vms: [{name: a}]\nrate_limit: true\n", ":2: rate_limit:", "expected an integer, got a boolean"),
    ("vms: [{name: a}]\nstart_time: '2020-01-01T00:00:00Z'\n", ":2: start_time:", "only valid with 'clock: manual'"),
    ("vms: [{name: a}]\nevents: [{type: Reboot, resources: [a], fields: {Name: x}}]\n", ":2: events[0].fields.Name:",
     "unknown key 'Name' (allowed: EventId, EventType"),
    ("vms: [{name: a}]\nevents: [{type: Reboot, resources: [a], fields: [x]}]\n", ":2: events[0].fields:",
     "expected a mapping, got a list"),
    ("- just a list\n", ":1: (top level):", "expected a mapping, got a list"),
    ("vms: [{name: a}\n", ":", "invalid YAML"),
])
def test_errors_name_file_line_path_and_problem(tmp_path, text, where, problem):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert message.startswith(path), message
    assert where in message and problem in message, message


def test_missing_file_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(str(tmp_path / "absent.yaml"))


def test_defaults_per_event_type():
    events = [{"type": "Freeze", "resources": ["a"]}, {"type": "Preempt", "resources": ["a"]}]
    scenario = parse_scenario({"vms": [{"name": "a"}], "events": events})
    freeze, preempt = scenario.events
    assert (freeze.notice, freeze.duration, freeze.source) == (900, 5, "Platform")
    assert (preempt.notice, preempt.duration, preempt.description) == (30, -1, "")


def test_fleet_generation_from_command_line_style_arguments():
    scenario = build_scenario(None, fleet_count=500, fleet_prefix="node-")
    names = [vm.name for vm in scenario.vms]
    assert len(names) == 500 and names[0] == "node-0" and names[-1] == "node-499"
    assert {vm.update_domain for vm in scenario.vms} == set(range(5))


def test_fleet_prefix_default_and_extra_vms():
    scenario = build_scenario(None, extra_vms=["x"], fleet_count=2)
    assert [vm.name for vm in scenario.vms] == ["x", "vm-0", "vm-1"]


def test_no_vm_at_all_gives_myvm():
    assert [vm.name for vm in build_scenario(None).vms] == ["myvm"]


def test_overrides_replace_settings():
    scenario = build_scenario(os.path.join(SCENARIOS, "demo.yaml"), overrides={"clock": "manual", "time_scale": 1})
    assert scenario.settings.clock == "manual" and scenario.settings.time_scale == 1
