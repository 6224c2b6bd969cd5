# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The fleet report's document, the alert snapshot, and what changed between two runs."""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import fleet

NOW = "2050-04-11T22:00:00Z"
FREEZE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
REBOOT = "4CAEA225-A741-474D-A72E-428C86FCD853"
STARTED = "1F0E3B2A-0000-4000-8000-000000000002"


def ev(event_id, resources, status="Scheduled", event_type="Reboot", not_before="Mon, 11 Apr 2050 22:15:00 GMT"):
    return {"EventId": event_id, "EventType": event_type, "ResourceType": "VirtualMachine", "Resources": resources,
            "EventStatus": status, "NotBefore": "" if status == "Started" else not_before, "Description": "d",
            "EventSource": "Platform", "DurationInSeconds": -1}


def info(vm, *events):
    return {"this_vm": vm, "events": list(events), "document_incarnation": 1, "changed": False}


def watcher(vm=None, events=(), reasons=(), journal=(), service="active", held=None, failed_events=None):
    targets = sorted(set(t for r in reasons for t in r["targets"]))
    result = {"changed": False, "held": bool(reasons) if held is None else held,
              "holds": {"held": bool(reasons), "targets": [{"key": t, "phase": "held"} for t in targets],
                        "reasons": list(reasons)},
              "service": {"name": "imds-watcher.service", "state": service, "systemd": True},
              "journal": {"entries": list(journal), "unparseable": 0}, "problems": []}
    if failed_events:
        result["event_info"] = {"failed": True, "msg": failed_events}
    elif vm is not None:
        result["event_info"] = info(vm, *events)
    return result


def reason(reason_id, text, targets=("guard",), event_id=None, holder="alice"):
    return {"id": reason_id, "text": text, "event_id": event_id, "holder": holder, "since": "2050-04-11T21:00:00Z",
            "targets": list(targets)}


def fleet_hosts():
    freeze = ev(FREEZE, ["web_0", "web_1"], event_type="Freeze", not_before="Mon, 11 Apr 2050 22:30:00 GMT")
    return {
        "web-0.example.com": {"watcher": watcher("web_0", [freeze, ev(REBOOT, ["web_0"])],
                                                 [reason(FREEZE, "Freeze pending", ["guard", "puppet"], FREEZE,
                                                         "imds-watcher")],
                                                 [{"time": "2050-04-11T21:59:00Z", "event_id": REBOOT,
                                                   "event_type": "Reboot", "state": "approved", "detail": "policy",
                                                   "by": "policy fast-reboot"},
                                                  {"time": "2050-04-11T21:58:00Z", "event_id": REBOOT,
                                                   "state": "held"}]), "group": "as-web"},
        "web-1.example.com": {"watcher": watcher("web_1", [freeze, ev(REBOOT, ["web_0"])]), "group": "as-web"},
        "db-0": {"watcher": watcher("db-0", [ev(STARTED, ["db-0"], status="Started")], service="inactive")},
        "idle": {"watcher": watcher("idle")},
        "down": {"watcher": {"unreachable": True, "msg": "ssh: connection refused", "changed": False}},
        "broken": {"watcher": {"failed": True, "msg": "python3 not found"}},
        "skipped": {"watcher": {"skipped": True}},
        "never": {},
        "no-imds": {"watcher": watcher(failed_events="IMDS GET failed: connection refused",
                                       reasons=[reason("CHG-1", "patching")])},
    }


@pytest.fixture
def report():
    return fleet.build_report(fleet_hosts(), now=NOW, title="Test fleet")


def test_header_and_summary(report):
    assert report["format"] == fleet.FORMAT and report["version"] == 1 and report["title"] == "Test fleet"
    assert report["generated"] == NOW
    assert report["summary"] == {
        "hosts": 9, "ok": 5, "unreachable": 1, "failed": 1, "no_data": 2, "events": 3, "events_scheduled": 2,
        "events_started": 1, "events_finished": 0, "sources": ["imds"], "hosts_pending": 2, "hosts_in_progress": 1, "hosts_held": 2, "holds": 2, "approvals": 1,
        "watcher_active": 4, "next_not_before": "2050-04-11T22:15:00Z", "seconds_until_next": 900}
    assert json.loads(json.dumps(report)) == report, "plain JSON"


