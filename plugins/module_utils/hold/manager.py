# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Hold, release and status over the record.

A target (a unit, puppet, the guard, a command) is held while at least one
reason holds it; the last reason to go releases it, back to its prior state.
Crash safety comes from ordering: the prior state and the planned steps are
written before the first step, each step is checkpointed after it ran, the
target is marked held or removed only at the end, and every step is idempotent.
So whoever takes the lock next (hold or release, any reason) finishes what the
record says is in progress.

Threads of one process (the watcher's lanes) share the lock: the first operation takes
it and the last one to finish lets it go, and the record lives in memory meanwhile.
A backend's slow work (puppet's Ruby start, an operator command, a wait for a run in
flight) runs without the in-process guard, on a copy of its target's record that is
merged back at each checkpoint; so one thread may add a reason to a held timer while
another waits for puppet. A target is worked on by one thread at a time: an operation
that needs a target another thread is at work on waits for it; one that merely finds
it pending leaves it to that thread. A step whose target changed meanwhile (a reason
dropped, or a hold arriving during its release) stops at its next checkpoint and the
target is settled again from what the record now says.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import threading
import time

from .backends import BACKENDS, Context, Target, backend_for, target_key
from .common import (DEFAULT_LOCK_TIMEOUT, DEFAULT_STATE_FILE, MAX_REASON_ID, MAX_REASON_TEXT, HoldError,
                     clean_text, isoformat, one_line, run_command)
from .store import HoldStore

DEFAULT_REASON_ID = "manual"
# Settings a later hold may change on a target already held; the rest (mask, commands) stay as first recorded.
TUNABLE_SETTINGS = ("wait_timeout", "timeout")


class Reason(object):
    """Why something is held: an id (to release it by), text, the event if any, who set it."""

    def __init__(self, reason_id, text, event_id=None, holder=None):
        self.id = clean_text(reason_id, "the reason id", MAX_REASON_ID)
        if one_line(self.id) != self.id:
            raise ValueError("the reason id must not contain control characters")
        self.text = clean_text(text, "the reason", MAX_REASON_TEXT)
        self.event_id = clean_text(event_id, "the event id", MAX_REASON_ID, required=False)
        if self.event_id is not None and one_line(self.event_id) != self.event_id:
            raise ValueError("the event id must not contain control characters")
        self.holder = clean_text(holder, "the holder", MAX_REASON_ID, required=False) or "unknown"

    @classmethod
    def for_event(cls, event_id, text, holder=None):
        """The hold of an event, released by event_reason_id(event_id). An EventId that cannot be a reason id (a
        hostile document's) still gets its hold: the record then names no event (the journal keeps the id)."""
        reason_id = event_reason_id(event_id)
        return cls(reason_id, text, event_id=event_id if reason_id == event_id else None, holder=holder)

    def as_dict(self, since):
        return {"id": self.id, "text": self.text, "event_id": self.event_id, "holder": self.holder, "since": since}

    def same_as(self, recorded):
        return (recorded.get("id"), recorded.get("text"), recorded.get("event_id")) == (self.id, self.text, self.event_id)


def event_reason_id(event_id):
    """An event's reason id: its EventId when a reason id can be that (one line, no spaces around, at most
    MAX_REASON_ID characters: every GUID), else "event-" and a digest of it, the same on every call."""
    text = "" if event_id is None else str(event_id)
    if text and text.strip() == text and len(text) <= MAX_REASON_ID and one_line(text) == text:
        return text
    return "event-%s" % hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def default_reason_id(event_id=None):
    """An event's hold is released by its EventId; anything else by "manual" unless named."""
    return event_id or DEFAULT_REASON_ID


class TargetResult(object):
    """What one hold or release did (or would do, in check mode) to one target."""

    def __init__(self, key, kind, name):
        self.key = key
        self.kind = kind
        self.name = name
        self.steps = []
        self.error = None
        self.state = "not held"
        self.reasons = []
        self.notes = []

    @property
    def changed(self):
        return bool(self.steps)

    def as_dict(self):
        data = {"backend": self.kind, "name": self.name, "changed": self.changed, "steps": list(self.steps),
                "state": self.state, "reasons": list(self.reasons), "notes": list(self.notes)}
        if self.error:
            data["error"] = self.error
        return data


