# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The watcher's per-event state machine: documents and action results in, decisions out.

Azure never says that an event is over: it is Scheduled, then Started, then simply
gone, often across the reboot it caused. This file turns that into a lifecycle:

    detected -> holding -> held -> pre_hooks -> ready | blocked -> approving -> approved
             -> started -> gone -> post_hooks -> releasing -> released (journaled, forgotten)

It is pure: no sockets, no sleeps, no clock reads. Time, the boot id and every
result of an action are inputs, so tests replay any history, and a crash at any
point is simulated by building a new Machine from the last saved state: actions
that were issued but not answered are issued again (they are all idempotent); a
hook phase that was in flight is journaled as hooks_interrupted first. Results
may come back late, in any order across events: one that no longer matches what
its event waits for (pre-hooks ending after the event went over) is ignored.
"""

from __future__ import annotations

import copy
import datetime
import re

from ..approval import Plan, plan as approval_plan
from ..events import KNOWN_EVENT_TYPES, EventFilter, Scope, format_iso
# The outcomes are this machine's words too (journal, hooks' IMDS_EVENT_OUTCOME): re-exported.
from ..lifecycle import (  # pylint: disable=unused-import
    CANCELLED, COMPLETED, REBOOTING_TYPES, VANISHED, gone_detail, is_due, outcome as lifecycle_outcome)

FORMAT = "imds-scheduled-events/watcher"
VERSION = 1
HOLDER = "imds-watcher"

DETECTED = "detected"
HOLDING = "holding"
HELD = "held"
PRE_HOOKS = "pre_hooks"
READY = "ready"          # held, pre-hooks passed; approved when a rule allows, else the platform starts it
BLOCKED = "blocked"      # a pre-hook failed: never approved (the platform starts it at NotBefore anyway)
APPROVING = "approving"
APPROVED = "approved"
STARTED = "started"
GONE = "gone"
POST_HOOKS = "post_hooks"
RELEASING = "releasing"
RELEASED = "released"
IGNORED = "ignored"      # not held: lists only other VMs, or a type the config leaves alone
STATES = (DETECTED, HOLDING, HELD, PRE_HOOKS, READY, BLOCKED, APPROVING, APPROVED, STARTED, GONE, POST_HOOKS,
          RELEASING, RELEASED, IGNORED)

# Transitions worth a webhook, a mail or a syslog line; every transition is journaled.
NOTIFY = frozenset([DETECTED, HELD, "hold_failed", BLOCKED, APPROVED, "approval_failed", STARTED, GONE,
                    "post_hooks_failed", RELEASED, "release_failed", "reappeared"])

PEER_EVENTS = ("ignore", "hold")
DEFAULT_CONFIRM_POLLS = 3
RETRY_MAX = 60.0
FINISHED_RETENTION = 24 * 3600.0
MAX_TIMELINE = 64
MAX_REASON = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def iso(now):
    """Epoch seconds as the UTC text every journal line and status uses."""
    return format_iso(datetime.datetime.fromtimestamp(now, datetime.timezone.utc))


def _clean(text, limit=MAX_REASON):
    text = _CONTROL.sub(" ", str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _key(event_id):
    """EventIds are GUIDs: compared case-insensitively, kept verbatim."""
    return str(event_id).lower()


def new_state():
    return {"format": FORMAT, "version": VERSION, "events": {}, "finished": {}}


def validate_state(state):
    """Raise ValueError naming the first thing that makes `state` not a saved machine."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError("not a watcher state (format is not %r)" % FORMAT)
    if state.get("version") != VERSION:
        raise ValueError("unknown watcher state version %r" % (state.get("version"),))
    for field in ("events", "finished"):
        if not isinstance(state.get(field), dict):
            raise ValueError("%r is not an object" % field)
    for key, rec in state["events"].items():
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or _key(rec["id"]) != key:
            raise ValueError("event %r is not a record" % key)
        if rec.get("state") not in STATES:
            raise ValueError("event %r has an unknown state %r" % (key, rec.get("state")))
        for field, kind in (("timeline", list), ("missing", int), ("held", bool), ("notes", list)):
            if not isinstance(rec.get(field), kind):
                raise ValueError("event %r: %r is missing or not a %s" % (key, field, kind.__name__))
    for key, rec in state["finished"].items():
        if not isinstance(rec, dict) or not isinstance(rec.get("time"), (int, float)):
            raise ValueError("finished event %r is not a record" % key)


