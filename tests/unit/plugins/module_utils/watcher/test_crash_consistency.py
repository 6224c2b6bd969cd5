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

The watcher's actions run in lanes; here they run inline, in the order the loop issues them, except
in the "hook-while-held" scenario: there the Reboot's pre-event hook runs in a lane thread of its own
(a real hook process, waiting on a FIFO) from the moment it is issued until the Preempt that appears
next has been held, so every operation of that hold is a kill point "while a hook of event A runs and
event B is being held". The hook thread's counted operations (its spawns) happen while the loop waits
for the hook's "started" line, and it does none after, so the numbering is the same in every run.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import select
import signal
import stat
import subprocess
import sys
import threading
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
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import (
    TRUST, UID, InlineExecutor)

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
PREEMPT_ID = "1E5F1B9A-3C6D-4E8F-9A0B-2C3D4E5F6A7B"
RULES = {"rules": [{"name": "short-freeze", "when": "EventType=='Freeze' && DurationInSeconds < `10`"},
                   {"name": "spot", "when": "EventType=='Preempt'"}]}
REBOOT_CANCELLED = {"id": REBOOT_ID, "type": "Reboot", "resources": ["myvm"], "at": 0, "notice": 60, "cancel_at": 4}
# Per scenario, its events: (template id, expected outcome, spec). A Freeze approved by policy that starts and
# completes; a Reboot that is never approved and is cancelled before its NotBefore; and that Reboot with a pre-hook
# still running when a Preempt appears a tick later, is held, approved, evicted and gone.
SCENARIOS = {
    "freeze-approved-completed": [(FREEZE_ID, "completed",
                                   {"id": FREEZE_ID, "type": "Freeze", "resources": ["myvm"], "at": 0, "notice": 60,
                                    "started_for": 4, "duration": 5})],
    "reboot-cancelled": [(REBOOT_ID, "cancelled", REBOOT_CANCELLED)],
    "hook-while-held": [(REBOOT_ID, "cancelled", dict(REBOOT_CANCELLED, cancel_at=8)),
                        (PREEMPT_ID, "completed", {"id": PREEMPT_ID, "type": "Preempt", "resources": ["myvm"],
                                                   "at": 1.5, "notice": 30, "started_for": 3})],
}
HOOK = """#!/bin/sh
echo "$IMDS_HOOK_PHASE $IMDS_EVENT_ID ${IMDS_EVENT_OUTCOME:--}" >> %s
"""
# The hold and release commands record what they did and the simulated time they did it at.
RECORDER = """#!/bin/sh
echo "$1 $IMDS_HOLD_REASON_ID $(cat %s)" >> %s
"""
# The Reboot's pre-hook in "hook-while-held": while the `staged` file exists it says it runs on the `started` FIFO
# and waits for a line on the `go` FIFO (its read ends too when the last writer, the daemon, dies).
WAITING_HOOK = """#!/bin/sh
[ -e %(staged)s ] || exit 0
echo started > %(started)s
read line < %(go)s
"""
MAX_TICKS = 120
BOUND = 60.0


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
    """One run: fresh directories and fresh events (each its own EventId) in the running simulator."""

    count = 0

    def __init__(self, base, sim, scenario):
        Point.count += 1
        self.base = base
        self.sim = sim
        self.world = sim.world
        self.endpoint = sim.endpoint("myvm")
        os.makedirs(str(base), 0o755, exist_ok=True)
        now = self.world.now()
        self.events = []  # (event id, expected outcome)
        for template_id, outcome, spec in SCENARIOS[scenario]:
            event_id = "%s%012X" % (template_id[:24], Point.count)
            self.events.append((event_id, outcome))
            spec = dict(spec, id=event_id, at=now + spec["at"])
            if "cancel_at" in spec:
                spec["cancel_at"] += now
            self.world.add_event(EventSpec(**dict((k, tuple(v) if isinstance(v, list) else v)
                                                  for k, v in spec.items())))
        self.event_id = self.events[0][0]
        self.clock = Clock(self.world, str(base / "now"))
        for name in ("state", "holds", "hooks/pre/Reboot", "hooks/post"):
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
        self.staged = None
        if scenario == "hook-while-held":
            self.staged = Staged(base, self.events[0][0], self.events[1][0])
            with open(str(base / "hooks" / "pre" / "Reboot" / "20-wait"), "w") as handle:
                handle.write(WAITING_HOOK % self.staged.paths)
            os.chmod(str(base / "hooks" / "pre" / "Reboot" / "20-wait"), 0o755)

    def daemon(self, staged=False):
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
        executor = self.staged.executor() if staged and self.staged else InlineExecutor()
        daemon = Daemon(config_mod.parse(settings), trust=TRUST, client=client,
                        holds=HoldManager(state_file=settings["hold"]["state_file"], owner_uid=UID),
                        notifier=Notifier([Syslog(lambda line: None)], logger=logger), clock=clock.wall,
                        monotonic=clock.now, sleep=clock.sleep, boot_id="boot-a", logger=logger,
                        executor=executor)
        daemon.start()
        return daemon

    def gone_at(self, event_id):
        event = self.world.event(event_id)
        return event.gone_at if event.state == "gone" else None

    def finished(self, daemon):
        return daemon.machine is not None and not daemon.machine.events and \
            all(self.gone_at(event_id) is not None for event_id, dummy in self.events)

    def drive(self, daemon, ticks=MAX_TICKS):
        """Tick until the events are over. A child sees only a copy of the world: there, over means
        the daemon tracked every event and then forgot them."""
        delay, tracked = 1.0, set()
        for dummy in range(ticks):
            self.clock.sleep(delay)
            delay = daemon.tick()
            if self.clock.pipe is not None:
                tracked.update(key for key in daemon.machine.events)
                if len(tracked) == len(self.events) and not daemon.machine.events:
                    return True
            elif self.finished(daemon):
                return True
        return False


