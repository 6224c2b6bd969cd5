# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The pure state machine: documents and results in, decisions out; no sockets, no sleeps."""

from __future__ import annotations

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.events import ThisVm
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import machine as m
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.machine import Machine, Result
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import (
    BOOT_A, BOOT_B, FREEZE_ID, OTHER_ID, PREEMPT_ID, REBOOT_ID, T0, VM, Driver, event)

APPROVE_ALL = ("everything", "`true`")
FREEZE_RULE = ("short-freeze", "EventType=='Freeze' && DurationInSeconds < `10`")


def freeze(status="Scheduled", **kwargs):
    kwargs.setdefault("duration", 5)
    return event(FREEZE_ID, "Freeze", status, **kwargs)


# --- whole lifecycles ------------------------------------------------------------------------


def test_reboot_lifecycle_across_the_reboot_it_causes():
    d = Driver(rules=[("reboot-after-hooks", "EventType=='Reboot'")])
    d.poll(event())
    assert [a.kind for a in d.actions] == ["hold", "hooks", "approve"]
    hold = d.actions[0]
    assert hold.event_id == REBOOT_ID and REBOOT_ID in hold.reason and "Reboot" in hold.reason and "myvm" in hold.reason
    assert d.state() == m.APPROVED
    d.poll(event(status="Started"))
    assert d.state() == m.STARTED
    d.poll(event(status="Started"))
    assert not d.kinds("release")
    d.restart(boot=BOOT_B)  # the VM rebooted: a new process, a new boot id, the saved state
    d.poll(event(status="Started"))
    assert [a.kind for a in d.actions] == ["hold", "hooks", "approve", "hooks", "release"]
    post = d.actions[3]
    assert post.phase == "post" and post.outcome == m.COMPLETED
    assert d.machine.record(REBOOT_ID) is None  # journaled and forgotten
    assert d.transitions() == ["detected", "holding", "held", "pre_hooks", "ready", "approving", "approved", "started",
                               "gone", "post_hooks", "releasing", "released"]
    assert d.journal[-1]["outcome"] == m.COMPLETED
    for dummy in range(5):  # the Started tail after the reboot is not a new event
        d.poll(event(status="Started"))
    d.poll()
    assert len(d.kinds("hold")) == 1


def test_reboot_gone_after_the_reboot_is_confirmed_like_any_other():
    d = Driver(rules=[("reboot", "EventType=='Reboot'")])
    d.poll(event())
    assert d.state() == m.APPROVED
    d.restart(boot=BOOT_B)  # approved, then the VM rebooted before any poll saw it Started: its reboot
    d.poll()
    d.poll()
    assert not d.kinds("release")
    d.poll()
    assert d.kinds("release") and d.journal[-1]["outcome"] == m.COMPLETED
    assert d.kinds("hooks")[-1].outcome == m.COMPLETED


def test_deallocated_by_its_owner_the_pending_event_vanished():
    """Stopped and deallocated while the Reboot was Scheduled (not approved, NotBefore ahead): Azure clears pending
    events; when the VM boots again (an hour later, past NotBefore) the event is gone without having started."""
    d = Driver()
    d.poll(event())
    d.restart(boot=BOOT_B)
    for dummy in range(3):
        d.poll(advance=1200.0)
    post = d.kinds("hooks")[-1]
    assert post.phase == "post" and post.outcome == m.VANISHED
    gone = [e for e in d.journal if e["transition"] == "gone"][0]
    assert gone["outcome"] == m.VANISHED and "not seen to start" in gone["detail"]
    assert d.journal[-1]["transition"] == "released" and d.journal[-1]["outcome"] == m.VANISHED
    assert [n["outcome"] for n in d.notified if n["transition"] == "gone"] == [m.VANISHED]


def test_a_reboot_seen_at_its_not_before_then_gone_across_the_reboot_completed():
    d = Driver()
    d.poll(event(not_before=T0 + 5))
    d.poll(event(not_before=T0 + 5), advance=5.0)  # still Scheduled at NotBefore: the platform starts it now
    d.restart(boot=BOOT_B)
    for dummy in range(3):
        d.poll()
    assert d.kinds("hooks")[-1].outcome == m.COMPLETED


def test_started_in_this_boot_after_an_unrelated_reboot_is_not_over():
    d = Driver()
    d.poll(event())
    d.restart(boot=BOOT_B)  # an operator rebooted while the event was still Scheduled
    d.poll(event())
    d.poll(event(status="Started"))  # the platform starts it now, in this boot: its reboot is still to come
    assert d.state() == m.STARTED and not d.kinds("release")
    d.restart(boot="boot-c")
    d.poll(event(status="Started"))
    assert d.kinds("release")


