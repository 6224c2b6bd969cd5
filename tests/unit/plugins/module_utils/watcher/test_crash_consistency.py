# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""kill -9 at every I/O operation of the watcher's lifecycle, then a restart that must finish the job.

Why: the watcher holds drift correction across crashes and reboots; a SIGKILL at any instant
(mid-write of its state, of the journal or of the hold record, before a hook or a hold command
starts, around the approval POST) must leave files a new process can read, and that process
must release every hold once its event has left the document, and never before.

How: the simulator runs as its own process (manual clock, driven over its control API, so
this process has no threads and fork() is safe). For crash point N a forked child runs the
daemon from a fresh state directory, counting its I/O operations (os.write to a file, os.fsync,
os.rename, os.replace, subprocess starts, approval POSTs); at the Nth it writes half the
buffer if it is a write, then sends itself SIGKILL. The parent then starts a fresh daemon on
the same directories and drives the event to its end. A calibration run (no crash) lists
every operation and the lifecycle phase it belongs to, so N covers the whole lifecycle.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import traceback

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils import imds as imds_mod
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import HoldManager
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsClient
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import config as config_mod
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.daemon import Daemon
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.journal import Journal
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.notify import Notifier, Syslog
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.state import StateStore
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import TRUST, UID

HERE = os.path.dirname(os.path.abspath(__file__))
SIMULATOR_DIR = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", "..", "simulator"))
if SIMULATOR_DIR not in sys.path:
    sys.path.insert(0, SIMULATOR_DIR)

from imds_simulator.model import EventSpec  # noqa: E402  pylint: disable=wrong-import-position,import-error
from imds_simulator.simulator import Simulator  # noqa: E402  pylint: disable=wrong-import-position,import-error

