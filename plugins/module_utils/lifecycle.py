# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What happened to each scheduled event between two looks: appeared, updated, approved, started, gone.

IMDS lists the pending events and never says one is over: it just vanishes, often across the reboot it caused.
Event Grid and Resource Graph do say Completed or Canceled, but Event Grid delivers out of order and more than
once. Every source of events (the watcher, the Event-Driven Ansible sources) turns what it sees into these
changes here, so a rulebook reacts to the same words whichever source saw the event, and an event that left the
document is judged completed, cancelled or vanished by one rule (outcome()).

Pure: no clock reads, no I/O except read_boot_id(). Like the rest of module_utils it imports nothing from ansible.
"""

from __future__ import annotations

import copy
import datetime
import json

from .events import FINISHED_STATUSES, SCHEDULED, STARTED, CANCELED, format_iso

APPEARED = "appeared"
UPDATED = "updated"
APPROVED = "approved"
STARTED_CHANGE = "started"
GONE = "gone"
CHANGES = (APPEARED, UPDATED, APPROVED, STARTED_CHANGE, GONE)

COMPLETED = "completed"
CANCELLED = "cancelled"
VANISHED = "vanished"
OUTCOMES = (COMPLETED, CANCELLED, VANISHED)

REBOOTING_TYPES = ("Reboot", "Redeploy")
# Events whose effect this VM sees as a new boot: a reboot, a move to another host, a Spot eviction (the VM is
# deallocated, and it boots again only when its owner starts it).
RESTARTING_TYPES = REBOOTING_TYPES + ("Preempt",)
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
DEFAULT_CONFIRM_POLLS = 3
FINISHED_RETENTION = 24 * 3600.0
# What a rescheduled or widened event changes; anything else (seconds_until_start ...) moves on every look.
UPDATE_KEYS = ("EventType", "NotBefore", "Resources", "Description", "DurationInSeconds", "EventSource",
               "ResourceType")
# Event Grid may deliver a late Started after Completed: never go back.
STATUS_RANK = {SCHEDULED: 0, STARTED: 1}
STATUS_RANK.update((status, 2) for status in FINISHED_STATUSES)

TRACKER_FORMAT = "imds-scheduled-events/lifecycle"
TRACKER_VERSION = 1


def read_boot_id(path=BOOT_ID_FILE):
    """The kernel's id for this boot: it changes on every reboot, which is how a Reboot is seen to be over."""
    try:
        with open(path, "r", encoding="ascii") as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def outcome(started, approved, boot_seen, boot_now, not_before, missing_since, adopted=False, event_type=None,
            due=False, seen=True):
    """What became of an event that left the IMDS document: COMPLETED, CANCELLED or VANISHED.

    - completed: it was seen Started. Or, in the boot it was last seen in, it was approved or left at or after
      its NotBefore (the platform starts events then). Or, across a new boot, it is a RESTARTING_TYPES event that
      was approved or seen still listed at or after its NotBefore (`due`): the new boot was its effect.
    - vanished: it left across a new boot (the boot id changed since it was last seen) otherwise, never seen to
      start: a stop and deallocation clears pending events, an owner's reboot is not the event's, or it ran
      while nobody looked; nobody can tell. Also an event adopted from the hold record after the state was lost
      (`adopted`) and never `seen` since.
    - cancelled: it left while Scheduled, never seen Started nor approved, in the boot it was last seen in,
      before its NotBefore: Azure withdrew it.
    Times are epoch seconds."""
    if started:
        return COMPLETED
    if adopted and not seen:
        return VANISHED
    if boot_seen not in (None, boot_now):
        if event_type in RESTARTING_TYPES and (approved or due):
            return COMPLETED
        return VANISHED
    if approved:
        return COMPLETED
    if not_before is not None and missing_since is not None and missing_since >= not_before:
        return COMPLETED
    return CANCELLED