def test_freeze_is_auto_approved_by_a_rule():
    d = Driver(rules=[FREEZE_RULE])
    d.poll(freeze())
    approve = d.kinds("approve")
    assert len(approve) == 1 and approve[0].event_ids == [FREEZE_ID] and approve[0].rules == {FREEZE_ID: "short-freeze"}
    assert approve[0].plan.approve_ids == [FREEZE_ID]
    d.poll(freeze("Started"))
    for dummy in range(3):
        d.poll()
    assert [a.kind for a in d.actions] == ["hold", "hooks", "approve", "hooks", "release"]
    assert d.transitions(FREEZE_ID)[-1] == "released"


def test_a_long_freeze_does_not_match_the_rule():
    d = Driver(rules=[FREEZE_RULE])
    d.poll(freeze(duration=30))
    assert not d.kinds("approve") and d.state(FREEZE_ID) == m.READY


def test_preempt_is_approved_in_three_decision_steps():
    d = Driver(rules=[("spot", "EventType=='Preempt'")], auto=False)
    first = d.poll(event(PREEMPT_ID, "Preempt", not_before=T0 + 31))
    assert [x.kind for x in first.of("hold")] == ["hold"]
    second = d.feed(d.answer(d.outstanding.pop(0)))
    assert [x.phase for x in second.of("hooks")] == ["pre"]
    third = d.feed(d.answer(d.outstanding.pop(0)))
    assert third.of("approve")[0].event_ids == [PREEMPT_ID]  # observe, hold done, hooks done: approved
    assert d.calls == 3 and d.now == T0 + 1  # in the tick that first saw it, 30 s before NotBefore
    d.answer_outstanding()
    assert d.state(PREEMPT_ID) == m.APPROVED


def test_cancelled_event_releases_and_says_cancelled():
    d = Driver()
    d.poll(event())
    d.poll(event())
    for dummy in range(3):
        d.poll()
    post = d.kinds("hooks")[-1]
    assert post.phase == "post" and post.outcome == m.CANCELLED
    assert d.kinds("release") and d.journal[-1]["outcome"] == m.CANCELLED
    gone = [n for n in d.notified if n["transition"] == "gone"]
    assert len(gone) == 1 and gone[0]["outcome"] == m.CANCELLED


def test_vanished_after_not_before_unseen_started_is_completed():
    d = Driver()
    d.poll(event(not_before=T0 + 5))
    d.poll(advance=10)
    d.poll()
    d.poll()
    assert d.journal[-1]["outcome"] == m.COMPLETED


def test_hardware_failure_reboot_started_first_is_held_then_handled_as_started():
    d = Driver(rules=[APPROVE_ALL])
    d.poll(event(status="Started", Description="Host server is undergoing an emergency repair."))
    assert [a.kind for a in d.actions] == ["hold", "hooks"]  # never approved: it already started
    assert d.state() == m.STARTED
    assert "started" in d.transitions()
    d.poll(event(status="Started"))
    for dummy in range(3):
        d.poll()
    assert [a.kind for a in d.actions] == ["hold", "hooks", "hooks", "release"]


def test_an_event_for_other_vms_only_holds_nothing():
    d = Driver(rules=[APPROVE_ALL])
    d.poll(event(OTHER_ID, resources=["myvm-peer"]))
    assert d.actions == []
    assert d.transitions(OTHER_ID) == ["detected", "ignored"]
    for dummy in range(3):
        d.poll()
    assert d.actions == [] and d.machine.record(OTHER_ID) is None
    assert d.transitions(OTHER_ID)[-1] == "gone"


def test_peer_events_hold_holds_but_never_approves():
    d = Driver(rules=[APPROVE_ALL], peer_events="hold")
    d.poll(event(OTHER_ID, resources=["myvm-peer"]))
    assert [a.kind for a in d.actions] == ["hold", "hooks"]
    assert d.state(OTHER_ID) == m.READY
    assert any("does not list this VM" in n for n in d.machine.record(OTHER_ID)["notes"])


