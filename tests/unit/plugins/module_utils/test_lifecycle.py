# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import datetime
import json

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import lifecycle
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import (
    CONTROL_PLANE_STATUSES, Document, Event, EventFilter, ThisVm, format_rfc1123)

EVENT = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
OTHER = "A626E37F-793E-44E1-89B5-99AE0B96044C"
T0 = 1900000000.0  # epoch seconds of the first look
VM = ThisVm("web_0")


def at(seconds):
    return format_rfc1123(datetime.datetime.fromtimestamp(T0 + seconds, datetime.timezone.utc))


def entry(event_id=EVENT, status="Scheduled", type_="Reboot", resources=("web_0",), not_before=600, **extra):
    raw = {"EventId": event_id, "EventType": type_, "ResourceType": "VirtualMachine", "Resources": list(resources),
           "EventStatus": status, "NotBefore": at(not_before) if status == "Scheduled" else "",
           "Description": "", "EventSource": "Platform", "DurationInSeconds": -1}
    raw.update(extra)
    return raw


def doc(*entries):
    return Document.from_json({"DocumentIncarnation": 1, "Events": list(entries)})


def kinds(changes):
    return [(c.kind, c.outcome) if c.outcome else c.kind for c in changes]


def tracker(**kwargs):
    kwargs.setdefault("confirm_polls", 2)
    return lifecycle.DocumentTracker(VM, kwargs.pop("boot_id", "boot-1"), **kwargs)


# --- the shared outcome rule ---------------------------------------------------------------------------------------

# What a look at an event left: started, approved, the boot it was last seen in, NotBefore, when it went missing.
SEEN = {"started": False, "approved": False, "boot_seen": "boot-1", "not_before": 600.0, "missing_since": 100.0}


@pytest.mark.parametrize("facts, expected", [
    ({}, "cancelled"),                                              # left early, nothing else: Azure withdrew it
    ({"started": True}, "completed"),                               # seen Started
    ({"approved": True}, "completed"),                              # approved, in the same boot
    ({"missing_since": 600.0}, "completed"),                        # left at or after NotBefore, in the same boot
    ({"not_before": None}, "cancelled"),                            # no NotBefore known
    ({"boot_seen": None}, "cancelled"),                             # boot never known: no restart to judge by
    # across a new boot, never seen Started: the new boot is its effect only for a restarting event that was
    # approved or still listed at its NotBefore; anything else vanished (a stop and deallocation clears events)
    ({"boot_seen": "boot-0", "event_type": "Reboot"}, "vanished"),
    ({"boot_seen": "boot-0", "event_type": "Reboot", "missing_since": 4000.0}, "vanished"),  # deallocated for long
    ({"boot_seen": "boot-0", "event_type": "Reboot", "approved": True}, "completed"),
    ({"boot_seen": "boot-0", "event_type": "Redeploy", "due": True}, "completed"),
    ({"boot_seen": "boot-0", "event_type": "Preempt", "due": True}, "completed"),  # evicted, started again later
    ({"boot_seen": "boot-0", "event_type": "Freeze", "approved": True}, "vanished"),  # a Freeze restarts nothing
    ({"boot_seen": "boot-0", "event_type": "Terminate", "due": True}, "vanished"),  # deleted VMs do not come back
    ({"boot_seen": "boot-0", "event_type": "Reboot", "started": True}, "completed"),
    # adopted from a hold record after the state was lost: judged by what was seen since; never seen, it vanished
    ({"adopted": True}, "cancelled"),
    ({"adopted": True, "seen": False, "boot_seen": None, "not_before": None}, "vanished"),
    ({"adopted": True, "seen": False, "started": True}, "completed"),
])
def test_outcome_is_one_rule_for_every_source(facts, expected):
    facts = dict(SEEN, **facts)
    assert lifecycle.outcome(boot_now="boot-1", **facts) == expected


def test_read_boot_id(tmp_path):
    path = tmp_path / "boot_id"
    path.write_text("f00\n")
    assert lifecycle.read_boot_id(str(path)) == "f00"
    assert lifecycle.read_boot_id(str(tmp_path / "none")) is None


