# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Hostile IMDS answers, end to end through the daemon: the simulator serves them, the real client,
model, machine, hooks and hold commands handle them.

Why: whoever controls what IMDS answers (or anything on the path to it) must not get a command run,
a hold released, or the watcher's memory exhausted. Event fields reach hooks and hold commands only
as data; oversized, over-long and over-nested documents are refused with one clear log line while
the daemon keeps polling. (The client's own refusals are in test_imds.py; this is the daemon's side.)
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import tracemalloc

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsClient
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.daemon import Daemon
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.notify import Notifier, Syslog
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.conftest import (
    SIMULATOR_DIR, START)
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import (
    TRUST, InlineExecutor)
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

from imds_simulator.model import EventSpec  # pylint: disable=import-error  # conftest put it on sys.path

CANARY = "/tmp/imds-canary-%d" % os.getpid()
NASTY = ("$(touch %s) `touch %s` ; | & > < ' \" \\ * ~ {a,b} \nsecond line\r\n\t\x1b[31mred \x00nul "
         "\udcff lone-surrogate \u202e rtl" % (CANARY, CANARY))
HOSTILE_ID = "$(touch %s)`touch %s`;x" % (CANARY, CANARY)
DUMP_HOOK = """#!%s
import json, os, sys
data = sys.stdin.buffer.read()
env = dict((k.decode("latin-1"), v.decode("latin-1")) for k, v in os.environb.items() if k.startswith(b"IMDS_"))
with open(%r, "ab") as handle:
    handle.write(json.dumps({"argv": sys.argv[1:], "stdin": data.decode("latin-1"), "env": env}).encode() + b"\\n")
"""


def as_env(value):
    """What an environment variable can carry: NUL and unpaired surrogates become U+FFFD (docs/watcher.md)."""
    return "".join("\ufffd" if c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF else c for c in value)


class Records(logging.Handler):
    def __init__(self):
        super(Records, self).__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def lines(self, level=logging.WARNING):
        return [r.getMessage() for r in self.records if r.levelno >= level]


@pytest.fixture
def records(rig_factory):  # pylint: disable=unused-argument
    handler = Records()
    logger = logging.getLogger("imds-watcher-test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def no_canary():
    for path in (CANARY,):
        if os.path.exists(path):
            os.unlink(path)
    yield
    assert not os.path.exists(CANARY), "an event field was run as a command"


def dump_hook(rig, phase, dump):
    path = rig.tmp / "hooks" / phase / "10-dump"
    path.write_text(DUMP_HOOK % (sys.executable, str(dump)))
    os.chmod(str(path), 0o755)


def dumped(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("event_id", ["C7061BAC-AFDC-4513-B24B-AA5F13A16123", HOSTILE_ID], ids=["guid", "hostile-id"])
def test_event_fields_reach_hooks_and_hold_commands_only_as_data(rig_factory, event_id):
    rig = rig_factory([])
    hooks_dump, command_dump = rig.tmp / "hooks.jsonl", rig.tmp / "command.jsonl"
    dump_hook(rig, "pre", hooks_dump)
    dump_hook(rig, "post", hooks_dump)
    recorder = rig.tmp / "recorder"
    recorder.write_text(DUMP_HOOK % (sys.executable, str(command_dump)))
    os.chmod(str(recorder), 0o755)
    hold = {"state_file": str(rig.tmp / "holds" / "holds.json"), "commands": [
        {"name": "recorder", "hold": [str(recorder), "hold"], "release": [str(recorder), "release"]}]}
    daemon = rig.daemon(hold=hold, approval={"rules": [{"name": "reboots", "when": "EventType=='Reboot'"}]})
    kind = "Reboot$(touch %s)\n`id`" % CANARY
    source = "User; touch %s\x00 \udcff" % CANARY
    rig.sim.world.add_event(EventSpec(type=kind, resources=("myvm",), at=rig.sim.world.now(), id=event_id,
                                      notice=60, started_for=5, description=NASTY, source=source))
    for dummy in range(3):
        rig.tick(daemon)
    assert rig.sim.world.approvals == []  # "Reboot$(...)" is not 'Reboot': the rule does not match
    rig.sim.world.cancel_event(event_id)
    for dummy in range(6):
        rig.tick(daemon)
    runs = dumped(hooks_dump)
    assert [r["env"]["IMDS_HOOK_PHASE"] for r in runs] == ["pre", "post"]
    for run in runs:
        event = json.loads(run["stdin"].encode("latin-1").decode("utf-8"))["event"]
        assert (event["EventId"], event["EventType"], event["Description"], event["EventSource"]) == \
            (event_id, kind, NASTY, source)
        env = dict((k, v.encode("latin-1").decode("utf-8")) for k, v in run["env"].items())
        assert env["IMDS_EVENT_ID"] == event_id and env["IMDS_EVENT_TYPE"] == kind
        assert env["IMDS_EVENT_SOURCE"] == as_env(source)
    commands = dumped(command_dump)
    assert [c["argv"] for c in commands] == [["hold"], ["release"]]
    for command in commands:
        env = dict((k, v.encode("latin-1").decode("utf-8")) for k, v in command["env"].items())
        assert env["IMDS_HOLD_REASON_ID"] == event_id
        assert kind.split("\n")[0] in env["IMDS_HOLD_REASON"] and "\n" not in env["IMDS_HOLD_REASON"]
    assert rig.holds().status()["held"] is False


def start_simulator_process(tmp_path, faults=(), events=()):
    """The simulator in its own process, so what it allocates is not counted against the daemon."""
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"name": "hostile", "clock": "manual", "start_time": START,
                                    "vms": [{"name": "myvm"}], "events": list(events), "faults": list(faults)}))
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "imds_simulator", "--scenario", str(scenario), "--port", "0",
                             "--control-port", "0", "--ready-file", str(ready), "--rate-limit", "0"],
                            cwd=SIMULATOR_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120  # a Python start-up on a loaded machine; returns as soon as it is ready
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text().strip():
            return proc, json.loads(ready.read_text())["vms"]["myvm"]
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the simulator did not start")