def test_shared_event_is_held_but_not_approved_unless_the_rule_allows():
    d = Driver(rules=[APPROVE_ALL])
    d.poll(freeze(resources=["myvm", "myvm-peer"]))
    assert [a.kind for a in d.actions] == ["hold", "hooks"]
    notes = d.machine.record(FREEZE_ID)["notes"]
    assert any("also lists other VMs" in n for n in notes)
    d.poll(freeze(resources=["myvm", "myvm-peer"]))
    assert len([e for e in d.journal if e["transition"] == "note"]) == 1  # said once

    shared = Driver(rules=[("set-freeze", "EventType=='Freeze'", True)])
    shared.poll(freeze(resources=["myvm", "myvm-peer"]))
    assert shared.kinds("approve")[0].event_ids == [FREEZE_ID]


def test_a_flapping_event_keeps_its_state():
    d = Driver(rules=[FREEZE_RULE])
    d.poll(freeze())
    d.poll()
    d.poll()
    d.poll(freeze())
    assert d.state(FREEZE_ID) == m.APPROVED and not d.kinds("release")
    assert d.machine.record(FREEZE_ID)["missing"] == 0
    d.poll()
    d.poll()
    assert not d.kinds("release")
    d.poll()
    assert d.kinds("release")


def test_incarnation_reset_is_harmless():
    d = Driver()
    d.poll(event(), incarnation=57)
    d.poll(event(), incarnation=1)
    d.poll(event(), incarnation=2)
    assert len(d.kinds("hold")) == 1 and d.state() == m.READY


def test_errors_never_release_and_do_not_count_as_absence():
    d = Driver()
    d.poll(event())
    for dummy in range(20):
        d.error()
    assert d.state() == m.READY and not d.kinds("release")
    d.poll()
    d.error()
    d.poll()
    assert not d.kinds("release")
    d.poll()
    assert d.kinds("release")


def test_a_failing_hold_keeps_retrying_and_never_approves():
    d = Driver(rules=[APPROVE_ALL])
    d.answers["hold"] = False
    d.poll(event())
    assert [a.kind for a in d.actions] == ["hold"]
    d.poll(event(), advance=0.5)  # before the retry is due
    assert len(d.kinds("hold")) == 1
    for dummy in range(6):
        d.poll(event(), advance=60)
    assert len(d.kinds("hold")) == 7 and not d.kinds("approve") and not d.kinds("hooks")
    assert d.transitions().count("hold_failed") == 1  # journaled once per distinct error
    assert [n["transition"] for n in d.notified].count("hold_failed") == 1
    d.answers["hold"] = True
    d.poll(event(), advance=60)
    assert d.state() == m.APPROVED


def test_a_hold_that_never_succeeded_is_still_released_but_runs_no_post_hooks():
    d = Driver()
    d.answers["hold"] = False
    d.poll(event())
    for dummy in range(3):
        d.poll()
    kinds = [a.kind for a in d.actions]
    assert kinds[-1] == "release" and set(kinds[:-1]) == {"hold"}  # retried while confirming it is gone


def test_a_failing_pre_hook_blocks_approval():
    d = Driver(rules=[APPROVE_ALL])
    d.answers["pre"] = False
    d.poll(event())
    assert [a.kind for a in d.actions] == ["hold", "hooks"]
    assert d.state() == m.BLOCKED
    blocked = [e for e in d.journal if e["transition"] == "blocked"][0]
    assert "10-drain exited 3" in blocked["detail"] and blocked["data"]["runs"][0]["rc"] == 3
    assert "blocked" in [n["transition"] for n in d.notified]
    d.poll(event())
    assert not d.kinds("approve")
    d.poll(event(status="Started"))  # the platform starts it at NotBefore anyway
    assert d.state() == m.STARTED
    for dummy in range(3):
        d.poll()
    assert [a.kind for a in d.actions] == ["hold", "hooks", "hooks", "release"]


def test_a_failing_post_hook_is_journaled_and_the_release_goes_on():
    d = Driver()
    d.answers["post"] = False
    d.poll(event())
    for dummy in range(3):
        d.poll()
    assert "post_hooks_failed" in d.transitions() and d.transitions()[-1] == "released"


def test_a_failing_release_keeps_retrying():
    d = Driver()
    d.answers["release"] = False
    d.poll(event())
    for dummy in range(3):
        d.poll()
    d.error(advance=30)
    d.poll(advance=30)
    assert len(d.kinds("release")) == 3 and d.state() == m.RELEASING
    assert d.machine.record(REBOOT_ID)["held"] is True
    d.answers["release"] = True
    d.poll(advance=60)
    assert d.machine.record(REBOOT_ID) is None