# --- DocumentTracker: IMDS documents -------------------------------------------------------------------------------

def test_an_unchanged_document_says_nothing_after_appeared():
    track = tracker()
    changes = track.observe(T0, doc(entry()))
    assert kinds(changes) == ["appeared"]
    assert changes[0].event["EventId"] == EVENT and changes[0].event["affects_this_vm"] is True
    assert changes[0].detail == "Reboot Scheduled for web_0"
    for second in range(1, 20):
        assert track.observe(T0 + second, doc(entry())) == []


def test_started_before_not_before_was_approved():
    track = tracker()
    track.observe(T0, doc(entry(not_before=600)))
    changes = track.observe(T0 + 30, doc(entry(status="Started")))
    assert kinds(changes) == ["approved", "started"]
    assert "before its NotBefore" in changes[0].detail
    track.observe(T0 + 31, doc())
    assert kinds(track.observe(T0 + 32, doc())) == [("gone", "completed")]


def test_started_at_not_before_is_the_platforms_start():
    track = tracker()
    track.observe(T0, doc(entry(not_before=600)))
    assert kinds(track.observe(T0 + 601, doc(entry(status="Started")))) == ["started"]


def test_vanished_before_not_before_is_cancelled_after_confirm_polls():
    track = tracker(confirm_polls=3)
    track.observe(T0, doc(entry()))
    assert track.observe(T0 + 1, doc()) == []
    assert track.observe(T0 + 2, doc()) == []
    changes = track.observe(T0 + 3, doc())
    assert kinds(changes) == [("gone", "cancelled")]
    assert changes[0].detail == "cancelled: gone from the document for 3 successful polls"


def test_a_flap_is_not_an_ending():
    track = tracker(confirm_polls=3)
    track.observe(T0, doc(entry()))
    assert track.observe(T0 + 1, doc()) == []
    assert track.observe(T0 + 2, doc()) == []
    assert track.observe(T0 + 3, doc(entry())) == []  # back: the count starts over
    assert track.observe(T0 + 4, doc()) == []
    assert track.observe(T0 + 5, doc()) == []
    assert kinds(track.observe(T0 + 6, doc())) == [("gone", "cancelled")]


def test_vanished_after_not_before_completed_even_unseen_started():
    track = tracker()
    track.observe(T0, doc(entry(not_before=10)))
    track.observe(T0 + 11, doc())
    assert kinds(track.observe(T0 + 12, doc())) == [("gone", "completed")]


def test_a_reboot_seen_started_again_after_the_boot_id_changed_is_over():
    track = tracker()
    track.observe(T0, doc(entry(not_before=10)))
    assert kinds(track.observe(T0 + 11, doc(entry(status="Started")))) == ["started"]
    after = lifecycle.DocumentTracker(VM, "boot-2", confirm_polls=2, state=track.snapshot())
    changes = after.observe(T0 + 90, doc(entry(status="Started")))
    assert kinds(changes) == [("gone", "completed")]
    assert "rebooted" in changes[0].detail
    # the Started tail IMDS keeps showing after the reboot, then its vanishing: nothing more
    assert after.observe(T0 + 91, doc(entry(status="Started"))) == []
    assert after.observe(T0 + 92, doc()) == []
    assert after.observe(T0 + 93, doc()) == []


def test_gone_across_a_restart_unseen_started_vanished():
    """A stop and deallocation by the VM's owner: Azure clears the pending events, the VM boots again later (here an
    hour later, past NotBefore), and the event is gone without having started."""
    track = tracker()
    track.observe(T0, doc(entry(not_before=600)))
    saved = json.loads(json.dumps(track.snapshot()))
    after = lifecycle.DocumentTracker(VM, "boot-2", confirm_polls=2, state=saved)
    after.observe(T0 + 3600, doc())
    changes = after.observe(T0 + 3601, doc())
    assert kinds(changes) == [("gone", "vanished")]
    assert changes[0].detail.startswith("vanished: gone from the document for 2 successful polls; it was not seen")


