# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Reasons, idempotence, check mode, and crashes at every step of a hold and a release."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import (
    CommandBackend, GuardBackend, PuppetBackend, SystemdBackend, Target)
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.common import CorruptStateError, StateError
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import (
    HoldManager, Reason, default_reason_id, guard_hold)
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.hold.fakes import FakeSystem, Unit

UID = os.getuid()
OPS = Reason("CHG-1", "kernel patching", holder="alice (imds-hold)")
EVENT = Reason("5DD55B64-8E0C-4E4B-9F5A-6E1B7E2F1A10", "Reboot at 10:00", event_id="5DD55B64-8E0C-4E4B-9F5A-6E1B7E2F1A10",
               holder="imds-watcher")
TIMER = SystemdBackend.target("ansible-pull.timer")
LB = CommandBackend.target("lb", ["/bin/lb", "drain"], ["/bin/lb", "undrain"])


def everything():
    return [SystemdBackend.target("ansible-pull.timer", mask=True), PuppetBackend.target(),
            GuardBackend.target(), LB]


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def test_default_reason_id():
    assert default_reason_id() == "manual"
    assert default_reason_id("E-1") == "E-1"


@pytest.mark.parametrize("args, error", [
    (("", "text"), "reason id must not be empty"),
    (("id", "  "), "reason must not be empty"),
    (("a\nb", "text"), "control characters"),
    (("id", "x" * 2000), "longer than"),
    (("id", "text", "E\n1"), "control characters"),
])
def test_reasons_are_validated(args, error):
    with pytest.raises(ValueError, match=error):
        Reason(*args)


def test_two_reasons_release_one_keeps_the_hold(manager, system):
    system.ansible_pull()
    before = system.snapshot()
    manager.hold(OPS, [TIMER, PuppetBackend.target()])
    outcome = manager.hold(EVENT, [TIMER])
    assert outcome.results["systemd:ansible-pull.timer"].steps == ["add reason %r" % EVENT.id]
    status = manager.status()
    assert [(r["id"], r["targets"]) for r in status["reasons"]] == [
        (EVENT.id, ["systemd:ansible-pull.timer"]), ("CHG-1", ["puppet", "systemd:ansible-pull.timer"])]
    assert status["reasons"][0]["event_id"] == EVENT.event_id and status["reasons"][0]["holder"] == "imds-watcher"

    outcome = manager.release("CHG-1")
    assert outcome.results["systemd:ansible-pull.timer"].state == "held"
    assert outcome.results["systemd:ansible-pull.timer"].reasons == [EVENT.id]
    assert outcome.results["puppet"].state == "released"
    assert system.units["ansible-pull.timer"].active == "inactive" and system.read_puppet() is None

    outcome = manager.release(EVENT.id)
    assert outcome.results["systemd:ansible-pull.timer"].state == "released"
    assert system.snapshot() == before and manager.status()["held"] is False


def test_second_hold_with_the_same_reason_changes_nothing(manager, system, state_file):
    system.ansible_pull()
    assert manager.hold(OPS, everything()).changed
    saved, calls, commands = read_bytes(state_file), len(system.calls), len(system.commands)
    outcome = manager.hold(OPS, everything())
    assert not outcome.changed and not outcome.failed
    assert all(r.steps == [] and r.state == "held" for r in outcome.results.values())
    assert read_bytes(state_file) == saved, "not even rewritten"
    assert len(system.calls) == calls and len(system.commands) == commands


def test_same_id_new_text_updates_the_reason_only(manager, system):
    system.ansible_pull()
    manager.hold(OPS, [TIMER])
    calls = len(system.calls)
    outcome = manager.hold(Reason("CHG-1", "kernel patching, take two", holder="bob"), [TIMER])
    assert outcome.changed and outcome.results["systemd:ansible-pull.timer"].steps == ["update reason 'CHG-1'"]
    assert manager.status()["reasons"][0]["text"] == "kernel patching, take two"
    assert len(system.calls) == calls


def test_release_of_an_unknown_reason_changes_nothing(manager, system):
    system.ansible_pull()
    manager.hold(OPS, [TIMER])
    outcome = manager.release("nope")
    assert not outcome.changed and outcome.results["systemd:ansible-pull.timer"].state == "held"
    outcome = manager.release("CHG-1", targets=[Target("systemd", "other.timer", {})])
    assert not outcome.changed and outcome.results["systemd:other.timer"].state == "not held"