class Staged(object):
    """The "hook-while-held" FIFOs and the executor that uses them (see the module's docstring)."""

    def __init__(self, base, hooked_id, held_id):
        self.paths = {"staged": str(base / "staged"), "started": str(base / "started"), "go": str(base / "go")}
        os.mkfifo(self.paths["started"])
        os.mkfifo(self.paths["go"])
        self.hooked_lane = "hooks %s" % hooked_id.lower()
        self.held_id = held_id
        self.thread = None
        self.overlapped = False

    def executor(self):
        return self

    def start(self, lanes, lane):
        """Inline, but for the hooked event's lane: a thread, returned from once its hook process runs."""
        if lane != self.hooked_lane or self.overlapped:
            InlineExecutor.start(lanes, lane)
            if lane == "urgent" and self.thread is not None:
                self._end_hook()
            return
        started = os.open(self.paths["started"], os.O_RDONLY | os.O_NONBLOCK)
        self.go = os.open(self.paths["go"], os.O_RDWR)
        open(self.paths["staged"], "w").close()
        self.thread = threading.Thread(target=InlineExecutor.start, args=(lanes, lane))
        self.thread.start()
        try:
            assert select.select([started], [], [], BOUND)[0], "the waiting hook never started"
            os.read(started, 64)
        finally:
            os.close(started)

    def _end_hook(self):
        """The held event's hold has run: let the hook end and wait for its thread, before the loop goes on."""
        os.unlink(self.paths["staged"])
        REAL_WRITE(self.go, b"go\n")
        self.thread.join(BOUND)
        assert not self.thread.is_alive(), "the hook's thread never ended"
        os.close(self.go)
        self.thread, self.overlapped = None, True

    def release_orphans(self, point):
        """After a kill -9: a hook process left waiting on a FIFO (killed between its two lines) may go."""
        if os.path.exists(self.paths["staged"]):
            os.unlink(self.paths["staged"])
        fd = os.open(self.paths["go"], os.O_RDWR | os.O_NONBLOCK)
        os.write(fd, b"go\n" * 4)
        os.close(fd)


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

    def phase(event_id):
        daemon = holder.get("daemon")
        rec = daemon.machine.record(event_id) if daemon is not None and daemon.machine is not None else None
        return rec["state"] if rec else "none"

    def op(kind, what, data=None, fd=None):
        seen[0] += 1
        # the first event's state; with two events, the second's too, and whether the first's hook process runs
        label = [kind, what, phase(point.event_id)]
        if len(point.events) > 1:
            label += [phase(point.events[1][0]), point.staged.thread is not None]
        labels.append(label)
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
    daemon = holder["daemon"] = point.daemon(staged=True)
    done = point.drive(daemon)
    if labels_file:
        with open(labels_file, "w") as handle:
            json.dump(labels, handle)
    return 0 if done else 3


