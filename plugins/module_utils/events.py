# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The scheduled-events domain model: one event, one document, and "this VM".

Every entry point (modules, lookup, the watcher daemon) reads IMDS documents
through this file, so the field quirks of six API versions are handled once.
It imports nothing from ansible: the watcher role installs it on VMs as is.
"""

from __future__ import annotations

import datetime
import email.utils
import re

KNOWN_EVENT_TYPES = ("Freeze", "Reboot", "Redeploy", "Preempt", "Terminate")
KNOWN_STATUSES = ("Scheduled", "Started")
SCHEDULED = "Scheduled"
STARTED = "Started"
# Only Azure's control plane (Resource Graph, Event Grid) says an event is over; IMDS just drops it.
COMPLETED = "Completed"
CANCELED = "Canceled"
FINISHED_STATUSES = (COMPLETED, CANCELED)
CONTROL_PLANE_STATUSES = KNOWN_STATUSES + FINISHED_STATUSES

# Azure's own keys, in the order the documentation lists them.
AZURE_EVENT_KEYS = (
    "EventId", "EventType", "ResourceType", "Resources", "EventStatus",
    "NotBefore", "Description", "EventSource", "DurationInSeconds",
)

_GUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_ISO_8601 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)
_INTEGER = re.compile(r"^[+-]?\d+$")


class DocumentError(ValueError):
    """The body is not a scheduled-events document (not a JSON object, Events not a list, ...)."""


def is_event_id(value):
    """Azure EventIds are GUIDs; anything else is a typo or an injection attempt."""
    return isinstance(value, str) and bool(_GUID.match(value))


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def parse_not_before(value):
    """Return (datetime in UTC or None, problem or None).

    Production sends RFC1123 ("Mon, 19 Sep 2016 18:29:47 GMT"), the 2017-03-01
    preview and Microsoft's mock send ISO-8601, and a Started event sends "".
    None means "no future start time": the event has started or starts now.
    """
    if value is None or value == "":
        return None, None
    if not isinstance(value, str):
        return None, "NotBefore %r is not a string" % (value,)
    text = value.strip()
    match = _ISO_8601.match(text)
    if match:
        try:
            return _iso_to_datetime(match), None
        except (ValueError, OverflowError):
            return None, "NotBefore %r is not a valid date" % (value,)
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        parsed = None
    if parsed is None:
        return None, "NotBefore %r is neither RFC1123 nor ISO-8601" % (value,)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc), None


def _iso_to_datetime(match):
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or ""
    micro = int((fraction + "000000")[:6]) if fraction else 0
    zone = match.group(8)
    offset = datetime.timedelta(0)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * datetime.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    tz = datetime.timezone(offset)
    return datetime.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(
        datetime.timezone.utc)


def format_rfc1123(moment):
    """The form Azure sends in NotBefore."""
    return email.utils.format_datetime(moment.astimezone(datetime.timezone.utc), usegmt=True)


def format_iso(moment):
    if moment is None:
        return None
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lenient_int(value, field, problems):
    """IMDS sends integers; C# samples and proxies turn them into strings."""
    if value is None:
        return None
    if isinstance(value, bool):
        problems.append("%s %r is not an integer" % (field, value))
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value.strip())
    problems.append("%s %r is not an integer" % (field, value))
    return None


def normalize_resource_name(name):
    """Compare resource names the way Azure does: case-insensitively, without
    the leading underscore that api-version 2017-03-01 put on IaaS VM names."""
    text = str(name).strip()
    if text.startswith("_"):
        text = text[1:]
    return text.casefold()


def hosts_named(resources, hostnames):
    """The inventory hosts an event's Resources name, and the resources that name none.

    Each resource is compared with each host name the way Azure compares resource names (normalize_resource_name),
    never read as a host pattern: a VM named `all`, `*` or `web:&db` names only a host of exactly that name.
    Hosts come in the order Resources lists them (hosts whose names differ only in case all count)."""
    by_key = {}
    for host in hostnames:
        by_key.setdefault(normalize_resource_name(host), []).append(host)
    hosts, unmatched = [], []
    for resource in resources:
        found = by_key.get(normalize_resource_name(resource))
        if not found:
            unmatched.append(resource)
        hosts.extend(h for h in found or () if h not in hosts)
    return hosts, unmatched


class ThisVm(object):
    """The VM asking, known by its Azure resource name (compute/name), never by its
    OS hostname: scale-set hostnames ("vmss000000") differ from resource names ("vmss_0").

    ThisVm.unknown() is a VM whose name could not be learnt (Microsoft's mock has no compute/name; some images
    block it): no resource names it, and an event that lists any resource is of Scope.UNKNOWN to it, neither
    "this VM" nor "other VMs"."""

    known = True

    def __init__(self, name):
        if not name or not str(name).strip():
            raise ValueError("the VM resource name is empty")
        self.name = str(name).strip()
        self._key = normalize_resource_name(self.name)

    @classmethod
    def unknown(cls):
        vm = cls.__new__(cls)
        vm.known = False
        vm.name = None
        vm._key = None
        return vm

    def is_named(self, resource_name):
        return self.known and normalize_resource_name(resource_name) == self._key

    def __repr__(self):
        return "ThisVm(%r)" % self.name if self.known else "ThisVm.unknown()"