def test_hosts_in_inventory_order_with_status(report):
    rows = dict((r["host"], r) for r in report["hosts"])
    assert [r["host"] for r in report["hosts"]] == list(fleet_hosts())
    assert rows["down"]["status"] == fleet.UNREACHABLE and rows["down"]["error"] == "ssh: connection refused"
    assert rows["broken"]["status"] == fleet.FAILED and rows["broken"]["error"] == "python3 not found"
    assert rows["skipped"]["status"] == fleet.NO_DATA and rows["never"]["status"] == fleet.NO_DATA
    assert rows["no-imds"]["status"] == fleet.OK, "an IMDS failure is the host's events, not the host"
    assert rows["no-imds"]["events_error"] == "IMDS GET failed: connection refused" and rows["no-imds"]["held"]
    assert [u["host"] for u in report["unreachable"]] == ["down", "broken", "skipped", "never"]
    web0 = rows["web-0.example.com"]
    assert web0["vm_name"] == "web_0" and web0["group"] == "as-web" and web0["pending"] and not web0["in_progress"]
    assert web0["event_ids"] == [REBOOT, FREEZE] or web0["event_ids"] == [FREEZE, REBOOT]
    assert web0["next_not_before"] == "2050-04-11T22:15:00Z" and web0["seconds_until_next"] == 900
    assert web0["hold_reasons"] == [FREEZE] and web0["held_targets"] == ["guard", "puppet"]
    assert rows["web-1.example.com"]["event_ids"] == [FREEZE], "it only sees web_0's Reboot as a peer"
    assert rows["db-0"]["in_progress"] and rows["db-0"]["watcher_service"] == "inactive"
    assert rows["idle"]["event_ids"] == [] and rows["idle"]["held"] is False and rows["idle"]["next_not_before"] is None


def test_events_merged_with_their_inventory_hosts(report):
    events = report["events"]
    assert [e["event_id"] for e in events] == [STARTED, REBOOT, FREEZE], "started, then soonest NotBefore"
    freeze = events[2]
    assert freeze["hosts"] == ["web-0.example.com", "web-1.example.com"] and freeze["shared"]
    assert freeze["seen_by"] == ["web-0.example.com", "web-1.example.com"] and freeze["other_resources"] == []
    assert freeze["seconds_until_start"] == 1800 and freeze["not_before"] == "2050-04-11T22:30:00Z"
    reboot = events[1]
    assert reboot["hosts"] == ["web-0.example.com"] and reboot["seen_by"] == ["web-0.example.com",
                                                                              "web-1.example.com"]
    assert events[0]["status"] == "Started" and events[0]["seconds_until_start"] == 0


def test_event_listing_a_vm_no_host_reported():
    hosts = {"a": {"watcher": watcher("a", [ev(REBOOT, ["a", "stranger"])])}}
    event = fleet.build_report(hosts, now=NOW)["events"][0]
    assert event["hosts"] == ["a"] and event["other_resources"] == ["stranger"]


def test_holds_and_approvals(report):
    assert report["holds"][0] == {"host": "web-0.example.com", "reason_id": FREEZE, "text": "Freeze pending",
                                  "holder": "imds-watcher", "since": "2050-04-11T21:00:00Z", "event_id": FREEZE,
                                  "targets": ["guard", "puppet"], "phases": ["held"]}
    assert report["holds"][1]["host"] == "no-imds" and report["holds"][1]["text"] == "patching"
    assert report["approvals"] == [{"host": "web-0.example.com", "event_id": REBOOT, "event_type": "Reboot",
                                    "time": "2050-04-11T21:59:00Z", "by": "policy fast-reboot", "detail": "policy"}]


def test_approval_without_who_is_the_watcher():
    hosts = {"a": {"watcher": watcher("a", journal=[{"time": "t", "event_id": REBOOT, "state": "Approved"}])}}
    assert fleet.build_report(hosts, now=NOW)["approvals"][0]["by"] == "imds-watcher on a"