# --- decisions: what the daemon is asked to do ------------------------------------------------


class Decision(object):
    kind = None

    def as_dict(self):
        return dict((k, v) for k, v in vars(self).items() if k != "plan")

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % kv for kv in sorted(self.as_dict().items())
                                                          if kv[0] in ("event_id", "event_ids", "phase", "transition")))


class Hold(Decision):
    """Hold drift correction for this event: reason id = EventId."""
    kind = "hold"

    def __init__(self, event_id, event, reason):
        self.event_id = event_id
        self.event = event
        self.reason = reason


class RunHooks(Decision):
    kind = "hooks"

    def __init__(self, phase, event_id, event, outcome=None):
        self.phase = phase
        self.event_id = event_id
        self.event = event
        self.outcome = outcome


class Approve(Decision):
    """POST these ids; `plan` is approval.py's Plan, for approval.approve_and_confirm."""
    kind = "approve"

    def __init__(self, event_ids, plan, rules):
        self.event_ids = list(event_ids)
        self.plan = plan
        self.rules = dict(rules)


class Release(Decision):
    kind = "release"

    def __init__(self, event_id, event):
        self.event_id = event_id
        self.event = event


class Notify(Decision):
    kind = "notify"

    def __init__(self, transition):
        self.transition = transition


class Journal(Decision):
    kind = "journal"

    def __init__(self, entry):
        self.entry = entry


class Result(object):
    """What an issued action did. `event_ids`: the one event (hold, hooks, release) or the approved batch."""

    def __init__(self, kind, event_ids, ok, detail="", data=None, phase=None):
        self.kind = kind
        self.event_ids = [event_ids] if isinstance(event_ids, str) else list(event_ids)
        self.ok = bool(ok)
        self.detail = detail or ""
        self.data = data or {}
        self.phase = phase

    def __repr__(self):
        return "Result(%s%s, %s, ok=%s)" % (self.kind, "/" + self.phase if self.phase else "", self.event_ids, self.ok)


class Step(object):
    """One call's decisions, in order, and the state to persist after carrying them out."""

    def __init__(self, decisions, state):
        self.decisions = decisions
        self.state = state

    def of(self, kind):
        return [d for d in self.decisions if d.kind == kind]


# --- the machine --------------------------------------------------------------------------------