def test_release_scope_and_all_reasons(manager, system):
    system.ansible_pull()
    manager.hold(OPS, [TIMER, PuppetBackend.target(), GuardBackend.target()])
    manager.hold(EVENT, [GuardBackend.target()])
    manager.release("CHG-1", targets=[Target("puppet", "puppet-agent", {})])
    assert sorted(t["key"] for t in manager.status()["targets"]) == ["guard", "systemd:ansible-pull.timer"]
    outcome = manager.release(all_reasons=True)
    assert outcome.results["guard"].steps == ["drop reason 'CHG-1'", "drop reason %r" % EVENT.id, "release guard"]
    assert manager.status()["held"] is False and system.units["ansible-pull.timer"].active == "active"
    with pytest.raises(ValueError):
        manager.release()
    with pytest.raises(ValueError):
        manager.hold(OPS, [])


def test_check_mode_reports_and_changes_nothing(manager, system, state_file):
    system.ansible_pull()
    outcome = manager.hold(OPS, everything(), check_mode=True)
    assert outcome.changed and outcome.check_mode and not os.path.exists(state_file)
    assert outcome.results["systemd:ansible-pull.timer"].steps == [
        "hold for reason 'CHG-1'", "stop ansible-pull.timer", "wait for the run in flight of ansible-pull.timer to finish",
        "mask ansible-pull.timer (runtime)"]
    assert outcome.results["puppet"].steps == ["hold for reason 'CHG-1'", "puppet agent --disable"]
    assert outcome.before["targets"] == {} and outcome.after["targets"]["puppet"]["phase"] == "held"
    assert system.units["ansible-pull.timer"].active == "active" and system.read_puppet() is None
    assert not [c for c in system.calls if c[0] == "systemctl" and c[1] != "show"]

    manager.hold(OPS, everything())
    assert not manager.hold(OPS, everything(), check_mode=True).changed
    saved = read_bytes(state_file)
    outcome = manager.release("CHG-1", check_mode=True)
    assert outcome.changed and outcome.after["targets"] == {}
    assert outcome.results["systemd:ansible-pull.timer"].steps == [
        "drop reason 'CHG-1'", "unmask ansible-pull.timer (runtime)", "start ansible-pull.timer",
        "release systemd:ansible-pull.timer"]
    assert outcome.results["command:lb"].steps == ["drop reason 'CHG-1'", "run /bin/lb undrain", "release command:lb"]
    assert read_bytes(state_file) == saved and system.units["ansible-pull.timer"].active == "inactive"


def test_as_dict_is_what_the_module_returns(manager, system):
    system.ansible_pull()
    data = manager.hold(OPS, [TIMER]).as_dict()
    assert data["changed"] is True and data["errors"] == []
    assert data["backends"]["systemd:ansible-pull.timer"] == {
        "backend": "systemd", "name": "ansible-pull.timer", "changed": True, "state": "held", "reasons": ["CHG-1"],
        "notes": [], "steps": ["hold for reason 'CHG-1'", "stop ansible-pull.timer"]}
    assert data["holds"]["held"] is True and data["holds"]["targets"][0]["summary"].startswith("stopped by the hold")
    json.dumps(data)


def test_corrupt_record_stops_everything(manager, system, state_file):
    system.ansible_pull()
    with open(state_file, "w", encoding="utf-8") as handle:
        handle.write('{"format": "imds-scheduled-events/holds", "version": 1, "targets": {"x": ')
    with pytest.raises(CorruptStateError, match="left in place and nothing was changed") as info:
        manager.hold(OPS, [TIMER])
    assert os.path.exists(info.value.kept)
    with pytest.raises(CorruptStateError):
        manager.release("CHG-1")
    assert system.units["ansible-pull.timer"].active == "active"
    assert not [c for c in system.calls if c[1] != "show"]


def test_a_held_lock_makes_writers_wait_then_fail(make_manager, system):
    system.ansible_pull()
    holder = make_manager()
    waiter = make_manager(lock_timeout=10)
    with holder.store.locked():
        with pytest.raises(StateError, match="locked by another process"):
            waiter.hold(OPS, [TIMER])
        assert waiter.status()["held"] is False, "readers never wait"
    assert not waiter.hold(OPS, [TIMER]).failed


