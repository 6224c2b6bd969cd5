# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which events may be approved from this VM, and why the others may not.

Approving an event starts the maintenance for every VM in its Resources, not
only for the caller. So: an event that does not list this VM is never approved
from here, and one that lists other VMs too only when the caller says so.
Microsoft's own Windows service approves everything it sees; this is the fix.
"""

from __future__ import annotations

from .events import Scope
from .imds import ImdsError

# Reasons an event is not approved; stable strings that playbooks may test.
NOT_THIS_VM = "does not list this VM"
NAME_UNKNOWN = "this VM's name is unknown"
SHARED = "also lists other VMs"
ALREADY_STARTED = "already started"
ALREADY_FINISHED = "already finished"  # Completed or Canceled: only the control plane says so
NOT_IN_DOCUMENT = "not in the document"


class Skip(object):
    def __init__(self, event_id, reason, detail=None):
        self.event_id = event_id
        self.reason = reason
        self.detail = detail

    def as_dict(self):
        out = {"EventId": self.event_id, "reason": self.reason}
        if self.detail:
            out["detail"] = self.detail
        return out


class Plan(object):
    """The events to POST, and every skipped one with its reason."""

    def __init__(self, approve, skipped, missing):
        self.approve = approve
        self.skipped = skipped
        self.missing = missing

    @property
    def approve_ids(self):
        return [e.event_id for e in self.approve]


def plan(document, vm, selection, requested_ids=None, allow_shared=False):
    """Decide from one document. `requested_ids` are ids the caller named: those
    not in the document are reported as missing rather than silently ignored."""
    approve, skipped = [], []
    for event in selection.apply(document.events, vm):
        if event.scope(vm) == Scope.UNKNOWN:  # it may list only other VMs: approving would start theirs
            skipped.append(Skip(event.event_id, NAME_UNKNOWN, "cannot tell whether it lists this VM: "
                                + ", ".join(event.resources)))
            continue
        if not event.affects(vm):
            if requested_ids is not None:  # picked by name: say why not; otherwise it was never a candidate
                skipped.append(Skip(event.event_id, NOT_THIS_VM, "lists only " + ", ".join(event.resources)))
            continue
        if event.is_finished:
            skipped.append(Skip(event.event_id, ALREADY_FINISHED, event.status))
            continue
        if event.is_started:
            skipped.append(Skip(event.event_id, ALREADY_STARTED))
            continue
        others = event.other_resources(vm)
        if others and not allow_shared:
            skipped.append(Skip(event.event_id, SHARED,
                                "approving it would also start it for %s" % ", ".join(others)))
            continue
        approve.append(event)
    missing = []
    if requested_ids is not None:
        present = set(e.event_id.casefold() for e in document.events)
        missing = [i for i in requested_ids if i.casefold() not in present]
    return Plan(approve, skipped, missing)


def approve_and_confirm(client, plan_):
    """POST the plan's ids once. If the POST fails, the document is the judge: an
    event that has started or gone meanwhile needs no approval; any other failure
    stands. Returns (approved ids, extra skips)."""
    ids = plan_.approve_ids
    try:
        client.approve(ids)
        return ids, []
    except ImdsError as exc:
        failure = exc
    try:
        document = client.get_document()
    except ImdsError:
        raise failure
    still_scheduled = []
    skips = []
    for event_id in ids:
        event = document.event(event_id)
        if event is None:
            skips.append(Skip(event_id, NOT_IN_DOCUMENT, "gone before the approval landed"))
        elif event.is_started:
            skips.append(Skip(event_id, ALREADY_STARTED, "started before the approval landed"))
        else:
            still_scheduled.append(event_id)
    if still_scheduled:
        raise failure
    return [], skips