def test_a_failed_approval_is_retried_while_the_event_is_scheduled():
    d = Driver(rules=[APPROVE_ALL])
    d.answers["approve"] = False
    d.poll(event())
    assert d.state() == m.READY and d.transitions().count("approval_failed") == 1
    d.poll(event(), advance=0.2)
    assert len(d.kinds("approve")) == 1
    d.answers["approve"] = True
    d.poll(event(), advance=5)
    assert len(d.kinds("approve")) == 2 and d.state() == m.APPROVED


def test_approval_skipped_as_already_started_is_not_a_failure():
    d = Driver(rules=[APPROVE_ALL], auto=False)
    d.poll(event())
    d.feed(d.answer(d.outstanding.pop(0)))
    d.feed(d.answer(d.outstanding.pop(0)))
    approve = d.outstanding.pop()
    d.feed(Result("approve", approve.event_ids, True, data={"approved": [], "skipped": [
        {"EventId": REBOOT_ID, "reason": "already started", "detail": "started before the approval landed"}]}))
    assert d.state() == m.READY and "approval_failed" not in d.transitions()
    d.poll(event(status="Started"))
    assert d.state() == m.STARTED


def test_unknown_types_are_held_even_with_an_event_types_filter():
    d = Driver(event_types=["Reboot"])
    d.poll(event(FREEZE_ID, "Freeze"), event(OTHER_ID, "Hibernate"))
    assert d.state(FREEZE_ID) == m.IGNORED
    assert d.state(OTHER_ID) == m.READY


def test_an_event_that_reappears_after_it_was_over_is_held_again():
    d = Driver()
    d.poll(event())
    for dummy in range(3):
        d.poll()
    d.poll(event())
    assert len(d.kinds("hold")) == 2 and "reappeared" in d.transitions()


def test_finished_events_are_forgotten_a_day_later():
    d = Driver()
    d.poll(event())
    for dummy in range(3):
        d.poll()
    assert REBOOT_ID.lower() in d.machine.state["finished"]
    d.poll(advance=m.FINISHED_RETENTION + 1)
    assert d.machine.state["finished"] == {}


def test_notifications_once_per_transition():
    d = Driver(rules=[FREEZE_RULE])
    d.poll(freeze())
    for dummy in range(3):
        d.poll(freeze())
    d.poll(freeze("Started"))
    d.poll(freeze("Started"))
    for dummy in range(3):
        d.poll()
    sent = [n["transition"] for n in d.notified]
    assert sent == ["detected", "held", "approved", "started", "gone", "released"]
    first = d.notified[0]
    assert first["vm"] == "myvm" and first["event"]["EventType"] == "Freeze" and first["event_id"] == FREEZE_ID


def test_policy_problems_are_noted_once():
    class Broken(object):
        @staticmethod
        def match(description):
            return None, ["rule x failed on %s: invalid type" % description["EventId"]]

    machine = Machine(VM, BOOT_A, Broken())
    d = Driver()
    d.machine = machine
    d.poll(event())
    d.poll(event())
    assert [e["detail"] for e in d.journal if e["transition"] == "note"] == [
        "policy: rule x failed on %s: invalid type" % REBOOT_ID]


# --- crashes and restarts ----------------------------------------------------------------------


def _lifecycle(d, crash_at):
    """A Freeze approved by policy; the process crashes right after machine call number `crash_at`
    (outstanding actions are lost, the machine is rebuilt from its saved state). Returns the state crashed in."""
    script = [freeze()] * 3 + [freeze("Started")] * 2 + [None] * 6
    crashed = None
    for doc_event in script:
        if doc_event is None:
            d.poll()
        else:
            d.poll(doc_event)
        while True:
            if crashed is None and d.calls >= crash_at:
                crashed = d.state(FREEZE_ID)
                d.restart()
            if not d.outstanding:
                break
            d.feed(d.answer(d.outstanding.pop(0)))
    return crashed


@pytest.mark.parametrize("crash_at", range(1, 13))
def test_restart_from_the_saved_state_at_every_point(crash_at):
    d = Driver(rules=[FREEZE_RULE], auto=False)
    assert _lifecycle(d, crash_at) is not None
    assert d.machine.record(FREEZE_ID) is None, "the lifecycle did not finish"
    kinds = [a.kind for a in d.actions]
    releases = [i for i, k in enumerate(kinds) if k == "release"]
    assert releases, kinds
    # nothing released early: the first release comes after the event was gone for confirm_polls polls
    gone = [e for e in d.journal if e["transition"] == "gone"]
    assert len(gone) == 1 and gone[0]["outcome"] == m.COMPLETED
    assert d.transitions(FREEZE_ID)[-1] == "released"
    assert "hold" in kinds and kinds.index("hold") < releases[0]


