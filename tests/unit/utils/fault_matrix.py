# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One table of IMDS faults and odd documents for the entry points that make a single call
(event_info, event_approve, the events lookup), served by the real simulator on 127.0.0.1.

Why a shared table: every entry point must meet the same contract (a clear failure or a
correct answer, never a traceback, never an approval outside what was asked, never more
than 5 requests per second), so the cases are written once and each test file states
what its entry point does with them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SIMULATOR_DIR = os.path.abspath(os.path.join(HERE, "..", "..", "..", "simulator"))
if SIMULATOR_DIR not in sys.path:
    sys.path.insert(0, SIMULATOR_DIR)

from imds_simulator.scenario import Checker, parse_fault  # noqa: E402  pylint: disable=wrong-import-position,import-error
from imds_simulator.simulator import Simulator  # noqa: E402  pylint: disable=wrong-import-position,import-error

MINE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
ATTEMPTS = re.compile(r"(\d+) attempts? in ")
START = "2025-06-15T15:00:00Z"
PAIR = [{"name": "myvm", "availability_set": "as1"}, {"name": "myvm-peer", "availability_set": "as1"}]
MIXED = [{"name": "MyVM", "availability_set": "as1"}, {"name": "myvm-peer", "availability_set": "as1"}]
FREEZE = {"id": MINE, "type": "Freeze", "resources": ["myvm"], "at": 0, "notice": 900, "duration": 5}
STATUSES = (400, 404, 405, 410, 429, 500, 503)
RETRIED = (404, 410, 429, 500, 503)


@dataclasses.dataclass
class FaultCase:
    """`fails`: a message the call must fail with (regex), else it must succeed; `status`: the
    status the failure reports; `requests`: how many IMDS requests the call makes (None: as many
    attempts as the failure reports)."""
    event: dict = dataclasses.field(default_factory=lambda: dict(FREEZE))
    fault: dict = None
    fails: str = None
    status: int = None
    retries: int = 0
    requests: int = 1
    vms: list = None
    vm: str = "myvm"
    api_version: str = "2020-07-01"
    special: str = None
    options: dict = dataclasses.field(default_factory=dict)


def _cases():
    cases = {}
    for code in STATUSES:
        cases["status-%d" % code] = FaultCase(fault={"kind": "status", "code": code}, fails="answered %d" % code,
                                              status=code)
    for code in RETRIED:
        cases["status-%d-retried-once" % code] = FaultCase(fault={"kind": "status", "code": code, "count": 1},
                                                           retries=1, requests=2)
    cases.update({
        # held until the client gave up (see HeldSleep): it times out however loaded the machine is
        "timeout": FaultCase(fault={"kind": "delay", "seconds": 300, "count": 1}, fails="timed out after 0.3 s",
                             options={"timeout": 0.3, "first_timeout": 0.3}),
        # the warm-up outlasts `timeout` (so only `first_timeout` lets the first call through); the calls after it
        # must each be answered within `timeout`, so that is not cut fine for a loaded machine
        # the deadline bounds every attempt, backoff and the cold first request; the message says what happened
        "deadline-no-answer": FaultCase(
            fault={"kind": "delay", "seconds": 300}, retries=100,
            fails=r"IMDS GET /metadata/scheduledevents: no answer within the 0\.5 s deadline: 1 attempt in \d+\.\d s; "
                  r"another after [\d.]+ s of backoff would not fit; last: timed out after 0\.3 s$",
            options={"timeout": 0.3, "first_timeout": 0.3, "deadline": 0.5}),
        "deadline-500-forever": FaultCase(
            fault={"kind": "status", "code": 500}, retries=100, status=500, requests=None,
            # (a loaded machine may take longer than `timeout` for the first 500: that part does not count)
            fails=r"IMDS GET /metadata/scheduledevents: no answer within the 2 s deadline(, plus [\d.]+ s for the "
                  r"service's first answer)?: \d+ attempts? in \d+\.\d s; another after [\d.]+ s of backoff would "
                  r"not fit; last: answered 500 ",
            options={"timeout": 0.3, "deadline": 2}),
        "warm-up-2-minutes-scaled": FaultCase(fault={"kind": "warmup", "seconds": 4.0},
                                              options={"timeout": 3.0, "first_timeout": 60.0}),
        "connection-refused": FaultCase(special="refused", fails="failed to connect", requests=0),
        "connection-reset": FaultCase(fault={"kind": "drop"}, fails="failed to connect|aborted|broke off"),
        "malformed-json": FaultCase(fault={"kind": "malformed"}, fails="malformed JSON"),
        "truncated-json": FaultCase(fault={"kind": "truncated"}, fails="broke off|malformed JSON"),
        "non-object-json": FaultCase(fault={"kind": "non_object"}, fails="JSON array, not an object"),
        "over-1-mib": FaultCase(fault={"kind": "huge", "bytes": 1048577}, fails="more than the 1048576 bytes",
                                status=200),
        "incarnation-reset": FaultCase(special="reset"),
        "cancelled": FaultCase(event=dict(FREEZE, cancel_at=10), special="cancel"),
        "hardware-failure-started-only": FaultCase(event={"id": MINE, "type": "Reboot", "resources": ["myvm"],
                                                          "initial_status": "Started"}),
        "other-vms-only": FaultCase(event=dict(FREEZE, resources=["myvm-peer"])),
        "shared": FaultCase(event=dict(FREEZE, resources=["myvm", "myvm-peer"])),
        "underscore-names-2017-03-01": FaultCase(api_version="2017-03-01"),
        "mixed-case-name": FaultCase(event=dict(FREEZE, resources=["MyVM"]), vms=MIXED, vm="MyVM"),
        "unknown-event-type": FaultCase(special="unknown_type"),
        "notbefore-rfc1123": FaultCase(api_version="2019-08-01"),
        "notbefore-iso8601": FaultCase(api_version="2017-03-01"),
        "notbefore-empty": FaultCase(event={"id": MINE, "type": "Freeze", "resources": ["myvm"],
                                            "initial_status": "Started"}),
    })
    return cases


