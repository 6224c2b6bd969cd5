# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The watcher daemon against every misbehaviour the simulator can produce, one table of cases.

Why: Azure's IMDS throttles, times out, resets, warms up for two minutes, serves
half bodies and forgets its incarnation, and events flap, vanish or start without
notice. Whatever it does, the daemon must keep ticking, must never release a hold
before its event has left the document, must never approve outside its policy and
must stay within the 5 requests/s budget. Each case drives tick() on the manual
clock (the delay tick() returns is the sleep), injecting the fault twice: when the
event appears and again while its disappearance is being confirmed.
"""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsClient
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.daemon import Daemon
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.notify import Notifier, Syslog
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import (
    TRUST, InlineExecutor)

EID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
RULES = {"rules": [{"name": "short-freeze", "when": "EventType=='Freeze' && DurationInSeconds < `10`"},
                   {"name": "user-reboot", "when": "EventType=='Reboot' && EventSource=='User'"}]}
SHARED_RULES = {"rules": [{"name": "set-freeze", "when": "EventType=='Freeze'", "allow_shared": True}]}
EVERYTHING = {"rules": [{"name": "everything", "when": "`true`"}]}
PAIR = [{"name": "myvm", "availability_set": "as1"}, {"name": "myvm-peer", "availability_set": "as1"}]
MIXED = [{"name": "MyVM", "availability_set": "as1"}, {"name": "myvm-peer", "availability_set": "as1"}]

FREEZE = {"id": EID, "type": "Freeze", "resources": ["myvm"], "at": 5, "notice": 60, "started_for": 20,
          "duration": 5}
REBOOT = {"id": EID, "type": "Reboot", "resources": ["myvm"], "at": 5, "notice": 60, "started_for": 20}


@dataclasses.dataclass
class Case:
    """One row: the event, the fault, how the daemon is configured, and what must come of it."""
    event: dict
    fault: dict = None               # added with from=now when the event appears and again once it is gone
    approved: bool = True            # does the policy (and approval.py) allow this VM to approve it?
    held: bool = True                # does the watcher hold drift correction for it?
    outcome: str = "completed"
    rules: dict = dataclasses.field(default_factory=lambda: RULES)
    settings: dict = dataclasses.field(default_factory=dict)
    vms: list = None
    endpoint_vm: str = "myvm"
    api_version: str = "2020-07-01"
    special: str = None              # flap, refused, warmup, unknown_type


TIMEOUT = 3.0  # the client's timeout once warm; the warm-up case's first call outlasts it


def status(code):
    return {"kind": "status", "code": code, "window": 4}


CASES = {
    # every IMDS status, while the event appears and while its disappearance is confirmed
    "status-400": Case(FREEZE, status(400)),
    "status-404": Case(FREEZE, status(404)),
    "status-405": Case(FREEZE, status(405)),
    "status-410": Case(FREEZE, status(410)),
    "status-429": Case(FREEZE, status(429)),
    "status-500": Case(FREEZE, status(500)),
    "status-503": Case(FREEZE, status(503)),
    # transport and body faults
    # no answer until the tick is over (Run.tick releases it): the client times out however loaded the machine is
    "timeout": Case(FREEZE, {"kind": "delay", "seconds": 300, "count": 2}),
    "connection-reset": Case(FREEZE, {"kind": "drop", "window": 4}),
    "connection-refused": Case(FREEZE, special="refused"),
    "malformed-json": Case(FREEZE, {"kind": "malformed", "window": 4}),
    "truncated-json": Case(FREEZE, {"kind": "truncated", "window": 4}),
    "non-object-json": Case(FREEZE, {"kind": "non_object", "window": 4}),
    "over-1-mib": Case(FREEZE, {"kind": "huge", "bytes": 1048577, "window": 3}),
    "warm-up": Case(FREEZE, special="warmup"),
    "incarnation-reset": Case(FREEZE, {"kind": "reset_incarnation"}),
    # event shapes
    "flapping": Case(REBOOT, approved=False, special="flap"),
    "cancelled": Case(dict(REBOOT, cancel_at=30), approved=False, outcome="cancelled"),
    "hardware-failure-started-only": Case({"id": EID, "type": "Reboot", "resources": ["myvm"], "at": 5,
                                           "initial_status": "Started", "started_for": 20, "source": "User"},
                                          approved=False, rules=EVERYTHING),
    "other-vms-only": Case(dict(FREEZE, resources=["myvm-peer"]), approved=False, held=False, rules=EVERYTHING),
    "other-vms-only-held-by-peer_events": Case(dict(FREEZE, resources=["myvm-peer"]), approved=False,
                                               rules=EVERYTHING, settings={"peer_events": "hold"}),
    "shared-without-allow_shared": Case(dict(FREEZE, resources=["myvm", "myvm-peer"]), approved=False),
    "shared-with-allow_shared": Case(dict(FREEZE, resources=["myvm", "myvm-peer"]), rules=SHARED_RULES),
    "underscore-names-2017-03-01": Case(FREEZE, api_version="2017-03-01", rules=EVERYTHING),
    "mixed-case-vm-name": Case(dict(FREEZE, resources=["MyVM"]), vms=MIXED, endpoint_vm="MyVM"),
    "mixed-case-name-from-imds": Case(dict(FREEZE, resources=["MyVM"]), vms=MIXED, endpoint_vm="MyVM",
                                      settings={"vm_name": None}),
    "unknown-event-type": Case(FREEZE, approved=False, special="unknown_type"),
    "user-reboot-by-rule": Case(dict(REBOOT, source="User")),
    "platform-reboot-not-in-policy": Case(REBOOT, approved=False),
    # every NotBefore form: RFC1123 (>= 2017-08-01), ISO-8601 (2017-03-01), "" (Started)
    "notbefore-rfc1123": Case(FREEZE, api_version="2019-08-01", rules=SHARED_RULES),
    "notbefore-iso8601": Case(FREEZE, api_version="2017-03-01", rules=SHARED_RULES),
    "notbefore-empty-started": Case(dict(FREEZE, initial_status="Started", notice=None), approved=False,
                                    rules=SHARED_RULES),
}


class Run(object):
    """Drives one daemon tick by tick and checks the invariants after every tick."""

    def __init__(self, rig, case):
        self.rig = rig
        self.case = case
        self.world = rig.sim.world
        # `timeout` must fit every normal answer on a loaded machine (hundreds of ticks): not cut fine
        client = ImdsClient(endpoint=rig.sim.endpoint(case.endpoint_vm), api_version=case.api_version, retries=0,
                            timeout=TIMEOUT, first_timeout=60.0, clock=rig.time.now, sleep=rig.time.sleep)
        options = {"client": client, "holds": rig.holds(), "clock": rig.time.wall, "monotonic": rig.time.now,
                   "sleep": rig.time.sleep, "boot_id": "boot-a", "logger": rig.logger,
                   "notifier": Notifier([Syslog(rig.syslog.append)], logger=rig.logger),
                   "executor": InlineExecutor()}
        settings = dict({"approval": case.rules}, **case.settings)
        self.daemon = Daemon(rig.config(**settings), trust=TRUST, **options)
        self.daemon.start()
        self.ticks = 0
        self.hidden = False
        self.flapped = 0

    def add_fault(self, fault):
        fault = dict(fault)
        window = fault.pop("window", None)
        fault["from"] = self.world.now()
        if window is not None:
            fault["until"] = self.world.now() + window
        self.rig.control("POST", "/faults", fault)

    def disturb(self):
        """The case's fault, applied at the current instant."""
        case = self.case
        if case.fault is not None:
            self.add_fault(case.fault)
        elif case.special == "refused":
            self.rig.control("POST", "/vms/%s/reboot" % case.endpoint_vm, {"seconds": 4})
            self.rig.sim.settle()

    def tick(self, delay):
        self.rig.advance(delay)
        if self.case.special == "refused":
            self.rig.sim.settle()
        delay = self.daemon.tick()  # never raises, whatever IMDS did
        self.rig.held.release()  # a delayed answer the client gave up on comes now, not later
        self.ticks += 1
        self.check()
        return delay

    def check(self):
        event = self.world.event(EID)
        for mark in self.rig.marks():
            if mark.startswith("release"):
                assert event.state == "gone", "released while the event is %s" % event.state
        for approval in self.world.approvals:
            assert self.case.approved, "approved outside the policy: %r" % approval
            assert approval["vm"].lower() == "myvm"

    def flap(self):
        """The event drops out of the document for two polls, fewer than confirm_polls (3)."""
        with self.world._lock:  # pylint: disable=protected-access
            visible = self.world._visible[self.case.endpoint_vm]  # pylint: disable=protected-access
            if self.hidden:
                visible[EID] = self.world.events[EID]
            else:
                visible.pop(EID, None)
        self.hidden = not self.hidden

    def drive(self):
        delay, appeared, gone, gone_at = 1.0, False, False, None
        while self.ticks < 400:
            event = self.world.event(EID)
            if not appeared and event.state != "pending":
                appeared = True
                self.disturb()
            if appeared and not gone and event.state == "gone":
                gone, gone_at = True, self.world.now()
                self.disturb()
            if self.case.special == "flap" and appeared and self.flapped < 4 and event.state == "Scheduled" \
                    and self.daemon.machine.record(EID) and self.daemon.machine.record(EID)["state"] != "holding":
                self.flap()
                self.flapped += 1
            delay = self.tick(delay)
            if gone and not self.daemon.machine.events and self.world.now() > gone_at + 15:
                return

    def requests(self):
        return list(self.rig.sim.request_log.query(None, None, None))


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault_matrix(rig_factory, name):
    case = CASES[name]
    event = dict(case.event)
    if event.get("notice") is None:
        event.pop("notice", None)
    rig = rig_factory([event], vms=case.vms or PAIR)
    if case.special == "unknown_type":
        live = rig.sim.world.events[EID]
        live.spec = dataclasses.replace(live.spec, type="Hibernate")
    if case.special == "warmup":
        # the first call enables the service and blocks far longer than the short timeout
        # (once: later requests inside a longer window would block for just about `timeout`)
        rig.control("POST", "/faults", {"kind": "warmup", "seconds": TIMEOUT + 1, "from": 0, "count": 1})
    run = Run(rig, case)
    run.drive()

    assert run.daemon.machine.events == {}, "the event was never finished: %r" % run.daemon.machine.events
    if case.held:
        assert rig.marks() == ["hold %s" % EID, "release %s" % EID]
        transitions = rig.transitions(EID)
        assert transitions[-1] == "released" and transitions.count("released") == 1
        assert transitions.count("held") == 1 and "reappeared" not in transitions
        assert [e for e in rig.journal() if e.get("outcome")][-1]["outcome"] == case.outcome
    else:
        assert rig.marks() == [] and rig.transitions(EID)[:2] == ["detected", "ignored"]
        assert "holding" not in rig.transitions(EID)
    assert rig.holds().status()["held"] is False
    assert bool(rig.sim.world.approvals) is case.approved
    if case.fault is not None and case.fault["kind"] != "reset_incarnation" or case.special == "refused":
        assert run.daemon.metrics.get("imds_errors_total") >= 1  # the fault did reach the daemon
    if case.special == "flap":
        assert run.flapped == 4
    if case.special == "flap":
        assert run.flapped == 4
    if case.special == "warmup":
        assert [e for e in run.requests() if e["fault"] == "warmup"]
    # the budget: never more than 5 requests in any second, and the simulator never had to throttle
    log = run.requests()
    stamps = [entry["sim_time"] for entry in log]
    for i, start in enumerate(stamps):
        assert len([s for s in stamps[i:] if s - start < 1.0]) <= 5
    assert not [e for e in log if e["status"] == 429 and e["fault"] is None]