def test_guard_hold_counts_from_the_intent_until_the_release_starts():
    rec = {"reasons": [{"id": "a", "text": "t"}], "phase": "holding"}
    assert guard_hold({"targets": {"guard": rec}}) is rec
    assert guard_hold({"targets": {"guard": dict(rec, phase="held")}})
    assert guard_hold({"targets": {"guard": dict(rec, phase="releasing", reasons=[])}}) is None
    assert guard_hold({"targets": {}}) is None


# --- crashes --------------------------------------------------------------------


def recorded_run(manager, system, action):
    """Run `action`, keeping (file on disk, machine) just before and just after every write."""
    points = []
    real_write = manager.store.write

    def write(doc):
        path = manager.store.path
        points.append((read_bytes(path) if os.path.exists(path) else None, system.state()))
        real_write(doc)
        points.append((read_bytes(path), system.state()))

    manager.store.write = write
    action()
    manager.store.write = real_write
    return points


def after_crash(tmp_path, fake_time, point, index, puppet_lock):
    """A new manager on a copy of the record and the machine as they were at the crash
    (puppet's lock file is where the record says: it is rewound in place)."""
    content, machine = point
    directory = tmp_path / ("crash-%d" % index)
    directory.mkdir(mode=0o755)
    os.chmod(str(directory), 0o755)
    state_file = str(directory / "holds.json")
    if content is not None:
        with open(state_file, "wb") as handle:
            handle.write(content)
    system = FakeSystem(fake_time, puppet_lock=puppet_lock)
    system.restore(machine)
    manager = HoldManager(state_file=state_file, run=system.run, clock=fake_time.clock, monotonic=fake_time.monotonic,
                          sleep=fake_time.sleep, owner_uid=UID, environ={"PATH": "/usr/bin:/bin"})
    return manager, system


def without_times(doc):
    targets = json.loads(json.dumps(doc["targets"]))
    for rec in targets.values():
        for key in ("since", "held_at"):
            rec.pop(key, None)
        for reason in rec["reasons"]:
            reason.pop("since", None)
        rec["notes"] = []
    return targets


def held_machine(system):
    return {"units": system.snapshot()["units"], "puppet_ours": (system.read_puppet() or "").startswith("imds-")}


def test_crash_at_any_point_of_a_hold_is_finished_by_hold_or_undone_by_release(manager, system, fake_time, tmp_path):
    system.ansible_pull()
    system.start_run("ansible-pull.service", 4)
    original = system.snapshot()
    points = recorded_run(manager, system, lambda: manager.hold(OPS, everything()))
    assert len(points) >= 12, "intent, every step, and held for each target"
    reference = manager.store.read()
    reference_machine = held_machine(system)
    for index, point in enumerate(points):
        resumed, machine = after_crash(tmp_path, fake_time, point, 2 * index, system.puppet_lock)
        outcome = resumed.hold(OPS, everything())
        assert not outcome.failed, (index, outcome.errors)
        assert without_times(resumed.store.read()) == without_times(reference), index
        assert held_machine(machine) == reference_machine, index
        assert machine.commands[-1][0] == ["/bin/lb", "drain"], index

        undone, machine = after_crash(tmp_path, fake_time, point, 2 * index + 1, system.puppet_lock)
        outcome = undone.release("CHG-1")
        assert not outcome.failed, (index, outcome.errors)
        assert undone.store.read()["targets"] == {}, index
        restored = machine.snapshot()
        del restored["units"]["ansible-pull.service"]  # a run in flight at the crash may still be going
        assert restored == dict(original, units={"ansible-pull.timer": original["units"]["ansible-pull.timer"]}), index


def test_crash_at_any_point_of_a_release_is_finished_by_release_or_rehold(manager, system, fake_time, tmp_path):
    system.ansible_pull()
    original = system.snapshot()
    manager.hold(OPS, everything())
    held = held_machine(system)
    reference_held = manager.store.read()
    points = recorded_run(manager, system, lambda: manager.release("CHG-1"))
    assert system.snapshot() == original
    assert len(points) >= 10
    for index, point in enumerate(points):
        resumed, machine = after_crash(tmp_path, fake_time, point, 2 * index, system.puppet_lock)
        outcome = resumed.release("CHG-1")
        assert not outcome.failed, (index, outcome.errors)
        assert resumed.store.read()["targets"] == {} and machine.snapshot() == original, index
        assert machine.commands[-1][0] == ["/bin/lb", "undrain"], index

        reheld, machine = after_crash(tmp_path, fake_time, point, 2 * index + 1, system.puppet_lock)
        outcome = reheld.hold(OPS, everything())
        assert not outcome.failed, (index, outcome.errors)
        if reheld.store.read()["targets"]:  # crashed before the end: held again with the original prior state
            assert without_times(reheld.store.read()) == without_times(reference_held), index
            assert held_machine(machine) == held, index
            reheld.release("CHG-1")
        else:  # released already: a new hold from scratch
            reheld.release("CHG-1")
        assert machine.snapshot() == original, index