class NamedVms(object):
    """The VMs an operator names from outside (the control plane has no "this VM"): an event listing only these is
    theirs alone; one listing others too is shared. `names=None` means every VM: the operator named the events."""

    def __init__(self, names=None):
        self.names = None if names is None else [str(n).strip() for n in names if str(n).strip()]
        self._keys = None if self.names is None else frozenset(normalize_resource_name(n) for n in self.names)

    def is_named(self, resource_name):
        return self._keys is None or normalize_resource_name(resource_name) in self._keys

    def __repr__(self):
        return "NamedVms(%r)" % (self.names,)


class Scope(object):
    """Who an event touches, seen from one VM."""
    THIS_VM = "this_vm"          # only this VM is listed
    SHARED = "shared"            # this VM and others: approving it starts them all
    OTHER_VMS = "other_vms"      # only other VMs (availability set or placement-group peers)
    NONE = "none"                # Resources is empty
    UNKNOWN = "unknown"          # this VM's name is unknown: it may or may not be among Resources


class Event(object):
    """One entry of the Events array, parsed leniently and kept verbatim in `raw`."""

    __slots__ = ("raw", "event_id", "event_type", "resource_type", "resources", "status",
                 "not_before", "description", "source", "duration_seconds", "problems")

    def __init__(self, raw, event_id, event_type, resource_type, resources, status,
                 not_before, description, source, duration_seconds, problems):
        self.raw = raw
        self.event_id = event_id
        self.event_type = event_type
        self.resource_type = resource_type
        self.resources = resources
        self.status = status
        self.not_before = not_before
        self.description = description
        self.source = source
        self.duration_seconds = duration_seconds
        self.problems = problems

    @classmethod
    def from_json(cls, raw, known_statuses=KNOWN_STATUSES):
        """`known_statuses`: IMDS's by default; CONTROL_PLANE_STATUSES for a Resource Graph row or Event Grid event."""
        if not isinstance(raw, dict):
            raise DocumentError("an entry of Events is a JSON %s, not an object" % _json_kind(raw))
        event_id = raw.get("EventId")
        if not isinstance(event_id, str) or not event_id.strip():
            raise DocumentError("an event has no EventId: %s" % _excerpt(raw))
        problems = []
        resources = raw.get("Resources")
        if resources is None:
            resources = ()
        elif isinstance(resources, str):
            resources = (resources,)
        elif isinstance(resources, list):
            resources = tuple(str(r) for r in resources if r is not None)
        else:
            problems.append("Resources %r is not a list" % (resources,))
            resources = ()
        not_before, problem = parse_not_before(raw.get("NotBefore"))
        if problem:
            problems.append(problem)
        event_type = _text(raw.get("EventType"))
        status = _text(raw.get("EventStatus"))
        if event_type not in KNOWN_EVENT_TYPES:
            problems.append("unknown EventType %r, treated as impactful" % (event_type,))
        if status not in known_statuses:
            problems.append("unknown EventStatus %r, treated as pending" % (status,))
        return cls(
            raw=raw,
            event_id=event_id,  # verbatim: the id approving it must name, as IMDS gave it
            event_type=event_type,
            resource_type=_text(raw.get("ResourceType")),
            resources=resources,
            status=status,
            not_before=not_before,
            description=_text(raw.get("Description")) if "Description" in raw else None,
            source=_text(raw.get("EventSource")) if "EventSource" in raw else None,
            duration_seconds=_lenient_int(raw.get("DurationInSeconds"), "DurationInSeconds", problems),
            problems=tuple(problems),
        )

    @property
    def is_started(self):
        return self.status == STARTED

    @property
    def is_scheduled(self):
        """Scheduled, or a status Azure has not documented (kept as pending, never as done)."""
        return self.status != STARTED and not self.is_finished

    @property
    def is_finished(self):
        """Completed or Canceled: said only by the control plane."""
        return self.status in FINISHED_STATUSES

    def scope(self, vm):
        if not self.resources:
            return Scope.NONE
        if not getattr(vm, "known", True):
            return Scope.UNKNOWN
        mine = [r for r in self.resources if vm.is_named(r)]
        if not mine:
            return Scope.OTHER_VMS
        if len(mine) == len(self.resources):
            return Scope.THIS_VM
        return Scope.SHARED

    def affects(self, vm):
        """Known to list this VM: never when this VM's name is unknown (Scope.UNKNOWN)."""
        return self.scope(vm) in (Scope.THIS_VM, Scope.SHARED)

    def other_resources(self, vm):
        return [r for r in self.resources if not vm.is_named(r)]

    def seconds_until_start(self, now=None):
        """Whole seconds until NotBefore; 0 once due or started, None if unknown or over."""
        if self.is_finished:
            return None
        if self.is_started:
            return 0
        if self.not_before is None:
            return 0 if self.raw.get("NotBefore") == "" else None
        now = now or utcnow()
        return max(0, int((self.not_before - now).total_seconds()))

    def describe(self, vm=None, now=None):
        """Azure's keys verbatim plus the derived keys every entry point returns."""
        out = dict((k, self.raw[k]) for k in AZURE_EVENT_KEYS if k in self.raw)
        out["not_before"] = format_iso(self.not_before)
        out["duration_seconds"] = self.duration_seconds
        out["seconds_until_start"] = self.seconds_until_start(now)
        if vm is not None:
            scope = self.scope(vm)
            unknown = scope == Scope.UNKNOWN  # null: with this VM's name unknown, nobody can say
            out["affects_this_vm"] = None if unknown else scope in (Scope.THIS_VM, Scope.SHARED)
            out["shared"] = None if unknown else scope == Scope.SHARED
            out["scope"] = scope
        if self.problems:
            out["problems"] = list(self.problems)
        return out

    def __repr__(self):
        return "Event(%s %s %s %s)" % (self.event_id, self.event_type, self.status, list(self.resources))


