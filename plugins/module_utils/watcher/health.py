# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The states in which the watcher cannot do its whole job: said in the log when one begins and when it ends, kept
in the state file for `imds-watcher status` and `watcher_info`, and exported as `degraded{reason}` for the alerts.

- vm_name_unknown: no `vm_name` is configured and IMDS does not name this VM (`compute/name`: Microsoft's mock has
  none, some images block it). The watcher polls on, holds drift correction for every event of the document (it
  cannot tell whose it is), approves none, and asks for the name again 1, 2, 4 ... NAME_RETRY_MAX seconds later.
- imds_unreachable: no poll has succeeded for unreachable_after(max_backoff) seconds (since the last success, or
  since the start). New events are not seen, and held ones are not released.
- hold_record_unreadable: the hold record cannot be read or is not trusted. Nothing can be held or released.

Pure: times are inputs.
"""

from __future__ import annotations

from ..imds import DEFAULT_FIRST_TIMEOUT, poll_delay
from .machine import iso

VM_NAME_UNKNOWN = "vm_name_unknown"
IMDS_UNREACHABLE = "imds_unreachable"
HOLD_RECORD_UNREADABLE = "hold_record_unreadable"
REASONS = (HOLD_RECORD_UNREADABLE, IMDS_UNREACHABLE, VM_NAME_UNKNOWN)
# What the watcher does, or cannot do, meanwhile.
CONSEQUENCES = {
    VM_NAME_UNKNOWN: "drift correction is held for every event in the document, since whose it is cannot be told, "
                     "and none is approved",
    IMDS_UNREACHABLE: "new events are not seen, and held ones are not released",
    HOLD_RECORD_UNREADABLE: "drift correction can be neither held nor released",
}
# What an operator does about it.
FIXES = {
    VM_NAME_UNKNOWN: "set vm_name in the config (the role's watcher_vm_name) to this VM's Azure resource name, or let "
                     "the VM reach IMDS's /metadata/instance/compute/name",
    IMDS_UNREACHABLE: "see why polls fail in the log (journalctl -u imds-watcher | grep imds:); IMDS answers only the "
                      "VM itself, on its primary NIC, never through a proxy",
    HOLD_RECORD_UNREADABLE: "imds-hold status says what is wrong with the hold record (it must be owned by root and "
                            "writable by nobody else)",
}
# What the log says once it is over.
OVER = {
    VM_NAME_UNKNOWN: "this VM's name is known: events are attributed and approved as usual",
    IMDS_UNREACHABLE: "IMDS answers again",
    HOLD_RECORD_UNREADABLE: "the hold record can be read again",
}
NAME_RETRY_MAX = 60.0
# IMDS may take two minutes to answer a VM's first request (it enables the service then); a 410 while it updates
# lasts up to 70 s. "Long" is longer than both, and at least a dozen polls at the slowest backoff.
UNREACHABLE_POLLS = 12


def unreachable_after(max_backoff):
    """Seconds without a successful poll after which IMDS counts as unreachable: max(120, 12 x max_backoff)."""
    return max(float(DEFAULT_FIRST_TIMEOUT), UNREACHABLE_POLLS * float(max_backoff))


class NameSearch(object):
    """When to ask IMDS for this VM's name again: 1, 2, 4 ... NAME_RETRY_MAX seconds after each failure."""

    def __init__(self):
        self.failures = 0
        self.next_at = None
        self.last_error = None

    def due(self, now):
        return self.next_at is None or now >= self.next_at

    def failed(self, now, error):
        self.failures += 1
        self.last_error = str(error)
        self.next_at = now + self.delay()

    def delay(self):
        return poll_delay(1.0, self.failures, NAME_RETRY_MAX)


class Health(object):
    """The reasons that hold now, each with when it began and what is wrong: {reason: {"since", "detail"}}."""

    def __init__(self):
        self.conditions = {}

    def update(self, now, reason, problem):
        """`problem`: what is wrong while `reason` holds, None once it does not. Returns the log line (a warning
        when it begins, or says something else; info when it ends), or None when nothing changed."""
        if reason not in REASONS:
            raise ValueError("unknown reason %r" % (reason,))
        current = self.conditions.get(reason)
        if problem is None:
            if current is None:
                return None
            del self.conditions[reason]
            return False, "watcher: no longer degraded (%s), after %d s: %s" % (
                reason, max(0, now - current["since"]), OVER[reason])
        if current is not None and current["detail"] == problem:
            return None
        began = current is None
        self.conditions[reason] = {"since": current["since"] if current else now, "detail": problem}
        return True, "watcher: %s (%s) since %s: %s; %s" % (
            "DEGRADED" if began else "still degraded", reason, iso(self.conditions[reason]["since"]), problem,
            CONSEQUENCES[reason])

    def as_dict(self):
        return dict((reason, dict(rec)) for reason, rec in self.conditions.items())


def moment(value):
    """Epoch seconds read back from a file as ISO-8601 UTC; None when it is not a time."""
    return iso(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def as_list(conditions):
    """A saved {reason: {"since", "detail"}} as the list `status --json` and watcher_info return: reason, since
    (ISO-8601 UTC), detail, consequence, fix."""
    out = []
    for reason in sorted(conditions or {}):
        rec = conditions[reason] if isinstance(conditions[reason], dict) else {}
        out.append({"reason": reason, "since": moment(rec.get("since")), "detail": rec.get("detail"),
                    "consequence": CONSEQUENCES.get(reason), "fix": FIXES.get(reason)})
    return out


def describe(conditions):
    """Lines for people, from a saved {reason: {"since", "detail"}}: what is wrong, what follows, what to do."""
    lines = []
    for item in as_list(conditions):
        lines.append("%s since %s: %s; %s." % (
            item["reason"], item["since"] or "?", item["detail"] or "?",
            item["consequence"] or "the watcher cannot do its whole job"))
        if item["fix"]:
            lines.append("    Fix: %s." % item["fix"])
    return lines