def test_separately_registered_event_info():
    hosts = {"a": {"watcher": watcher(), "events": info("a", ev(REBOOT, ["a"]))},
             "b": {"watcher": watcher(), "events": {"unreachable": True, "msg": "gone"}}}
    report = fleet.build_report(hosts, now=NOW)
    assert report["events"][0]["hosts"] == ["a"] and report["hosts"][1]["status"] == fleet.UNREACHABLE


def test_a_degraded_watcher_is_a_host_problem():
    """watcher_info says when a watcher cannot do its whole job (it does not know its VM's name: it holds every event
    and approves none); the report shows it for that host."""
    result = watcher("a", [ev(REBOOT, ["a"])])
    result["degraded"] = [{"reason": "vm_name_unknown", "since": "2050-04-11T21:00:00Z", "detail": "404 Not Found"}]
    report = fleet.build_report({"a": {"watcher": result}}, now=NOW)
    problem = "the watcher is degraded (vm_name_unknown) since 2050-04-11T21:00:00Z: 404 Not Found"
    assert report["hosts"][0]["problems"] == [problem] and report["problems"] == ["a: " + problem]


def test_unreadable_event_result_is_a_host_problem_not_a_crash():
    hosts = {"a": {"watcher": watcher("a", [{"EventType": "Reboot"}])}}
    row = fleet.build_report(hosts, now=NOW)["hosts"][0]
    assert row["status"] == fleet.OK and "unreadable" in row["events_error"]


def test_now_may_be_a_datetime_or_bad():
    import datetime  # pylint: disable=import-outside-toplevel
    moment = datetime.datetime(2050, 4, 11, 22, 0, 0)
    assert fleet.build_report({}, now=moment)["generated"] == NOW
    with pytest.raises(ValueError):
        fleet.build_report({}, now="yesterday")


# --- snapshots and changes ------------------------------------------------------------------


def test_first_run_everything_is_new(report):
    changes, kept = fleet.compare(None, fleet.snapshot(report))
    assert fleet.change_counts(changes) == {"new_events": 3, "gone_events": 0, "started_events": 0, "finished_events": 0, "new_holds": 2,
                                            "released_holds": 0, "newly_unreachable": 4, "reachable_again": 0}
    assert fleet.has_changes(changes) and kept["events"]


def test_same_fleet_later_is_no_change(report):
    later = fleet.build_report(fleet_hosts(), now="2050-04-11T22:05:00Z")
    changes, dummy = fleet.compare(fleet.snapshot(report), fleet.snapshot(later))
    assert not fleet.has_changes(changes)
    assert fleet.snapshot(report)["events"] == fleet.snapshot(later)["events"], "no times in the identities"


def test_changes_between_runs(report):
    hosts = fleet_hosts()
    hosts["web-0.example.com"]["watcher"]["event_info"]["events"] = [
        ev(FREEZE, ["web_0", "web_1"], status="Started", event_type="Freeze")]
    hosts["web-1.example.com"]["watcher"]["event_info"]["events"] = [
        ev(FREEZE, ["web_0", "web_1"], status="Started", event_type="Freeze")]
    hosts["web-0.example.com"]["watcher"]["holds"]["reasons"] = []
    hosts["idle"]["watcher"]["event_info"]["events"] = [ev("ABCDEF00-0000-4000-8000-000000000001", ["idle"])]
    hosts["idle"]["watcher"]["holds"]["reasons"] = [reason("CHG-2", "new hold")]
    hosts["down"] = {"watcher": watcher("down")}
    hosts["db-0"] = {"watcher": {"unreachable": True, "msg": "timeout"}}
    later = fleet.build_report(hosts, now="2050-04-11T22:20:00Z")
    changes, kept = fleet.compare(fleet.snapshot(report), fleet.snapshot(later))
    assert [e["event_id"] for e in changes["new_events"]] == ["ABCDEF00-0000-4000-8000-000000000001"]
    assert [e["event_id"] for e in changes["started_events"]] == [FREEZE]
    assert [e["event_id"] for e in changes["gone_events"]] == [REBOOT]
    assert [(h["host"], h["reason_id"]) for h in changes["new_holds"]] == [("idle", "CHG-2")]
    assert [(h["host"], h["reason_id"]) for h in changes["released_holds"]] == [("web-0.example.com", FREEZE)]
    assert [h["host"] for h in changes["newly_unreachable"]] == ["db-0"]
    assert [h["host"] for h in changes["reachable_again"]] == ["down"]
    # db-0 cannot be read now: its Started event is not "gone", it is carried over.
    assert STARTED.casefold() in kept["events"] and STARTED not in [e["event_id"] for e in changes["gone_events"]]