def daemon_for(rig, endpoint):
    client = ImdsClient(endpoint=endpoint, retries=0, timeout=60, first_timeout=60, clock=rig.time.now,
                        sleep=rig.time.sleep)
    options = {"client": client, "holds": rig.holds(), "clock": rig.time.wall, "monotonic": rig.time.now,
               "sleep": rig.time.sleep, "boot_id": "boot-a", "logger": rig.logger,
               "notifier": Notifier([Syslog(rig.syslog.append)], logger=rig.logger),
               "executor": InlineExecutor()}
    daemon = Daemon(rig.config(), trust=TRUST, **options)
    daemon.start()
    return daemon


def ticks_in_bounded_memory(rig, daemon, ticks):
    tracemalloc.start()
    try:
        for dummy in range(ticks):
            rig.tick(daemon)  # never raises
        dummy, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("what", ["10 MB document", "10 000 events"])
def test_oversized_documents_are_refused_in_bounded_memory_with_one_log_line(rig_factory, records, tmp_path, what):
    rig = rig_factory([])
    if what == "10 MB document":
        faults = [{"kind": "huge", "bytes": 10 * 1024 * 1024}]
        events = [{"type": "Freeze", "resources": ["myvm"], "at": 0}]
    else:
        faults = []
        events = [{"type": "Freeze", "resources": ["myvm"], "at": 0, "notice": 900} for dummy in range(10000)]
    proc, endpoint = start_simulator_process(tmp_path, faults, events)
    try:
        daemon = daemon_for(rig, endpoint)
        peak = ticks_in_bounded_memory(rig, daemon, 6)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert peak < 4 * 1024 * 1024, "the daemon held %d bytes for a refused document" % peak
    lines = records.lines()
    assert len(lines) == 1 and "more than the 1048576 bytes allowed" in lines[0], lines
    assert daemon.metrics.get("imds_errors_total") == 6 and daemon.failures == 6
    assert daemon.machine.events == {} and rig.marks() == []


@pytest.mark.parametrize("body, message", [
    (b"[" * 100000 + b"]" * 100000, "nested too deeply|deeper than 32"),
    (b'{"DocumentIncarnation": 1, "Events": [], "x": ' + b"[" * 40 + b"]" * 40 + b"}", "deeper than 32"),
    (b" " * (3 * 1024 * 1024), "more than the 1048576 bytes allowed"),
    (b'{"DocumentIncarnation": 1, "Events": [{"EventId": "\xff\xfe", "EventType": "Reboot"}]}', "not UTF-8"),
])
def test_hostile_bodies_leave_the_daemon_polling_with_one_log_line(rig_factory, records, body, message):
    rig = rig_factory([])
    server = ScriptedServer()
    try:
        server.default = answer(200, body, action="no-length")  # streamed: the cap applies while reading
        daemon = daemon_for(rig, server.endpoint)
        peak = ticks_in_bounded_memory(rig, daemon, 4)
        server.default = answer(200, {"DocumentIncarnation": 1, "Events": []})
        rig.tick(daemon)
    finally:
        server.stop()
    assert peak < 4 * 1024 * 1024
    lines = records.lines()
    assert len(lines) == 1, lines
    assert re.search(message, lines[0]), lines[0]
    assert daemon.failures == 0 and daemon.metrics.get("polls_total") == 5  # and it answers again