def gone_detail(result, detail):
    """The line a `gone` says: the outcome, why it is over, and for VANISHED what was not seen."""
    if result == VANISHED:
        detail += "; it was not seen to start, and the VM restarted (or the watcher lost its history) since"
    return "%s: %s" % (result, detail)


def is_due(event, now):
    """Listed and not Started at or after its NotBefore: the platform starts it now (`due` of outcome())."""
    return not event.is_started and event.not_before is not None and now >= event.not_before.timestamp()


def _datetime(now):
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc)


def _signature(event):
    return json.dumps([event.raw.get(k) for k in UPDATE_KEYS], sort_keys=True, default=str)


def _changed_keys(old, new):
    before, after = json.loads(old), json.loads(new)
    return [k for k, a, b in zip(UPDATE_KEYS, before, after) if a != b]


def _start_changes(now, not_before, event, described):
    """An event seen Started for the first time: `approved` first when its NotBefore (as last seen Scheduled) was
    still ahead, since the platform itself starts events at NotBefore; then `started`."""
    out = []
    if not_before is not None and now < not_before:
        out.append(Change(APPROVED, event.event_id, described, "Started at %s, before its NotBefore %s: approved"
                          % (format_iso(_datetime(now)), format_iso(_datetime(not_before)))))
    out.append(Change(STARTED_CHANGE, event.event_id, described, "%s Started" % event.event_type))
    return out


class Change(object):
    """One lifecycle change of one event: what a rulebook matches on."""

    __slots__ = ("kind", "event_id", "event", "outcome", "detail", "changed")

    def __init__(self, kind, event_id, event, detail, outcome=None, changed=None):
        self.kind = kind
        self.event_id = event_id
        self.event = event
        self.detail = detail
        self.outcome = outcome
        self.changed = changed

    def as_dict(self):
        out = {"change": self.kind, "event_id": self.event_id, "scheduled_event": self.event, "detail": self.detail,
               "outcome": self.outcome}
        if self.changed is not None:
            out["changed"] = list(self.changed)
        return out

    def __repr__(self):
        return "Change(%s %s%s)" % (self.kind, self.event_id, " " + self.outcome if self.outcome else "")


