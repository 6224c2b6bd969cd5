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

The control plane (Resource Graph) sees the same events through their owner
(the scale set, availability set or VM they belong to) and keeps a gone event
as Completed or Canceled for ``control_plane.retention`` seconds.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
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


class ControlPlaneError(WorldError):
    """A control-plane request the world refuses: ``code`` is ARM's error code, ``details`` per-item errors."""

    def __init__(self, code, message, details=None):
        self.code = code
        self.message = message
        self.details = details or []
        super().__init__(message)


# ARM resource types of the owners of scheduled events, as they appear in resource ids.
VIRTUAL_MACHINES = "virtualMachines"
SCALE_SETS = "virtualMachineScaleSets"
AVAILABILITY_SETS = "availabilitySets"
RESOURCE_KINDS = (VIRTUAL_MACHINES, SCALE_SETS, AVAILABILITY_SETS)
PUBLISHING_API_VERSION = "2020-07-01"


class Resource:
    """A VM, scale set or availability set as ARM knows it: where it lives and its scheduledEventsPolicy."""

    def __init__(self, kind, name, subscription, resource_group, location):
        self.kind = kind
        self.name = name
        self.subscription = subscription
        self.resource_group = resource_group
        self.location = location
        self.policy = None
        self.id = (f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/"
                   f"{kind}/{name}")
        # The prefix of the Resource Graph row ids of its events.
        self.row_prefix = (f"/subscriptions/{subscription}/resourcegroups/{resource_group}/providers/Microsoft.Compute/"
                           f"{kind}/{name}/providers/Microsoft.Maintenance/scheduledevents/")

    @property
    def opted_in(self):
        """Whether the policy publishes to Event Grid and Resource Graph."""
        target = ((self.policy or {}).get("scheduledEventsAdditionalPublishingTargets") or {})
        return isinstance(target, dict) and (target.get("eventGridAndResourceGraph") or {}).get("enable") is True

    @property
    def publishing_api_version(self):
        """The ``scheduledEventsApiVersion`` the policy publishes with (Event Grid's ``ScheduledEventApiVersion``)."""
        target = ((self.policy or {}).get("scheduledEventsAdditionalPublishingTargets") or {})
        target = (target.get("eventGridAndResourceGraph") or {}) if isinstance(target, dict) else {}
        return target.get("scheduledEventsApiVersion") or PUBLISHING_API_VERSION

    def as_dict(self):
        """JSON view for the control API."""
        return {"id": self.id, "kind": self.kind, "name": self.name, "subscription": self.subscription,
                "resource_group": self.resource_group, "location": self.location, "opted_in": self.opted_in,
                "scheduledEventsPolicy": self.policy}


