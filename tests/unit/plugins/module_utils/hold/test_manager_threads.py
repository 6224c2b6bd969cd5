# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Two threads of one process on one hold record, as the watcher's lanes use it: a slow step (an operator command)
does not stop a quick hold of another target, and a target changed while its steps run ends in the state the record
asks for. A command blocks on an Event the test sets; every wait is bounded and on a condition."""

from __future__ import annotations

import threading

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import CommandBackend, SystemdBackend
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import Reason

BOUND = 30.0
OPS = Reason("CHG-1", "kernel patching", holder="alice (imds-hold)")
EVENT = Reason("E-1", "Reboot at 10:00", event_id="E-1", holder="imds-watcher")
TIMER = SystemdBackend.target("ansible-pull.timer")
LB = CommandBackend.target("lb", ["/bin/lb", "drain"], ["/bin/lb", "undrain"])


class Gate(object):
    """Holds the call the test names until release(); `reached` is set when the call arrives."""

    def __init__(self, manager, argv):
        self.argv = argv
        self.reached = threading.Event()
        self.opened = threading.Event()
        self.real = manager.context.run
        manager.context.run = self.run

    def run(self, argv, **kwargs):
        if argv == self.argv:
            self.reached.set()
            assert self.opened.wait(BOUND), "the test never opened the gate"
        return self.real(argv, **kwargs)

    def release(self):
        self.opened.set()


class Background(object):
    """`work()` in a thread; result() waits for it (bounded) and re-raises what it raised."""

    def __init__(self, work):
        self.value = self.error = None
        self.thread = threading.Thread(target=self._run, args=(work,))
        self.thread.start()

    def _run(self, work):
        try:
            self.value = work()
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc

    def result(self):
        self.thread.join(BOUND)
        assert not self.thread.is_alive(), "the thread never ended"
        if self.error is not None:
            raise self.error
        return self.value


def written_when(manager, condition):
    """An Event set once the record is written in a state the condition accepts."""
    seen = threading.Event()
    real = manager.store.write

    def write(doc):
        real(doc)
        if condition(doc):
            seen.set()
    manager.store.write = write
    return seen


def test_a_quick_hold_goes_on_while_another_thread_runs_a_slow_command(manager, system):
    system.ansible_pull()
    gate = Gate(manager, ["/bin/lb", "drain"])
    slow = Background(lambda: manager.hold(EVENT, [LB]))
    try:
        assert gate.reached.wait(BOUND)
        outcome = manager.hold(OPS, [TIMER])  # the lock is this process's already: no wait for the command
        assert not outcome.failed and system.units["ansible-pull.timer"].active == "inactive"
        phases = dict((t["key"], t["phase"]) for t in manager.status()["targets"])
        assert phases == {"command:lb": "holding", "systemd:ansible-pull.timer": "held"}
    finally:
        gate.release()
    assert not slow.result().failed
    phases = dict((t["key"], (t["phase"], [r["id"] for r in t["reasons"]])) for t in manager.status()["targets"])
    assert phases == {"command:lb": ("held", ["E-1"]), "systemd:ansible-pull.timer": ("held", ["CHG-1"])}


def test_a_hold_that_arrives_during_another_threads_release_wins(manager, system):
    system.ansible_pull()
    manager.hold(EVENT, [TIMER])
    assert system.units["ansible-pull.timer"].active == "inactive"
    gate = Gate(manager, ["systemctl", "start", "--", "ansible-pull.timer"])
    releasing = Background(lambda: manager.release("E-1"))
    held_again = written_when(manager, lambda doc: [r["id"] for r in doc["targets"].get(TIMER.key, {}).get(
        "reasons", [])] == ["CHG-1"])
    try:
        assert gate.reached.wait(BOUND)  # the release is starting the timer again ...
        holding = Background(lambda: manager.hold(OPS, [TIMER]))  # ... when a hold for another reason comes
        assert held_again.wait(BOUND)
    finally:
        gate.release()
    released = releasing.result()
    assert released.results[TIMER.key].state != "released"
    assert not holding.result().failed
    assert system.units["ansible-pull.timer"].active == "inactive", "stopped again after the release's start"
    targets = manager.status()["targets"]
    assert [(t["key"], t["phase"], [r["id"] for r in t["reasons"]]) for t in targets] == [
        (TIMER.key, "held", ["CHG-1"])]


def test_a_slow_hold_whose_reason_is_dropped_meanwhile_ends_released(manager, system):
    gate = Gate(manager, ["/bin/lb", "drain"])
    holding = Background(lambda: manager.hold(EVENT, [LB]))
    dropped = written_when(manager, lambda doc: doc["targets"].get(LB.key, {}).get("reasons") == [])
    try:
        assert gate.reached.wait(BOUND)
        releasing = Background(lambda: manager.release("E-1"))
        assert dropped.wait(BOUND)
    finally:
        gate.release()
    holding.result()
    releasing.result()
    assert [argv for argv, dummy, dummy in system.commands] == [["/bin/lb", "drain"], ["/bin/lb", "undrain"]]
    assert manager.status()["targets"] == []
