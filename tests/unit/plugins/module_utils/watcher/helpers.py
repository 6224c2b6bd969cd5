# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Documents built in a line, a driver that plays the daemon's part for the pure machine (it
answers the machine's actions or keeps them outstanding, keeps the journal and the notifications,
and can crash and restart the machine from its saved state at any point), and the executors that
let tests run the daemon's lanes without threads: inline, or one job when the test says so."""

from __future__ import annotations

import datetime
import os

from ansible_collections.imds.scheduled_events.plugins.module_utils.events import Document, ThisVm, format_rfc1123
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsError
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.config import Trust
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.machine import Machine, Result
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.policy import Policy, Rule

UID = os.getuid()
TRUST = Trust(owner_uid=UID)  # the tests' files belong to whoever runs them; the daemon trusts only root
VM = ThisVm("myvm")
T0 = 1750000000.0
BOOT_A = "0f5b6f5e-boot-a"
BOOT_B = "7c1d2e3f-boot-b"
REBOOT_ID = "4CAEA225-A741-474D-A72E-428C86FCD853"
FREEZE_ID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
PREEMPT_ID = "1E5F1B9A-3C6D-4E8F-9A0B-2C3D4E5F6A7B"
OTHER_ID = "9D8C7B6A-5F4E-4D3C-8B2A-1F0E9D8C7B6A"


def event(event_id=REBOOT_ID, kind="Reboot", status="Scheduled", resources=("myvm",), not_before=T0 + 900,
          duration=-1, **extra):
    raw = {"EventId": event_id, "EventType": kind, "ResourceType": "VirtualMachine", "Resources": list(resources),
           "EventStatus": status, "EventSource": "Platform", "DurationInSeconds": duration, "Description": ""}
    if status == "Started" or not_before is None:
        raw["NotBefore"] = ""
    else:
        raw["NotBefore"] = format_rfc1123(datetime.datetime.fromtimestamp(not_before, datetime.timezone.utc))
    raw.update(extra)
    return raw


def doc(*events, **kwargs):
    return Document.from_json({"DocumentIncarnation": kwargs.get("incarnation", 1), "Events": list(events)})


def policy(*rules):
    """policy(("name", "expression"), ("name", "expression", True)) -- the third item is allow_shared."""
    return Policy([Rule(*r) for r in rules])


class Driver(object):
    """Plays the daemon for a Machine. `answers` says how each kind of action ends (True: ok)."""

    def __init__(self, rules=(), boot=BOOT_A, auto=True, vm=VM, **options):
        self.policy = policy(*rules) if rules else None
        self.vm = vm
        self.boot = boot
        self.options = options
        self.now = T0
        self.auto = auto
        self.answers = {"hold": True, "pre": True, "post": True, "approve": True, "release": True}
        self.machine = Machine(vm, boot, self.policy, **options)
        self.actions = []       # every action decision issued, in order
        self.outstanding = []   # issued and not answered (auto=False, or crashed)
        self.journal = []
        self.notified = []
        self.calls = 0          # machine calls (observe/feed), the "decision steps"

    # --- time and inputs -------------------------------------------------------------------

    def at(self, seconds):
        self.now = T0 + seconds
        return self

    def poll(self, *events, **kwargs):
        self.now += kwargs.get("advance", 1.0)
        self.calls += 1
        if kwargs.get("error"):
            step = self.machine.observe(self.now, error=ImdsError("IMDS GET answered 500"))
        else:
            step = self.machine.observe(self.now, document=doc(*events, incarnation=kwargs.get("incarnation", 1)))
        self.process(step)
        return step

    def error(self, advance=1.0):
        return self.poll(error=True, advance=advance)

    def feed(self, result):
        self.calls += 1
        step = self.machine.feed(self.now, result)
        self.process(step)
        return step

    def answer(self, decision):
        if decision.kind == "hold":
            ok = self.answers["hold"]
            return Result("hold", decision.event_id, ok, "" if ok else "hold failed: systemctl stop exited 1")
        if decision.kind == "hooks":
            ok = self.answers[decision.phase]
            return Result("hooks", decision.event_id, ok, "" if ok else "10-drain exited 3", phase=decision.phase,
                          data={"runs": [{"hook": "/etc/hooks/%s/10-drain" % decision.phase, "rc": 0 if ok else 3}]})
        if decision.kind == "approve":
            ok = self.answers["approve"]
            return Result("approve", decision.event_ids, ok, "" if ok else "approval failed: 500",
                          data={"approved": decision.event_ids} if ok else {})
        ok = self.answers["release"]
        return Result("release", decision.event_id, ok, "" if ok else "release failed: puppet agent --enable exited 1")

    def process(self, step):
        queue = list(step.decisions)
        while queue:
            decision = queue.pop(0)
            if decision.kind == "journal":
                self.journal.append(decision.entry)
            elif decision.kind == "notify":
                self.notified.append(decision.transition)
            else:
                self.actions.append(decision)
                if self.auto:
                    self.calls += 1
                    queue.extend(self.machine.feed(self.now, self.answer(decision)).decisions)
                else:
                    self.outstanding.append(decision)

    def answer_outstanding(self):
        while self.outstanding:
            decision = self.outstanding.pop(0)
            self.feed(self.answer(decision))

    def restart(self, boot=None):
        """A crash (outstanding actions are lost) and a new process from the saved state."""
        state = self.machine.snapshot()
        self.outstanding = []
        if boot is not None:
            self.boot = boot
        self.machine = Machine(self.vm, self.boot, self.policy, state=state, **self.options)
        return self

    # --- reading ---------------------------------------------------------------------------

    def kinds(self, kind, event_id=None):
        return [a for a in self.actions if a.kind == kind and (event_id is None or event_id in _ids(a))]

    def transitions(self, event_id=REBOOT_ID):
        return [e["transition"] for e in self.journal if e["event_id"] == event_id]

    def state(self, event_id=REBOOT_ID):
        rec = self.machine.record(event_id)
        return rec["state"] if rec else None


def _ids(decision):
    return getattr(decision, "event_ids", None) or [decision.event_id]


class InlineExecutor(object):
    """Runs a lane's jobs at once, in the thread that submits them: the daemon then carries out a decision and its
    consequences within the tick, as a test stepping the clock tick by tick expects."""

    @staticmethod
    def start(lanes, lane):
        while lanes.run_next(lane):
            pass


class ManualExecutor(object):
    """Runs nothing until the test says so: run(lane) runs that lane's next job in the test's thread, so a test can
    hold a hook or a hold "in flight" for as many ticks as it likes."""

    def __init__(self):
        self.lanes = None

    def start(self, lanes, lane):  # pylint: disable=unused-argument
        self.lanes = lanes

    def waiting(self, prefix=""):
        """The labels of the jobs queued on the lanes whose name starts with `prefix`."""
        return [label for lane, label in self.lanes.waiting() if lane.startswith(prefix)] if self.lanes else []

    def run(self, lane):
        """The next job of the first lane whose name starts with `lane`; False when there is none."""
        for name, dummy in self.lanes.waiting() if self.lanes else []:
            if name.startswith(lane):
                return self.lanes.run_next(name)
        return False

    def run_all(self):
        """Every queued job, lane by lane, until none is left (a job's result may queue more only once delivered)."""
        while self.lanes is not None and self.lanes.waiting():
            self.lanes.run_next(self.lanes.waiting()[0][0])
