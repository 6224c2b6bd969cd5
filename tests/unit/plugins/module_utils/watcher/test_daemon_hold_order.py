# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The order in which the daemon holds (quick targets first; a Preempt's slow targets beside its hooks and
approval, never before them) and its tick cadence, on the rig: the simulator on a manual clock, a real hold
record, real commands, and lanes run inline or, with ManualExecutor, one job when the test says so."""

from __future__ import annotations

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import (
    CommandBackend, GuardBackend, PuppetBackend, SystemdBackend)
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.daemon import split_targets
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import ManualExecutor

REBOOT_ID = "4CAEA225-A741-474D-A72E-428C86FCD853"
PREEMPT_ID = "1E5F1B9A-3C6D-4E8F-9A0B-2C3D4E5F6A7B"
REBOOT = {"id": REBOOT_ID, "type": "Reboot", "resources": ["myvm"], "at": 2, "notice": 900, "started_for": 60}
PREEMPT = {"id": PREEMPT_ID, "type": "Preempt", "resources": ["myvm"], "at": 2}
RULES = {"rules": [{"name": "reboot", "when": "EventType=='Reboot'"}, {"name": "spot", "when": "EventType=='Preempt'"}]}


class RecordingHolds(object):
    """The daemon's HoldManager, noting for each hold call the targets and who had approved the event by then."""

    def __init__(self, manager, rig, event_id):
        self.manager = manager
        self.rig = rig
        self.event_id = event_id
        self.calls = []

    def hold(self, reason, targets, **kwargs):
        self.calls.append(([t.key for t in targets], list(self.rig.event(self.event_id).approved_by)))
        return self.manager.hold(reason, targets, **kwargs)

    def __getattr__(self, name):
        return getattr(self.manager, name)


def daemon_with(rig, event_id, command_hold=None, executor=None):
    settings = rig.settings()
    settings["hold"]["guard"] = True
    if command_hold:
        settings["hold"]["commands"][0]["hold"] = command_hold
    daemon = rig.daemon(approval=RULES, hold=settings["hold"], executor=executor)
    daemon.holds = RecordingHolds(daemon.holds, rig, event_id)
    return daemon


def test_split_targets_puts_the_local_quick_ones_first():
    targets = [PuppetBackend.target(), CommandBackend.target("drain", ["true"], ["true"]),
               SystemdBackend.target("ansible-pull.timer"), GuardBackend.target()]
    quick, slow = split_targets(targets)
    assert [t.key for t in quick] == ["systemd:ansible-pull.timer", "guard"]
    assert [t.key for t in slow] == ["puppet", "command:drain"]


def test_quick_targets_are_held_before_the_slow_ones_and_both_before_approval(rig_factory):
    rig = rig_factory([REBOOT])
    daemon = daemon_with(rig, REBOOT_ID)
    for dummy in range(3):
        rig.tick(daemon)
    assert daemon.holds.calls == [(["guard"], []), (["command:marker"], [])]
    assert rig.event(REBOOT_ID).approved_by == ["myvm"]
    assert sorted(t["key"] for t in rig.holds().status()["targets"]) == ["command:marker", "guard"]
    held = [e for e in rig.journal() if e["transition"] == "held"][0]
    assert held["detail"] == "held: command:marker, guard"


def test_a_preempt_is_approved_while_its_slow_targets_wait_in_the_hold_lane(rig_factory):
    rig = rig_factory([PREEMPT])
    lanes = ManualExecutor()
    daemon = daemon_with(rig, PREEMPT_ID, executor=lanes)
    for dummy in range(2):  # t=2: it appears
        rig.tick(daemon)
    assert lanes.waiting("urgent") == ["the hold for %s" % PREEMPT_ID] and not lanes.waiting("hold")
    assert lanes.run("urgent")  # the quick pass
    daemon.collect()  # held: its slow pass goes to the hold lane, its pre-hooks to its own lane
    assert lanes.waiting("hold") == ["the slow hold for %s" % PREEMPT_ID]
    assert lanes.run("hooks")
    daemon.collect()
    assert rig.event(PREEMPT_ID).approved_by == ["myvm"], "approved with the slow pass still waiting"
    assert daemon.holds.calls == [(["guard"], [])] and rig.marks() == []
    assert lanes.run("hold")
    daemon.collect()
    assert daemon.holds.calls == [(["guard"], []), (["command:marker"], ["myvm"])]
    assert rig.marks() == ["hold %s" % PREEMPT_ID] and daemon.deferred == {}
    held = [e for e in rig.journal() if e["transition"] == "held"][0]
    assert held["detail"] == "held: guard; command:marker held next, beside the hooks and the approval (Preempt)"
    lifecycle = ["detected", "holding", "held", "pre_hooks", "ready", "approving", "approved"]
    assert rig.transitions(PREEMPT_ID)[:7] == lifecycle
    assert sorted(t["key"] for t in rig.holds().status()["targets"]) == ["command:marker", "guard"]


def test_inline_the_slow_pass_of_a_preempt_runs_in_the_tick_that_holds_it(rig_factory):
    rig = rig_factory([PREEMPT])
    daemon = daemon_with(rig, PREEMPT_ID)
    for dummy in range(3):
        rig.tick(daemon)
    assert [keys for keys, dummy in daemon.holds.calls] == [["guard"], ["command:marker"]]
    assert rig.event(PREEMPT_ID).approved_by == ["myvm"] and daemon.deferred == {}


