"""The simulated world: VMs, their scheduled events and per-VM documents.

Pure state driven by an injectable clock. Nothing here touches sockets or
sleeps: time-based transitions (an event appearing, NotBefore expiring, a
Started event running its course, a cancellation) sit in a heap and are
applied lazily, in time order, whenever the world is consulted. That keeps
every DocumentIncarnation bump exact even if nobody polled in between, and
lets tests drive a whole lifecycle with a ManualClock.

Lifecycle of an event (internal states; IMDS only ever shows Scheduled and
Started)::

    pending --at--> Scheduled --approval / NotBefore--> Started --started_for--> gone
                        \\--cancel_at / cancel-------------------------------------> gone
    pending --at (initial_status Started, e.g. hardware failure)--> Started
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import threading
import time
import uuid

from . import document
from .clock import rfc1123

LATEST = document.SCHEDULED_EVENTS_VERSIONS[-1]


class WorldError(Exception):
    """Base class for requests the world refuses."""


class NotFound(WorldError):
    """No such event, VM or fault."""


class Conflict(WorldError):
    """The request does not fit the object's current state."""


class UnknownEventIds(WorldError):
    """A StartRequests entry named an event the approving VM cannot see."""

    def __init__(self, ids):
        self.ids = list(ids)
        super().__init__(", ".join(self.ids))


class Event:
    """A live event: its immutable spec plus where it is in its lifecycle."""

    def __init__(self, spec, event_id, viewers):
        self.spec = spec
        self.id = event_id
        self.viewers = viewers
        self.state = "pending"
        self.start_due = spec.not_before
        self.appeared_at = None
        self.started_at = None
        self.gone_at = None
        self.gone_reason = None
        self.approved_by = []

    # The attributes document.render_event reads.
    type = property(lambda self: self.spec.type)
    resources = property(lambda self: self.spec.resources)
    description = property(lambda self: self.spec.description)
    source = property(lambda self: self.spec.source)
    duration = property(lambda self: self.spec.duration)
    not_before = property(lambda self: self.spec.not_before)
    status = property(lambda self: self.state)

    @property
    def visible(self):
        """True while IMDS shows the event."""
        return self.state in ("Scheduled", "Started")