START = "2025-06-15T15:00:00Z"
START_EPOCH = datetime.datetime(2025, 6, 15, 15, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
FREEZE_ID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
REBOOT_ID = "4CAEA225-A741-474D-A72E-428C86FCD853"
RULES = {"rules": [{"name": "short-freeze", "when": "EventType=='Freeze' && DurationInSeconds < `10`"}]}
# Two lifecycles: a Freeze approved by policy that starts and completes, and a Reboot that is
# never approved and is cancelled before its NotBefore.
SCENARIOS = {
    "freeze-approved-completed": (FREEZE_ID, "completed",
                                  {"id": FREEZE_ID, "type": "Freeze", "resources": ["myvm"], "at": 0, "notice": 60,
                                   "started_for": 4, "duration": 5}),
    "reboot-cancelled": (REBOOT_ID, "cancelled",
                         {"id": REBOOT_ID, "type": "Reboot", "resources": ["myvm"], "at": 0, "notice": 60,
                          "cancel_at": 4}),
}
HOOK = """#!/bin/sh
echo "$IMDS_HOOK_PHASE $IMDS_EVENT_ID ${IMDS_EVENT_OUTCOME:--}" >> %s
"""
# The hold and release commands record what they did and the simulated time they did it at.
RECORDER = """#!/bin/sh
echo "$1 $IMDS_HOLD_REASON_ID $(cat %s)" >> %s
"""
MAX_TICKS = 120


class Clock(object):
    """The manual clock the daemon reads and sleeps on. In the parent it moves the simulator's world;
    in a forked child (which has only a copy of the world) it asks the parent to, over a pipe."""

    def __init__(self, world, now_file):
        self.world = world
        self.now_file = now_file
        self.pipe = None
        self.t = world.now()
        self._publish()

    def sync(self):
        """After a child moved the world's clock, this process's copy of the time catches up."""
        if self.pipe is None:
            self.t = self.world.now()
            self._publish()
        return self

    def now(self):
        return self.t

    def wall(self):
        return START_EPOCH + self.t

    def sleep(self, seconds):
        if seconds <= 0:
            return
        if self.pipe is None:
            self.world.advance(seconds)
        else:
            request, reply = self.pipe
            REAL_WRITE(request, ("%r\n" % seconds).encode("ascii"))
            assert os.read(reply, 1) == b"k"
        self.t += seconds
        self._publish()

    def _publish(self):
        """For the hold commands: when they ran. Replaced atomically (with the real rename, which the
        child's crash counter does not see), so a command never reads a half-written time."""
        with open(self.now_file + ".new", "w") as handle:
            handle.write("%r" % self.t)
        REAL_RENAME(self.now_file + ".new", self.now_file)


REAL_WRITE = os.write
REAL_RENAME = os.rename


@pytest.fixture(scope="module")
def simulator():
    """In this process, no rate limit (the budget is the fault matrix's business), no control listener."""
    scenario = {"name": "crash", "clock": "manual", "start_time": START, "rate_limit": 0, "vms": [{"name": "myvm"}],
                "events": []}
    sim = Simulator.from_scenario(scenario, port=0, control_port=None)
    sim.start()
    yield sim
    sim.stop()


class Point(object):
    """One run: fresh directories and a fresh event (its own EventId) in the running simulator."""

    count = 0

    def __init__(self, base, sim, scenario):
        Point.count += 1
        self.base = base
        template_id, self.outcome, spec = SCENARIOS[scenario]
        self.event_id = "%s%012X" % (template_id[:24], Point.count)
        self.sim = sim
        self.world = sim.world
        self.endpoint = sim.endpoint("myvm")
        os.makedirs(str(base), 0o755, exist_ok=True)
        now = self.world.now()
        spec = dict(spec, id=self.event_id, at=now + spec["at"], notice=spec["notice"])
        if "cancel_at" in spec:
            spec["cancel_at"] += now
        self.world.add_event(EventSpec(**dict((k, tuple(v) if isinstance(v, list) else v) for k, v in spec.items())))
        self.clock = Clock(self.world, str(base / "now"))
        for name in ("state", "holds", "hooks/pre", "hooks/post"):
            os.makedirs(str(base / name), 0o755, exist_ok=True)
        self.marks = str(base / "marks")
        self.hooks_ran = str(base / "hooks-ran")
        self.recorder = str(base / "recorder")
        with open(self.recorder, "w") as handle:
            handle.write(RECORDER % (base / "now", self.marks))
        os.chmod(self.recorder, 0o755)
        for phase in ("pre", "post"):
            hook = str(base / "hooks" / phase / "10-record")
            with open(hook, "w") as handle:
                handle.write(HOOK % self.hooks_ran)
            os.chmod(hook, 0o755)

    def daemon(self):
        imds_mod._WARMED.clear()
        clock = self.clock.sync()
        command = [self.recorder]
        settings = {
            "vm_name": "myvm", "state_dir": str(self.base / "state"), "hooks_dir": str(self.base / "hooks"),
            "hook_timeout": 10, "metrics_file": "", "approval": RULES,
            "hold": {"state_file": str(self.base / "holds" / "holds.json"), "commands": [{
                "name": "recorder", "hold": command + ["hold"], "release": command + ["release"]}]},
        }
        logger = logging.getLogger("imds-watcher-crash")
        # each run paces its requests in its own directory, as a VM of its own would: the shared world's clock
        # would otherwise let one run's requests delay the next run's
        client = ImdsClient(endpoint=self.endpoint, retries=0, timeout=5, first_timeout=10, clock=clock.now,
                            sleep=clock.sleep, environ={imds_mod.PACE_DIR_ENV: str(self.base / "pace")})
        daemon = Daemon(config_mod.parse(settings), trust=TRUST, client=client,
                        holds=HoldManager(state_file=settings["hold"]["state_file"], owner_uid=UID),
                        notifier=Notifier([Syslog(lambda line: None)], logger=logger), clock=clock.wall,
                        monotonic=clock.now, sleep=clock.sleep, boot_id="boot-a", logger=logger)
        daemon.start()
        return daemon

    def gone_at(self):
        event = self.world.event(self.event_id)
        return event.gone_at if event.state == "gone" else None

    def finished(self, daemon):
        return daemon.machine is not None and not daemon.machine.events and self.gone_at() is not None

    def drive(self, daemon, ticks=MAX_TICKS):
        """Tick until the event is over. A child sees only a copy of the world: there, over means
        the daemon tracked the event and then forgot it."""
        delay, tracked = 1.0, False
        for dummy in range(ticks):
            self.clock.sleep(delay)
            delay = daemon.tick()
            if self.clock.pipe is not None:
                tracked = tracked or bool(daemon.machine.events)
                if tracked and not daemon.machine.events:
                    return True
            elif self.finished(daemon):
                return True
        return False


def run_child(point, crash_at, labels_file=None):
    """Fork; the child runs the lifecycle and SIGKILLs itself at I/O operation `crash_at`, while this
    process moves the simulator's clock for it. Returns the child's exit code (-9 when killed)."""
    request_r, request_w = os.pipe()
    reply_r, reply_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(request_w)
        os.close(reply_r)
        with os.fdopen(request_r, "rb") as requests_in:
            for line in requests_in:  # ends when the child exits or is killed
                point.world.advance(float(line))
                REAL_WRITE(reply_w, b"k")
        os.close(reply_w)
        dummy, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    code = 70
    try:
        os.close(request_r)
        os.close(reply_w)
        point.clock.pipe = (request_w, reply_r)
        code = _child(point, crash_at, labels_file)
    except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
    finally:
        os._exit(code)  # pylint: disable=protected-access


def _child(point, crash_at, labels_file):
    labels = []
    seen = [0]
    holder = {}
    real = {"write": os.write, "fsync": os.fsync, "rename": os.rename, "replace": os.replace}
    real_popen = subprocess.Popen.__init__
    real_approve = ImdsClient.approve

    def phase():
        daemon = holder.get("daemon")
        rec = daemon.machine.record(point.event_id) if daemon is not None and daemon.machine is not None else None
        return rec["state"] if rec else "none"

    def op(kind, what, data=None, fd=None):
        seen[0] += 1
        labels.append((kind, what, phase()))
        if seen[0] == crash_at[0]:
            if crash_at[1] == "torn":
                real["write"](fd, bytes(data[:len(data) // 2]))  # half the buffer reaches the file
            os.kill(os.getpid(), signal.SIGKILL)

    def target(fd):
        try:
            return os.path.basename(os.readlink("/proc/self/fd/%d" % fd))
        except OSError:
            return "?"

    def write(fd, data):
        # Only files are crash points: how many writes a pipe to a command takes depends on how fast
        # the command reads (or whether it exits first), which would renumber every later point.
        if stat.S_ISREG(os.fstat(fd).st_mode):
            op("write", target(fd), data, fd)
        return real["write"](fd, data)

    def fsync(fd):
        op("fsync", target(fd))
        return real["fsync"](fd)

    def rename(src, dst, *args, **kwargs):
        op("rename", os.path.basename(str(dst)))
        return real["rename"](src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        op("replace", os.path.basename(str(dst)))
        return real["replace"](src, dst, *args, **kwargs)

    def popen(self, args, *rest, **kwargs):
        op("spawn", os.path.basename(str(args[0])) + (" " + str(args[1]) if len(args) > 1 else ""))
        return real_popen(self, args, *rest, **kwargs)

    def approve(self, event_ids, incarnation=None):
        op("approve-post", "before")
        ids = real_approve(self, event_ids, incarnation)
        op("approve-post", "after")
        return ids

    os.write, os.fsync, os.rename, os.replace = write, fsync, rename, replace
    subprocess.Popen.__init__ = popen
    ImdsClient.approve = approve
    daemon = holder["daemon"] = point.daemon()
    done = point.drive(daemon)
    if labels_file:
        with open(labels_file, "w") as handle:
            json.dump(labels, handle)
    return 0 if done else 3


def verify(point, where):
    """Restart from the files on disk, drive the event to its end, check what is left."""
    store = StateStore(str(point.base / "state" / "watcher-state.json"))
    state, problem = store.read()
    assert problem is None, "%s: the state file is unreadable after the crash: %s" % (where, problem)
    daemon = point.daemon()
    assert point.drive(daemon), "%s: the event never finished after the restart" % where
    marks = open(point.marks).read().splitlines() if os.path.exists(point.marks) else []
    releases = [m for m in marks if m.startswith("release")]
    holds = [m for m in marks if m.startswith("hold")]
    assert holds, "%s: never held: %r" % (where, marks)
    assert releases, "%s: never released: %r" % (where, marks)
    gone_at = point.gone_at()
    for mark in releases:
        assert len(mark.split()) == 3, "%s: a command recorded no time: %r" % (where, marks)
        assert float(mark.split()[2]) >= gone_at, "%s: released before the event left the document at %s: %r" \
            % (where, gone_at, marks)
    assert marks.index(releases[0]) > max(marks.index(h) for h in holds), "%s: held after release: %r" % (where, marks)
    status = daemon.holds.status()
    assert status["held"] is False and status["reasons"] == [], "%s: still held: %r" % (where, status)
    entries = Journal(str(point.base / "state" / "journal.jsonl")).entries()
    mine = [e for e in entries if e["event_id"].lower() == point.event_id.lower()]
    transitions = [e["transition"] for e in mine]
    assert "released" in transitions, "%s: the journal lost the release: %r" % (where, transitions)
    assert transitions.index("released") > transitions.index("gone"), "%s: %r" % (where, transitions)
    assert "detected" in transitions or "adopted" in " ".join(e.get("detail", "") for e in mine), \
        "%s: the journal lost the detection: %r" % (where, transitions)
    outcomes = set(e["outcome"] for e in mine if e.get("outcome"))
    # a hold adopted from the hold record (the crash came before the state named the event) has lost its history:
    # it is judged by what the new process sees of it (its pre-hooks run once it is seen), and when it is never seen
    # again it vanished, since nobody can tell whether it ran
    adopted = any(str(e.get("detail", "")).startswith("adopted") for e in mine)
    after = transitions[max(i for i, e in enumerate(mine) if str(e.get("detail", "")).startswith("adopted")):] \
        if adopted else transitions
    expected = "vanished" if adopted and "pre_hooks" not in after else point.outcome
    assert outcomes == {expected}, "%s: outcome %r" % (where, outcomes)
    hooks = open(point.hooks_ran).read().splitlines() if os.path.exists(point.hooks_ran) else []
    assert "post %s %s" % (point.event_id, expected) in hooks, "%s: post hooks never ran: %r" % (where, hooks)
    state, problem = store.read()
    assert problem is None and state["events"] == {}, "%s: %r" % (where, problem or state["events"])
    for directory in ("state", "holds"):
        stray = [n for n in os.listdir(str(point.base / directory)) if n.endswith(".tmp") or ".corrupt" in n]
        assert not stray, "%s: stray files in %s: %r" % (where, directory, stray)
    approvals = [a for a in point.world.approvals if a["event_id"].lower() == point.event_id.lower()]
    if point.outcome == "cancelled":
        assert approvals == [], "%s: approved outside the policy" % where
    return adopted, len(releases) > 1


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_kill_9_at_every_io_operation(tmp_path, simulator, scenario):
    calibration = Point(tmp_path / "calibration", simulator, scenario)
    labels_file = str(tmp_path / "labels.json")
    assert run_child(calibration, crash_at=(0, None), labels_file=labels_file) == 0
    verify(calibration, "no crash")
    with open(labels_file) as handle:
        labels = [tuple(label) for label in json.load(handle)]
    # every operation is a point (killed just before it); a write is a second one, killed half-way through it
    points = [(n, "before") for n in range(1, len(labels) + 1)]
    points += [(n, "torn") for n in range(1, len(labels) + 1) if labels[n - 1][0] == "write"]
    # the points must reach into every phase that writes something a restart reads back
    torn_phases = set(label[2] for label in labels if label[0] == "write")
    assert {"none", "holding", "pre_hooks", "releasing"} <= torn_phases, torn_phases
    killed = adopted = released_twice = 0
    for n, how in points:
        point = Point(tmp_path / ("p%03d-%s" % (n, how)), simulator, scenario)
        where = "%s: kill -9 %s operation %d/%d %r" % (scenario, how, n, len(labels), labels[n - 1])
        code = run_child(point, crash_at=(n, how))
        assert code == -signal.SIGKILL, "%s: the child was not killed (exit %r)" % (where, code)
        killed += 1
        was_adopted, repeated = verify(point, where)
        adopted += was_adopted
        released_twice += repeated
    assert killed == len(points)
    summary = {}
    for kind, dummy, state in labels:
        summary.setdefault(state, {}).setdefault(kind, 0)
        summary[state][kind] += 1
    print("%s: %d kill -9 points over %d operations (%d restarts adopted the hold, %d ran the idempotent release "
          "command again): %s" % (scenario, len(points), len(labels), adopted, released_twice,
                                  json.dumps(summary, sort_keys=True)))