class Outcome(object):
    """The record before and after, and per-target results."""

    def __init__(self, before, after, results, state_file, check_mode):
        self.before = before
        self.after = after
        self.results = results
        self.state_file = state_file
        self.check_mode = check_mode

    @property
    def changed(self):
        record_changed = self.before.get("targets") != self.after.get("targets")
        return record_changed or any(r.changed for r in self.results.values())

    @property
    def errors(self):
        return ["%s: %s" % (key, r.error) for key, r in self.results.items() if r.error]

    @property
    def failed(self):
        return bool(self.errors)

    def as_dict(self):
        return {"changed": self.changed, "backends": dict((k, r.as_dict()) for k, r in self.results.items()),
                "holds": status_of(self.after, self.state_file), "errors": self.errors}


def status_of(doc, state_file, writer=None):
    """Who holds what and why, from a record: for `imds-hold status`, the module and the watcher.

    `writer`: the pid of the hold, release or settle at work now (HoldStore.read_with_writer), else None. A target
    that is not simply held is `in_progress` while a writer is at work (it settles every such target); otherwise
    it was stopped half way (killed, or a step failed) and `imds-hold settle` finishes it."""
    targets = []
    reasons = {}
    for key in sorted(doc.get("targets", {})):
        rec = doc["targets"][key]
        cls = BACKENDS.get(rec.get("backend"))
        entry = {
            "key": key, "backend": rec.get("backend"), "name": rec.get("name"), "phase": rec.get("phase"),
            "since": rec.get("since"), "held_at": rec.get("held_at"), "reasons": copy.deepcopy(rec.get("reasons", [])),
            "prior": copy.deepcopy(rec.get("prior", {})), "actions": list(rec.get("actions", [])),
            "done": list(rec.get("done", [])), "notes": list(rec.get("notes", [])),
            "summary": cls.summary(rec) if cls else "",
            "progress": copy.deepcopy(rec.get("progress")), "released_by": copy.deepcopy(rec.get("released_by")),
            "in_progress": writer is not None and _pending(rec), "writer_pid": writer if _pending(rec) else None,
        }
        targets.append(entry)
        for reason in rec.get("reasons", []):
            agg = reasons.setdefault(reason["id"], dict(reason, targets=[]))
            agg["targets"].append(key)
    return {"state_file": state_file, "held": bool(targets), "updated": doc.get("updated"), "targets": targets,
            "reasons": [reasons[k] for k in sorted(reasons)]}


def guard_hold(doc):
    """The guard target's record while it holds (intent written counts), else None."""
    rec = doc.get("targets", {}).get(target_key("guard", None))
    if rec and rec.get("reasons") and rec.get("phase") in ("holding", "held"):
        return rec
    return None