def test_settle_finishes_what_a_crash_left(manager, system):
    system.ansible_pull()

    def crash_at_puppet(argv):
        if argv[:2] == ["puppet", "agent"]:
            raise KeyboardInterrupt("stands for kill -9: nothing after this runs")

    system.on_call = crash_at_puppet
    with pytest.raises(KeyboardInterrupt):
        manager.hold(OPS, [TIMER, PuppetBackend.target()])
    assert [t["phase"] for t in manager.status()["targets"]] == ["holding", "held"]
    system.on_call = None
    outcome = manager.settle()
    assert outcome.results["puppet"].steps == ["puppet agent --disable"]
    assert [t["phase"] for t in manager.status()["targets"]] == ["held", "held"]


def test_settle_after_a_reboot_stops_and_masks_again_what_the_boot_brought_back(manager, system):
    system.ansible_pull()
    original = system.snapshot()
    manager.hold(OPS, everything())
    held = system.snapshot()
    system.reboot()  # the enabled timer is back, the runtime mask is gone; puppet's lock file survives
    assert system.snapshot()["units"]["ansible-pull.timer"] == ("active", "enabled")

    outcome = manager.settle()
    assert not outcome.failed, outcome.errors
    assert outcome.results["systemd:ansible-pull.timer"].steps == [
        "stop ansible-pull.timer again (it came back at boot)",
        "mask ansible-pull.timer (runtime) again (runtime masks end at boot)"]
    assert "puppet" not in outcome.results
    assert system.snapshot() == held
    assert not manager.settle().changed, "nothing to redo a second time"

    manager.release("CHG-1")
    assert system.snapshot() == original


def test_settle_leaves_alone_what_the_hold_did_not_stop(manager, system):
    system.ansible_pull(timer_active=False)  # the operator had stopped it: the hold stops nothing
    manager.hold(OPS, [TIMER])
    system.reboot()  # enabled, so it starts at boot: that is the operator's setup, not the hold's business
    outcome = manager.settle()
    assert not outcome.changed
    assert system.snapshot()["units"]["ansible-pull.timer"] == ("active", "enabled")


def test_settle_reports_a_unit_it_cannot_stop_again_and_keeps_the_hold(manager, system):
    system.ansible_pull()
    manager.hold(OPS, [TIMER])
    system.reboot()
    system.fail[("stop", "ansible-pull.timer")] = 1
    outcome = manager.settle()
    assert outcome.errors and outcome.errors[0].startswith("systemd:ansible-pull.timer: ")
    assert [r["id"] for r in manager.status()["reasons"]] == ["CHG-1"]


# --- early in a boot (imds-watcher-boot.service) -----------------------------------------------------------------


def no_start_or_unmask(calls):
    return [c for c in calls if c[0] == "systemctl" and c[1] in ("start", "unmask")]


def test_at_boot_cancels_the_start_of_a_held_timer_and_masks_it_again(manager, system, state_file):
    system.ansible_pull()
    original = system.snapshot()
    manager.hold(EVENT, everything())
    held = system.snapshot()
    record = read_bytes(state_file)
    system.reboot(early=True)  # before sysinit.target: the timer's start job is queued, the runtime mask is gone
    system.calls = []
    commands = len(system.commands)

    outcome = manager.at_boot()
    assert not outcome.failed, outcome.errors
    assert outcome.results["systemd:ansible-pull.timer"].steps == [
        "stop ansible-pull.timer (its start at boot is cancelled)",
        "mask ansible-pull.timer (runtime) again (runtime masks end at boot)"]
    assert ["systemctl", "stop", "--no-block", "--", "ansible-pull.timer"] in system.calls, "never waits for a job"
    assert outcome.results["puppet"].steps == [] and outcome.results["guard"].steps == [], "they survive a boot"
    assert outcome.results["command:lb"].steps == [] and len(system.commands) == commands, "no command runs at boot"
    assert no_start_or_unmask(system.calls) == []
    assert read_bytes(state_file) == record, "reads the record, never writes it"

    system.finish_boot()
    assert system.snapshot() == held, "the timer never started: it could not fire before the watcher is up"
    assert not manager.settle().changed, "the watcher's settle finds nothing left to redo"
    manager.release(EVENT.id)
    assert system.snapshot() == original


