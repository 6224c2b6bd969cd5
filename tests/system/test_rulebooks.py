# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The shipped rulebooks (extensions/eda/rulebooks/) with the real ansible-rulebook, against the simulator.

- vm_drain_and_approve, by its FQCN, with the imds source polling the simulator's IMDS for myvm: a Reboot of myvm
  runs drain_and_approve (the site's drain tasks, then event_approve: the simulator records the approval), the event
  starts, ends, and restore_after_maintenance runs once it is gone; a peer's event and a Freeze say nothing.
- fleet_page_on_redeploy and fleet_post_maintenance_check with the event_grid source, fed by the simulator's Event
  Grid face over https on loopback (the validation handshake, batches, every batch delivered twice): one page for the
  production Redeploy only, over a subscription with Microsoft Entra authentication (the simulator's tenant signs
  Event Grid's tokens, the receiver fetches its keys from the simulator); the post-maintenance check on the VMs of the
  event that Completed, not of the cancelled one, over the shared token; a wrong token, and a token for another app,
  refused.
The triggered playbooks run for real on localhost (aliases named like the VMs). Timings are printed (the closing note
of the issue quotes them), never asserted: each wait only bounds a hang.

The events are hostile (docs/eda.md "Event data is data"): the simulator serves every string of the hostile table
(unit/utils/hostile.py) in every field of the event the engine passes on (its `fields`: the IMDS document, the Event
Grid event), a field at a time joined into one value, the Resources a value per name, an EventId of them too. Nothing
may run (the canary) or be rendered (in the engine's log, which holds the playbooks' output, and in the page); the
page and the site's tasks get the values as the sources queue them; the Resources `all`, `*`, `web:&db`, `!x` ...
select no host, and only an exact name does.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time

import pytest
import requests
import yaml

from harness.ansible_env import COLLECTIONS, ROOT
from harness.eda import LOCAL, Pager, record_tasks, records, write_inventory
from harness.pytest_sim import ControlClient, Simulator
from harness.rulebook import Rulebook
from unit.utils import hostile
from unit.utils.tls import self_signed

REBOOT = "4CAEA225-A741-474D-A72E-428C86FCD853"
PEER = "A626E37F-793E-44E1-89B5-99AE0B96044C"
FREEZE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
HOSTILE_ID = "5D0F1E2A-0000-4000-8000-00000000BAD1"
HOSTILE_TYPE = "5D0F1E2A-0000-4000-8000-00000000BAD2"
# The fields of an event made hostile; EventType and EventStatus stay what the rules match, EventId the event's (an
# EventId of hostile strings is its own event below). Resources: the VMs it lists, then every hostile string.
TEXT_FIELDS = ("Description", "ResourceType", "NotBefore", "EventSource", "DurationInSeconds")


class Hostile(object):
    """The hostile values of one test: the canary that executing one creates, every string joined into one (for a
    field of one value), and as the sources queue them (sources.valid_text)."""

    def __init__(self, tmp_path):
        self.canary = str(tmp_path / "canary")
        self.strings = [case.value for case in hostile.strings(self.canary)]
        self.text = hostile.joined(self.canary)
        if str(COLLECTIONS) not in sys.path:
            sys.path.insert(0, str(COLLECTIONS))
        from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import valid_text  # pylint: disable=import-outside-toplevel
        self.queued = valid_text

    def fields(self, *vms):
        """`fields` for an event that lists `vms`: every text field hostile, and the Resources."""
        out = dict((field, self.text) for field in TEXT_FIELDS)
        out["Resources"] = list(vms) + self.strings
        return out

    def assert_no_trace(self, *outputs):
        hostile.assert_no_trace(self.canary, *outputs)


# --- on the VM: the imds source ------------------------------------------------------------------------------------

@pytest.fixture
def vm_sim():
    scenario = {"name": "eda-vm", "time_scale": 1, "vms": [{"name": "myvm", "availability_set": "as1"},
                                                           {"name": "myvm-peer", "availability_set": "as1"}]}
    with Simulator.from_scenario(scenario, port=0, control_port=0) as simulator:
        yield simulator


def test_vm_drain_and_approve(vm_sim, tmp_path):
    control = ControlClient(vm_sim.control_url)
    bad = Hostile(tmp_path)
    drain_tasks, drained = record_tasks(tmp_path, "drained")
    restore_tasks, restored = record_tasks(tmp_path, "restored")
    hosts = write_inventory(tmp_path / "inventory.json", {"web": {"localhost": dict(
        LOCAL, drain_tasks=str(drain_tasks), restore_tasks=str(restore_tasks))}})
    state_file = tmp_path / "state" / "imds.json"  # the source makes its directory

    with Rulebook("imds.scheduled_events.vm_drain_and_approve", hosts, tmp_path,
                  env={"IMDS_ENDPOINT": vm_sim.endpoint("myvm")},
                  extra_vars={"imds_state_file": str(state_file)}) as engine:
        engine.wait_for_log("watching scheduled events of myvm", what="the imds source's first poll")
        # Not for this rulebook: an event of the peer only, and a Freeze (event_types are Reboot and Redeploy).
        control.inject(id=PEER, type="Reboot", resources=["myvm-peer"], notice=900)
        control.inject(id=FREEZE, type="Freeze", resources=["myvm"], notice=900)
        # Hostile: an EventId of every hostile string (and Resources of them): drained, its approval refused before
        # any request. Then the Reboot, every text field hostile: drained, approved, restored as any other.
        control.inject(id=HOSTILE_ID, type="Reboot", resources=["myvm"], notice=900,
                       fields={"EventId": bad.text, "Resources": ["myvm"] + bad.strings})
        hostile_id = bad.queued(bad.text)  # what the source says (the model keeps an EventId verbatim)
        appeared_at = time.time()
        control.inject(id=REBOOT, type="Reboot", resources=["myvm"], notice=900, started_for=5,
                       fields=dict(bad.fields("myvm"), Resources=["myvm"]))

        drain = engine.wait_for(lambda: [r for r in records(drained) if r["event_id"] == REBOOT],
                                what="drain_and_approve's drain tasks")[0]
        assert (drain["change"], drain["event_id"], drain["host"]) == ("appeared", REBOOT, "localhost")
        approvals = engine.wait_for(lambda: control.approvals(event_id=REBOOT), what="the approval to reach IMDS")
        assert [a["vm"] for a in approvals] == ["myvm"], approvals
        restore = engine.wait_for(lambda: records(restored), what="restore_after_maintenance")[0]
        assert (restore["change"], restore["outcome"], restore["event_id"]) == ("gone", "completed", REBOOT)
        engine.wait_for_log(lambda log: log.count("PLAY RECAP") >= 3, what="the three playbooks' recaps")
        code = engine.stop()

    log = engine.log()
    assert code == 130, engine.describe()
    # a drain for each Reboot of myvm, the hostile EventId intact: nothing for the peer or the Freeze
    assert sorted(r["event_id"] for r in records(drained)) == sorted([REBOOT, hostile_id])
    assert [r["event_id"] for r in records(restored)] == [REBOOT]
    assert log.count("failed=0") == 2 and "Traceback" not in log, engine.describe()
    # the hostile EventId's run (ansible-rulebook logs a failed playbook's output twice)
    assert "failed=1" in log and "not an EventId" in log, engine.describe()
    assert control.approvals(event_id=PEER) == [] and control.approvals(event_id=FREEZE) == []
    assert control.approvals(event_id=HOSTILE_ID) == []
    bad.assert_no_trace(log, json.dumps(records(drained)), json.dumps(records(restored)))
    assert oct(state_file.stat().st_mode & 0o777) == "0o600"
    assert oct(state_file.parent.stat().st_mode & 0o777) == "0o700"
    print("\nimds source: event injected -> drain_and_approve's first task %.2f s; restore %.2f s after the drain"
          % (drain["time"] - appeared_at, restore["time"] - drain["time"]))


# --- the fleet: the event_grid source, fed by the simulator's Event Grid face ------------------------------------

WEB_REDEPLOY = "9B1D2C3E-0000-4000-8000-000000000001"
DEV_REDEPLOY = "9B1D2C3E-0000-4000-8000-000000000002"
DB_REBOOT = "9B1D2C3E-0000-4000-8000-000000000003"
DB_FREEZE = "9B1D2C3E-0000-4000-8000-000000000004"
WEB_REBOOT = "9B1D2C3E-0000-4000-8000-000000000005"
FLEET = [{"name": "web_0", "availability_set": "web-as", "resource_group": "prod-web"},
         {"name": "web_1", "availability_set": "web-as", "resource_group": "prod-web"},
         {"name": "db_0", "resource_group": "prod-db"},
         {"name": "dev_0", "resource_group": "dev"}]


@pytest.fixture
def fleet_sim():
    """A manual clock: every change happens when the test advances it, so what each delivery holds is known."""
    scenario = {"name": "eda-fleet", "clock": "manual", "vms": FLEET, "control_plane": {"opted_in": "all"}}
    with Simulator.from_scenario(scenario, port=0, control_port=0) as simulator:
        yield simulator


TENANT = "72f988bf-0000-4000-8000-00000000c0de"  # the simulator's default tenant
WEBHOOK_APP = "api://eda-webhook"


def receiver_vars(tmp_path, token):
    certfile, keyfile = self_signed(str(tmp_path))
    return {"event_grid_host": "127.0.0.1", "event_grid_port": 0, "event_grid_token": token,
            "event_grid_certfile": certfile, "event_grid_keyfile": keyfile}, certfile


def subscribe(engine, control, token, entra=None):
    """Subscribe the simulator's Event Grid to the receiver the rulebook started (its port is in the log), with the
    token in the URL, or with Microsoft Entra authentication (`entra`: the simulator's subscription option)."""
    match = engine.wait_for_log(re.compile(r"listening on https://127\.0\.0\.1:(\d+)/"), what="the receiver")
    url = "https://127.0.0.1:%s/" % match.group(1)
    record = control.subscribe_event_grid(url if entra else url + "?code=" + token, max_events_per_batch=10,
                                          duplicate_every=1, insecure_skip_verify=True, entra=entra)
    assert record["provisioningState"] == "Succeeded", (record, engine.describe())  # the handshake, answered
    return url


def test_fleet_page_on_redeploy(fleet_sim, tmp_path):
    control = ControlClient(fleet_sim.control_url)
    token = secrets.token_urlsafe(16)
    rulebook_vars, certfile = receiver_vars(tmp_path, token)
    rulebook_vars.update(production_resource_groups=["prod-web", "prod-db"], event_grid_entra_tenant_id=TENANT,
                         event_grid_entra_audience=[WEBHOOK_APP],
                         event_grid_entra_openid_configuration_url=control.entra_openid_configuration_url(TENANT))
    bad = Hostile(tmp_path)
    pager = Pager()
    hosts = write_inventory(tmp_path / "inventory.json", {"all": {"localhost": dict(LOCAL, pager_url=pager.url)}})
    try:
        with Rulebook("imds.scheduled_events.fleet_page_on_redeploy", hosts, tmp_path,
                      extra_vars=rulebook_vars) as engine:
            url = subscribe(engine, control, token, entra={"application_id_or_uri": WEBHOOK_APP})
            engine.wait_for_log("signing key(s) of tenant %s" % TENANT, what="the tenant's keys")
            wrong = requests.post(url + "?code=not-the-token", json=[], verify=certfile, timeout=30)
            assert wrong.status_code == 401
            refused = control.subscribe_event_grid(url + "?code=not-the-token", insecure_skip_verify=True)
            assert refused["provisioningState"] == "Failed" and "answered 401" in refused["failure"], refused
            other_app = control.subscribe_event_grid(url, insecure_skip_verify=True,
                                                     entra={"application_id_or_uri": "api://another-app"})
            assert other_app["provisioningState"] == "Failed" and "answered 401" in other_app["failure"], other_app
            # Not for paging: a Redeploy outside production, a Reboot in production. Then the production Redeploy.
            control.inject(id=DEV_REDEPLOY, type="Redeploy", resources=["dev_0"], at=10, notice=600)
            control.inject(id=DB_REBOOT, type="Reboot", resources=["db_0"], at=10, notice=900)
            # Every text field and the Resources hostile. Not for paging either: an EventId of every hostile string
            # (Event Grid's row id names the real one: unreadable), an EventType of them (not a Redeploy).
            control.inject(id=WEB_REDEPLOY, type="Redeploy", resources=["web_0"], at=10, notice=600,
                           fields=bad.fields("web_0"))
            control.inject(id=HOSTILE_ID, type="Redeploy", resources=["web_1"], at=10, notice=600,
                           fields={"EventId": bad.text})
            control.inject(id=HOSTILE_TYPE, type="Redeploy", resources=["web_1"], at=10, notice=600,
                           fields={"EventType": bad.text})
            appeared_at = time.time()
            control.advance(10)  # all five appear now, in one batch
            control.event_grid_flush()
            page = engine.wait_for(lambda: pager.pages, what="the page")[0]
            engine.wait_for_log("PLAY RECAP", what="page_on_call's recap")
            code = engine.stop()
    finally:
        pager.stop()

    assert code == 130, engine.describe()
    assert [p["page"]["event_id"] for p in pager.pages] == [WEB_REDEPLOY], pager.pages  # one page, duplicates dropped
    summary = page["page"]["summary"]
    assert "Azure Redeploy scheduled for web_0" in summary and "in prod-web" in summary, summary
    assert page["page"]["scheduled_event"]["owner"]["kind"] == "availabilitySets"
    paged = page["page"]["scheduled_event"]
    assert dict((f, paged[f]) for f in TEXT_FIELDS) == dict((f, bad.queued(bad.text)) for f in TEXT_FIELDS)
    assert paged["Resources"] == ["web_0"] + [bad.queued(v) for v in bad.strings], "the names, intact and in order"
    assert "scheduled for %s (" % ", ".join(paged["Resources"]) in summary, "the summary quotes the names as they came"
    deliveries = [d for d in control.event_grid_deliveries() if d["kind"] == "notification"]
    assert any(len(d["event_ids"]) == 5 for d in deliveries), deliveries  # a batch
    assert any(d["duplicate"] for d in deliveries) and all(d["status"] == 200 for d in deliveries), deliveries
    log = engine.log()
    assert token not in log and "failed=0" in log and "Traceback" not in log, engine.describe()
    assert "eyJ" not in log, engine.describe()  # no JWT (each begins with the base64 of '{"')
    assert "wrong audience (not one of entra_audience)" in log, engine.describe()
    assert "unreadable scheduled event" in log, engine.describe()  # the hostile EventId: told, not paged
    bad.assert_no_trace(log, json.dumps(pager.pages))
    print("\nevent_grid source: event appeared in the simulator -> page_on_call's first task (the page) %.2f s"
          % (page["time"] - appeared_at))


def test_fleet_post_maintenance_check(fleet_sim, tmp_path):
    control = ControlClient(fleet_sim.control_url)
    token = secrets.token_urlsafe(16)
    rulebook_vars, dummy = receiver_vars(tmp_path, token)
    bad = Hostile(tmp_path)
    check_tasks, checked = record_tasks(tmp_path, "checked")
    hosts = write_inventory(tmp_path / "inventory.json", {"all": dict(
        (vm["name"], dict(LOCAL, post_check_tasks=str(check_tasks))) for vm in FLEET)})
    with Rulebook("imds.scheduled_events.fleet_post_maintenance_check", hosts, tmp_path,
                  extra_vars=rulebook_vars) as engine:
        subscribe(engine, control, token)
        control.inject(id=DB_FREEZE, type="Freeze", resources=["db_0"], at=10, notice=600, cancel_at=50)
        # Its Resources name web_0 and WEB_1, then every hostile string: all, *, web:&db, !localhost, ~.*,
        # web[0:9], "web_0,db_0" ... which name no host (patterns would select db_0 and dev_0 too).
        control.inject(id=WEB_REBOOT, type="Reboot", resources=["web_0", "web_1"], at=10, notice=100,
                       started_for=60, fields=bad.fields("web_0", "WEB_1"))
        control.advance(10)   # both Scheduled
        control.advance(40)   # the Freeze is cancelled: Canceled, nothing to check
        control.advance(60)   # the Reboot starts at its NotBefore
        completed_at = time.time()
        control.advance(60)   # and is over: Completed
        control.event_grid_flush()
        runs = engine.wait_for(lambda: len(records(checked)) >= 2 and records(checked),
                               what="the post-maintenance check on web_0 and web_1")
        engine.wait_for_log("PLAY RECAP", what="post_maintenance_check's recap")
        code = engine.stop()

    assert code == 130, engine.describe()
    assert sorted(r["host"] for r in records(checked)) == ["web_0", "web_1"], records(checked)  # not db_0
    assert {(r["event_id"], r["outcome"]) for r in runs} == {(WEB_REBOOT, "completed")}
    statuses = [s for d in control.event_grid_deliveries() if d["kind"] == "notification" for s in d["statuses"]]
    assert "Canceled" in statuses and "Completed" in statuses, statuses
    assert "failed=0" in engine.log(), engine.describe()
    bad.assert_no_trace(engine.log(), json.dumps(records(checked)))
    print("\nevent_grid source: Completed in the simulator -> post_maintenance_check's first check %.2f s"
          % (min(r["time"] for r in runs) - completed_at))


@pytest.fixture
def fleet_arm_sim():
    scenario = {"name": "eda-fleet-arm", "clock": "manual", "vms": FLEET, "control_plane": {"opted_in": "all"}}
    with Simulator.from_scenario(scenario, port=0, control_port=0, arm_port=0) as simulator:
        yield simulator


def test_the_post_maintenance_check_from_resource_graph(fleet_arm_sim, tmp_path):
    """The shipped rules with the source swapped for resource_graph, as docs/eda.md shows; the real azure-identity
    managed-identity credential against the simulator's token endpoint."""
    sim = fleet_arm_sim
    control = ControlClient(sim.control_url)
    shipped = ROOT / "extensions" / "eda" / "rulebooks" / "fleet_post_maintenance_check.yml"
    rulebook = yaml.safe_load(shipped.read_text())
    rulebook[0]["sources"] = [{"name": "Scheduled events from Resource Graph", "imds.scheduled_events.resource_graph": {
        "subscriptions": ["00000000-0000-0000-0000-000000000000"], "auth_source": "msi",  # the simulator's default
        "management_endpoint": sim.arm_url, "poll_interval": 1}}]
    (tmp_path / "rulebook.yml").write_text(yaml.safe_dump(rulebook), encoding="utf-8")
    check_tasks, checked = record_tasks(tmp_path, "checked")
    hosts = write_inventory(tmp_path / "inventory.json", {"all": dict(
        (vm["name"], dict(LOCAL, post_check_tasks=str(check_tasks))) for vm in FLEET)})
    control.inject(id=WEB_REBOOT, type="Reboot", resources=["web_0", "web_1"], at=10, notice=100, started_for=60)
    with Rulebook(tmp_path / "rulebook.yml", hosts, tmp_path,
                  env={"IDENTITY_ENDPOINT": sim.identity_endpoint, "IDENTITY_HEADER": sim.identity_header}
                  ) as engine:
        engine.wait_for_log("first query: 0 event(s)", what="the first Resource Graph query")
        control.advance(170)  # appears, starts at NotBefore, and is over: the next query sees Completed
        completed_at = time.time()
        runs = engine.wait_for(lambda: len(records(checked)) >= 2 and records(checked),
                               what="the post-maintenance check on web_0 and web_1")
        engine.wait_for_log("PLAY RECAP", what="post_maintenance_check's recap")
        code = engine.stop()

    assert code == 130, engine.describe()
    assert sorted(r["host"] for r in runs) == ["web_0", "web_1"] and {r["outcome"] for r in runs} == {"completed"}
    assert "failed=0" in engine.log() and "Traceback" not in engine.log(), engine.describe()
    print("\nresource_graph source (1 s polls): Completed in the simulator -> first check %.2f s"
          % (min(r["time"] for r in runs) - completed_at))