class Document(object):
    """The whole GET answer. Events are diffed by EventId; DocumentIncarnation is only
    a hint, since it skips values and resets after the 24 h idle disable."""

    def __init__(self, incarnation, events, raw, problems=()):
        self.incarnation = incarnation
        self.events = tuple(events)
        self.raw = raw
        self.problems = tuple(problems)

    @classmethod
    def from_json(cls, raw):
        if not isinstance(raw, dict):
            raise DocumentError("the document is a JSON %s, not an object" % _json_kind(raw))
        if "Events" not in raw:
            raise DocumentError("the document has no Events array: %s" % _excerpt(raw))
        events = raw["Events"]
        if events is None:
            events = []
        if not isinstance(events, list):
            raise DocumentError("Events is a JSON %s, not an array" % _json_kind(events))
        problems = []
        incarnation = _lenient_int(raw.get("DocumentIncarnation"), "DocumentIncarnation", problems)
        parsed = [Event.from_json(e) for e in events]
        seen = set()
        for event in parsed:
            if event.event_id in seen:
                raise DocumentError("EventId %s appears twice" % event.event_id)
            seen.add(event.event_id)
        return cls(incarnation, parsed, raw, problems)

    def event(self, event_id):
        for event in self.events:
            if event.event_id.lower() == str(event_id).lower():
                return event
        return None

    def for_vm(self, vm):
        return [e for e in self.events if e.affects(vm)]

    def all_problems(self):
        out = list(self.problems)
        for event in self.events:
            out.extend("%s: %s" % (event.event_id, p) for p in event.problems)
        return out


def _text(value):
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _json_kind(value):
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _excerpt(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class EventFilter(object):
    """The selection every entry point offers: by id, type, status, source and scope.
    Matching is case-insensitive, as Azure's casing of these values is not a contract."""

    def __init__(self, event_ids=None, types=None, statuses=None, sources=None, this_vm_only=False):
        self.event_ids = _folded(event_ids)
        self.types = _folded(types)
        self.statuses = _folded(statuses)
        self.sources = _folded(sources)
        self.this_vm_only = bool(this_vm_only)

    def matches(self, event, vm=None):
        if self.event_ids is not None and event.event_id.casefold() not in self.event_ids:
            return False
        if self.types is not None and (event.event_type or "").casefold() not in self.types:
            return False
        if self.statuses is not None and (event.status or "").casefold() not in self.statuses:
            return False
        if self.sources is not None and (event.source or "").casefold() not in self.sources:
            return False
        if self.this_vm_only and (vm is None or not event.affects(vm)):
            return False
        return True

    def apply(self, events, vm=None):
        return [e for e in events if self.matches(e, vm)]


def _folded(values):
    if values is None:
        return None
    return frozenset(str(v).casefold() for v in values)


class Summary(object):
    """What a `when:` wants to know about this VM, computed once for every entry point."""

    def __init__(self, events, vm, now=None):
        now = now or utcnow()
        # this VM unknown (IMDS did not name it): any event may be its own, so every one counts
        mine = [e for e in events if vm is None or e.affects(vm)]
        scheduled = [e for e in mine if e.is_scheduled]
        self.pending = bool(scheduled)
        self.in_progress = any(e.is_started for e in mine)
        self.pending_event_ids = [e.event_id for e in scheduled]
        self.started_event_ids = [e.event_id for e in mine if e.is_started]
        starts = [e.not_before for e in scheduled if e.not_before is not None]
        soonest = min(starts) if starts else None
        self.next_not_before = format_iso(soonest)
        self.seconds_until_next = max(0, int((soonest - now).total_seconds())) if soonest else None

    def as_dict(self):
        return {
            "pending": self.pending,
            "in_progress": self.in_progress,
            "pending_event_ids": self.pending_event_ids,
            "started_event_ids": self.started_event_ids,
            "next_not_before": self.next_not_before,
            "seconds_until_next": self.seconds_until_next,
        }