def test_a_reboot_still_listed_at_its_not_before_is_completed_by_the_new_boot():
    track = tracker()
    track.observe(T0, doc(entry(not_before=10)))
    track.observe(T0 + 10, doc(entry(not_before=10)))  # due: the platform starts it now, and reboots the VM
    after = lifecycle.DocumentTracker(VM, "boot-2", confirm_polls=2, state=json.loads(json.dumps(track.snapshot())))
    after.observe(T0 + 90, doc())
    assert kinds(after.observe(T0 + 91, doc())) == [("gone", "completed")]


def test_a_restart_with_the_saved_state_neither_repeats_nor_forgets():
    track = tracker()
    track.observe(T0, doc(entry()))
    state = json.loads(json.dumps(track.snapshot()))  # what a state file holds
    again = lifecycle.DocumentTracker(VM, "boot-1", confirm_polls=2, state=state)
    assert again.observe(T0 + 5, doc(entry())) == []
    again.observe(T0 + 6, doc())
    assert kinds(again.observe(T0 + 7, doc())) == [("gone", "cancelled")]


def test_first_seen_started_says_appeared_and_started():
    changes = tracker().observe(T0, doc(entry(status="Started")))
    assert kinds(changes) == ["appeared", "started"]
    assert changes[1].detail == "already Started when first seen"


def test_a_rescheduled_event_is_updated_with_what_changed():
    track = tracker()
    track.observe(T0, doc(entry(not_before=600)))
    changes = track.observe(T0 + 1, doc(entry(not_before=1200, Resources=["web_0", "web_1"])))
    assert kinds(changes) == ["updated"]
    assert changes[0].changed == ["NotBefore", "Resources"]
    assert changes[0].as_dict()["changed"] == ["NotBefore", "Resources"]


def test_peers_events_say_nothing_until_they_list_this_vm():
    track = tracker(selection=EventFilter(this_vm_only=True))
    assert track.observe(T0, doc(entry(resources=["web_1"]))) == []
    changes = track.observe(T0 + 1, doc(entry(resources=["web_1", "web_0"])))
    assert kinds(changes) == ["appeared"]
    assert changes[0].detail.startswith("now selected: ")
    track.observe(T0 + 2, doc())
    assert kinds(track.observe(T0 + 3, doc())) == [("gone", "cancelled")]


def test_an_unselected_event_that_vanishes_says_nothing():
    track = tracker(selection=EventFilter(types=["Freeze"]))
    assert track.observe(T0, doc(entry(type_="Reboot"))) == []
    track.observe(T0 + 1, doc())
    assert track.observe(T0 + 2, doc()) == []
    assert track.events == {}


def test_an_event_back_after_it_was_judged_over_appears_again():
    track = tracker()
    track.observe(T0, doc(entry()))
    track.observe(T0 + 1, doc())
    track.observe(T0 + 2, doc())
    changes = track.observe(T0 + 3, doc(entry()))
    assert kinds(changes) == ["appeared"]
    assert changes[0].detail.startswith("reappeared after it was considered cancelled")


def test_finished_memory_is_bounded_by_retention():
    track = tracker(retention=100)
    track.observe(T0, doc(entry()))
    track.observe(T0 + 1, doc())
    track.observe(T0 + 2, doc())
    assert list(track.finished) == [EVENT.lower()]
    track.observe(T0 + 102, doc())
    assert track.finished == {}


def test_two_events_in_one_document_are_reported_in_a_stable_order():
    changes = tracker().observe(T0, doc(entry(OTHER), entry(EVENT)))
    assert [c.event_id for c in changes] == sorted([OTHER, EVENT], key=str.lower)