@pytest.mark.parametrize("state_name", [m.HOLDING, m.PRE_HOOKS, m.APPROVING, m.POST_HOOKS, m.RELEASING])
def test_an_action_lost_in_a_crash_is_issued_again(state_name):
    d = Driver(rules=[FREEZE_RULE], auto=False)
    d.poll(freeze())
    while d.state(FREEZE_ID) != state_name:
        if not d.outstanding:
            d.poll()  # towards the post phase: the event is gone
            continue
        d.feed(d.answer(d.outstanding.pop(0)))
    lost = d.outstanding[0]
    d.restart()
    assert d.state(FREEZE_ID) == state_name
    if state_name == m.APPROVING:
        d.poll(freeze())
        assert d.outstanding[0].kind == "approve" and d.state(FREEZE_ID) == m.APPROVING
    else:
        d.error()  # an action lost in a crash needs no document to be issued again
        again = d.outstanding[0]
        assert (again.kind, getattr(again, "phase", None)) == (lost.kind, getattr(lost, "phase", None))


def test_saved_state_is_validated():
    with pytest.raises(ValueError, match="format"):
        Machine(VM, BOOT_A, state={"format": "something else"})
    state = m.new_state()
    state["events"]["x"] = {"id": "x", "state": "exploded"}
    with pytest.raises(ValueError, match="unknown state"):
        Machine(VM, BOOT_A, state=state)


def test_adopted_holds_are_released_only_when_the_event_is_over():
    d = Driver()
    step = d.machine.adopt(T0, [{"id": REBOOT_ID, "event_id": REBOOT_ID, "since": "2025-06-15T15:00:00Z"}])
    d.process(step)
    assert d.state() == m.HELD and d.actions == []  # no event data yet: hooks wait for the document
    d.poll(event())
    assert [a.kind for a in d.actions] == ["hooks"] and d.state() == m.READY
    for dummy in range(3):
        d.poll()
    assert [a.kind for a in d.actions] == ["hooks", "hooks", "release"]


def test_adopted_hold_for_an_event_already_gone():
    d = Driver()
    d.process(d.machine.adopt(T0, [{"id": REBOOT_ID, "event_id": REBOOT_ID}]))
    d.poll()
    d.error()
    d.poll()
    assert not d.kinds("release")
    d.poll()
    assert [a.kind for a in d.actions] == ["hooks", "release"]
    assert d.kinds("hooks")[0].event == {"EventId": REBOOT_ID}


def test_observe_needs_a_document_or_an_error():
    with pytest.raises(ValueError):
        Machine(VM, BOOT_A).observe(T0)
    with pytest.raises(ValueError):
        Machine(VM, BOOT_A).feed(T0, Result("explode", "x", True))
    with pytest.raises(ValueError):
        Machine(VM, BOOT_A, confirm_polls=0)
    with pytest.raises(ValueError):
        Machine(VM, BOOT_A, peer_events="sometimes")


def test_reason_text_is_one_bounded_line():
    d = Driver()
    d.poll(event(resources=["myvm"] + ["peer-%03d\n" % i for i in range(200)]))
    reason = d.kinds("hold")[0].reason
    assert "\n" not in reason and len(reason) <= m.MAX_REASON


def test_this_vm_rebooting_says_nothing_about_a_peer_reboot():
    d = Driver(peer_events="hold")
    d.poll(event(OTHER_ID, resources=["myvm-peer"]))
    d.restart(boot=BOOT_B)
    d.poll(event(OTHER_ID, resources=["myvm-peer"], status="Started"))
    assert d.state(OTHER_ID) == m.STARTED and not d.kinds("release")


# --- blind: this VM's name is unknown --------------------------------------------------------------------------------


def test_without_a_name_every_event_is_held_and_none_approved():
    d = Driver(rules=[APPROVE_ALL], vm=ThisVm.unknown())
    d.poll(event(), freeze(resources=["myvm-peer"]), event(PREEMPT_ID, "Preempt", not_before=T0 + 31))
    assert sorted(a.event_id for a in d.kinds("hold")) == sorted([REBOOT_ID, FREEZE_ID, PREEMPT_ID])
    for dummy in range(5):
        d.poll(event(), freeze(resources=["myvm-peer"]), event(PREEMPT_ID, "Preempt", not_before=T0 + 31))
    assert not d.kinds("approve")
    assert set(d.state(i) for i in (REBOOT_ID, FREEZE_ID, PREEMPT_ID)) == {m.READY}
    rec = d.machine.record(FREEZE_ID)
    assert rec["scope"] == "unknown" and rec["event"]["affects_this_vm"] is None
    assert any("name is unknown" in n for n in rec["notes"])
    assert d.transitions(FREEZE_ID).count("note") == 1  # said once, not every poll
    assert all(e["vm"] is None for e in d.journal)