class DocumentTracker(object):
    """One VM's events, IMDS document after document: the watcher's lifecycle rules without its actions.

    - an event is gone after `confirm_polls` successful documents without it (a flap is not an ending);
    - a Reboot or Redeploy seen Started again after the boot id changed is over: the reboot was the event;
    - approved: seen Started while the NotBefore it had when Scheduled was still ahead (the platform starts at
      NotBefore, so someone approved it: a VM it lists, or the control plane);
    - `selection` (an events.EventFilter) picks the events reported; the others are tracked but say nothing, and
      one that starts to match later (its Resources grew to list this VM) is reported as appeared then.
    The state is JSON: the caller may save it so that a restart, or the reboot an event caused, loses nothing.
    """

    def __init__(self, vm, boot_id, confirm_polls=DEFAULT_CONFIRM_POLLS, selection=None, state=None,
                 retention=FINISHED_RETENTION):
        if int(confirm_polls) < 1:
            raise ValueError("confirm_polls must be at least 1")
        self.vm = vm
        self.boot_id = boot_id
        self.confirm_polls = int(confirm_polls)
        self.selection = selection
        self.retention = float(retention)
        if state is None:
            state = {"format": TRACKER_FORMAT, "version": TRACKER_VERSION, "events": {}, "finished": {}}
        else:
            validate_tracker_state(state)
            state = copy.deepcopy(state)
        self.state = state

    @property
    def events(self):
        return self.state["events"]

    @property
    def finished(self):
        return self.state["finished"]

    def snapshot(self):
        return copy.deepcopy(self.state)

    def observe(self, now, document):
        """The changes one successful document shows (`now` in epoch seconds); an unchanged document shows none."""
        out = []
        seen = dict((event.event_id.lower(), event) for event in document.events)
        for key in sorted(self.events, key=lambda k: (self.events[k]["first_seen"], k)):
            rec = self.events[key]
            event = seen.pop(key, None)
            if event is None:
                self._absent(now, key, rec, out)
            else:
                self._present(now, key, rec, event, out)
        for key in sorted(seen):
            self._new(now, key, seen[key], out)
        for key in [k for k, f in self.finished.items() if f["time"] + self.retention <= now]:
            del self.finished[key]
        return out

    def _wanted(self, event):
        return self.selection is None or self.selection.matches(event, self.vm)

    def _refresh(self, now, rec, event):
        rec.update(status=event.status, type=event.event_type, last_seen=now, missing=0, missing_since=None,
                   boot_seen=self.boot_id, signature=_signature(event),
                   event=event.describe(self.vm, _datetime(now)))
        if event.not_before is not None:
            rec["not_before"] = event.not_before.timestamp()
        if event.is_started:
            rec["started"] = True
        if is_due(event, now):
            rec["due"] = True

    def _new(self, now, key, event, out):
        finished = self.finished.get(key)
        if finished is not None:
            if finished.get("via") == "reboot" and event.is_started:
                return  # the Started tail of a Reboot that was already seen to be over
            del self.finished[key]
        rec = {"id": event.event_id, "first_seen": now, "started": False, "approved": False, "emitted": False,
               "not_before": None}
        self.events[key] = rec
        self._refresh(now, rec, event)
        if self._wanted(event):
            detail = "reappeared after it was considered %s" % finished["outcome"] if finished else None
            self._appeared(rec, event, out, detail)

    def _appeared(self, rec, event, out, detail=None):
        rec["emitted"] = True
        text = "%s %s for %s" % (event.event_type, event.status, ", ".join(event.resources) or "no resources")
        out.append(Change(APPEARED, rec["id"], rec["event"], "%s: %s" % (detail, text) if detail else text))
        if event.is_started:
            out.append(Change(STARTED_CHANGE, rec["id"], rec["event"], "already Started when first seen"))

    def _present(self, now, key, rec, event, out):
        boot_before = rec["boot_seen"]
        was_started = rec["started"]
        not_before = rec["not_before"]
        signature = rec["signature"]
        self._refresh(now, rec, event)
        if not self._wanted(event):
            return
        if not rec["emitted"]:
            self._appeared(rec, event, out, "now selected")
            return
        rebooted = boot_before is not None and boot_before != self.boot_id
        if rebooted and event.is_started and event.event_type in REBOOTING_TYPES and event.affects(self.vm):
            self._gone(now, key, rec, COMPLETED, "Started after the VM rebooted (boot id changed)", out, "reboot")
            return
        if event.is_started and not was_started:
            started = _start_changes(now, not_before, event, rec["event"])
            rec["approved"] = started[0].kind == APPROVED
            out.extend(started)
        elif rec["signature"] != signature:
            changed = _changed_keys(signature, rec["signature"])
            out.append(Change(UPDATED, rec["id"], rec["event"], "changed: %s" % ", ".join(changed), changed=changed))

    def _absent(self, now, key, rec, out):
        rec["missing"] += 1
        if rec["missing_since"] is None:
            rec["missing_since"] = now
        if rec["missing"] < self.confirm_polls:
            return
        result = outcome(rec["started"], rec["approved"], rec["boot_seen"], self.boot_id, rec["not_before"],
                         rec["missing_since"], event_type=rec.get("type"), due=rec.get("due", False))
        self._gone(now, key, rec, result, "gone from the document for %d successful polls" % rec["missing"], out,
                   "gone")

    def _gone(self, now, key, rec, result, detail, out, via):
        if rec["emitted"]:
            out.append(Change(GONE, rec["id"], rec["event"], gone_detail(result, detail), outcome=result))
        del self.events[key]
        self.finished[key] = {"time": now, "outcome": result, "via": via}