def merge_patch(target, patch):
    """RFC 7396 JSON merge patch of ``patch`` into a copy of ``target`` (null deletes a key)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


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
        self.owner = None

    # The attributes document.render_event reads.
    type = property(lambda self: self.spec.type)
    resources = property(lambda self: self.spec.resources)
    description = property(lambda self: self.spec.description)
    source = property(lambda self: self.spec.source)
    duration = property(lambda self: self.spec.duration)
    fields = property(lambda self: self.spec.fields)
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
        members, instances = {}, {}
        for vm in scenario.vms:
            if vm.scale_set is not None:
                instances.setdefault(vm.scale_set, []).append(vm.name)
            elif vm.availability_set is not None:
                members.setdefault(vm.availability_set, []).append(vm.name)
        groups = {("as", name): tuple(names) for name, names in members.items()}
        groups.update({("ss", name): tuple(names) for name, names in instances.items()})
        # Who sees an event naming this VM: itself, every member of its availability set, or every instance of
        # its scale set (one shared tuple per group, so a fleet of thousands stays cheap).
        self._audience = {vm.name: groups[("ss", vm.scale_set)] if vm.scale_set is not None
                          else groups[("as", vm.availability_set)] if vm.availability_set is not None
                          else (vm.name,) for vm in scenario.vms}
        self._build_resources()
        # Access tokens carry the epoch they were issued in; expiring tokens moves it on (never back, not even on a
        # reset, so a client's cached token cannot come back to life). ``revoked_at``: the epochs that ended by a
        # revocation (not an expiry), each with the wall time it happened, which the claims challenge names.
        self.token_epoch = 0
        self.revoked_at = {}
        # The Event Grid publisher turns this on while it has subscribers: only then is every change of an event's
        # control-plane status kept (in ``_changes``) until it takes them (``take_changes``).
        self.record_changes = False
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
        self.acknowledgements = []
        self._changes = []
        control = self.scenario.control_plane
        self.features_registered = control.features_registered
        self.retention = control.retention
        for resource in self.resources.values():
            wanted = control.opted_in == "all" or resource.name in control.opted_in
            resource.policy = self.publishing_policy(True) if wanted else None
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
        self._changed(event, when)
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

    def _on_expire_tokens(self, fault, when):
        del when
        if fault in self.faults:
            self.token_epoch += 1

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
        self._changed(event, when)
        self._push(when + event.spec.started_for, "end", event)
        if event.spec.outage > 0:
            for name in event.resources:
                self._down_until[name] = max(self._down_until.get(name, when), when + event.spec.outage)

    def _gone(self, event, when, reason):
        event.state, event.gone_at, event.gone_reason = "gone", when, reason
        for name in event.viewers:
            self._visible[name].pop(event.id.upper(), None)
        self._bump(event)
        if event.appeared_at is not None:
            self._changed(event, when)

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
        seen, groups = {}, set()
        for name in resources:
            audience = self._audience[name]
            if id(audience) in groups:
                continue
            groups.add(id(audience))
            for viewer in audience:
                seen[viewer] = None
        return tuple(seen)

    def _add_event(self, spec):
        event_id = spec.id or self.new_event_id()
        if event_id.upper() in self.events:
            raise Conflict(f"event {event_id} already exists")
        event = Event(spec, event_id, self._viewers(spec.resources))
        event.owner = self._owner(spec.resources)
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

    def _approve(self, event, vm, now, api_version, resource=None):
        """Record one approval and start the event when its approval rule is met.

        ``vm`` None is an acknowledgement through the control plane (by ``resource``): it satisfies the rule
        whatever ``approval`` says, as the operator decides for the whole event there.
        """
        if vm is not None and vm not in event.approved_by:
            event.approved_by.append(vm)
        if event.state == "Started":
            result = "already_started"
        elif vm is not None and event.spec.approval == "all" and not set(event.resources) <= set(event.approved_by):
            result = "waiting_for_others"
        else:
            due = now + event.spec.approval_delay
            if due < event.start_due:
                event.start_due = due
                self._push(due, "start", event)
            self._sync()
            result = "started" if event.state == "Started" else "start_pending"
        record = {"event_id": event.id, "vm": vm, "sim_time": now, "wall_time": self._wall(),
                  "api_version": api_version, "result": result, "source": "imds" if vm is not None else "control-plane"}
        if resource is not None:
            record["resource"] = resource.id
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
        elif fault.kind == "expire_tokens":
            self._push(fault.start, "expire_tokens", fault)
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
        """Per-request faults that apply to this request now, in the order they were added.

        ``vm`` None asks for the faults of the control-plane face."""
        with self._lock:
            self._sync()
            now = self.clock.now()
            hits = [fault for fault in self.faults
                    if fault.kind not in ("reset_incarnation", "expire_tokens") and fault.arm == (vm is None)
                    and fault.matches(vm, path, method, now)]
            for fault in hits:
                if fault.count is not None:
                    used = self._fault_uses.get(fault.id, 0) + 1
                    self._fault_uses[fault.id] = used
                    if used >= fault.count:  # spent: "fail the next N requests", then behave
                        self.faults.remove(fault)
            return hits

    # -- the control plane -------------------------------------------------------

    def _build_resources(self):
        """ARM's view of the fleet: standalone VMs (and availability-set members), scale sets, availability sets."""
        settings = self.scenario.settings
        self.resources = {}

        def add(kind, name, spec):
            resource = Resource(kind, name, spec.subscription or settings.subscription_id,
                                spec.resource_group or settings.resource_group, spec.location or settings.location)
            self.resources[(kind.lower(), name.lower())] = resource
            return resource

        for spec in self.scenario.scale_sets:
            add(SCALE_SETS, spec.name, spec)
        for vm in self.scenario.vms:
            if vm.scale_set is None:
                add(VIRTUAL_MACHINES, vm.name, vm)
            if vm.availability_set is not None and (AVAILABILITY_SETS.lower(), vm.availability_set.lower()) not in self.resources:
                add(AVAILABILITY_SETS, vm.availability_set, vm)  # where its first member lives

    def _own_owner(self, vm):
        if vm.scale_set is not None:
            return self.resources[(SCALE_SETS.lower(), vm.scale_set.lower())]
        if vm.availability_set is not None:
            return self.resources[(AVAILABILITY_SETS.lower(), vm.availability_set.lower())]
        return self.resources[(VIRTUAL_MACHINES.lower(), vm.name.lower())]

    def _owner(self, resources):
        """The resource an event belongs to on the control plane.

        The scale set when every VM is an instance of one scale set, else the availability set they all share,
        else the VM; when the VMs span owners, the first VM's owner. (Scale-set instances belong to no availability
        set here, so every case is the first VM's own owner.)"""
        return self._own_owner(self.vms[resources[0]])  # all of these cases come down to the first VM's owner

    @staticmethod
    def publishing_policy(enable):
        """The scheduledEventsPolicy that turns publishing to Event Grid and Resource Graph on or off."""
        return {"scheduledEventsAdditionalPublishingTargets": {
            "eventGridAndResourceGraph": {"enable": bool(enable), "scheduledEventsApiVersion": PUBLISHING_API_VERSION}}}

    def _cp_status(self, event, now):
        """The event's EventStatus on the control plane, None when Resource Graph has no row for it."""
        if event.appeared_at is None:
            return None
        if event.state in ("Scheduled", "Started"):
            return event.state
        if now >= event.gone_at + self.retention:
            return None
        return self._finished_status(event)

    @staticmethod
    def _finished_status(event):
        return "Completed" if event.gone_reason == "completed" else "Canceled"

    def _changed(self, event, when):
        """Keep a change of the event's control-plane status for Event Grid, with its row as it is now.

        Only while the publisher listens, and only when the owner publishes at that moment (Event Grid is sent the
        change when it happens; opting in later does not replay it). Retention plays no part: a row leaving
        Resource Graph is no change of status."""
        if not self.record_changes or not event.owner.opted_in:
            return
        status = event.state if event.state in ("Scheduled", "Started") else self._finished_status(event)
        self._changes.append({"sim_time": when, "time": self.clock.to_datetime(when), "status": status,
                              "api_version": event.owner.publishing_api_version, "row": self._row(event, status)})

    def take_changes(self, then=None):
        """Apply what is due, then hand over the changes kept since the last call, oldest first.

        ``then(changes)`` runs under the world's lock, so nothing can change between taking the changes and what it
        does with them (the publisher starts a subscription there: it gets exactly the changes that come later)."""
        with self._lock:
            self._sync()
            changes, self._changes = self._changes, []
            if then is not None:
                then(changes)
            return changes

    def resource(self, kind, name, subscription=None, resource_group=None):
        """The VM, scale set or availability set ``kind``/``name`` (case-insensitive), in that subscription and group."""
        found = self.resources.get((kind.lower(), name.lower()))
        if found is None or (subscription is not None and subscription.lower() != found.subscription.lower()) or (
                resource_group is not None and resource_group.lower() != found.resource_group.lower()):
            raise NotFound(f"The Resource 'Microsoft.Compute/{kind}/{name}' under resource group "
                           f"'{resource_group or '?'}' was not found.")
        return found

    def resources_named(self, name):
        """Every resource (of any kind) with this name."""
        return [resource for resource in self.resources.values() if resource.name.lower() == name.lower()]

    def set_policy(self, resource, patch):
        """Merge ``patch`` into the resource's scheduledEventsPolicy (a JSON merge patch; None removes the policy)."""
        with self._lock:
            self._sync()
            merged = merge_patch(resource.policy or {}, patch) if patch is not None else None
            resource.policy = merged or None
            return resource

    def set_control_plane(self, features_registered=None, retention=None):
        """Register or unregister the preview feature; change how long finished rows stay."""
        with self._lock:
            if features_registered is not None:
                self.features_registered = bool(features_registered)
            if retention is not None:
                self.retention = float(retention)

    def expire_tokens(self):
        """Every access token issued so far stops being accepted."""
        with self._lock:
            self.token_epoch += 1
            return self.token_epoch

    def revoke_tokens(self, when):
        """Every access token issued so far is revoked at ``when`` (the tokens' clock, epoch seconds): refused with a
        claims challenge that names that moment."""
        with self._lock:
            self.revoked_at[self.token_epoch] = when
            self.token_epoch += 1
            return self.token_epoch

    def vm_metadata(self, name):
        """The values instance metadata needs for this VM (its own subscription, group, location, scale set)."""
        vm = self.vms[name]
        owner = self._own_owner(vm) if vm.scale_set is not None else self.resources[(VIRTUAL_MACHINES.lower(), name.lower())]
        values = self.scenario.settings.metadata()
        values.update(subscription_id=owner.subscription, resource_group=owner.resource_group, location=owner.location,
                      scale_set=vm.scale_set or "")
        return values

    def _row(self, event, status):
        owner = event.owner
        return {
            "id": owner.row_prefix + event.id,
            "name": event.id,
            "type": "microsoft.maintenance/scheduledevents",
            "tenantId": self.scenario.control_plane.tenant_id,
            "kind": "",
            "location": owner.location,
            "resourceGroup": owner.resource_group,
            "subscriptionId": owner.subscription,
            "managedBy": "",
            "sku": None,
            "plan": None,
            "properties": document.render_event(event, PUBLISHING_API_VERSION, self.clock.to_datetime, status=status),
            "tags": None,
            "identity": None,
            "zones": None,
            "extendedLocation": None,
        }

    def control_plane_rows(self, opted_in_only=True):
        """Every scheduled-event row Resource Graph holds now, ordered by id (only opted-in owners by default)."""
        with self._lock:
            self._sync()
            now = self.clock.now()
            rows = []
            for event in self.events.values():
                if opted_in_only and not event.owner.opted_in:
                    continue
                status = self._cp_status(event, now)
                if status is not None:
                    rows.append(self._row(event, status))
            rows.sort(key=lambda row: row["id"])
            return rows

    def control_plane_event(self, event_id):
        """One event as the control plane sees it: owner, status, whether Resource Graph shows it, and its row."""
        with self._lock:
            event = self.event(event_id)
            status = self._cp_status(event, self.clock.now())
            return {"id": event.id, "owner": event.owner.as_dict(), "status": status,
                    "in_resource_graph": status is not None and event.owner.opted_in,
                    "row": self._row(event, status) if status is not None else None}

    def acknowledge(self, resource, event_ids, api_version, form="single"):
        """Acknowledge (approve) events of ``resource`` through the control plane; returns the approval records.

        Every id must be an event of that resource on the control plane (else NotFound) and Scheduled (else
        Conflict, the simulator's choice); otherwise nothing is applied. The transition is IMDS approval's."""
        with self._lock:
            self._sync()
            now = self.clock.now()
            problems, events = [], []
            for event_id in event_ids:
                event = self.events.get(event_id.upper())
                status = None if event is None else self._cp_status(event, now)
                if status is None or event.owner is not resource:
                    problems.append({"target": event_id, "code": "NotFound",
                                     "message": f"Scheduled event '{event_id}' was not found on resource '{resource.id}'."})
                elif status != "Scheduled":
                    problems.append({"target": event_id, "code": "Conflict",
                                     "message": f"Scheduled event '{event_id}' is {status} and cannot be acknowledged; "
                                                "only a Scheduled event can."})
                else:
                    events.append(event)
            base = {"resource": resource.id, "form": form, "api_version": api_version, "sim_time": now,
                    "wall_time": self._wall()}
            if problems:
                code = "NotFound" if any(problem["code"] == "NotFound" for problem in problems) else "Conflict"
                for event_id in event_ids:
                    self.acknowledgements.append(dict(base, event_id=event_id, result="refused", code=code))
                raise ControlPlaneError(code, problems[0]["message"] if len(problems) == 1 else
                                        f"{len(problems)} of {len(event_ids)} scheduled events cannot be acknowledged.",
                                        problems)
            records = []
            for event in dict.fromkeys(events):
                record = self._approve(event, None, now, api_version, resource)
                self.acknowledgements.append(dict(base, event_id=event.id, result=record["result"], code=None))
                records.append(record)
            return records

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
            "fields": dict((field, json.loads(value)) for field, value in spec.fields),
            "appeared_at": event.appeared_at,
            "started_at": event.started_at,
            "gone_at": event.gone_at,
            "gone_reason": event.gone_reason,
            "approved_by": list(event.approved_by),
            "viewers": list(event.viewers),
            "owner": event.owner.id,
            "control_plane_status": self._cp_status(event, self.clock.now()),
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
                    "scale_set": spec.scale_set,
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
