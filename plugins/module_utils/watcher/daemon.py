# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The loop at the edges: poll IMDS, feed the machine, carry out its decisions.

- One request per tick (the client's retries are off): a failed poll skips the
  tick and the next one waits 1, 2, 4 ... up to max_backoff seconds; a success
  goes back to poll_interval. The first request of the process may take two
  minutes (the service enables itself); the client grants that once.
- Ticks start every poll_interval (the time a tick takes is not added to it),
  so an event waits at most one interval to be seen.
- Decisions run one after another in this process; each result goes back into
  the machine at once, so a 30-second Preempt is held, hooked and approved in
  one tick. Long actions (a hold waiting for a run in flight, hooks) are
  interleaved with keep-alive requests so IMDS never sees a day of silence.
- A hold takes the quick local targets first (systemd units, the guard: a few
  milliseconds), then the slow ones (puppet, whose every command starts Ruby,
  and operator commands), in two passes over the hold record. For a Preempt
  (30 s of notice, then the VM is evicted) the slow targets are held right
  after the approval, at the end of the same tick, so Ruby's start-up does not
  eat the notice; a failure there is logged, counted and retried every tick,
  and after a restart the hold record shows what is still to hold.
- The state is saved after every result. SIGTERM saves and exits without
  releasing anything: holds persist across restarts and reboots by design.
Clock, sleep and every collaborator are injectable, so tests step it tick by tick.
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
from .machine import GONE, HOLDER, POST_HOOKS, RELEASED, RELEASING, Machine, Result, iso
from .metrics import Metrics
from .notify import Notifier
from .state import StateStore

SLEEP_SLICE = 0.5
VOLATILE = ("last_seen",)
# Held first: local and quick. The others (puppet, operator commands) start programs that may take seconds.
QUICK_BACKENDS = ("systemd", "guard")
# Events whose approval must not wait for the slow targets: the VM is evicted at the end of a 30-second notice.
URGENT_TYPES = ("Preempt",)


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
                 store=None, clock=time.time, monotonic=time.monotonic, sleep=time.sleep, boot_id=None, logger=None,
                 trust=None):
        self.config = config
        self.logger = logger or logging.getLogger("imds-watcher")
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
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
        self.deferred = {}  # event id -> Reason: slow targets still to hold for an urgent event
        self.machine = None
        self.vm = None
        self.naming = health_mod.NameSearch()
        self.health = health_mod.Health()
        self.answered = self.clock()  # the last successful poll, or the start
        self.failures = 0
        self.last_error = None
        self.last_request = None
        self.stopping = False
        self._loaded = None
        self._saved = None
        self._metrics_problem = None
        self._reasons_problem = None
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
        """SIGTERM/SIGINT: finish the current action, save, exit. Nothing is released."""
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
        while not self.stopping:
            started = self.monotonic()
            delay = self.tick()
            self._wait(delay - (self.monotonic() - started))
        sd_notify("STOPPING=1")
        self.save(force=True)
        self.logger.info("watcher: stopped; holds stay in place until their event is over")
        return 0

    def _wait(self, seconds):
        deadline = self.monotonic() + seconds
        while not self.stopping:
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                return
            self.sleep(min(remaining, SLEEP_SLICE))

    # --- one tick ---------------------------------------------------------------------------

    def tick(self):
        """One poll and everything it leads to; returns the seconds until the next tick."""
        self.metrics.inc("polls_total")
        try:
            self._ensure_machine()
            document = self._request(self.client.get_document)
        except ImdsError as exc:
            self._poll_failed(exc)
            if self.machine is not None:
                self.execute(self.machine.observe(self.clock(), error=exc))
            self.hold_deferred()
            self._after_tick()
            return self.next_delay()
        if self.failures:
            self.logger.info("imds: answering again after %d failed poll(s)", self.failures)
        self.failures = 0
        self.last_error = None
        self.answered = self.clock()
        self.metrics.set("last_successful_poll_timestamp_seconds", round(self.clock(), 3))
        self.execute(self.machine.observe(self.clock(), document=document))
        self.hold_deferred()
        self._after_tick()
        return self.next_delay()

    def next_delay(self):
        interval = poll_delay(self.config["poll_interval"], self.failures, self.config["max_backoff"])
        return min(interval, self.config["keepalive_interval"])

    def _request(self, call):
        try:
            return call()
        finally:
            self.last_request = self.monotonic()

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
            return ThisVm(self._request(self.client.compute_name))
        except ImdsError as exc:
            self.naming.failed(self.monotonic(), exc)
            self.logger.debug("imds: this VM's name: %s (asked again in %g s)", exc, self.naming.delay())
            return ThisVm.unknown()

    def _complete_holds(self, reasons):
        """After a restart, before the machine goes on: a reason of this watcher may hold fewer targets than are
        configured (killed between the quick and the slow pass, or before an urgent event's deferred slow pass;
        or the configuration grew). Hold the rest now, so no hook or approval runs with puppet still enabled.
        Reasons whose event is already being released are left to the release."""
        configured = dict((t.key, t) for t in self.targets)
        for reason in reasons:
            rec = self.machine.events.get(str(reason["event_id"]).lower())
            if rec is not None and (not rec["held"] or rec["state"] in (GONE, POST_HOOKS, RELEASING, RELEASED)):
                continue
            missing = [t for key, t in configured.items() if key not in (reason.get("targets") or [])]
            if not missing:
                continue
            try:
                outcome = self.holds.hold(Reason(reason["id"], reason.get("text") or "Azure scheduled event %s"
                                                 % reason["event_id"], event_id=reason["event_id"], holder=HOLDER),
                                          missing)
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
        self._hold_reason_metrics()
        self._assess()
        if self.machine is not None:
            self.metrics.set("events_pending", len(self.machine.events))
            self.metrics.set("holds_active", len(self.machine.holds_active()))
            self.metrics.set_events(self.machine.events.values())
            self.machine.degraded(self.health.as_dict())
            self.save()
        for channel, count in self.notifier.failures.items():
            self.metrics.set("notification_failures_total", count, channel=channel)
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
        unreadable record keeps the last series, and the watcher is degraded (health.HOLD_RECORD_UNREADABLE)."""
        try:
            reasons = self.holds.status().get("reasons", [])
        except (HoldError, OSError, ValueError) as exc:
            self._reasons_problem = str(exc)
            return
        self._reasons_problem = None
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
        """Every decision of the step and of the results it leads to, in order."""
        queue = list(step.decisions)
        unsaved = False
        while queue:
            decision = queue.pop(0)
            if decision.kind == "journal":
                self._journal(decision.entry)
            elif decision.kind == "notify":
                self.notifier.send(decision.transition)
            else:
                result = self.act(decision)
                queue.extend(self.machine.feed(self.clock(), result).decisions)
                unsaved = True
            if unsaved and (not queue or queue[0].kind not in ("journal", "notify")):
                # saved once the journal has the entries that explain the new state: a kill -9 in between
                # then repeats them after the restart instead of losing them (a forgotten event is not redone)
                self.save()
                unsaved = False
                self._keepalive()

    def act(self, decision):
        handler = {"hold": self._hold, "hooks": self._hooks, "approve": self._approve, "release": self._release}
        result = handler[decision.kind](decision)
        if not result.ok:
            if decision.kind == "hooks":
                self.metrics.inc("hook_failures_total", phase=decision.phase)
            else:
                self.metrics.inc("action_failures_total", action=decision.kind)
        return result

    def _hold(self, decision):
        if not self.targets:
            return Result("hold", decision.event_id, True, "nothing is configured to hold (hold: {} is empty)")
        held = []
        try:
            reason = Reason.for_event(decision.event_id, decision.reason, holder=HOLDER)
            quick, slow = split_targets(self.targets)
            if slow and quick and _urgent(decision.event):
                outcome = self.holds.hold(reason, quick)
                if not outcome.failed:
                    self.deferred[decision.event_id] = reason
                    return Result("hold", decision.event_id, True, "held: %s; %s follow%s the approval (%s)" % (
                        ", ".join(sorted(outcome.results)), ", ".join(t.key for t in slow),
                        "s" if len(slow) == 1 else "", decision.event.get("EventType")))
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
        """The slow targets of urgent events, after their approval; retried every tick until they hold."""
        slow = split_targets(self.targets)[1]
        for event_id, reason in sorted(self.deferred.items()):
            if self.stopping:
                return
            try:
                outcome = self.holds.hold(reason, slow)
                problem = "; ".join(outcome.errors) if outcome.failed else None
            except (HoldError, ValueError, OSError) as exc:
                problem = str(exc)
            if problem is None:
                del self.deferred[event_id]
                self.logger.info("hold: event %s: also held: %s", event_id, ", ".join(sorted(outcome.results)))
            else:
                self.metrics.inc("action_failures_total", action="hold")
                self.logger.error("hold: event %s: holding %s failed (retried next tick): %s", event_id,
                                  ", ".join(t.key for t in slow), problem)

    def _release(self, decision):
        self.deferred.pop(decision.event_id, None)
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
            approved, skips = self._request(lambda: approve_and_confirm(self.client, decision.plan))
        except ImdsError as exc:
            return Result("approve", decision.event_ids, False, "approval failed: %s" % exc)
        self.metrics.inc("approvals_total", len(approved))
        return Result("approve", decision.event_ids, True, "approved %s" % ", ".join(approved),
                      data={"approved": approved, "skipped": [s.as_dict() for s in skips]})

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

    def _keepalive(self):
        """A long action must not starve IMDS: it disables itself after a day without requests."""
        if self.last_request is None or self.monotonic() - self.last_request < self.config["keepalive_interval"]:
            return
        try:
            self._request(self.client.get_document)
        except ImdsError as exc:
            self.logger.debug("imds: keep-alive request failed: %s", exc)
