"""Plain data: what a scenario declares (VMs, events, faults, settings).

These objects are immutable descriptions. The world turns event and fault
specs into live objects and can always rebuild itself from them (``reset``).
"""

from __future__ import annotations

import dataclasses
import json
import typing as t

IMDS_FAULT_KINDS = ("status", "delay", "warmup", "malformed", "truncated", "non_object", "huge", "drop", "reset_incarnation",
                    "fields")
# Faults of the control-plane face (ARM, Resource Graph, the token endpoint); they take no ``vm``.
ARM_FAULT_KINDS = ("throttle", "arm_status", "expire_tokens", "arm_fields")
FAULT_KINDS = IMDS_FAULT_KINDS + ARM_FAULT_KINDS


@dataclasses.dataclass(frozen=True)
class VMSpec:
    """A simulated VM: its resource name, placement and optional listener address."""

    name: str
    availability_set: t.Optional[str] = None
    update_domain: int = 0
    fault_domain: int = 0
    port: t.Optional[int] = None
    address: t.Optional[str] = None
    computer_name: t.Optional[str] = None
    vm_id: t.Optional[str] = None
    subscription: t.Optional[str] = None
    resource_group: t.Optional[str] = None
    location: t.Optional[str] = None
    scale_set: t.Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ScaleSetSpec:
    """A Virtual Machine Scale Set; its instances are VMs named ``<name>_<i>``."""

    name: str
    instances: int
    subscription: t.Optional[str] = None
    resource_group: t.Optional[str] = None
    location: t.Optional[str] = None


@dataclasses.dataclass(frozen=True)
class EntraDeliverySpec:
    """Microsoft Entra authentication of a subscription's deliveries: a bearer token for the webhook's app.

    ``tenant_id`` None means the scenario's ``control_plane.tenant_id``; ``token_version`` 1 or 2 picks the issuer.
    """

    application_id_or_uri: str
    tenant_id: t.Optional[str] = None
    token_version: int = 1


@dataclasses.dataclass(frozen=True)
class EventGridSubscriptionSpec:
    """A webhook subscription to the Event Grid system topic (see eventgrid.py); ``endpoint`` is loopback.

    ``name`` None means "generate one". ``headers`` are static delivery headers as (name, value) pairs.
    """

    endpoint: str
    name: t.Optional[str] = None
    schema: str = "EventGridSchema"
    max_events_per_batch: int = 1
    headers: t.Tuple[t.Tuple[str, str], ...] = ()
    validate: bool = True
    duplicate_every: int = 0
    max_attempts: int = 5
    retry_delays: t.Tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)
    insecure_skip_verify: bool = False
    timeout: float = 30.0
    entra: t.Optional[EntraDeliverySpec] = None


@dataclasses.dataclass(frozen=True)
class ControlPlaneSpec:
    """The control-plane face's settings: who has opted in, the feature registration, how long rows stay.

    ``opted_in`` is ``"all"`` or a tuple of VM, scale-set or availability-set names. ``event_grid``: Event Grid
    webhook subscriptions made when the simulator starts (and again after a reset). Resource Graph's per-user quota:
    ``quota_requests`` queries per ``quota_window`` seconds of the simulator's monotonic clock, refused with 429 once
    spent only when ``quota_enforced``.
    """

    opted_in: t.Union[str, t.Tuple[str, ...]] = ()
    features_registered: bool = True
    retention: float = 3600.0
    management_group: str = "mg-imds-sim"
    tenant_id: str = "72f988bf-0000-4000-8000-00000000c0de"
    event_grid: t.Tuple[EventGridSubscriptionSpec, ...] = ()
    quota_requests: int = 15
    quota_window: float = 5.0
    quota_enforced: bool = False