class HoldManager(object):
    """The one entry point for the module, the CLI and the watcher."""

    def __init__(self, state_file=DEFAULT_STATE_FILE, run=run_command, clock=time.time, monotonic=time.monotonic,
                 sleep=time.sleep, owner_uid=0, lock_timeout=DEFAULT_LOCK_TIMEOUT, poll_interval=None,
                 environ=None):
        self.store = HoldStore(state_file, owner_uid=owner_uid, clock=clock, monotonic=monotonic, sleep=sleep,
                               lock_timeout=lock_timeout)
        self.clock = clock
        options = {} if poll_interval is None else {"poll_interval": poll_interval}
        self.context = Context(run=run, monotonic=monotonic, sleep=sleep, store=self.store, environ=environ,
                               **options)
        self._guard = threading.Condition()  # this process's operations: the shared record and who works on what
        self._users = 0
        self._doc = None
        self._unlock = None
        self._busy = {}  # target key -> the thread doing its steps, unguarded

    @property
    def state_file(self):
        return self.store.path

    def backend(self, kind, name, settings):
        return backend_for(kind, name, settings, self.context)

    def _backend_of(self, rec):
        return self.backend(rec["backend"], rec["name"], rec["settings"])

    # --- reading ---------------------------------------------------------

    def status(self):
        doc, writer = self.store.read_with_writer()
        return status_of(doc, self.store.path, writer=writer)

    # --- hold ------------------------------------------------------------

    def hold(self, reason, targets, check_mode=False):
        """Hold every target for `reason`. Targets already held get the reason added."""
        targets = _unique(targets)
        if not targets:
            raise ValueError("nothing to hold: name at least one systemd unit, puppet, the guard or a command")
        if check_mode:
            doc = self.store.read()
            before = copy.deepcopy(doc)
            results = self._results(doc, [t.key for t in targets], targets)
            self._apply_hold(doc, reason, targets, results)
            self._predict_settle(doc, results)
            return Outcome(before, doc, results, self.store.path, True)
        with self._record() as doc:
            fresh = {}
            while True:  # inspect everything first: a typo or a missing tool changes nothing
                missing = [t for t in targets if t.key not in doc["targets"] and t.key not in fresh]
                if not missing:
                    break
                fresh.update(self._unguarded(self._inspect, missing, reason))
            before = copy.deepcopy(doc)
            results = self._results(doc, [t.key for t in targets], targets)
            self._apply_hold(doc, reason, targets, results, fresh)
            if doc != before:
                self.store.write(doc)
            self._settle(doc, [t.key for t in targets], results)
            return Outcome(before, copy.deepcopy(doc), results, self.store.path, False)

    def _inspect(self, targets, reason):
        """{key: (prior, plan)}: run unguarded, since inspecting puppet starts Ruby."""
        now = isoformat(self.clock())
        fresh = {}
        for target in targets:
            backend = self.backend(target.kind, target.name, target.settings)
            prior = backend.inspect()
            fresh[target.key] = (prior, backend.plan(prior, reason.as_dict(now)))
        return fresh

    def _apply_hold(self, doc, reason, targets, results, fresh=None):
        now = isoformat(self.clock())
        if fresh is None:  # check mode: on a copy, nothing is touched, so nothing runs beside it
            fresh = self._inspect([t for t in targets if t.key not in doc["targets"]], reason)
        for target in targets:
            result = results[target.key]
            rec = doc["targets"].get(target.key)
            if rec is None:
                prior, plan = fresh[target.key]
                doc["targets"][target.key] = {
                    "backend": target.kind, "name": target.name, "settings": copy.deepcopy(target.settings),
                    "phase": "holding", "since": now, "prior": prior, "actions": list(plan["actions"]),
                    "applied": dict(plan.get("applied") or {}), "done": [], "notes": list(plan.get("notes") or []),
                    "reasons": [reason.as_dict(now)],
                }
                result.steps.append("hold for reason %r" % reason.id)
                continue
            for knob in TUNABLE_SETTINGS:  # "raise the wait timeout and hold again" must work
                if knob in target.settings:
                    rec["settings"][knob] = target.settings[knob]
            existing = [r for r in rec["reasons"] if r.get("id") == reason.id]
            if existing and reason.same_as(existing[0]):
                pass
            elif existing:
                existing[0].update(text=reason.text, event_id=reason.event_id, holder=reason.holder)
                result.steps.append("update reason %r" % reason.id)
            else:
                rec["reasons"].append(reason.as_dict(now))
                result.steps.append("add reason %r" % reason.id)
            rec.pop("released_by", None)
            if rec["phase"] == "releasing":
                # A release was under way: hold again with the original prior state, redoing every step.
                rec["phase"] = "holding"
                rec["done"] = []

    # --- release ---------------------------------------------------------

    def release(self, reason_id=None, targets=None, all_reasons=False, check_mode=False):
        """Drop `reason_id` (or every reason) from the targets (default: all); a target whose
        last reason goes is restored to its prior state."""
        if not all_reasons and not reason_id:
            raise ValueError("name the reason to release, or release all reasons")
        targets = _unique(targets or [])
        if check_mode:
            doc = self.store.read()
            before = copy.deepcopy(doc)
            keys = [t.key for t in targets] or sorted(doc["targets"])
            results = self._results(doc, keys, targets)
            self._apply_release(doc, keys, reason_id, all_reasons, results)
            self._predict_settle(doc, results)
            return Outcome(before, doc, results, self.store.path, True)
        with self._record() as doc:
            before = copy.deepcopy(doc)
            keys = [t.key for t in targets] or sorted(doc["targets"])
            results = self._results(doc, keys, targets)
            self._apply_release(doc, keys, reason_id, all_reasons, results)
            if doc != before:
                self.store.write(doc)
            self._settle(doc, keys, results)
            return Outcome(before, copy.deepcopy(doc), results, self.store.path, False)

    def _apply_release(self, doc, keys, reason_id, all_reasons, results):
        for key in keys:
            rec = doc["targets"].get(key)
            if rec is None:
                continue
            removed = [r for r in rec["reasons"] if all_reasons or r.get("id") == reason_id]
            if not removed:
                continue
            rec["reasons"] = [r for r in rec["reasons"] if r not in removed]
            results[key].steps.extend("drop reason %r" % r["id"] for r in removed)
            if not rec["reasons"]:
                rec["released_by"] = removed[-1]

    def settle(self):
        """Finish whatever a crashed hold or release left in progress, and redo what a reboot undid of the holds
        that remain (the watcher does this at every start, so at every boot)."""
        with self._record() as doc:
            before = copy.deepcopy(doc)
            results = self._results(doc, [], [])
            self._settle(doc, [], results)
            self._reassert(doc, results)
            return Outcome(before, copy.deepcopy(doc), results, self.store.path, False)

    def _reassert(self, doc, results):
        for key in sorted(doc["targets"]):
            rec = doc["targets"][key]
            if _pending(rec):
                continue
            try:
                steps = self._backend_of(rec).reassert(rec)
            except HoldError as exc:
                steps = []
                results.setdefault(key, TargetResult(key, rec["backend"], rec["name"])).error = str(exc)
            if steps:
                result = results.setdefault(key, TargetResult(key, rec["backend"], rec["name"]))
                result.steps.extend(steps)
                _describe(result, rec)

    def at_boot(self):
        """Early in a boot, before drift correction can start: put back what the boot undoes of every target that a
        reason holds, whether its hold completed or was cut short (a held timer's start is cancelled, its runtime
        mask put back). It reads the record without the writers' lock (every write is atomic) and writes nothing,
        so it needs no write access and cannot wait for anyone; it never releases, never waits for a run, and
        leaves a target being released alone: the watcher settles and releases once it runs."""
        doc = self.store.read()
        results = {}
        for key in sorted(doc["targets"]):
            rec = doc["targets"][key]
            if not rec["reasons"]:
                continue
            result = results[key] = TargetResult(key, rec["backend"], rec["name"])
            try:
                result.steps.extend(self._backend_of(rec).at_boot(rec))
            except HoldError as exc:
                result.error = str(exc)
            _describe(result, rec)
        return Outcome(doc, doc, results, self.store.path, False)

    # --- doing the steps -------------------------------------------------

    def _results(self, doc, keys, targets):
        results = {}
        given = dict((t.key, t) for t in targets)
        for key in list(keys) + sorted(k for k in doc["targets"] if _pending(doc["targets"][k])):
            if key in results:
                continue
            rec = doc["targets"].get(key)
            if rec is not None:
                results[key] = TargetResult(key, rec["backend"], rec["name"])
            else:
                target = given.get(key)
                results[key] = TargetResult(key, target.kind if target else None, target.name if target else None)
        return results

    def _settle(self, doc, keys, results):
        order = list(keys) + sorted(k for k in doc["targets"] if k not in keys)
        for key in order:
            while True:
                rec = doc["targets"].get(key)
                if rec is None or not _pending(rec):
                    break
                if key in self._busy:
                    if key not in keys:
                        break  # another thread of this process is at work on it and settles it
                    self._guard.wait()  # ours to hold or release: once that thread is done, look again
                    continue
                result = results.setdefault(key, TargetResult(key, rec["backend"], rec["name"]))
                # who works on it, for status; saved with the next write (a step's checkpoint or the phase)
                if (rec.get("progress") or {}).get("pid") != os.getpid():
                    rec["progress"] = {"pid": os.getpid(), "since": isoformat(self.clock())}
                self._busy[key] = threading.current_thread()
                try:
                    if rec["reasons"]:
                        done = self._hold_steps(doc, key, rec, result)
                    else:
                        done = self._release_steps(doc, key, rec, result)
                except HoldError as exc:
                    result.error = str(exc)
                    self.store.write(doc)
                    break
                finally:
                    del self._busy[key]
                    self._guard.notify_all()
                if done:
                    break
                # superseded: another operation changed the target while its steps ran; settle it afresh
        for key, result in results.items():
            _describe(result, doc["targets"].get(key))

    def _unguarded(self, work, *args):
        """Run slow work without the in-process guard, so this process's other operations go on meanwhile."""
        self._guard.release()
        try:
            return work(*args)
        finally:
            self._guard.acquire()

    def _steps(self, doc, key, rec, undo, run):
        """Run a backend's hold or release on a copy of the target's record, outside the guard, merging what it
        did back into the record at each checkpoint. False when the target changed meanwhile (the steps stop at
        the next checkpoint) or went away."""
        work = copy.deepcopy(rec)
        phase = rec["phase"]

        def current():
            """Still the same job: a release with no reason left, or a hold with one, in the same phase."""
            wanted = not rec["reasons"] if undo else bool(rec["reasons"])
            return doc["targets"].get(key) is rec and rec["phase"] == phase and wanted

        def merge():
            for field in ("actions", "done", "notes"):
                if field in work:
                    rec[field] = copy.deepcopy(work[field])

        def progress(action):
            if undo and action in work["done"]:
                work["done"].remove(action)
            elif not undo and action not in work["done"]:
                work["done"].append(action)
            with self._guard:
                if not current():
                    raise _Superseded()
                merge()
                self.store.write(doc)

        try:
            changes = self._unguarded(run, self._backend_of(work), work, progress)
        except _Superseded:
            return None
        except HoldError:
            if current():
                merge()  # what the steps did before they failed is recorded with the error
            raise
        if not current():
            return None
        merge()
        return changes

    def _hold_steps(self, doc, key, rec, result):
        changes = self._steps(doc, key, rec, False, lambda backend, work, progress: backend.hold(work, progress))
        if changes is None:
            return False
        result.steps.extend(changes)
        rec["phase"] = "held"
        rec["held_at"] = isoformat(self.clock())
        rec.pop("progress", None)
        self.store.write(doc)
        return True

    def _release_steps(self, doc, key, rec, result):
        if rec["phase"] != "releasing":
            rec["phase"] = "releasing"
            self.store.write(doc)
        changes = self._steps(doc, key, rec, True, lambda backend, work, progress: backend.release(work, progress))
        if changes is None:
            return False
        result.steps.extend(changes)
        result.notes = list(rec.get("notes", []))
        del doc["targets"][key]
        self.store.write(doc)
        result.steps.append("release %s" % key)
        return True

    @contextlib.contextmanager
    def _record(self):
        """The record under the writers' lock, guarded in this process. The first of this process's operations
        takes the lock and reads the record; the others share both; the last one to finish lets the lock go."""
        with self._guard:
            if not self._users:
                unlock = contextlib.ExitStack()
                unlock.enter_context(self.store.locked())
                try:
                    self._doc = self.store.read(keep_corrupt=True)
                except BaseException:
                    unlock.close()
                    raise
                self._unlock = unlock
            self._users += 1
            try:
                yield self._doc
            finally:
                self._users -= 1
                if not self._users:
                    self._doc = None
                    unlock, self._unlock = self._unlock, None
                    unlock.close()

    def _predict_settle(self, doc, results):
        """Check mode: what _settle would do, on the copy in memory only."""
        for key in list(doc["targets"]):
            rec = doc["targets"][key]
            if not _pending(rec):
                continue
            result = results.setdefault(key, TargetResult(key, rec["backend"], rec["name"]))
            backend = self._backend_of(rec)
            if rec["reasons"]:
                result.steps.extend(backend.step_text(a) for a in rec["actions"] if a not in rec["done"])
                rec["phase"] = "held"
                rec["done"] = list(rec["actions"])
            else:
                result.steps.extend(backend.step_text(a, undo=True) for a in reversed(rec["actions"]) if a != "wait")
                result.steps.append("release %s" % key)
                del doc["targets"][key]
        for key, result in results.items():
            _describe(result, doc["targets"].get(key))


class _Superseded(Exception):
    """A step's target changed while it ran: the steps stop, and the target is settled again."""


def _pending(rec):
    return rec["phase"] != "held" or not rec["reasons"]


def _describe(result, rec):
    if rec is None:
        result.state = "released" if result.steps else "not held"
        return
    result.state = rec["phase"]
    result.reasons = [r["id"] for r in rec["reasons"]]
    result.notes = list(rec.get("notes", []))


def _unique(targets):
    seen = {}
    for target in targets:
        if not isinstance(target, Target):
            raise TypeError("targets are built with a backend's target(), not %r" % (target,))
        seen.setdefault(target.key, target)
    return list(seen.values())
