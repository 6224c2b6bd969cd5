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

import email
import email.policy
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import tracemalloc

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsClient
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.cli import status
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.daemon import Daemon
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.notify import Email, Notifier, Syslog, Webhook
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.conftest import (
    SIMULATOR_DIR, START)
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import (
    TRUST, UID, InlineExecutor)
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.test_notify import Receiver
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile
from ansible_collections.imds.scheduled_events.tests.unit.utils.loopback import start_mailbox
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

from imds_simulator.model import EventSpec  # pylint: disable=import-error  # conftest put it on sys.path
from imds_simulator.scenario import Checker, parse_fault  # pylint: disable=import-error

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


# --- the whole table, in every field, through every output of the daemon ------------------------------------------

VALUES = hostile.strings(CANARY) + hostile.wrong_types()
MINE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
# Where a value goes: the fields that only describe the event, all at once; the id; the VMs it names.
SPOTS = {"descriptive": ("EventType", "ResourceType", "EventStatus", "NotBefore", "Description", "EventSource",
                         "DurationInSeconds", "DocumentIncarnation"),
         "EventId": ("EventId",), "Resources": ("Resources",)}
RECORD = """#!/bin/sh
{ for arg in "$@"; do printf '%%s\\0' "$arg"; done; printf '\\n--stdin--\\n'; cat; printf '\\n--env--\\n'; env -0; } > %s/%s-$(ls %s | wc -l)
"""
# What a terminal or a log line must never get raw: C0 controls but the newline, DEL, C1, bidi controls.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
SERIES = re.compile(r"^imds_scheduled_events_[a-z_]+$")
MAIL_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "Content-Type",
                "Content-Transfer-Encoding", "MIME-Version")


@pytest.fixture(scope="module")
def mailbox():
    from aiosmtpd import controller as controller_mod  # pylint: disable=import-outside-toplevel
    box, controller = start_mailbox(controller_mod)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def webhook():
    server = Receiver()
    yield server
    server.stop()


def recorded(directory, prefix):
    """Every run of a RECORD script, in order: argv, stdin (bytes) and the IMDS_ environment (UTF-8 text)."""
    out = []
    names = sorted(os.listdir(str(directory)), key=lambda n: int(n.rsplit("-", 1)[1]))  # numbered as they ran
    for name in [n for n in names if n.startswith(prefix + "-")]:
        data = (directory / name).read_bytes()
        argv, rest = data.split(b"\n--stdin--\n", 1)
        stdin, env = rest.rsplit(b"\n--env--\n", 1)
        variables = dict(item.split(b"=", 1) for item in env.split(b"\0") if item.startswith(b"IMDS_"))
        out.append({"argv": [a.decode("utf-8") for a in argv.split(b"\0")[:-1]], "stdin": stdin,
                    "env": dict((k.decode(), v.decode("utf-8")) for k, v in variables.items())})
    return out


def hostile_daemon(rig, runs, mailbox, webhook):
    for phase in ("pre", "post"):
        path = rig.tmp / "hooks" / phase / "10-record"
        path.write_text(RECORD % (runs, "hook", runs))
        os.chmod(str(path), 0o755)
    recorder = rig.tmp / "recorder"
    recorder.write_text(RECORD % (runs, "command", runs))
    os.chmod(str(recorder), 0o755)
    hold = {"state_file": str(rig.tmp / "holds" / "holds.json"), "commands": [
        {"name": "recorder", "hold": [str(recorder), "hold"], "release": [str(recorder), "release"]}]}
    notifier = Notifier([Webhook({"url": webhook.url, "use_proxy": False, "timeout": 60}),
                         Email({"host": "127.0.0.1", "port": mailbox.port, "from": "watcher@example.invalid",
                                "to": ["ops@example.invalid"], "starttls": False, "timeout": 60}),
                         Syslog(rig.syslog.append)], logger=rig.logger)
    config = rig.config(hold=hold, approval={"rules": [{"name": "reboots", "when": "EventType=='Reboot'"}]})
    daemon = Daemon(config, trust=TRUST, **dict(rig.daemon_options(), notifier=notifier))
    daemon.start()
    return config, daemon


def served_event(spot, value):
    """What the fields fault writes, and the event as IMDS then serves it (Resources: the value is the only VM)."""
    fields = {"event": {}, "document": {}}
    for field in SPOTS[spot]:
        if field == "DocumentIncarnation":
            fields["document"][field] = value
        elif field == "Resources":
            fields["event"][field] = value if isinstance(value, (list, dict)) else [value]
        else:
            fields["event"][field] = value
    return fields


