# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The loop at the edges: poll IMDS, feed the machine, hand its actions to lanes, act on their results.

- One request per tick (the client's retries are off): a failed poll skips the
  tick and the next one waits 1, 2, 4 ... up to max_backoff seconds; a success
  goes back to poll_interval. The first request of the process may take two
  minutes (the service enables itself); the client grants that once.
- Ticks start every poll_interval (the time a tick takes is not added to it),
  so an event waits at most one interval to be seen.
- The loop never waits for an action. Holds, releases, hooks and notifications
  run in lanes (lanes.py): `hold` makes every change of the hold record, in order;
  `urgent` takes the quick hold of a Preempt or Terminate, which thus overtakes
  the other events' slow holds; each event has a lane for its pre-hooks, then its
  post-hooks; `notify` sends the notifications (bounded, never waited for). An
  event's hold-record jobs keep their order across the two hold lanes, so its
  release never runs before its hold. Results come back through a queue that the
  loop drains as soon as one arrives, so a hook's end is acted on at once. Only
  the approval, one POST bounded by the client's timeout, runs in the loop.
- A hold takes the quick local targets first (systemd units, the guard: a few
  milliseconds), then the slow ones (puppet, whose every command starts Ruby,
  and operator commands), in two passes over the hold record. For an urgent event
  (a Preempt or Terminate: 30 s of notice, then the VM is gone) the event counts as
  held after the quick pass; its slow pass goes to the front of the hold lane at
  once and runs while its pre-hooks run and its approval is sent. A failure there
  is logged, counted and retried every tick, and after a restart the hold record
  shows what is still to hold.
- The state is saved before an action starts (a restart issues again what was in
  flight; a hook phase cut short is journaled as hooks_interrupted and runs again)
  and after every result.
- SIGTERM: nothing new starts, the actions in flight get stop_grace seconds to end
  (their results are recorded), the state is saved and the daemon exits 0, logging
  what it left running. Nothing is released: holds persist across restarts and
  reboots by design.
Clock, sleep, executor and every collaborator are injectable, so tests step it tick by tick.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time

from ..approval import approve_and_confirm
from ..events import ThisVm
from ..hold.common import HoldError
from ..hold.manager import HoldManager, Reason, event_reason_id
from ..imds import DEFAULT_FIRST_TIMEOUT, DEFAULT_TIMEOUT, ImdsClient, ImdsError, poll_delay
from ..lifecycle import read_boot_id
from . import health as health_mod
from .hooks import HookRunner
from .journal import Journal
from .lanes import Lanes
from .machine import GONE, HOLDER, POST_HOOKS, RELEASED, RELEASING, Machine, Result, iso
from .metrics import Metrics
from .notify import Notifier
from .state import StateStore

SLEEP_SLICE = 0.5
VOLATILE = ("last_seen",)
# Held first: local and quick. The others (puppet, operator commands) start programs that may take seconds.
QUICK_BACKENDS = ("systemd", "guard")
# Events whose approval must not wait for the slow targets, nor for other events' holds: the VM is evicted or
# deleted at the end of a notice of 30 s (Preempt) or of a few minutes (Terminate).
URGENT_TYPES = ("Preempt", "Terminate")
HOLD_LANE = "hold"
URGENT_LANE = "urgent"
NOTIFY_LANE = "notify"
# Notifications waiting beyond this are dropped, oldest first, and counted as failures of every channel.
NOTIFY_BACKLOG = 100
# After SIGTERM, how long the actions in flight may take to end before the daemon exits without them.
STOP_GRACE = 10.0


def split_targets(targets):
    """(quick, slow): the hold targets in the order they are held, each list in its configured order."""
    quick = [t for t in targets if t.kind in QUICK_BACKENDS]
    return quick, [t for t in targets if t.kind not in QUICK_BACKENDS]


def sd_notify(message, environ=None):
    """Tell systemd (Type=notify) about the service: READY=1 once the config is loaded, so `systemctl start` and
    `restart` fail when the daemon exits before that (a refused config) instead of reporting success. A no-op
    outside systemd (no NOTIFY_SOCKET); False when nothing was sent."""
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not path or path[0] not in "/@":
        return False
    if path[0] == "@":
        path = "\0" + path[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(message.encode("utf-8"))
    except OSError:
        return False
    return True


def _urgent(event):
    return isinstance(event, dict) and event.get("EventType") in URGENT_TYPES


def _ids(decision):
    return getattr(decision, "event_ids", None) or [decision.event_id]


def _reason(decision):
    """The hold's reason: its id is the EventId (or, for an id the hold record cannot take, a digest of it:
    hold.manager.event_reason_id), so the release finds it."""
    return Reason.for_event(decision.event_id, decision.reason, holder=HOLDER)


def _stat_key(path):
    """What changes when a file is written, replaced, chmod-ed or chown-ed, or its directory replaced, chmod-ed or
    chown-ed (not when other files come and go in it); None if unknown."""
    key = []
    for each in (path, os.path.dirname(path)):
        try:
            st = os.lstat(each)
        except FileNotFoundError:
            key.append(None)
            continue
        except OSError:
            return None
        content = (st.st_size, st.st_mtime_ns, st.st_ctime_ns) if each == path else ()
        key.append((st.st_ino, st.st_mode, st.st_uid) + content)
    return tuple(key)


def _significant(state):
    """The state without what changes on every poll, so an unchanged lifecycle is not rewritten each second."""
    events = {}
    for key, rec in state.get("events", {}).items():
        rec = dict((k, v) for k, v in rec.items() if k not in VOLATILE)
        if isinstance(rec.get("event"), dict):
            rec["event"] = dict((k, v) for k, v in rec["event"].items() if k != "seconds_until_start")
        events[key] = rec
    return json.dumps(dict(state, events=events, saved=None), sort_keys=True)


class Daemon(object):
    def __init__(self, config, client=None, holds=None, hooks=None, notifier=None, journal=None, metrics=None,
                 store=None, clock=time.time, monotonic=time.monotonic, sleep=None, boot_id=None, logger=None,
                 trust=None, executor=None):
        self.config = config
        self.logger = logger or logging.getLogger("imds-watcher")
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep  # None: wait on the lanes, which wake the loop when a result arrives
        self.lanes = Lanes(executor, monotonic=monotonic)
        self.stop_grace = STOP_GRACE
        self.client = client or ImdsClient(endpoint=config["endpoint"], api_version=config["api_version"], retries=0,
                                           timeout=DEFAULT_TIMEOUT, first_timeout=DEFAULT_FIRST_TIMEOUT)
        self.holds = holds or HoldManager(state_file=config["hold"]["state_file"])
        self.hooks = hooks or HookRunner(config["hooks_dir"], timeout=config["hook_timeout"], trust=trust,
                                         logger=self.logger)
        self.notifier = notifier or Notifier.from_config(config, logger=self.logger)
        self.journal = journal or Journal(config["journal_file"], config["journal_max_bytes"],
                                          redact=self.notifier.redact)
        self.metrics = metrics or Metrics()
        self.store = store or StateStore(config.state_file, clock=clock, logger=self.logger)
        self.boot_id = boot_id if boot_id is not None else read_boot_id()
        self.targets = list(config.hold_targets)
        self.deferred = {}  # event id -> Reason: the slow targets still to hold for an urgent event
        self.machine = None
        self.vm = None
        self.naming = health_mod.NameSearch()
        self.health = health_mod.Health()
        self.answered = self.clock()  # the last successful poll, or the start
        self.failures = 0
        self.last_error = None
        self.stopping = False
        self._loaded = None
        self._saved = None
        self._metrics_problem = None
        self._reasons_problem = None
        self._reasons_seen = (None, [])  # (what _stat_key said, the reasons then)
        self.metrics.started(self.clock())
        for channel in getattr(self.notifier, "channels", []):  # at 0 from the first file, like the other failures
            self.metrics.set("notification_failures_total", self.notifier.failures.get(channel.name, 0),
                             channel=channel.name)

    # --- start and stop ---------------------------------------------------------------------

    def start(self):
        """Load the saved state and finish what a crashed hold or release left in progress."""
        self._loaded = self.store.load()
        try:
            outcome = self.holds.settle()
            for error in outcome.errors:
                self.logger.error("hold: settling the hold record: %s", error)
        except (HoldError, OSError) as exc:
            self.logger.error("hold: cannot settle the hold record: %s", exc)

    def request_stop(self, signum=None, frame=None):  # pylint: disable=unused-argument
        """SIGTERM/SIGINT: start nothing new, give what runs stop_grace seconds, save, exit. Nothing is released."""
        self.stopping = True

    def run(self, install_signals=True):
        """The daemon: returns the exit status once asked to stop."""
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        # Ready once the config is loaded, before settling: a settle may wait minutes for a run in flight.
        sd_notify("READY=1\nSTATUS=settling the hold record, then polling IMDS")
        self.start()
        self.logger.info("watcher: started (boot %s, hold record %s)", self.boot_id, self.holds.state_file)
        next_tick = self.monotonic()
        while not self.stopping:
            if self.monotonic() >= next_tick:
                started = self.monotonic()
                next_tick = started + self.tick()
            self._wait(next_tick - self.monotonic())
            self.collect()
        sd_notify("STOPPING=1")
        self.stop()
        self.save(force=True)
        self.logger.info("watcher: stopped; holds stay in place until their event is over")
        return 0

    def stop(self):
        """After SIGTERM: the actions not started are dropped (the saved state issues them again at the next start);
        those in flight, and the notifications queued, get stop_grace seconds and their results are recorded; what
        still runs then is logged and left to the process's end (systemd then ends what is left of the unit)."""
        for job in self.lanes.drop_waiting(keep=(NOTIFY_LANE,)):
            self.logger.info("watcher: stopping: not started: %s", job.label)
        deadline = self.monotonic() + self.stop_grace
        while not self.lanes.idle() and self.monotonic() < deadline:
            self._pause(min(SLEEP_SLICE, deadline - self.monotonic()))
            self.collect()
        self.collect()
        for dummy, label, seconds in self.lanes.running():
            self.logger.warning("watcher: stopping with %s still running (for %.0f s); it ends with this process, and "
                                "the next start finishes or repeats it", label, seconds)
        for dummy, label in self.lanes.waiting():
            self.logger.warning("watcher: stopping: not sent: %s", label)

    def _wait(self, seconds):
        """Until the next tick, or at once when a lane's result is there to act on."""
        deadline = self.monotonic() + seconds
        while not self.stopping and not self.lanes.ready():
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                return
            self._pause(min(remaining, SLEEP_SLICE))

    def _pause(self, seconds):
        if self.sleep is not None:
            self.sleep(seconds)
        else:
            self.lanes.wait(seconds)

    # --- one tick ---------------------------------------------------------------------------

    def tick(self):
        """One poll and everything it leads to; returns the seconds until the next tick."""
        self.metrics.inc("polls_total")
        try:
            self._ensure_machine()
            document = self.client.get_document()
        except ImdsError as exc:
            self._poll_failed(exc)
            if self.machine is not None:
                self.execute(self.machine.observe(self.clock(), error=exc))
            self._after_tick()
            return self.next_delay()
        if self.failures:
            self.logger.info("imds: answering again after %d failed poll(s)", self.failures)
        self.failures = 0
        self.last_error = None
        self.answered = self.clock()
        self.metrics.set("last_successful_poll_timestamp_seconds", round(self.clock(), 3))
        self.execute(self.machine.observe(self.clock(), document=document))
        self._after_tick()
        return self.next_delay()

    def next_delay(self):
        interval = poll_delay(self.config["poll_interval"], self.failures, self.config["max_backoff"])
        return min(interval, self.config["keepalive_interval"])

    def _poll_failed(self, exc):
        self.failures += 1
        self.metrics.inc("imds_errors_total")
        message = str(exc)
        level = logging.WARNING if message != self.last_error else logging.DEBUG
        self.logger.log(level, "imds: poll failed (%d in a row; next in %g s): %s", self.failures,
                        poll_delay(self.config["poll_interval"], self.failures, self.config["max_backoff"]),
                        message)
        self.last_error = message

    def _ensure_machine(self):
        """The machine, from the first tick on. This VM's name is the config's, else IMDS's (compute/name); while
        IMDS does not give it, the machine runs without it (health.VM_NAME_UNKNOWN) and it is asked again later."""
        if self.vm is None or (not self.vm.known and self.naming.due(self.monotonic())):
            self.vm = self._this_vm()
            if self.machine is not None and self.vm.known:
                self.machine.identify(self.vm)
                self.logger.info("watcher: this VM is %s (compute/name, after %d failed request(s))", self.vm.name,
                                 self.naming.failures)
        if self.machine is not None:
            return
        self.machine = Machine(self.vm, self.boot_id, policy=self.config.policy,
                               confirm_polls=self.config["confirm_polls"], peer_events=self.config["peer_events"],
                               event_types=self.config["event_types"], state=self._loaded)
        self._saved = _significant(self.machine.state) if self._loaded else None
        self.logger.info("watcher: this VM is %s; %d event(s) from the saved state", self.vm.name or "not named yet",
                         len(self.machine.events))
        try:
            status = self.holds.status()
        except (HoldError, OSError) as exc:
            self.logger.error("hold: cannot read the hold record to adopt this watcher's holds: %s", exc)
            return
        reasons = [r for r in status.get("reasons", []) if r.get("holder") == HOLDER and r.get("event_id")]
        self._complete_holds(reasons)
        self.execute(self.machine.adopt(self.clock(), reasons))

    def _this_vm(self):
        if self.config["vm_name"]:
            return ThisVm(self.config["vm_name"])
        try:
            return ThisVm(self.client.compute_name())
        except ImdsError as exc:
            self.naming.failed(self.monotonic(), exc)
            self.logger.debug("imds: this VM's name: %s (asked again in %g s)", exc, self.naming.delay())
            return ThisVm.unknown()

    def _complete_holds(self, reasons):
        """After a restart, before the machine goes on: a reason of this watcher may hold fewer targets than are
        configured (killed between the quick and the slow pass, or before an urgent event's deferred slow pass;
        or the configuration grew). Hold the rest now, so no hook or approval runs with puppet still enabled; an
        urgent event's missing slow targets go to the hold lane instead, as its slow pass does.
        Reasons whose event is already being released are left to the release."""
        configured = dict((t.key, t) for t in self.targets)
        slow = split_targets(self.targets)[1]
        for reason in reasons:
            rec = self.machine.events.get(str(reason["event_id"]).lower())
            if rec is not None and (not rec["held"] or rec["state"] in (GONE, POST_HOOKS, RELEASING, RELEASED)):
                continue
            missing = [t for key, t in configured.items() if key not in (reason.get("targets") or [])]
            if not missing:
                continue
            held_as = Reason(reason["id"], reason.get("text") or "Azure scheduled event %s" % reason["event_id"],
                             event_id=reason["event_id"], holder=HOLDER)
            if rec is not None and rec["type"] in URGENT_TYPES and all(t in slow for t in missing):
                self.deferred[rec["id"]] = held_as  # held by hold_deferred() at the end of this tick
                continue
            try:
                outcome = self.holds.hold(held_as, missing)
                problem = "; ".join(outcome.errors) if outcome.failed else None
            except (HoldError, ValueError, OSError) as exc:
                problem = str(exc)
            keys = ", ".join(t.key for t in missing)
            if problem is None:
                self.logger.info("hold: event %s: also held after the restart: %s", reason["event_id"], keys)
            else:
                self.metrics.inc("action_failures_total", action="hold")
                self.logger.error("hold: event %s: holding %s after the restart failed: %s", reason["event_id"], keys,
                                  problem)

    def _after_tick(self):
        self.hold_deferred()
        self.collect()
        self._hold_reason_metrics()
        self._assess()
        if self.machine is not None:
            self.metrics.set("events_pending", len(self.machine.events))
            self.metrics.set("holds_active", len(self.machine.holds_active()))
            self.metrics.set_events(self.machine.events.values())
            self.machine.degraded(self.health.as_dict())
            self.save()
        self._write_metrics()

    def _assess(self):
        """What keeps the watcher from its whole job (health.py): logged when it begins, changes and ends."""
        now = self.clock()
        silent = now - self.answered
        problems = {
            health_mod.VM_NAME_UNKNOWN: None if self.vm is None or self.vm.known else
            "vm_name is not configured and IMDS does not name this VM: %s" % self.naming.last_error,
            health_mod.IMDS_UNREACHABLE: None if silent < health_mod.unreachable_after(self.config["max_backoff"])
            else "no successful poll since %s" % iso(self.answered),
            health_mod.HOLD_RECORD_UNREADABLE: self._reasons_problem,
        }
        for reason, problem in sorted(problems.items()):
            said = self.health.update(now, reason, problem)
            if said is not None:
                self.logger.log(logging.WARNING if said[0] else logging.INFO, "%s", said[1])
        self.metrics.set_degraded(self.health.conditions)

    def _hold_reason_metrics(self):
        """The age of every reason in the hold record (the watcher's and anyone else's), read at every tick: an
        unreadable record keeps the last series, and the watcher is degraded (health.HOLD_RECORD_UNREADABLE). The
        record is read again only when it or its directory changed (owner, mode, content): two stats a tick instead
        of a lock, a read and a parse."""
        changes = _stat_key(self.holds.state_file)
        if changes is not None and changes == self._reasons_seen[0]:
            if self.config["metrics_file"]:
                self.metrics.set_hold_reasons(self._reasons_seen[1], self.clock())
            return
        try:
            reasons = self.holds.status().get("reasons", [])
        except (HoldError, OSError, ValueError) as exc:
            self._reasons_problem = str(exc)
            self._reasons_seen = (None, [])
            return
        self._reasons_problem = None
        self._reasons_seen = (changes, reasons)
        if self.config["metrics_file"]:
            self.metrics.set_hold_reasons(reasons, self.clock())

    def _write_metrics(self):
        path = self.config["metrics_file"]
        if not path:
            return
        try:
            self.metrics.write(path)
            self._metrics_problem = None
        except OSError as exc:
            problem = "cannot write the metrics file %s: %s" % (path, exc.strerror or exc)
            if problem != self._metrics_problem:
                self.logger.warning("metrics: %s", problem)
            self._metrics_problem = problem

    def save(self, force=False):
        if self.machine is None:
            return
        significant = _significant(self.machine.state)
        if not force and significant == self._saved:
            return
        try:
            self.store.save(self.machine.state)
            self._saved = significant
        except OSError as exc:
            self.logger.error("state: cannot save %s: %s", self.store.path, exc.strerror or exc)

    # --- carrying out decisions ---------------------------------------------------------------

    def execute(self, step):
        """Carry out a step: its journal entries; the state saved; its notifications handed to their lane; then the
        approval here and every other action handed to its lane."""
        decisions = list(step.decisions)
        while decisions:
            notes, actions = [], []
            for decision in decisions:
                if decision.kind == "journal":
                    self._journal(decision.entry)
                else:
                    (notes if decision.kind == "notify" else actions).append(decision)
            decisions = []
            # saved once the journal has the entries that explain the new state (a kill -9 in between then repeats
            # them after the restart instead of losing them: a forgotten event is not redone), at once after them
            # (the shorter that window, the rarer a repeated entry), and before any action starts (so a restart
            # knows what was in flight)
            self.save()
            for decision in notes:
                self._notify(decision.transition)
            for decision in actions:
                if self.stopping:
                    self.logger.info("watcher: stopping: not starting %s for %s", decision.kind, _ids(decision))
                elif decision.kind == "approve":
                    decisions.extend(self._feed(decision, self.act(decision)).decisions)
                else:
                    self._submit(decision)

    def collect(self):
        """Act on the results the lanes have finished (and on those that finish meanwhile)."""
        if self.lanes.deliver():
            self.save()

    def act(self, decision):
        """Carry out one action where it is called (a lane, or the loop for an approval); its Result."""
        handler = {"hold": self._hold, "hooks": self._hooks, "approve": self._approve, "release": self._release}
        return handler[decision.kind](decision)

    def _submit(self, decision):
        key = _ids(decision)[0].lower()
        if decision.kind == "hooks":
            lane, order = "hooks %s" % key, None
            label = "the %s-event hooks of %s" % (decision.phase, decision.event_id)
        else:
            lane = URGENT_LANE if decision.kind == "hold" and _urgent(decision.event) else HOLD_LANE
            order = key  # an event's hold-record jobs in the order they were issued, whatever the lane
            label = "the %s for %s" % (decision.kind, decision.event_id)
            if decision.kind == "release":
                self.deferred.pop(decision.event_id, None)
        self.lanes.submit(lane, label, lambda: self.act(decision), then=self._finished(decision), order=order)

    def _finished(self, decision):
        def then(result, error):
            if error is not None:  # a bug, not a failure the action reports: still a failure to the machine
                self.logger.error("watcher: %s for %s raised %s: %s", decision.kind, _ids(decision),
                                  type(error).__name__, error)
                result = Result(decision.kind, _ids(decision), False, "%s failed: %s" % (decision.kind, error),
                                phase=getattr(decision, "phase", None))
            if decision.kind == "hold" and result.ok and result.data.get("deferred"):
                self.deferred[decision.event_id] = _reason(decision)
                self._hold_slow(decision.event_id)
            self.execute(self._feed(decision, result))
        return then

    def _feed(self, decision, result):
        if not result.ok:
            if decision.kind == "hooks":
                self.metrics.inc("hook_failures_total", phase=decision.phase)
            else:
                self.metrics.inc("action_failures_total", action=decision.kind)
        return self.machine.feed(self.clock(), result)

    def _hold(self, decision):
        if not self.targets:
            return Result("hold", decision.event_id, True, "nothing is configured to hold (hold: {} is empty)")
        held = []
        try:
            reason = _reason(decision)
            quick, slow = split_targets(self.targets)
            if slow and quick and _urgent(decision.event):
                outcome = self.holds.hold(reason, quick)
                if not outcome.failed:
                    return Result("hold", decision.event_id, True, "held: %s; %s held next, beside the hooks and the "
                                  "approval (%s)" % (", ".join(sorted(outcome.results)), ", ".join(t.key for t in slow),
                                                     decision.event.get("EventType")), data={"deferred": True})
            else:
                for part in (quick, slow):
                    if part:
                        outcome = self.holds.hold(reason, part)
                        if outcome.failed:
                            break
                        held.extend(outcome.results)
        except (HoldError, ValueError, OSError) as exc:
            return Result("hold", decision.event_id, False, "hold failed: %s" % exc)
        if outcome.failed:
            return Result("hold", decision.event_id, False, "hold failed: %s" % "; ".join(outcome.errors))
        return Result("hold", decision.event_id, True, "held: %s" % ", ".join(sorted(set(held))))

    def hold_deferred(self):
        """The slow targets of urgent events whose slow pass failed: tried again every tick until they hold."""
        for event_id in sorted(self.deferred):
            if not self.lanes.pending(event_id.lower()):
                self._hold_slow(event_id)

    def _hold_slow(self, event_id):
        """An urgent event's slow pass, at the front of the hold lane (behind its own event's jobs only); not once
        stopping (the next start holds what its reason lacks)."""
        if self.stopping:
            return
        reason = self.deferred[event_id]
        slow = split_targets(self.targets)[1]

        def work():
            try:
                outcome = self.holds.hold(reason, slow)
                return ("; ".join(outcome.errors) if outcome.failed else None), sorted(outcome.results)
            except (HoldError, ValueError, OSError) as exc:
                return str(exc), []

        def then(value, error):
            problem, held = value if error is None else ("%s: %s" % (type(error).__name__, error), [])
            if problem is None:
                self.deferred.pop(event_id, None)
                self.logger.info("hold: event %s: also held: %s", event_id, ", ".join(held))
            else:
                self.metrics.inc("action_failures_total", action="hold")
                self.logger.error("hold: event %s: holding %s failed (retried next tick): %s", event_id,
                                  ", ".join(t.key for t in slow), problem)

        self.lanes.submit(HOLD_LANE, "the slow hold for %s" % event_id, work, then=then, order=event_id.lower(),
                          first=True)

    def _release(self, decision):
        try:
            outcome = self.holds.release(reason_id=event_reason_id(decision.event_id))
        except (HoldError, ValueError, OSError) as exc:
            return Result("release", decision.event_id, False, "release failed: %s" % exc)
        if outcome.failed:
            return Result("release", decision.event_id, False, "release failed: %s" % "; ".join(outcome.errors))
        released = sorted(k for k, r in outcome.results.items() if r.state == "released")
        still = sorted(k for k, r in outcome.results.items() if r.state != "released" and r.state != "not held")
        parts = ["released: %s" % ", ".join(released)] if released else []
        if still:
            parts.append("its reason dropped; still held for other reasons: %s" % ", ".join(still))
        return Result("release", decision.event_id, True, "; ".join(parts) or "nothing was held for it")

    def _hooks(self, decision):
        try:
            outcome = self.hooks.run(decision.phase, decision.event, self.vm.name, decision.outcome)
        except (OSError, ValueError) as exc:
            return Result("hooks", decision.event_id, False, "%s-event hooks could not run: %s" % (decision.phase, exc),
                          phase=decision.phase)
        return Result("hooks", decision.event_id, outcome.ok, outcome.describe(), data=outcome.as_dict(),
                      phase=decision.phase)

    def _approve(self, decision):
        try:
            approved, skips = approve_and_confirm(self.client, decision.plan)
        except ImdsError as exc:
            return Result("approve", decision.event_ids, False, "approval failed: %s" % exc)
        self.metrics.inc("approvals_total", len(approved))
        return Result("approve", decision.event_ids, True, "approved %s" % ", ".join(approved),
                      data={"approved": approved, "skipped": [s.as_dict() for s in skips]})

    def _notify(self, transition):
        label = "the %s notification of %s" % (transition.get("transition"), transition.get("event_id"))
        dummy, dropped = self.lanes.submit(NOTIFY_LANE, label, lambda: self.notifier.send(transition),
                                           then=self._notified, bound=NOTIFY_BACKLOG)
        if dropped is not None:
            for channel in self.notifier.channels:
                self.metrics.inc("notification_failures_total", channel=channel.name)
            self.logger.warning("notify: %d notifications wait to be sent; dropped %s", NOTIFY_BACKLOG, dropped.label)

    def _notified(self, failed, error):
        if error is not None:
            self.logger.error("notify: sending raised %s: %s", type(error).__name__, error)
        for channel, dummy in failed or []:
            self.metrics.inc("notification_failures_total", channel=channel)

    def _journal(self, entry):
        if entry["transition"] in ("detected", "reappeared"):
            self.metrics.inc("events_seen_total", type=entry.get("event_type") or "unknown")
        elif entry["transition"] == "gone" and entry.get("outcome"):
            self.metrics.inc("events_gone_total", outcome=entry["outcome"])
        level = logging.WARNING if entry["transition"].endswith("_failed") or entry["transition"] == "blocked" \
            else logging.INFO
        self.logger.log(level, "event %s %s: %s: %s", entry.get("event_type"), entry["event_id"], entry["transition"],
                        entry.get("detail"))
        try:
            self.journal.append(entry)
        except OSError as exc:
            self.logger.error("journal: cannot append to %s: %s", self.journal.path, exc.strerror or exc)