def test_once_the_name_is_learnt_its_own_events_are_approved_and_peers_stay_held_until_gone():
    d = Driver(rules=[APPROVE_ALL], vm=ThisVm.unknown())
    peer = freeze(resources=["myvm-peer"])
    d.poll(event(), peer)
    d.machine.identify(VM)
    d.poll(event(), peer)
    assert [a.event_ids for a in d.kinds("approve")] == [[REBOOT_ID]]  # never the peer's
    assert d.state(FREEZE_ID) == m.READY and d.machine.record(FREEZE_ID)["held"]
    assert "this VM is myvm: the event's scope is other_vms; it stays held until it is gone, and is never approved " \
        "from here" in d.machine.record(FREEZE_ID)["notes"]
    d.poll(event(status="Started"), peer)
    for dummy in range(3):
        d.poll(event(status="Started"))
    assert [a.event_id for a in d.kinds("release")] == [FREEZE_ID]  # by the normal rule: gone for confirm_polls
    assert [(h.event_id, h.outcome) for h in d.kinds("hooks") if h.phase == "post"] == [(FREEZE_ID, m.CANCELLED)]


def test_without_a_name_a_started_reboot_after_a_reboot_is_not_taken_for_this_vms():
    d = Driver(vm=ThisVm.unknown())
    d.poll(event(resources=["myvm-peer"]))
    d.restart(boot=BOOT_B)
    d.poll(event(resources=["myvm-peer"], status="Started"))  # maybe a peer's: its reboot says nothing about it
    assert d.state() == m.STARTED and not d.kinds("release")


@pytest.mark.parametrize("phase", ["pre", "post"])
def test_a_hook_phase_in_flight_at_a_crash_is_journaled_as_interrupted_and_runs_again(phase):
    d = Driver(auto=False)
    d.poll(event())
    d.feed(d.answer(d.outstanding.pop(0)))  # held; the pre-hooks are issued
    if phase == "post":
        d.feed(d.answer(d.outstanding.pop(0)))
        for dummy in range(3):
            d.poll()  # gone: the post-hooks are issued
    assert d.outstanding[0].kind == "hooks" and d.outstanding[0].phase == phase
    d.restart()
    d.error()
    interrupted = [e for e in d.journal if e["transition"] == "hooks_interrupted"]
    assert len(interrupted) == 1 and "%s-event hooks" % phase in interrupted[0]["detail"]
    assert "they run again, from the first" in interrupted[0]["detail"]
    assert [(a.kind, a.phase) for a in d.outstanding] == [("hooks", phase)]
    d.error()
    assert d.transitions().count("hooks_interrupted") == 1, "said once"


def test_pre_hooks_that_end_after_their_event_is_over_do_not_count_as_its_post_hooks():
    """Results come back from lanes later, in any order: the pre-hooks may still run when the event goes."""
    d = Driver(auto=False)
    d.poll(event())
    d.feed(d.answer(d.outstanding.pop(0)))
    pre = d.outstanding.pop(0)
    for dummy in range(3):
        d.poll()
    post = d.outstanding.pop(0)
    assert (post.kind, post.phase, d.state()) == ("hooks", "post", m.POST_HOOKS)
    d.feed(d.answer(pre))  # the late pre-hooks' result
    assert d.state() == m.POST_HOOKS and d.outstanding == [] and "ready" not in d.transitions()
    d.feed(d.answer(post))
    assert d.state() == m.RELEASING and d.outstanding[0].kind == "release"


def test_an_interrupted_pre_phase_of_an_event_that_is_over_is_not_run_again():
    d = Driver(auto=False)
    d.poll(event())
    d.feed(d.answer(d.outstanding.pop(0)))  # the pre-hooks are in flight ...
    d.poll()
    d.poll()  # ... while the event is missing from two polls
    d.restart()
    d.poll()  # the third: over
    interrupted = [e for e in d.journal if e["transition"] == "hooks_interrupted"]
    assert len(interrupted) == 1 and "the event moved on, so not again" in interrupted[0]["detail"]
    assert [(a.kind, a.phase) for a in d.outstanding] == [("hooks", "post")]
