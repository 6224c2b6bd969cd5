# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Rolling approvals: which scheduled events may be approved now without putting more
than N hosts (or P percent) of a group in maintenance at once.

The input is what event_info returned on every host; events are read back through
the domain model (events.Event), never a parser of their own, so "affects this VM",
"started" and unknown statuses mean here exactly what they mean everywhere else.

Rules, in the order they are applied:

- A host is *in maintenance* when an event that lists it has Started, or has been
  approved (ids passed in `approved`). A host without a usable result (unreachable,
  failed, not gathered) counts as in maintenance too unless told otherwise: nobody
  can tell that it is not.
- An approval starts the event for every VM in its Resources, so an event is approved
  for all of its hosts or not at all (never split), and it counts every one of them.
- Events are considered soonest NotBefore first; each is approved when every group of
  every host it would newly put in maintenance stays within its limit.
- An event listing a VM that no inventory host reported is not approved (its group,
  and so its limit, is unknown), unless `allow_unknown_resources`.
- Percentages round down, but a group with members and a non-zero percentage may always
  have one host in maintenance, or a rolling approval could never make progress.

Nothing here imports ansible: a filter plugin wraps it.
"""

from __future__ import annotations

from fractions import Fraction

from .events import DocumentError, Event, ThisVm, format_iso, normalize_resource_name

UNGROUPED = "ungrouped"

# Why an event is not approved now; stable strings that playbooks may test.
GROUP_AT_LIMIT = "group at its limit"
WOULD_EXCEED_LIMIT = "would exceed the group's limit"
LARGER_THAN_LIMIT = "affects more hosts of a group than its limit"
UNKNOWN_RESOURCES = "lists VMs that no inventory host reported"
SHARED_NOT_ALLOWED = "also lists other VMs"


class PlanError(ValueError):
    """The options cannot make a plan (no limit, a negative limit, ...)."""


def group_limit(size, max_hosts=None, max_percent=None):
    """How many of `size` hosts may be in maintenance at once.

    Both limits apply when both are given. A percentage is exact (no float error: 29 %
    of 100 is 29) and rounds down, to at least one host when the group has members
    and the percentage is above zero.
    """
    limits = []
    if max_hosts is not None:
        limits.append(int(max_hosts))
    if max_percent is not None:
        percent = Fraction(str(max_percent))
        allowed = (size * percent.numerator) // (100 * percent.denominator)
        if allowed == 0 and percent > 0 and size > 0:
            allowed = 1
        limits.append(int(allowed))
    if not limits:
        raise PlanError("give max_hosts, max_percent or both")
    return min(limits)


def _check_limits(max_hosts, max_percent):
    if max_hosts is None and max_percent is None:
        raise PlanError("give max_hosts, max_percent or both")
    if max_hosts is not None:
        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int) or max_hosts < 0:
            raise PlanError("max_hosts must be a whole number of hosts, 0 or more, not %r" % (max_hosts,))
    if max_percent is not None:
        if isinstance(max_percent, bool):
            raise PlanError("max_percent must be a number between 0 and 100, not %r" % (max_percent,))
        try:
            percent = Fraction(str(max_percent))
        except (ValueError, ZeroDivisionError):
            raise PlanError("max_percent must be a number between 0 and 100, not %r" % (max_percent,))
        if percent < 0 or percent > 100:
            raise PlanError("max_percent must be between 0 and 100, not %r" % (max_percent,))


class HostState(object):
    """One inventory host as its event_info result describes it."""

    def __init__(self, name, groups):
        self.name = name
        self.groups = groups
        self.vm = None
        self.events = []
        self.problem = None

    @property
    def known(self):
        return self.vm is not None


def read_host(name, result, groups):
    """A HostState from an event_info result; a result that is missing, failed,
    unreachable or malformed leaves the host unknown, with the reason in `problem`."""
    host = HostState(name, groups)
    if not isinstance(result, dict):
        host.problem = "no event_info result"
        return host
    if result.get("unreachable"):
        host.problem = "unreachable: %s" % (result.get("msg") or "no detail")
        return host
    if result.get("failed"):
        host.problem = "event_info failed: %s" % (result.get("msg") or "no detail")
        return host
    if result.get("skipped"):
        host.problem = "event_info was skipped"
        return host
    events = result.get("events")
    if not isinstance(events, list) or not result.get("this_vm"):
        host.problem = "the result has no 'events' list or no 'this_vm' (is it event_info's?)"
        return host
    try:
        host.vm = ThisVm(result["this_vm"])
        host.events = [Event.from_json(dict(e) if isinstance(e, dict) else e) for e in events]
    except (DocumentError, ValueError) as exc:
        host.vm = None
        host.events = []
        host.problem = "unreadable events: %s" % exc
    return host


class Candidate(object):
    def __init__(self, event):
        self.event = event
        self.key = event.event_id.casefold()
        self.reporters = []     # known hosts that the event affects, in host order

    def sort_key(self):
        nb = self.event.not_before
        return (nb is None, format_iso(nb) or "", self.event.event_type or "", self.event.event_id)


def plan(results, groups=None, max_hosts=None, max_percent=None, approved=None, allow_shared=True,
         unknown_busy=True, allow_unknown_resources=False, ungrouped="group"):
    """Decide which events may be approved now.

    `results`: an ordered mapping host -> event_info result (None when there is none).
    `groups`: host -> list of group names (a host may be in several; each limit applies).
      Hosts with no group join the group "ungrouped", or each its own group with
      `ungrouped="separate"`. Without `groups` every host is in the group "all".
    Returns a dict (see the filter's documentation): approve, by_host, wave_hosts,
    deferred, groups, in_maintenance, unknown, problems.
    """
    _check_limits(max_hosts, max_percent)
    if ungrouped not in ("group", "separate"):
        raise PlanError("ungrouped must be 'group' or 'separate', not %r" % (ungrouped,))
    approved_keys = set(str(i).casefold() for i in (approved or ()))
    problems = []

    hosts = []
    for name, result in results.items():
        names = ["all"] if groups is None else _group_names(groups.get(name))
        if not names:
            names = [UNGROUPED] if ungrouped == "group" else [name]
        hosts.append(read_host(name, result, names))
    by_name = dict((h.name, h) for h in hosts)
    order_index = dict((h.name, i) for i, h in enumerate(hosts))

    # Azure names VMs by resource name; the inventory may not. Map one to the other.
    by_resource = {}
    for host in hosts:
        if host.known:
            key = normalize_resource_name(host.vm.name)
            if key in by_resource:
                problems.append("%s and %s both report the VM %s; events for it count on %s"
                                % (by_resource[key], host.name, host.vm.name, by_resource[key]))
                continue
            by_resource[key] = host.name
    for host in hosts:  # a host that did not report is matched by inventory name, the usual convention
        by_resource.setdefault(normalize_resource_name(host.name), host.name)

    unknown = [h.name for h in hosts if not h.known]
    for host in hosts:
        if host.problem:
            problems.append("%s: %s" % (host.name, host.problem))

    # Who is in maintenance now, and which events are candidates.
    busy = set(unknown) if unknown_busy else set()
    candidates = {}
    order = []
    for host in hosts:
        if not host.known:
            continue
        for event in host.events:
            key = event.event_id.casefold()
            mine = event.affects(host.vm)
            if event.is_started or key in approved_keys:
                # Peers in an availability set see each other's events: whoever is listed is busy.
                if mine:
                    busy.add(host.name)
                for resource in event.resources:
                    mapped = by_resource.get(normalize_resource_name(resource))
                    if mapped is not None:
                        busy.add(mapped)
                continue
            if not mine:
                continue
            cand = candidates.get(key)
            if cand is None:
                cand = candidates[key] = Candidate(event)
                order.append(cand)
            cand.reporters.append(host.name)
    in_maintenance = [h.name for h in hosts if h.name in busy]

    members = {}
    for host in hosts:
        for group in host.groups:
            members.setdefault(group, []).append(host.name)
    limits = dict((g, group_limit(len(m), max_hosts, max_percent)) for g, m in members.items())
    load = dict((g, sum(1 for h in m if h in busy)) for g, m in members.items())
    before = dict((g, [h for h in m if h in busy]) for g, m in members.items())

    approve, deferred, by_host, wave_hosts = [], [], {}, []
    for cand in sorted(order, key=Candidate.sort_key):
        event = cand.event
        affected = list(cand.reporters)
        outside = []
        for resource in event.resources:
            mapped = by_resource.get(normalize_resource_name(resource))
            if mapped is None:
                outside.append(resource)
            elif mapped not in affected:
                affected.append(mapped)
        affected.sort(key=order_index.get)
        entry = {"event_id": event.event_id, "event_type": event.event_type, "hosts": affected,
                 "resources": list(event.resources), "shared": len(event.resources) > 1,
                 "not_before": format_iso(event.not_before)}
        if outside and not allow_unknown_resources:
            deferred.append(dict(entry, reason=UNKNOWN_RESOURCES, groups=[],
                                 detail="approving it would also start it for %s" % ", ".join(outside)))
            continue
        if entry["shared"] and not allow_shared:
            deferred.append(dict(entry, reason=SHARED_NOT_ALLOWED, groups=[],
                                 detail="approving it would start it for %s" % ", ".join(event.resources)))
            continue
        new = [h for h in affected if h not in busy]
        adding = {}
        for name in new:
            for group in by_name[name].groups:
                adding[group] = adding.get(group, 0) + 1
        verdict = None
        for group in sorted(adding):
            if adding[group] > limits[group]:
                verdict = (LARGER_THAN_LIMIT, group, "it would put %d hosts of %s in maintenance at once; the limit "
                           "is %d, so it starts at NotBefore unless approved by hand" % (adding[group], group,
                                                                                         limits[group]))
                break
        if verdict is None:
            for group in sorted(adding):
                if load[group] + adding[group] > limits[group]:
                    reason = GROUP_AT_LIMIT if load[group] >= limits[group] else WOULD_EXCEED_LIMIT
                    verdict = (reason, group, "%s has %d of %d hosts in maintenance (limit %d); this event adds %d"
                               % (group, load[group], len(members[group]), limits[group], adding[group]))
                    break
        groups_touched = sorted(set(g for h in affected for g in by_name[h].groups))
        if verdict is not None:
            deferred.append(dict(entry, reason=verdict[0], groups=[verdict[1]], detail=verdict[2]))
            continue
        approver = cand.reporters[0]
        entry.update(approver=approver, groups=groups_touched)
        approve.append(entry)
        by_host.setdefault(approver, []).append(event.event_id)
        for name in new:
            busy.add(name)
            wave_hosts.append(name)
        for group, count in adding.items():
            load[group] += count

    summary = {}
    for group in sorted(members):
        summary[group] = {"hosts": len(members[group]), "limit": limits[group],
                          "in_maintenance": before[group],
                          "after": [h for h in members[group] if h in busy]}
    return {
        "approve": approve,
        "by_host": by_host,
        "wave_hosts": sorted(wave_hosts, key=order_index.get),
        "deferred": deferred,
        "groups": summary,
        "in_maintenance": in_maintenance,
        "unknown": unknown,
        "problems": problems,
    }


def _group_names(value):
    """A hostvar's value as group names: a scalar is one group, a list several, empty none."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return [str(v) for v in value if v is not None and str(v) != ""]
    text = str(value)
    return [text] if text != "" else []