def verify(point, where):
    """Restart from the files on disk, drive the events to their end, check what is left."""
    store = StateStore(str(point.base / "state" / "watcher-state.json"))
    state, problem = store.read()
    assert problem is None, "%s: the state file is unreadable after the crash: %s" % (where, problem)
    in_flight = [rec["id"] for rec in (state or {"events": {}})["events"].values() if rec["pending"] == "hooks"]
    if point.staged:
        point.staged.release_orphans(point)
    daemon = point.daemon()
    assert point.drive(daemon), "%s: the events never finished after the restart" % where
    marks = open(point.marks).read().splitlines() if os.path.exists(point.marks) else []
    releases = [m for m in marks if m.startswith("release")]
    holds = [m for m in marks if m.startswith("hold")]
    assert holds, "%s: never held: %r" % (where, marks)
    assert releases, "%s: never released: %r" % (where, marks)
    # one target held for every event (all appear before the first is over): released once they all left
    gone_at = max(point.gone_at(event_id) for event_id, dummy in point.events)
    for mark in releases:
        assert len(mark.split()) == 3, "%s: a command recorded no time: %r" % (where, marks)
        assert float(mark.split()[2]) >= gone_at, "%s: released before the events left the document at %s: %r" \
            % (where, gone_at, marks)
    assert marks.index(releases[0]) > max(marks.index(h) for h in holds), "%s: held after release: %r" % (where, marks)
    status = daemon.holds.status()
    assert status["held"] is False and status["reasons"] == [], "%s: still held: %r" % (where, status)
    entries = Journal(str(point.base / "state" / "journal.jsonl")).entries()
    hooks = open(point.hooks_ran).read().splitlines() if os.path.exists(point.hooks_ran) else []
    adopted = False
    for event_id, outcome in point.events:
        mine = [e for e in entries if e["event_id"].lower() == event_id.lower()]
        transitions = [e["transition"] for e in mine]
        assert "released" in transitions, "%s: the journal lost the release of %s: %r" % (where, event_id, transitions)
        assert transitions.index("released") > transitions.index("gone"), "%s: %r" % (where, transitions)
        assert "detected" in transitions or "adopted" in " ".join(e.get("detail", "") for e in mine), \
            "%s: the journal lost the detection of %s: %r" % (where, event_id, transitions)
        if event_id in in_flight:
            assert "hooks_interrupted" in transitions, "%s: %s's hooks in flight at the kill were not reported " \
                "as interrupted: %r" % (where, event_id, transitions)
        outcomes = set(e["outcome"] for e in mine if e.get("outcome"))
        # a hold adopted from the hold record (the crash came before the state named the event) has lost its
        # history: it is judged by what the new process sees of it (its pre-hooks run once it is seen), and when it
        # is never seen again it vanished, since nobody can tell whether it ran
        was_adopted = any(str(e.get("detail", "")).startswith("adopted") for e in mine)
        adopted = adopted or was_adopted
        after = transitions[max(i for i, e in enumerate(mine) if str(e.get("detail", "")).startswith("adopted")):] \
            if was_adopted else transitions
        expected = "vanished" if was_adopted and "pre_hooks" not in after else outcome
        assert outcomes == {expected}, "%s: outcome of %s %r" % (where, event_id, outcomes)
        assert "post %s %s" % (event_id, expected) in hooks, "%s: post hooks never ran: %r" % (where, hooks)
        approvals = [a for a in point.world.approvals if a["event_id"].lower() == event_id.lower()]
        if outcome == "cancelled":
            assert approvals == [], "%s: approved outside the policy" % where
    state, problem = store.read()
    assert problem is None and state["events"] == {}, "%s: %r" % (where, problem or state["events"])
    for directory in ("state", "holds"):
        stray = [n for n in os.listdir(str(point.base / directory)) if n.endswith(".tmp") or ".corrupt" in n]
        assert not stray, "%s: stray files in %s: %r" % (where, directory, stray)
    return adopted, len(releases) > 1, bool(in_flight)


SHARDS = 4  # each scenario's points dealt into shards, so that pytest-xdist's workers share the longest scenario


@pytest.mark.parametrize("shard", range(SHARDS))
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_kill_9_at_every_io_operation(tmp_path, simulator, scenario, shard):
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
    if scenario == "hook-while-held":  # A's hook process runs while B's hold writes the hold record
        overlap = set((label[0], label[1]) for label in labels if label[4] and label[2:4] == ("pre_hooks", "holding"))
        assert ("rename", "holds.json") in overlap, overlap
        assert [what for kind, what in overlap if kind == "write" and "holds.json" in what], overlap
    points = points[shard::SHARDS]
    killed = adopted = released_twice = interrupted = 0
    for n, how in points:
        point = Point(tmp_path / ("p%03d-%s" % (n, how)), simulator, scenario)
        where = "%s: kill -9 %s operation %d/%d %r" % (scenario, how, n, len(labels), labels[n - 1])
        code = run_child(point, crash_at=(n, how))
        assert code == -signal.SIGKILL, "%s: the child was not killed (exit %r)" % (where, code)
        killed += 1
        was_adopted, repeated, hooks_in_flight = verify(point, where)
        adopted += was_adopted
        released_twice += repeated
        interrupted += hooks_in_flight
    assert killed == len(points)
    summary = {}
    for label in labels:
        state = "/".join(str(part) for part in label[2:])
        summary.setdefault(state, {}).setdefault(label[0], 0)
        summary[state][label[0]] += 1
    print("%s (shard %d/%d): %d kill -9 points over %d operations (%d restarts adopted the hold, %d ran the idempotent release "
          "command again, %d found hooks in flight and ran them again): %s"
          % (scenario, shard + 1, SHARDS, len(points), len(labels), adopted, released_twice, interrupted,
             json.dumps(summary, sort_keys=True)))