def terminal_text(text):
    assert not RAW_CONTROL.search(text), "a raw control character reaches the terminal: %r" % (
        RAW_CONTROL.search(text).group(),)


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
@pytest.mark.parametrize("spot", sorted(SPOTS))
def test_every_value_stays_data_through_every_output(rig_factory, records, mailbox, webhook, tmp_path, spot, case):
    rig = rig_factory([])
    runs = tmp_path / "runs"
    runs.mkdir()
    mails, posts = len(mailbox.messages), len(webhook.requests)
    config, daemon = hostile_daemon(rig, runs, mailbox, webhook)
    fields = served_event(spot, case.value)
    rig.sim.world.add_fault(parse_fault(Checker("fault"), {"kind": "fields", "path": "/metadata/scheduledevents",
                                                           "method": "GET", "fields": fields}, "",
                                        list(rig.sim.world.vms.values())))
    rig.sim.world.add_event(EventSpec(type="Reboot", resources=("myvm",), at=rig.sim.world.now(), id=MINE,
                                      notice=600, started_for=5))
    for dummy in range(3):
        rig.tick(daemon)
    rig.sim.world.cancel_event(MINE)
    for dummy in range(4):
        rig.tick(daemon)
    # nothing ran, nothing was rendered, anywhere
    files = [str(p) for p in (rig.tmp / "state").rglob("*") if p.is_file()] + [config["metrics_file"]]
    texts = [open(f, "rb").read() for f in files if os.path.exists(f)]
    hostile.assert_no_trace(CANARY, *texts + rig.syslog + records.lines(logging.DEBUG))
    served = dict(fields["event"])
    hooks, commands = recorded(runs, "hook"), recorded(runs, "command")
    refused = spot == "EventId" and not (isinstance(case.value, str) and case.value.strip())
    if refused:  # no event at all: nothing held, nothing run
        assert hooks == [] and commands == [] and rig.sim.world.approvals == []
        assert any("no EventId" in line for line in records.lines()), records.lines()
        return
    if spot == "Resources":  # never this VM by a pattern; held (as possibly this VM's) only when it names no VM
        assert rig.sim.world.approvals == []
        assert all(h["env"]["IMDS_EVENT_SCOPE"] == "none" for h in hooks), [h["env"] for h in hooks]
        return
    # hooks and hold commands: the value only as data (stdin JSON verbatim, environment as documented)
    assert [h["env"]["IMDS_HOOK_PHASE"] for h in hooks] == ["pre", "post"] and all(h["argv"] == [] for h in hooks)
    for hook in hooks:
        event = json.loads(hook["stdin"].decode("ascii"))["event"]
        assert dict((k, event[k]) for k in served) == served
        if "EventType" in served:
            assert hook["env"]["IMDS_EVENT_TYPE"] == as_env("" if served["EventType"] is None else str(served["EventType"]))
        if "EventId" in served:
            assert hook["env"]["IMDS_EVENT_ID"] == as_env(served["EventId"])
    assert [c["argv"] for c in commands] == [["hold"], ["release"]]
    assert rig.holds().status()["held"] is False
    # the journal: JSON lines, every one readable, the event's id as IMDS gave it
    journal = rig.journal()
    expected = served.get("EventId", MINE)
    for entry in journal:  # a value too long for a line is clipped, saying so
        assert entry["event_id"] == expected or entry["event_id"].endswith(
            "...[%d characters left out]" % (len(expected) - len(entry["event_id"].rsplit("...[", 1)[0])))
    assert journal
    # email: one message per notified transition, its headers not forged, its body the transition intact
    mails = mailbox.messages[mails:]
    assert mails
    for mail in mails:
        message = email.message_from_string(mail["data"], policy=email.policy.default)
        assert sorted(message.keys()) == sorted(MAIL_HEADERS), message.keys()
        terminal_text(str(message["Subject"]))
        body = message.get_content().replace("\r\n", "\n")
        transition = json.loads(body.split("\n\n", 1)[1])
        assert dict((k, transition["event"][k]) for k in served) == served
        terminal_text(body.split("\n", 1)[0])
    # webhook: the transition as JSON, the event intact
    posts = webhook.requests[posts:]
    assert posts and all(dict((k, p["body"]["event"][k]) for k in served) == served for p in posts)
    # syslog and the daemon's own log lines (journald): one line each, nothing raw
    assert rig.syslog
    for line in rig.syslog + records.lines(logging.DEBUG):
        assert "\n" not in line
        terminal_text(line)
    # metrics: the real parser reads the file into the watcher's series only, each label value as written
    text = open(config["metrics_file"]).read()
    families = list(text_string_to_metric_families(text))
    assert all(SERIES.match(f.name) for f in families), [f.name for f in families]
    # `imds-watcher status` as a terminal shows it (the event is over: its journal timeline)
    files = {"state_file": str(rig.tmp / "state" / "watcher-state.json"), "journal_file": str(rig.tmp / "state" /
             "journal.jsonl"), "hold_state_file": str(rig.tmp / "holds" / "holds.json")}
    out, err = io.StringIO(), io.StringIO()
    status(files, out, err, False, 10, {"owner_uid": UID})
    terminal_text(out.getvalue().replace("\n", " ") + err.getvalue().replace("\n", " "))
    # the state file is JSON the next start reads back
    assert isinstance(json.loads(open(files["state_file"]).read()), dict)


def test_an_event_id_no_reason_id_can_be_is_held_across_a_restart_and_released_once(rig_factory, mailbox, webhook,
                                                                                    tmp_path):
    rig = rig_factory([])
    runs = tmp_path / "runs"
    runs.mkdir()
    config, daemon = hostile_daemon(rig, runs, mailbox, webhook)
    odd = "odd id\n" + "x" * 200
    rig.sim.world.add_fault(parse_fault(Checker("fault"), {"kind": "fields", "path": "/metadata/scheduledevents",
                                                           "method": "GET", "fields": {"event": {"EventId": odd}}},
                                        "", list(rig.sim.world.vms.values())))
    rig.sim.world.add_event(EventSpec(type="Reboot", resources=("myvm",), at=rig.sim.world.now(), id=MINE,
                                      notice=600, started_for=5))
    for dummy in range(3):
        rig.tick(daemon)
    (reason,) = rig.holds().status()["reasons"]
    assert reason["id"].startswith("event-") and reason["event_id"] is None
    restarted = Daemon(config, trust=TRUST, **dict(rig.daemon_options(), notifier=Notifier([], logger=rig.logger)))
    restarted.start()
    for dummy in range(3):
        rig.tick(restarted)
    assert rig.holds().status()["held"] is True and [c["argv"] for c in recorded(runs, "command")] == [["hold"]]
    rig.sim.world.cancel_event(MINE)
    for dummy in range(5):
        rig.tick(restarted)
    assert rig.holds().status()["held"] is False
    assert [c["argv"] for c in recorded(runs, "command")] == [["hold"], ["release"]]