class Machine(object):
    """One VM's events. `policy` answers match(description) -> (rule or None, problems)."""

    def __init__(self, vm, boot_id, policy=None, confirm_polls=DEFAULT_CONFIRM_POLLS, peer_events="ignore",
                 event_types=(), state=None):
        if confirm_polls < 1:
            raise ValueError("confirm_polls must be at least 1")
        if peer_events not in PEER_EVENTS:
            raise ValueError("peer_events must be one of %s" % ", ".join(PEER_EVENTS))
        self.vm = vm
        self.boot_id = boot_id
        self.policy = policy
        self.confirm_polls = int(confirm_polls)
        self.peer_events = peer_events
        self.event_types = frozenset(str(t).casefold() for t in event_types)
        if state is None:
            state = new_state()
        else:
            validate_state(state)
            state = copy.deepcopy(state)
            for rec in state["events"].values():
                if rec["pending"] == "hooks" and rec["state"] in (PRE_HOOKS, POST_HOOKS):
                    rec["interrupted"] = "pre" if rec["state"] == PRE_HOOKS else "post"
                rec["pending"] = None  # issued before a crash and never answered: issue it again
        self.state = state
        self._document = None

    # --- reading -------------------------------------------------------------------------------

    @property
    def events(self):
        return self.state["events"]

    def record(self, event_id):
        return self.events.get(_key(event_id))

    def snapshot(self):
        return copy.deepcopy(self.state)

    def pending(self):
        """Records not yet released, oldest first."""
        return sorted(self.events.values(), key=lambda r: (r.get("first_seen") or 0, r["id"]))

    def holds_active(self):
        return [r for r in self.events.values() if r["held"]]

    # --- inputs --------------------------------------------------------------------------------

    def observe(self, now, document=None, error=None):
        """A poll: a Document, or an error (which teaches nothing and never releases)."""
        out = []
        if document is None:
            if error is None:
                raise ValueError("observe() needs a document or an error")
            for rec in self.pending():  # retries and restarted actions need no document; nothing else moves
                self._drive(now, rec, out)
            return self._step(out)
        self._document = document
        seen = {}
        for event in document.events:
            seen[_key(event.event_id)] = event
        for key in sorted(self.events, key=lambda k: self.events[k].get("first_seen") or 0):
            rec = self.events[key]
            event = seen.pop(key, None)
            if event is None:
                self._absent(now, rec, out)
            else:
                self._present(now, rec, event, out)
        for key in sorted(seen):
            self._new(now, seen[key], out)
        self._prune_finished(now, document)
        self._approvals(now, document, out)
        return self._step(out)

    def feed(self, now, result):
        """The result of an action issued earlier."""
        out = []
        handler = {"hold": self._hold_result, "hooks": self._hooks_result, "approve": self._approve_result,
                   "release": self._release_result}.get(result.kind)
        if handler is None:
            raise ValueError("unknown result kind %r" % (result.kind,))
        handler(now, result, out)
        return self._step(out)

    def degraded(self, conditions):
        """What keeps the watcher from its whole job now (health.Health.as_dict()), saved with the events so that
        `imds-watcher status` and watcher_info can say it."""
        self.state["degraded"] = conditions

    def identify(self, vm):
        """This VM's name, learnt after the machine started without it (ThisVm.unknown()). From the next document
        on, events are attributed as usual; nothing held is released for it: an event that turns out to list only
        other VMs stays held until it is gone (like one whose Resources stop listing this VM), never approved."""
        self.vm = vm

    def adopt(self, now, reasons):
        """Holds the hold record says this watcher set for events this state does not know (its state
        was lost or corrupt). The record is the truth: they are tracked again, released only when the
        document says their event is over, and never released on a guess."""
        out = []
        for reason in reasons:
            event_id = reason.get("event_id") or reason.get("id")
            if not event_id or _key(event_id) in self.events:
                continue
            rec = self._record(now, event_id, None)
            rec.update(held=True, adopted=True, state=HELD, boot_seen=None, boot_held=None)
            rec["notes"].append("adopted from the hold record (held since %s)" % (reason.get("since") or "?"))
            self._transition(now, rec, HELD, "adopted: the hold record names this event; its earlier history is lost",
                             out)
        return self._step(out)

    # --- the document ---------------------------------------------------------------------------

    def _wanted(self, event):
        """Whether this event is held, and why not."""
        scope = event.scope(self.vm)
        if scope == Scope.OTHER_VMS and self.peer_events == "ignore":
            return False, "lists only other VMs (%s); peer_events is ignore" % ", ".join(event.resources)
        known = event.event_type in KNOWN_EVENT_TYPES
        if self.event_types and known and event.event_type.casefold() not in self.event_types:
            return False, "type %s is not in event_types" % event.event_type
        return True, None

    def _record(self, now, event_id, event):
        rec = {
            "id": event_id, "type": None, "status": None, "scope": None, "resources": [], "event": None,
            "state": DETECTED, "since": now, "first_seen": now, "last_seen": None, "missing": 0,
            "missing_since": None, "held": False, "adopted": False, "boot_seen": self.boot_id, "boot_held": None,
            "started": False, "approved": False, "due": False, "rule": None, "pre_hooks": None, "post_hooks": None,
            "outcome": None, "pending": None, "attempts": 0, "retry_at": None, "error": None, "notes": [],
            "timeline": [],
        }
        self.events[_key(event_id)] = rec
        if event is not None:
            self._refresh(now, rec, event)
        return rec

    def _refresh(self, now, rec, event):
        rec["type"] = event.event_type
        rec["status"] = event.status
        rec["scope"] = event.scope(self.vm)
        rec["resources"] = list(event.resources)
        rec["event"] = event.describe(self.vm, _datetime(now))
        rec["not_before"] = event.not_before.timestamp() if event.not_before else None
        rec["last_seen"] = now
        rec["missing"] = 0
        rec["missing_since"] = None
        if event.is_started:
            rec["started"] = True
        if is_due(event, now):
            rec["due"] = True

    def _new(self, now, event, out):
        finished = self.state["finished"].get(_key(event.event_id))
        if finished is not None:
            if finished.get("via") == "reboot" and event.is_started:
                finished["seen"] = now  # the Started tail of a Reboot already released after the reboot
                return
            del self.state["finished"][_key(event.event_id)]
        rec = self._record(now, event.event_id, event)
        wanted, why = self._wanted(event)
        detail = "%s %s for %s" % (event.event_type, event.status, ", ".join(event.resources) or "no resources")
        if finished is not None:
            self._transition(now, rec, DETECTED, "reappeared after it was considered %s: held again"
                             % finished.get("outcome"), out, what="reappeared")
        else:
            self._transition(now, rec, DETECTED, detail, out)
        if not wanted:
            self._transition(now, rec, IGNORED, why, out)
            return
        if rec["scope"] == Scope.UNKNOWN:
            self._note(now, rec, "held because this VM's name is unknown, so whose event this is cannot be told; "
                                 "nothing is approved until the name is known", out)
        self._drive(now, rec, out)

    def _present(self, now, rec, event, out):
        boot_before = rec.get("boot_seen")
        was_scheduled = not rec["started"]
        scope_before = rec.get("scope")
        self._refresh(now, rec, event)
        rec["boot_seen"] = self.boot_id
        state = rec["state"]
        if state in (GONE, POST_HOOKS, RELEASING):
            return  # over; a late reappearance is judged once it is released
        if scope_before == Scope.UNKNOWN and self.vm.known and state != IGNORED:
            self._note(now, rec, "this VM is %s: the event's scope is %s%s" % (
                self.vm.name, rec["scope"], "; it stays held until it is gone, and is never approved from here"
                if rec["scope"] == Scope.OTHER_VMS else ""), out)
        if state == IGNORED:
            wanted, dummy = self._wanted(event)
            if wanted:
                self._transition(now, rec, DETECTED, "now affects this VM: %s" % ", ".join(event.resources), out)
                self._drive(now, rec, out)
            return
        rebooted = boot_before is not None and boot_before != self.boot_id
        if rebooted and event.is_started and rec["type"] in REBOOTING_TYPES and event.affects(self.vm):
            # The VM rebooted since this event was last seen, and it is Started: the reboot was the event.
            self._over(now, rec, COMPLETED, "Started after the VM rebooted (boot id changed)", out, via="reboot")
            return
        if event.is_started and was_scheduled and state in (READY, BLOCKED, APPROVED):
            self._transition(now, rec, STARTED, "the platform started it", out)
        elif event.is_started and state in (READY, BLOCKED, APPROVED):
            self._transition(now, rec, STARTED, "already Started", out)
        self._drive(now, rec, out)

    def _absent(self, now, rec, out):
        if rec["state"] in (GONE, POST_HOOKS, RELEASING):
            self._drive(now, rec, out)
            return
        rec["missing"] += 1
        if rec["missing_since"] is None:
            rec["missing_since"] = now
        if rec["missing"] < self.confirm_polls:
            self._drive(now, rec, out)  # a flap keeps its state; retries go on
            return
        detail = "gone from the document for %d successful polls" % rec["missing"]
        if rec["state"] == IGNORED:
            self._transition(now, rec, GONE, detail, out)
            self._forget(now, rec, None, "gone")
            return
        self._over(now, rec, self._outcome(rec), detail, out, via="gone")

    def _outcome(self, rec):
        """Completed, cancelled or vanished, by the rule every source shares (lifecycle.outcome)."""
        return lifecycle_outcome(rec["started"], rec["approved"], rec.get("boot_seen"), self.boot_id,
                                 rec.get("not_before"), rec["missing_since"], adopted=rec.get("adopted"),
                                 event_type=rec["type"], due=rec.get("due", False), seen=rec["last_seen"] is not None)

    def _over(self, now, rec, outcome, detail, out, via):
        rec["outcome"] = outcome
        rec["via"] = via
        rec["pending"] = None
        rec["retry_at"] = None
        rec["attempts"] = 0
        self._transition(now, rec, GONE, gone_detail(outcome, detail), out)
        self._drive(now, rec, out)

    # --- issuing actions ---------------------------------------------------------------------

    def _drive(self, now, rec, out):
        """Issue the next action the record's state calls for, unless one is outstanding or waits to retry."""
        phase = rec.pop("interrupted", None)
        if phase is not None:
            again = rec["state"] == (PRE_HOOKS if phase == "pre" else POST_HOOKS)
            self._journal(now, rec, "hooks_interrupted", "the %s-event hooks were in flight when the watcher stopped "
                          "(they may have been cut short): %s" % (phase, "they run again, from the first" if again
                                                                  else "the event moved on, so not again"), out)
        if rec["pending"] or (rec["retry_at"] is not None and now < rec["retry_at"]):
            return
        rec["retry_at"] = None
        state = rec["state"]
        if state in (DETECTED, HOLDING):
            if state == DETECTED:
                self._transition(now, rec, HOLDING, "holding drift correction", out)
            rec["pending"] = "hold"
            out.append(Hold(rec["id"], rec["event"], self.reason_text(rec)))
        elif state in (HELD, PRE_HOOKS) and rec["event"] is not None:
            if state == HELD:
                self._transition(now, rec, PRE_HOOKS, "running pre-event hooks", out)
            rec["pending"] = "hooks"
            out.append(RunHooks("pre", rec["id"], rec["event"]))
        elif state == APPROVING:
            rec["state"] = READY  # restarted mid-approval: the document decides whether to approve again
        elif state in (GONE, POST_HOOKS):
            if state == GONE and not rec["held"]:
                self._transition(now, rec, RELEASING, "never held: post-event hooks skipped", out)
                rec["pending"] = "release"
                out.append(Release(rec["id"], rec["event"]))
                return
            if state == GONE:
                self._transition(now, rec, POST_HOOKS, "running post-event hooks (%s)" % rec["outcome"], out)
            rec["pending"] = "hooks"
            out.append(RunHooks("post", rec["id"], rec["event"] or {"EventId": rec["id"]}, rec["outcome"]))
        elif state == RELEASING:
            rec["pending"] = "release"
            out.append(Release(rec["id"], rec["event"]))

    def reason_text(self, rec):
        """The hold's reason: names the event, so puppet's lock file and `imds-hold status` say why."""
        event = rec["event"] or {}
        when = event.get("not_before")
        text = "Azure scheduled event %s %s (%s%s) for %s" % (
            rec["type"] or "?", rec["id"], rec["status"] or "?", ", not before %s" % when if when else "",
            ", ".join(rec["resources"]) or "no resources")
        return _clean(text)

    def _approvals(self, now, document, out):
        """One POST for every event that is held, passed its pre-hooks, matches a rule and that
        approval.py allows from this VM (never other-VM-only; shared only if the rule says so)."""
        if not self.vm.known:
            return  # whose events these are cannot be told: approving one might start another VM's maintenance
        chosen, rules = [], {}
        for rec in self.pending():
            if rec["state"] != READY or rec["pending"] or (rec["retry_at"] is not None and now < rec["retry_at"]):
                continue
            event = document.event(rec["id"])
            if event is None or event.is_started or self.policy is None:
                continue
            rule, problems = self.policy.match(event.describe(self.vm, _datetime(now)))
            for problem in problems:
                self._note(now, rec, "policy: %s" % problem, out)
            if rule is None:
                continue
            selection = EventFilter(event_ids=[event.event_id])
            verdict = approval_plan(document, self.vm, selection, requested_ids=[event.event_id],
                                    allow_shared=rule.allow_shared)
            if not verdict.approve:
                for skip in verdict.skipped:
                    self._note(now, rec, "rule %s matches but it is not approved: %s%s"
                               % (rule.name, skip.reason, " (%s)" % skip.detail if skip.detail else ""), out)
                continue
            chosen.append((rec, event))
            rules[rec["id"]] = rule.name
        if not chosen:
            return
        for rec, dummy in chosen:
            rec["rule"] = rules[rec["id"]]
            rec["pending"] = "approve"
            self._transition(now, rec, APPROVING, "rule %s matches" % rec["rule"], out)
        out.append(Approve([r["id"] for r, dummy in chosen], Plan([e for dummy, e in chosen], [], []), rules))

    # --- results -------------------------------------------------------------------------------

    def _answered(self, result, kind, state=None):
        """The records that waited for this result (and, when given, are still in `state`)."""
        recs = []
        for event_id in result.event_ids:
            rec = self.record(event_id)
            if rec is not None and rec["pending"] == kind and (state is None or rec["state"] == state):
                rec["pending"] = None
                recs.append(rec)
        return recs

    def _retry_later(self, now, rec, what, detail, out):
        rec["attempts"] += 1
        rec["retry_at"] = now + min(RETRY_MAX, 2.0 ** (rec["attempts"] - 1))
        if detail != rec["error"]:  # once per distinct failure, not once per retry
            rec["error"] = detail
            self._journal(now, rec, what, detail, out)

    def _succeeded(self, rec):
        rec["attempts"] = 0
        rec["retry_at"] = None
        rec["error"] = None

    def _hold_result(self, now, result, out):
        for rec in self._answered(result, "hold"):
            if not result.ok:
                self._retry_later(now, rec, "hold_failed", result.detail, out)
                continue
            self._succeeded(rec)
            rec["held"] = True
            rec["boot_held"] = self.boot_id
            self._transition(now, rec, HELD, result.detail or "drift correction held", out)
            self._drive(now, rec, out)

    def _hooks_result(self, now, result, out):
        for rec in self._answered(result, "hooks", PRE_HOOKS if result.phase == "pre" else POST_HOOKS):
            data = {"runs": result.data.get("runs", [])}
            if result.phase == "pre":
                rec["pre_hooks"] = "ok" if result.ok else "failed"
                if result.ok:
                    self._transition(now, rec, READY, result.detail or "pre-event hooks passed", out, data=data)
                else:
                    self._transition(now, rec, BLOCKED, "pre-event hooks failed, so it is never approved: %s"
                                     % result.detail, out, data=data)
                if rec["started"]:
                    self._transition(now, rec, STARTED, "already Started", out)
            else:
                rec["post_hooks"] = "ok" if result.ok else "failed"
                if not result.ok:
                    self._journal(now, rec, "post_hooks_failed", result.detail, out, data=data)
                self._transition(now, rec, RELEASING, "post-event hooks %s" % ("passed" if result.ok else "failed"),
                                 out, data=data if result.ok else None)
            self._drive(now, rec, out)
        if result.phase == "pre" and result.ok and self._document is not None:
            self._approvals(now, self._document, out)

    def _approve_result(self, now, result, out):
        approved = set(_key(i) for i in result.data.get("approved", result.event_ids if result.ok else []))
        skipped = dict((_key(s["EventId"]), s) for s in result.data.get("skipped", []))
        for rec in self._answered(result, "approve"):
            key = _key(rec["id"])
            if key in approved:
                self._succeeded(rec)
                rec["approved"] = True
                self._transition(now, rec, APPROVED, "approved by rule %s" % rec["rule"], out)
            elif key in skipped:
                skip = skipped[key]
                rec["state"] = READY
                self._note(now, rec, "approval not needed: %s" % (skip.get("detail") or skip.get("reason")), out)
            else:
                rec["state"] = READY
                self._retry_later(now, rec, "approval_failed", result.detail or "the approval was not accepted", out)

    def _release_result(self, now, result, out):
        for rec in self._answered(result, "release"):
            if not result.ok:
                self._retry_later(now, rec, "release_failed", result.detail, out)
                continue
            self._succeeded(rec)
            rec["held"] = False
            self._transition(now, rec, RELEASED, result.detail or "drift correction released", out)
            self._forget(now, rec, rec["outcome"], rec.get("via") or "gone")

    def _forget(self, now, rec, outcome, via):
        del self.events[_key(rec["id"])]
        if outcome is not None:
            self.state["finished"][_key(rec["id"])] = {"id": rec["id"], "type": rec["type"], "outcome": outcome,
                                                       "via": via, "time": now}

    def _prune_finished(self, now, document):
        for key in list(self.state["finished"]):
            if document.event(key) is None and now - self.state["finished"][key]["time"] > FINISHED_RETENTION:
                del self.state["finished"][key]

    # --- journal and notifications ---------------------------------------------------------------

    def _transition(self, now, rec, state, detail, out, what=None, data=None):
        previous = rec["state"]
        rec["state"] = state
        rec["since"] = now
        self._journal(now, rec, what or state, detail, out, previous=previous, data=data)

    def _note(self, now, rec, text, out):
        """Something worth saying once (why a matching rule did not approve, a policy error)."""
        if text in rec["notes"]:
            return
        rec["notes"].append(text)
        del rec["notes"][:-16]
        self._journal(now, rec, "note", text, out)

    def _journal(self, now, rec, what, detail, out, previous=None, data=None):
        entry = {"time": iso(now), "ts": round(now, 3), "vm": self.vm.name, "event_id": rec["id"],
                 "event_type": rec["type"], "transition": what, "state": rec["state"], "status": rec["status"],
                 "detail": detail or ""}
        if rec["outcome"]:
            entry["outcome"] = rec["outcome"]
        if data:
            entry["data"] = data
        rec["timeline"].append({"time": entry["time"], "transition": what, "detail": entry["detail"]})
        del rec["timeline"][:-MAX_TIMELINE]
        out.append(Journal(entry))
        if what in NOTIFY:
            note = dict(entry, previous=previous, event=rec["event"])
            note.pop("data", None)
            out.append(Notify(note))

    def _step(self, out):
        return Step(out, self.snapshot())


def _datetime(now):
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