CASES = _cases()


class HeldSleep(object):
    """The simulator's sleep for `delay` and `warmup` faults: real seconds, cut short when the test has the
    client's result. A `delay` longer than any test thus means "no answer while the client waits", whatever the
    machine's load, and the delayed request still reaches the log soon after.

    release() wakes the sleepers of the moment (a later request sleeps again: a test driving many calls releases
    after each); close() wakes every sleeper, now and later."""

    def __init__(self):
        self._cond = threading.Condition()
        self._generation = 0
        self._closed = False

    def __call__(self, seconds):
        with self._cond:
            generation = self._generation
            self._cond.wait_for(lambda: self._closed or self._generation != generation, seconds)

    def release(self):
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Served(object):
    """The simulator prepared for one case: events in place, the fault armed."""

    def __init__(self, case):
        self.case = case
        scenario = {"name": "faults", "clock": "manual", "start_time": START, "events": [case.event],
                    "vms": case.vms or PAIR}
        self.held = HeldSleep()
        self.sim = Simulator.from_scenario(scenario, port=0, control_port=None, sleep=self.held)
        self.sim.start()
        self.world = self.sim.world
        self.endpoint = self.sim.endpoint(case.vm)
        self.world.advance(1)
        if case.special == "unknown_type":
            live = self.world.events[MINE]
            live.spec = dataclasses.replace(live.spec, type="Hibernate")
        elif case.special == "reset":
            self.control("POST", "/faults", {"kind": "reset_incarnation"})
        elif case.special == "cancel":
            self.world.advance(10)
        elif case.special == "refused":
            self.control("POST", "/vms/%s/reboot" % case.vm, {"seconds": 60})
            self.sim.settle()
        if case.fault is not None:
            self.control("POST", "/faults", dict(case.fault, path="/metadata/scheduledevents"))

    def control(self, method, path, body=None):
        reply = self.sim.control.handle(method, path, json.dumps(body or {}).encode())
        assert reply.status < 300, reply.body
        return json.loads(reply.body) if reply.body else None

    def requests(self, at_least=0):
        """The request log, once the client is done; a delayed request is logged once the simulator answers it,
        after the client gave up, so wait for it (the bound only matters if it never comes)."""
        self.held.close()
        deadline = time.monotonic() + 60
        while True:
            log = self.sim.request_log.query(None, None, None)
            if len(log) >= at_least or time.monotonic() > deadline:
                return log
            time.sleep(0.05)

    def check_budget(self, at_least=0):
        """At most 5 requests in any second, and the simulator never had to throttle on its own."""
        log = self.requests(at_least or 0)
        stamps = [entry["wall_time"] for entry in log]
        for i, start in enumerate(stamps):
            assert len([s for s in stamps[i:] if s - start < 1.0]) <= 5
        assert not [e for e in log if e["status"] == 429 and e["fault"] is None]
        return log

    def stop(self):
        self.held.close()
        self.sim.stop()


def expected_requests(case, message):
    """How many requests the call must have made: the case's number, or the attempts its failure reports."""
    if case.requests is not None:
        return case.requests
    return int(ATTEMPTS.search(message).group(1))


# --- hostile values in every field (tests/unit/utils/hostile.py) ----------------------------------------------------

# Every field of an IMDS event, and the document's own.
EVENT_FIELDS = ("EventId", "EventType", "ResourceType", "Resources", "EventStatus", "NotBefore", "Description",
                "EventSource", "DurationInSeconds")
DOCUMENT_FIELDS = ("DocumentIncarnation",)


class HostileImds(object):
    """One simulator for a whole hostile-input suite: myvm has one Scheduled Reboot (MINE); inject() writes a value
    over one field of what IMDS serves (a `fields` fault), clear() puts things back between cases. No rate limit:
    the suite sends hundreds of requests, each case a few."""

    def __init__(self):
        scenario = {"name": "hostile", "clock": "manual", "start_time": START, "rate_limit": 0, "vms": PAIR,
                    "events": [{"id": MINE, "type": "Reboot", "resources": ["myvm"], "at": 0, "notice": 900}]}
        self.sim = Simulator.from_scenario(scenario, port=0, control_port=None)
        self.sim.start()
        self.world = self.sim.world
        self.world.advance(1)
        self.endpoint = self.sim.endpoint("myvm")

    def inject(self, field, value):
        """Serve `value` in `field` (an event's, or the document's); Resources gets it as its only entry, unless
        it is of the wrong type for a list. Returns what the document now holds there."""
        if field == "Resources" and not isinstance(value, (list, dict)):
            value = [value]
        target = "document" if field in DOCUMENT_FIELDS else "event"
        self.add_fault({"kind": "fields", "path": "/metadata/scheduledevents", "method": "GET",
                        "fields": {target: {field: value}}})
        return value

    def add_fault(self, data):
        """Straight to the world (the control API would also wait for the listeners to settle, at every call)."""
        self.world.add_fault(parse_fault(Checker("fault"), data, "", list(self.world.vms.values())))

    def clear(self):
        self.world.clear_faults()
        if self.world.approvals:
            self.sim.reset()
            self.world.advance(1)

    def stop(self):
        self.sim.stop()
