# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Poll the document until the selected events reach a condition.

Azure never says that maintenance is over: an event is Scheduled, then Started,
then simply gone. "started" therefore also counts an event that vanished, and
"absent" is the only signal that maintenance has ended (or was cancelled).
"""

from __future__ import annotations

from .events import Summary, utcnow
from .imds import ImdsError

CONDITIONS = ("none", "present", "started", "absent")


class WaitTimeout(Exception):
    def __init__(self, message, outcome):
        super(WaitTimeout, self).__init__(message)
        self.outcome = outcome


class Outcome(object):
    """The last document read, the selected events, and how long it took."""

    def __init__(self, document, selected, waited, polls):
        self.document = document
        self.selected = selected
        self.waited = waited
        self.polls = polls

    def as_result(self, vm, now=None):
        """`vm` None: this VM's name is unknown; what depends on it is null, and the summaries count every event."""
        now = now or utcnow()
        result = {
            "document_incarnation": self.document.incarnation if self.document else None,
            "this_vm": vm.name if vm is not None else None,
            "events": [describe(e, vm, now) for e in self.selected],
            "waited": round(self.waited, 3),
            "polls": self.polls,
        }
        everything = self.document.events if self.document else ()
        result.update(Summary(everything, vm, now).as_dict())
        return result


def describe(event, vm, now):
    """The event as every entry point returns it; with this VM unknown, affects_this_vm, shared and scope are null."""
    out = event.describe(vm, now)
    if vm is None:
        out.update(affects_this_vm=None, shared=None, scope=None)
    return out


def condition_met(condition, selected):
    if condition == "none":
        return True
    if condition == "present":
        return bool(selected)
    if condition == "started":
        return not any(e.is_scheduled for e in selected)
    if condition == "absent":
        return not selected
    raise ValueError("unknown wait condition %r" % (condition,))


def wait_for_events(client, selection, vm, condition, timeout, interval, clock, sleep):
    """Read until `condition` holds for the events `selection` picks, or `timeout` passes.

    While waiting, a retryable IMDS failure (the service updating, throttling, a
    connection reset) is another reason to keep waiting, not to fail: the last one
    is reported if time runs out. Other errors end the wait at once.

    Each read is bounded by the client's deadline and by what is left of `timeout`, so the wait ends when it
    says, retries included. A `timeout` of 0 reads once, bounded by the deadline alone.
    """
    if condition not in CONDITIONS:
        raise ValueError("unknown wait condition %r" % (condition,))
    start = clock()
    polls = 0
    last_error = None
    outcome = None
    while True:
        polls += 1
        left = timeout - (clock() - start)
        try:
            document = client.get_document(within=left if condition != "none" and timeout > 0 else None)
        except ImdsError as exc:
            if condition == "none" or not exc.retryable:
                raise
            last_error = exc
        else:
            last_error = None
            outcome = Outcome(document, selection.apply(document.events, vm), clock() - start, polls)
            if condition_met(condition, outcome.selected):
                return outcome
        elapsed = clock() - start
        if elapsed + interval > timeout:
            outcome = outcome or Outcome(None, [], elapsed, polls)
            outcome.waited = elapsed
            outcome.polls = polls
            still = ", ".join("%s %s %s" % (e.event_id, e.event_type, e.status) for e in outcome.selected)
            message = "timed out after %d s waiting for events to be %s" % (round(elapsed), condition)
            if still:
                message += "; still: " + still
            if last_error is not None:
                message += "; last error: %s" % last_error
            raise WaitTimeout(message, outcome)
        sleep(interval)