def test_a_deferred_hold_that_fails_is_retried_every_tick_and_dropped_by_the_release(rig_factory):
    rig = rig_factory([PREEMPT])
    flag = rig.tmp / "drain-ok"
    daemon = daemon_with(rig, PREEMPT_ID, command_hold=["/bin/sh", "-c", "test -e %s" % flag])
    for dummy in range(2):  # t=2: it appears
        rig.tick(daemon)
    assert rig.event(PREEMPT_ID).approved_by == ["myvm"]
    assert list(daemon.deferred) == [PREEMPT_ID]
    assert daemon.metrics.get("action_failures_total", action="hold") == 1
    rig.tick(daemon)
    assert daemon.metrics.get("action_failures_total", action="hold") == 2
    flag.write_text("")
    rig.tick(daemon)
    assert daemon.deferred == {}
    assert daemon.metrics.get("action_failures_total", action="hold") == 2
    for dummy in range(120):  # evicted, gone, released
        rig.tick(daemon)
    assert rig.holds().status()["held"] is False
    assert rig.transitions(PREEMPT_ID)[-1] == "released"


def test_a_failing_deferred_hold_is_dropped_when_the_event_is_released(rig_factory):
    rig = rig_factory([PREEMPT])
    daemon = daemon_with(rig, PREEMPT_ID, command_hold=["/bin/sh", "-c", "exit 3"])
    for dummy in range(120):
        rig.tick(daemon)
    assert daemon.deferred == {}
    assert rig.transitions(PREEMPT_ID)[-1] == "released"
    assert rig.holds().status()["held"] is False


def test_a_restart_between_the_approval_and_the_slow_pass_holds_the_slow_targets(rig_factory):
    rig = rig_factory([PREEMPT])
    lanes = ManualExecutor()
    daemon = daemon_with(rig, PREEMPT_ID, executor=lanes)
    for dummy in range(2):
        rig.tick(daemon)
    assert lanes.run("urgent")
    daemon.collect()
    assert lanes.run("hooks")
    daemon.collect()  # approved; killed before the slow pass, which never runs
    assert rig.event(PREEMPT_ID).approved_by == ["myvm"] and rig.marks() == []
    assert lanes.waiting("hold") == ["the slow hold for %s" % PREEMPT_ID]
    assert [t["key"] for t in rig.holds().status()["targets"]] == ["guard"]
    daemon = daemon_with(rig, PREEMPT_ID)  # the restarted process, from the files on disk
    rig.tick(daemon)
    assert daemon.deferred == {} and rig.marks() == ["hold %s" % PREEMPT_ID]
    reasons = rig.holds().status()["reasons"]
    assert [(r["id"], r["targets"]) for r in reasons] == [(PREEMPT_ID, ["command:marker", "guard"])]
    rig.tick(daemon)
    assert rig.marks() == ["hold %s" % PREEMPT_ID]


def test_killed_between_the_quick_and_the_slow_pass_the_restart_holds_the_rest_before_hooks_and_approval(
        rig_factory):
    rig = rig_factory([REBOOT])
    daemon = daemon_with(rig, REBOOT_ID)
    real_hold = daemon.holds.hold

    def killed_after_the_quick_pass(reason, targets, **kwargs):
        outcome = real_hold(reason, targets, **kwargs)
        if [t.key for t in targets] == ["guard"]:
            raise KeyboardInterrupt("stands for kill -9: nothing after this runs, not even a save")
        return outcome
    daemon.holds.hold = killed_after_the_quick_pass
    for dummy in range(3):
        try:
            rig.tick(daemon)
        except KeyboardInterrupt:
            break
    assert [(r["id"], r["targets"]) for r in rig.holds().status()["reasons"]] == [(REBOOT_ID, ["guard"])]
    assert rig.hooks_ran() == [] and rig.event(REBOOT_ID).approved_by == []

    daemon = daemon_with(rig, REBOOT_ID)  # the restarted process: its state says the hold was in flight
    rig.tick(daemon)
    assert (["command:marker"], []) in daemon.holds.calls, "the rest is held before any approval"
    assert all(approved == [] for dummy, approved in daemon.holds.calls)
    assert rig.marks() == ["hold %s" % REBOOT_ID]
    assert [(r["id"], r["targets"]) for r in rig.holds().status()["reasons"]] == [
        (REBOOT_ID, ["command:marker", "guard"])]
    assert "adopted" in [e["transition"] for e in rig.journal()] or "held" in rig.transitions(REBOOT_ID)


def test_ticks_start_every_poll_interval_whatever_a_tick_takes(rig_factory):
    rig = rig_factory([])
    daemon = rig.daemon(start=False)
    clock = {"now": 0.0}
    sleeps = []

    def tick():
        clock["now"] += 0.25  # the tick's own work
        if len(sleeps) >= 4:
            daemon.stopping = True
        return 1.0

    def sleep(seconds):
        sleeps.append(seconds)
        clock["now"] += seconds

    daemon.tick, daemon.start, daemon.sleep = tick, lambda: None, sleep
    daemon.monotonic = lambda: clock["now"]
    assert daemon.run(install_signals=False) == 0
    assert sleeps == [0.5, 0.25, 0.5, 0.25]  # 0.75 s of waiting after each 0.25 s tick