def test_confirm_polls_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        tracker(confirm_polls=0)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.update(format="other"), "not a lifecycle state"),
    (lambda s: s.update(version=9), "unknown lifecycle state version"),
    (lambda s: s.update(events=[]), "'events' is not an object"),
    (lambda s: s["events"][EVENT.lower()].update(started="yes"), "'started' is missing or of the wrong type"),
    (lambda s: s["events"][EVENT.lower()].update(id=OTHER), "its id is"),
    (lambda s: s["finished"].update(x={"time": 1, "outcome": "maybe"}), "finished event 'x' is not a record"),
])
def test_a_bad_saved_state_is_refused_with_what_is_wrong(mutate, message):
    track = tracker()
    track.observe(T0, doc(entry()))
    state = track.snapshot()
    mutate(state)
    with pytest.raises(ValueError, match=message):
        lifecycle.DocumentTracker(VM, "boot-1", state=state)


# --- StatusTracker: control-plane reports -----------------------------------------------------------------------

def cp_event(status="Scheduled", not_before=600, **extra):
    return Event.from_json(entry(status=status, not_before=not_before, **extra),
                           known_statuses=CONTROL_PLANE_STATUSES)


def report(track, now, event, key="row-1"):
    return track.observe(now, key, event, {"EventId": event.event_id, "EventStatus": event.status})


def test_status_reports_in_order_and_twice():
    track = lifecycle.StatusTracker()
    assert kinds(report(track, T0, cp_event())) == ["appeared"]
    assert report(track, T0 + 1, cp_event()) == []  # a duplicate delivery, another Event Grid id
    assert kinds(report(track, T0 + 700, cp_event("Started"))) == ["started"]
    assert report(track, T0 + 701, cp_event("Started")) == []
    changes = report(track, T0 + 900, cp_event("Completed"))
    assert kinds(changes) == [("gone", "completed")]
    assert changes[0].detail == "completed: the control plane says Completed"
    assert changes[0].event == {"EventId": EVENT, "EventStatus": "Completed"}


def test_a_late_report_of_an_earlier_status_is_dropped():
    track = lifecycle.StatusTracker()
    report(track, T0, cp_event())
    assert kinds(report(track, T0 + 1, cp_event("Canceled"))) == [("gone", "cancelled")]
    assert report(track, T0 + 2, cp_event("Started")) == []
    assert report(track, T0 + 3, cp_event("Scheduled")) == []
    assert report(track, T0 + 4, cp_event("Completed")) == []  # finished is final


def test_first_reports_of_started_or_finished_events():
    track = lifecycle.StatusTracker()
    assert kinds(report(track, T0, cp_event("Started"), key="a")) == ["appeared", "started"]
    assert kinds(report(track, T0, cp_event("Completed"), key="b")) == [("gone", "completed")]
    assert kinds(report(track, T0, cp_event("Canceled"), key="c")) == [("gone", "cancelled")]


def test_scheduled_then_completed_without_started_in_between():
    track = lifecycle.StatusTracker()
    report(track, T0, cp_event())
    assert kinds(report(track, T0 + 900, cp_event("Completed"))) == [("gone", "completed")]


def test_an_early_start_on_the_control_plane_was_approved():
    track = lifecycle.StatusTracker()
    report(track, T0, cp_event(not_before=600))
    assert kinds(report(track, T0 + 60, cp_event("Started"))) == ["approved", "started"]


def test_a_rescheduled_report_is_updated():
    track = lifecycle.StatusTracker()
    report(track, T0, cp_event(not_before=600))
    changes = report(track, T0 + 1, cp_event(not_before=900))
    assert kinds(changes) == ["updated"] and changes[0].changed == ["NotBefore"]


def test_an_undocumented_status_is_kept_as_pending():
    track = lifecycle.StatusTracker()
    assert kinds(report(track, T0, cp_event("Paused"))) == ["appeared"]
    assert kinds(report(track, T0 + 700, cp_event("Started"))) == ["started"]


def test_status_memory_is_bounded():
    track = lifecycle.StatusTracker(retention=100, limit=3)
    report(track, T0, cp_event("Completed"), key="done")
    report(track, T0 + 101, cp_event(), key="a")
    assert "done" not in track.records  # finished and older than the retention
    for key in ("b", "c", "d"):
        report(track, T0 + 102, cp_event(), key=key)
    assert len(track.records) == 3