@dataclasses.dataclass(frozen=True)
class EventSpec:
    """A scheduled event as declared; times are simulated seconds since the start.

    ``notice`` is None for events that appear already Started (hardware failure).
    ``id`` None means "generate one" (the world does, from its seeded RNG).
    """

    type: str
    resources: t.Tuple[str, ...]
    at: float = 0.0
    id: t.Optional[str] = None
    notice: t.Optional[float] = None
    started_for: float = 600.0
    source: str = "Platform"
    description: str = ""
    duration: int = -1
    cancel_at: t.Optional[float] = None
    initial_status: str = "Scheduled"
    approval: str = "any"
    approval_delay: float = 0.0
    outage: float = 0.0
    # (Azure key, JSON text) pairs that replace what IMDS and the control plane show of the event, verbatim
    fields: t.Tuple[t.Tuple[str, str], ...] = ()

    @property
    def not_before(self):
        """Simulated second of NotBefore, None for an event born Started."""
        return None if self.notice is None else self.at + self.notice


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    """A misbehaviour of the IMDS listeners, active from ``start`` until ``until`` (sim seconds),
    or for the first ``count`` requests it matches.

    ``fields`` (kinds fields and arm_fields) is the JSON text of the values written over what is served.
    ``vms`` None means every VM. ``seconds`` (delay, warmup) are wall-clock
    seconds because they exercise client timeouts, which run on real time.
    """

    kind: str
    vms: t.Optional[t.Tuple[str, ...]] = None
    start: float = 0.0
    until: t.Optional[float] = None
    path: str = "/metadata"
    method: t.Optional[str] = None
    code: t.Optional[int] = None
    seconds: t.Optional[float] = None
    size: t.Optional[int] = None
    count: t.Optional[int] = None
    id: t.Optional[str] = None
    retry_after: t.Optional[int] = None
    fields: t.Optional[str] = None

    @property
    def arm(self):
        """True for a fault of the control-plane face."""
        return self.kind in ARM_FAULT_KINDS

    def matches(self, vm, path, method, now):
        """Whether this fault applies to a request of ``vm`` at sim time ``now``."""
        if now < self.start or (self.until is not None and now >= self.until):
            return False
        if self.vms is not None and vm not in self.vms:
            return False
        if self.method is not None and method != self.method:
            return False
        prefix = self.path
        if self.arm:  # ARM paths are case-insensitive; the token endpoint only when named
            path, prefix = path.lower(), prefix.lower()
            if path.startswith("/msi/") and not prefix.startswith("/msi"):
                return False
        return path == prefix or path.startswith(prefix.rstrip("/") + "/")

    def as_dict(self):
        """JSON view, with the scenario file's key names."""
        out = {"id": self.id, "kind": self.kind, "vm": list(self.vms) if self.vms is not None else "all",
               "from": self.start, "until": self.until}
        if self.arm:
            del out["vm"]
        if self.kind not in ("reset_incarnation", "expire_tokens"):
            out.update(path=self.path, method=self.method)
        for key, value in (("code", self.code), ("seconds", self.seconds), ("bytes", self.size), ("count", self.count),
                           ("retry_after", self.retry_after)):
            if value is not None:
                out[key] = value
        if self.fields is not None:
            out["fields"] = json.loads(self.fields)
        return out


@dataclasses.dataclass(frozen=True)
class Settings:
    """Scenario-wide settings."""

    name: str = "unnamed"
    time_scale: float = 1.0
    clock: str = "scaled"
    start_time: t.Optional[str] = None
    seed: t.Optional[int] = None
    rate_limit: int = 5
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "imds-sim-rg"
    location: str = "westeurope"
    vm_size: str = "Standard_D2s_v5"

    def metadata(self):
        """The values instance metadata needs."""
        return {"subscription_id": self.subscription_id, "resource_group": self.resource_group,
                "location": self.location, "vm_size": self.vm_size}


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A validated scenario: settings, VMs, the events and faults to replay."""

    settings: Settings
    vms: t.Tuple[VMSpec, ...]
    events: t.Tuple[EventSpec, ...] = ()
    faults: t.Tuple[FaultSpec, ...] = ()
    source: str = "<scenario>"
    scale_sets: t.Tuple[ScaleSetSpec, ...] = ()
    control_plane: ControlPlaneSpec = ControlPlaneSpec()