def test_holds_on_an_unreachable_host_are_not_released():
    before = fleet.build_report({"a": {"watcher": watcher("a", reasons=[reason("R", "t")])}}, now=NOW)
    after = fleet.build_report({"a": {"watcher": {"unreachable": True, "msg": "x"}}}, now=NOW)
    changes, kept = fleet.compare(fleet.snapshot(before), fleet.snapshot(after))
    assert changes["released_holds"] == [] and "a|R" in kept["holds"]
    again = fleet.build_report({"a": {"watcher": watcher("a")}}, now=NOW)
    changes, dummy = fleet.compare(kept, fleet.snapshot(again))
    assert [h["reason_id"] for h in changes["released_holds"]] == ["R"]
    assert [h["host"] for h in changes["reachable_again"]] == ["a"]


def test_text_subject_and_webhook_payload(report):
    changes, dummy = fleet.compare(None, fleet.snapshot(report))
    subject = fleet.subject(changes, "Test fleet")
    assert subject == "[Test fleet] 3 new events; 2 new holds; 4 hosts newly unreachable"
    text = fleet.render_text(changes, report, link="https://reports.example/fleet.html")
    assert "New events (3):" in text and "Freeze %s (Scheduled) NotBefore 2050-04-11T22:30:00Z on " \
                                         "web-0.example.com, web-1.example.com" % FREEZE in text
    assert "web-0.example.com: guard, puppet held by imds-watcher since 2050-04-11T21:00:00Z: Freeze pending " \
           "[reason %s, event %s]" % (FREEZE, FREEZE) in text
    assert "down (unreachable): ssh: connection refused" in text
    assert "Report: https://reports.example/fleet.html" in text and "Next NotBefore: 2050-04-11T22:15:00Z." in text
    payload = fleet.webhook_payload(changes, report, "https://reports.example/fleet.html")
    assert payload["subject"] == subject and payload["counts"]["new_events"] == 3 and payload["text"] == text
    assert set(payload["changes"]) == set(fleet.CHANGE_KEYS) and payload["summary"]["hosts"] == 9
    assert json.loads(json.dumps(payload)) == payload


def test_many_hosts_are_abbreviated():
    hosts = dict(("h%02d" % i, {"watcher": watcher("h%02d" % i, [ev(FREEZE, ["h%02d" % j for j in range(20)])])})
                 for i in range(20))
    report = fleet.build_report(hosts, now=NOW)
    changes, dummy = fleet.compare(None, fleet.snapshot(report))
    assert "h07 and 12 more" in fleet.describe_change("new_events", changes["new_events"][0])


def test_compare_does_not_modify_its_inputs(report):
    snap = fleet.snapshot(report)
    frozen = copy.deepcopy(snap)
    fleet.compare(snap, fleet.snapshot(fleet.build_report({}, now=NOW)))
    assert snap == frozen


# --- the control plane as a source -------------------------------------------------------------------------------

CANCELED = "28512AF7-C957-4500-9BC4-842D6FB531E4"
OWNER = {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
         "kind": "virtualMachineScaleSets", "name": "web", "resource_group": "rg", "subscription": "s"}