class World:
    """All simulated state. Every public method is thread-safe and first catches up with the clock."""

    def __init__(self, scenario, clock, wall=time.time):
        self.scenario = scenario
        self.clock = clock
        self._wall = wall
        self._lock = threading.RLock()
        self.vms = {vm.name: vm for vm in scenario.vms}
        self._index = {name: index for index, name in enumerate(self.vms)}
        members = {}
        for vm in scenario.vms:
            if vm.availability_set is not None:
                members.setdefault(vm.availability_set, []).append(vm.name)
        # Who sees an event naming this VM: itself, or every member of its availability set.
        self._audience = {vm.name: tuple(members[vm.availability_set]) if vm.availability_set is not None
                          else (vm.name,) for vm in scenario.vms}
        seed = scenario.settings.seed
        self._seed = seed if seed is not None else random.SystemRandom().getrandbits(64)
        self._init_state()

    def _init_state(self):
        self._rng = random.Random(self._seed)
        self._seq = itertools.count()
        self._fault_seq = itertools.count(1)
        self._heap = []
        self.events = {}
        self._visible = {name: {} for name in self.vms}
        self._incarnation = {name: 1 for name in self.vms}
        self._down_until = {}
        self.faults = []
        self._fault_uses = {}
        self.approvals = []
        for spec in self.scenario.events:
            self._add_event(spec)
        for spec in self.scenario.faults:
            self._add_fault(spec)

    def reset(self):
        """Back to the scenario's initial state at simulated second 0 (same generated ids)."""
        with self._lock:
            self.clock.reset()
            self._init_state()
            self._sync()

    # -- time ---------------------------------------------------------------

    def now(self):
        """Current simulated second."""
        return self.clock.now()

    def advance(self, seconds):
        """Move the clock forward and apply whatever became due."""
        with self._lock:
            self.clock.advance(seconds)
            self._sync()
            return self.clock.now()

    def sync(self):
        """Apply every transition that is due."""
        with self._lock:
            self._sync()

    def _push(self, when, kind, target):
        heapq.heappush(self._heap, (when, next(self._seq), kind, target))

    def _sync(self):
        now = self.clock.now()
        while self._heap and self._heap[0][0] <= now:
            when, _seq, kind, target = heapq.heappop(self._heap)
            getattr(self, "_on_" + kind)(target, when)

    def _on_appear(self, event, when):
        if event.state != "pending":
            return
        if event.spec.initial_status == "Started":
            self._begin(event, when)
            return
        event.state = "Scheduled"
        event.appeared_at = when
        self._show(event)
        self._push(event.start_due, "start", event)
        if event.spec.cancel_at is not None:
            self._push(event.spec.cancel_at, "cancel", event)

    def _on_start(self, event, when):
        # Stale entries (the event was approved earlier, or cancelled) are skipped.
        if event.state == "Scheduled" and when == event.start_due:
            self._begin(event, when)

    def _on_end(self, event, when):
        if event.state == "Started":
            self._gone(event, when, "completed")

    def _on_cancel(self, event, when):
        if event.state == "Scheduled":
            self._gone(event, when, "cancelled")
        elif event.state == "pending":
            event.state, event.gone_at, event.gone_reason = "gone", when, "cancelled"

    def _on_reset(self, fault, when):
        del when
        if fault in self.faults:
            for name in fault.vms if fault.vms is not None else self.vms:
                self._incarnation[name] = 1

    def _begin(self, event, when):
        newly_visible = event.state == "pending"
        if newly_visible:
            event.appeared_at = when
        event.state = "Started"
        event.started_at = when
        event.start_due = when
        if newly_visible:
            self._show(event)
        else:
            self._bump(event)
        self._push(when + event.spec.started_for, "end", event)
        if event.spec.outage > 0:
            for name in event.resources:
                self._down_until[name] = max(self._down_until.get(name, when), when + event.spec.outage)

    def _gone(self, event, when, reason):
        event.state, event.gone_at, event.gone_reason = "gone", when, reason
        for name in event.viewers:
            self._visible[name].pop(event.id.upper(), None)
        self._bump(event)

    def _show(self, event):
        for name in event.viewers:
            self._visible[name][event.id.upper()] = event
        self._bump(event)

    def _bump(self, event):
        for name in event.viewers:
            self._incarnation[name] += 1

    # -- events ---------------------------------------------------------------

    def new_event_id(self):
        """An upper-case GUID from the world's seeded generator (reproducible per seed)."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4)).upper()

    def _viewers(self, resources):
        seen = {}
        for name in resources:
            for viewer in self._audience[name]:
                seen[viewer] = None
        return tuple(seen)

    def _add_event(self, spec):
        event_id = spec.id or self.new_event_id()
        if event_id.upper() in self.events:
            raise Conflict(f"event {event_id} already exists")
        event = Event(spec, event_id, self._viewers(spec.resources))
        self.events[event_id.upper()] = event
        self._push(spec.at, "appear", event)
        return event

    def add_event(self, spec):
        """Inject an event (control API); it appears at ``spec.at``."""
        with self._lock:
            self._sync()
            event = self._add_event(spec)
            self._sync()
            return event

    def event(self, event_id):
        """The event with this id (case-insensitive)."""
        with self._lock:
            self._sync()
            try:
                return self.events[event_id.upper()]
            except KeyError:
                raise NotFound(f"no event {event_id}") from None

    def cancel_event(self, event_id):
        """Cancel a pending or Scheduled event: it vanishes without ever being Started."""
        with self._lock:
            event = self.event(event_id)
            if event.state not in ("pending", "Scheduled"):
                raise Conflict(f"event {event.id} is {event.state}; only a pending or Scheduled event can be cancelled")
            self._on_cancel(event, self.clock.now())
            return event

    def start_event(self, event_id):
        """Start a Scheduled event now, as the platform would at NotBefore."""
        with self._lock:
            event = self.event(event_id)
            if event.state != "Scheduled":
                raise Conflict(f"event {event.id} is {event.state}; only a Scheduled event can be started")
            self._begin(event, self.clock.now())
            return event

    # -- what a VM sees --------------------------------------------------------

    def visible_events(self, vm):
        """Events in ``vm``'s document, oldest first."""
        with self._lock:
            self._sync()
            return list(self._visible[vm].values())

    def incarnation(self, vm):
        """``vm``'s current DocumentIncarnation."""
        with self._lock:
            self._sync()
            return self._incarnation[vm]

    def document(self, vm, api_version=LATEST):
        """``vm``'s scheduled-events document as served for ``api_version``."""
        with self._lock:
            self._sync()
            return document.render_document(self._incarnation[vm], self._visible[vm].values(), api_version,
                                            self.clock.to_datetime)

    def approve(self, vm, event_ids, api_version=LATEST):
        """Apply a POST ``StartRequests`` from ``vm``; returns the approval records.

        All ids must be in ``vm``'s document (for that api-version), otherwise
        nothing is applied and UnknownEventIds lists the offenders. Approval
        by any VM that sees the event counts, unless the event wants
        ``approval: all`` of its Resources.
        """
        with self._lock:
            self._sync()
            visible = self._visible[vm]
            unique = list(dict.fromkeys(event_id.upper() for event_id in event_ids))
            unknown = [event_id for event_id in unique
                       if event_id not in visible or not document.type_visible(visible[event_id].type, api_version)]
            if unknown:
                originals = {event_id.upper(): event_id for event_id in event_ids}
                raise UnknownEventIds(originals[event_id] for event_id in unknown)
            now = self.clock.now()
            return [self._approve(visible[event_id], vm, now, api_version) for event_id in unique]

    def _approve(self, event, vm, now, api_version):
        if vm not in event.approved_by:
            event.approved_by.append(vm)
        if event.state == "Started":
            result = "already_started"
        elif event.spec.approval == "all" and not set(event.resources) <= set(event.approved_by):
            result = "waiting_for_others"
        else:
            due = now + event.spec.approval_delay
            if due < event.start_due:
                event.start_due = due
                self._push(due, "start", event)
            self._sync()
            result = "started" if event.state == "Started" else "start_pending"
        record = {"event_id": event.id, "vm": vm, "sim_time": now, "wall_time": self._wall(),
                  "api_version": api_version, "result": result}
        self.approvals.append(record)
        return record

    # -- VMs -----------------------------------------------------------------

    def vm_index(self, name):
        """Position of the VM in the scenario (stable; used for ports and addresses)."""
        return self._index[name]

    def reboot(self, vm, seconds):
        """Take ``vm``'s IMDS listener down for ``seconds`` simulated seconds."""
        if vm not in self.vms:
            raise NotFound(f"no VM {vm}")
        with self._lock:
            self._sync()
            now = self.clock.now()
            self._down_until[vm] = max(self._down_until.get(vm, now), now + seconds)
            return self._down_until[vm]

    def down_vms(self):
        """Names of the VMs whose listener must refuse connections right now."""
        with self._lock:
            self._sync()
            now = self.clock.now()
            return {name for name, until in self._down_until.items() if now < until}

    # -- faults --------------------------------------------------------------

    def _add_fault(self, spec):
        fault = dataclasses.replace(spec, id=f"f{next(self._fault_seq)}")
        self.faults.append(fault)
        if fault.kind == "reset_incarnation":
            self._push(fault.start, "reset", fault)
        return fault

    def add_fault(self, spec):
        """Activate a fault (control API); returns it with its id."""
        with self._lock:
            self._sync()
            fault = self._add_fault(spec)
            self._sync()
            return fault

    def clear_faults(self, fault_id=None):
        """Remove one fault, or all of them."""
        with self._lock:
            if fault_id is None:
                removed = list(self.faults)
                self.faults = []
                return removed
            for fault in self.faults:
                if fault.id == fault_id:
                    self.faults.remove(fault)
                    return [fault]
            raise NotFound(f"no fault {fault_id}")

    def active_faults(self, vm, path, method):
        """Per-request faults that apply to this request now, in the order they were added."""
        with self._lock:
            self._sync()
            now = self.clock.now()
            hits = [fault for fault in self.faults
                    if fault.kind != "reset_incarnation" and fault.matches(vm, path, method, now)]
            for fault in hits:
                if fault.count is not None:
                    used = self._fault_uses.get(fault.id, 0) + 1
                    self._fault_uses[fault.id] = used
                    if used >= fault.count:  # spent: "fail the next N requests", then behave
                        self.faults.remove(fault)
            return hits

    # -- views ---------------------------------------------------------------

    def time_text(self, sim_seconds):
        """Human-readable RFC1123 time of a simulated instant."""
        return rfc1123(self.clock.to_datetime(sim_seconds))

    def event_state(self, event):
        """JSON view of an event for the control API (internal state names included)."""
        spec = event.spec
        return {
            "id": event.id,
            "type": spec.type,
            "status": event.state,
            "resources": list(spec.resources),
            "at": spec.at,
            "not_before": spec.not_before,
            "not_before_time": None if spec.not_before is None else self.time_text(spec.not_before),
            "start_due": event.start_due,
            "started_for": spec.started_for,
            "cancel_at": spec.cancel_at,
            "source": spec.source,
            "description": spec.description,
            "duration": spec.duration,
            "initial_status": spec.initial_status,
            "approval": spec.approval,
            "approval_delay": spec.approval_delay,
            "outage": spec.outage,
            "appeared_at": event.appeared_at,
            "started_at": event.started_at,
            "gone_at": event.gone_at,
            "gone_reason": event.gone_reason,
            "approved_by": list(event.approved_by),
            "viewers": list(event.viewers),
        }

    def clock_state(self):
        """JSON view of the clock."""
        now = self.clock.now()
        return {"mode": self.clock.mode, "time_scale": self.clock.time_scale, "now": now, "time": self.time_text(now)}

    def state(self, vm=None):
        """Everything, for GET /state: clock, VMs with their view, events, faults."""
        with self._lock:
            self._sync()
            now = self.clock.now()
            names = [vm] if vm is not None else list(self.vms)
            vms = []
            for name in names:
                spec = self.vms[name]
                until = self._down_until.get(name)
                vms.append({
                    "name": name,
                    "availability_set": spec.availability_set,
                    "update_domain": spec.update_domain,
                    "fault_domain": spec.fault_domain,
                    "document_incarnation": self._incarnation[name],
                    "events": [event.id for event in self._visible[name].values()],
                    "down_until": until if until is not None and now < until else None,
                })
            return {
                "clock": self.clock_state(),
                "scenario": {"name": self.scenario.settings.name, "source": self.scenario.source},
                "vms": vms,
                "events": [self.event_state(event) for event in self.events.values()
                           if vm is None or vm in event.viewers],
                "faults": [fault.as_dict() for fault in self.faults],
            }