def validate_tracker_state(state):
    """Raise ValueError naming what makes `state` not a saved DocumentTracker."""
    if not isinstance(state, dict) or state.get("format") != TRACKER_FORMAT:
        raise ValueError("not a lifecycle state (format is not %r)" % TRACKER_FORMAT)
    if state.get("version") != TRACKER_VERSION:
        raise ValueError("unknown lifecycle state version %r" % (state.get("version"),))
    for field in ("events", "finished"):
        if not isinstance(state.get(field), dict):
            raise ValueError("%r is not an object" % field)
    fields = (("id", str), ("first_seen", (int, float)), ("started", bool), ("approved", bool), ("emitted", bool),
              ("missing", int), ("signature", str))
    for key, rec in state["events"].items():
        if not isinstance(rec, dict):
            raise ValueError("event %r is not a record" % key)
        for field, kind in fields:
            if not isinstance(rec.get(field), kind):
                raise ValueError("event %r: %r is missing or of the wrong type" % (key, field))
        if rec["id"].lower() != key:
            raise ValueError("event %r: its id is %r" % (key, rec["id"]))
    for key, rec in state["finished"].items():
        if not isinstance(rec, dict) or not isinstance(rec.get("time"), (int, float)) or \
                rec.get("outcome") not in OUTCOMES:
            raise ValueError("finished event %r is not a record" % key)


class StatusTracker(object):
    """Events as the control plane reports them (Event Grid deliveries, Resource Graph rows): each report carries
    the status, so the change is the step from the status seen before. Reports may come twice or out of order:
    one that says nothing new, or goes back (Started after Completed), is dropped.

    `key` tells events apart: the row id (owner and EventId), since one EventId names one event. Memory is bounded:
    finished events are forgotten after `retention` seconds, and the oldest records beyond `limit`.
    """

    def __init__(self, retention=FINISHED_RETENTION, limit=100000):
        self.retention = float(retention)
        self.limit = int(limit)
        self.records = {}

    def observe(self, now, key, event, described):
        """The changes one report of `event` (an events.Event with a control-plane status) makes."""
        out = []
        rank = STATUS_RANK.get(event.status, 0)  # an undocumented status is kept as pending
        signature = _signature(event)
        rec = self.records.get(key)
        if rec is None:
            rec = {"id": event.event_id, "rank": -1, "status": None, "signature": None, "not_before": None,
                   "first_seen": now}
            if event.is_started:
                out.append(Change(APPEARED, event.event_id, described, "%s Started when first reported"
                                  % event.event_type))
            elif not event.is_finished:
                out.append(Change(APPEARED, event.event_id, described, "%s %s for %s" % (
                    event.event_type, event.status, ", ".join(event.resources) or "no resources")))
        elif rank < rec["rank"] or (rank == rec["rank"] and (rank == 2 or signature == rec["signature"])):
            return out  # a duplicate, or a late report of an earlier step
        elif rank == rec["rank"]:
            changed = _changed_keys(rec["signature"], signature)
            out.append(Change(UPDATED, event.event_id, described, "changed: %s" % ", ".join(changed),
                              changed=changed))
        if event.is_started and rec["rank"] < 1:
            out.extend(_start_changes(now, rec["not_before"], event, described))
        if event.is_finished:
            result = CANCELLED if event.status == CANCELED else COMPLETED
            out.append(Change(GONE, event.event_id, described, "%s: the control plane says %s"
                              % (result, event.status), outcome=result))
        rec.update(rank=max(rank, rec["rank"]), status=event.status, signature=signature, last=now)
        if event.not_before is not None:
            rec["not_before"] = event.not_before.timestamp()
        self.records[key] = rec
        self._prune(now)
        return out

    def _prune(self, now):
        for key in [k for k, r in self.records.items() if r["rank"] == 2 and r["last"] + self.retention <= now]:
            del self.records[key]
        if len(self.records) > self.limit:
            oldest = sorted(self.records, key=lambda k: (self.records[k]["rank"] != 2, self.records[k]["last"]))
            for key in oldest[:len(self.records) - self.limit]:
                del self.records[key]