def cp_event(event_id, resources, status="Scheduled", **more):
    raw = ev(event_id, resources, status=status if status == "Started" else "Scheduled", **more)
    raw.update(EventStatus=status, NotBefore="" if status != "Scheduled" else raw["NotBefore"], owner=OWNER,
               finished=status in ("Completed", "Canceled"), source="resource_graph")
    return raw


def control_plane(*events, problems=()):
    return {"changed": False, "events": list(events), "problems": list(problems), "counts": {}}


def test_a_fleet_read_only_from_the_control_plane():
    report = fleet.build_report({}, now=NOW, control_plane=control_plane(
        cp_event(REBOOT, ["web_0", "web_1"]), cp_event(STARTED, ["web_2"], status="Started"),
        cp_event(FREEZE, ["web_3"], status="Completed"), cp_event(CANCELED, ["web_4"], status="Canceled")))
    assert [(e["event_id"], e["status"], e["finished"]) for e in report["events"]] == [
        (STARTED, "Started", False), (REBOOT, "Scheduled", False), (CANCELED, "Canceled", True),
        (FREEZE, "Completed", True)]
    assert all(e["sources"] == ["resource_graph"] and e["owner"] == OWNER for e in report["events"])
    assert report["events"][3]["seconds_until_start"] is None and report["events"][3]["problems"] == []
    summary = report["summary"]
    assert (summary["events"], summary["events_scheduled"], summary["events_started"], summary["events_finished"]) \
        == (4, 1, 1, 2)
    assert summary["sources"] == ["resource_graph"] and summary["next_not_before"] == "2050-04-11T22:15:00Z"


def test_both_sources_merge_and_the_later_status_wins():
    hosts = {"web-a": {"events": info("web_0", ev(REBOOT, ["web_0", "web_1"]))}, "web_1": {"events": None}}
    report = fleet.build_report(hosts, now=NOW, control_plane=control_plane(
        cp_event(REBOOT, ["web_0", "web_1"], status="Started"), cp_event(FREEZE, ["web_1"], status="Completed")))
    reboot, freeze = report["events"]
    assert reboot["status"] == "Started" and reboot["sources"] == ["imds", "resource_graph"]
    assert reboot["seen_by"] == ["web-a"] and reboot["hosts"] == ["web-a", "web_1"], "web_1 by its inventory name"
    assert freeze["finished"] and freeze["hosts"] == ["web_1"]
    assert [r["event_ids"] for r in report["hosts"]] == [[REBOOT], [REBOOT]], "a finished event makes no host pending"


def test_a_control_plane_failure_is_a_problem_not_a_crash():
    report = fleet.build_report({"web-a": {"events": info("web_0", ev(REBOOT, ["web_0"]))}}, now=NOW,
                                control_plane={"failed": True, "msg": "403 AuthorizationFailed"})
    assert report["problems"] == ["control plane: 403 AuthorizationFailed"]
    assert [e["sources"] for e in report["events"]] == [["imds"]]
    rows = fleet.build_report({}, now=NOW, control_plane=control_plane(problems=[{"id": "/x", "problem": "no properties"}]))
    assert rows["problems"] == ["control plane row /x: no properties"]


def test_finished_is_announced_once_and_never_as_gone():
    scheduled = fleet.snapshot(fleet.build_report({}, now=NOW, control_plane=control_plane(cp_event(REBOOT, ["w"]))))
    completed = fleet.snapshot(fleet.build_report({}, now=NOW, control_plane=control_plane(
        cp_event(REBOOT, ["w"], status="Completed"), cp_event(CANCELED, ["x"], status="Canceled"))))
    changes, kept = fleet.compare(scheduled, completed)
    assert [e["event_id"] for e in changes["finished_events"]] == [CANCELED, REBOOT]
    assert changes["new_events"] == [] and changes["gone_events"] == []
    changes, kept = fleet.compare(kept, completed)
    assert not fleet.has_changes(changes)
    aged_out = fleet.snapshot(fleet.build_report({}, now=NOW, control_plane=control_plane()))
    changes, dummy = fleet.compare(kept, aged_out)
    assert not fleet.has_changes(changes), "a finished row that ages out of Resource Graph is no news"