def test_at_boot_stops_what_a_hold_cut_short_meant_to_stop(manager, system):
    system.ansible_pull()

    def crash_at_stop(argv):
        if argv[:2] == ["systemctl", "stop"]:
            raise KeyboardInterrupt("stands for the reboot: nothing after this runs")

    system.on_call = crash_at_stop
    with pytest.raises(KeyboardInterrupt):
        manager.hold(EVENT, [TIMER])
    system.on_call = None
    assert manager.status()["targets"][0]["phase"] == "holding"
    system.reboot(early=True)
    assert manager.at_boot().results["systemd:ansible-pull.timer"].steps == [
        "stop ansible-pull.timer (its start at boot is cancelled)"]
    system.finish_boot()
    assert system.units["ansible-pull.timer"].active == "inactive"
    manager.settle()  # the watcher finishes the hold at its start
    assert manager.status()["targets"][0]["phase"] == "held"


def test_at_boot_leaves_alone_what_no_reason_holds_and_what_the_hold_did_not_stop(manager, system):
    system.ansible_pull(timer_active=False)  # the operator had stopped it (it stays enabled): the hold stops nothing
    system.add(Unit("chef-client.timer", active="active", triggers=["chef-client.service"]))
    manager.hold(OPS, [TIMER, SystemdBackend.target("chef-client.timer")])

    def crash_at_start(argv):
        if argv[:2] == ["systemctl", "start"]:
            raise KeyboardInterrupt("a release cut short")

    system.on_call = crash_at_start
    with pytest.raises(KeyboardInterrupt):
        manager.release(OPS.id, targets=[SystemdBackend.target("chef-client.timer")])
    system.on_call = None
    system.reboot(early=True)
    system.calls = []
    outcome = manager.at_boot()
    assert not outcome.changed and list(outcome.results) == ["systemd:ansible-pull.timer"]
    assert [c for c in system.calls if c[1] != "show"] == []
    system.finish_boot()
    assert system.units["ansible-pull.timer"].active == "active", "enabled: the operator's setup, not the hold's"
    assert system.units["chef-client.timer"].active == "active", "being released: the release finishes later"


def test_at_boot_does_not_mask_what_a_unit_file_in_etc_kept_unmasked(manager, system):
    system.ansible_pull(in_etc=True)
    manager.hold(OPS, [SystemdBackend.target("ansible-pull.timer", mask=True)])
    system.reboot(early=True)
    system.calls = []
    assert manager.at_boot().results["systemd:ansible-pull.timer"].steps == [
        "stop ansible-pull.timer (its start at boot is cancelled)"]
    system.finish_boot()
    assert not [c for c in system.calls if c[1] == "mask"]
    assert not manager.settle().changed, "nor does the watcher's settle: the hold did not mask"


def test_at_boot_notes_a_unit_no_longer_installed_and_reports_one_it_cannot_stop(manager, system):
    system.ansible_pull()
    system.add(Unit("chef-client.timer", active="active"))
    manager.hold(OPS, [TIMER, SystemdBackend.target("chef-client.timer")])
    del system.units["chef-client.timer"]  # its package was removed meanwhile
    system.reboot(early=True)
    system.fail[("stop", "ansible-pull.timer")] = 1
    outcome = manager.at_boot()
    assert outcome.errors == ["systemd:ansible-pull.timer: systemctl stop --no-block -- ansible-pull.timer exited "
                              "with 1: Failed to stop ansible-pull.timer: injected"]
    assert outcome.results["systemd:chef-client.timer"].notes == [
        "chef-client.timer is not installed any more: nothing to stop"]
    assert [r["id"] for r in manager.status()["reasons"]] == ["CHG-1"], "never released"


@pytest.mark.parametrize("content", [b"{not json", b'{"format": "imds-scheduled-events/holds", "version": 1}'])
def test_at_boot_refuses_an_unreadable_record_and_keeps_no_copy(manager, system, state_file, content):
    with open(state_file, "wb") as handle:
        handle.write(content)
    with pytest.raises(CorruptStateError):
        manager.at_boot()
    assert sorted(os.listdir(os.path.dirname(state_file))) == ["holds.json"], "it writes nothing, not even a copy"
    assert system.calls == []
