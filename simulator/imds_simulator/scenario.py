"""Scenario files: strict YAML loading and validation.

A typo in a scenario silently producing a different rehearsal is worse than
no rehearsal, so every unknown key, wrong type or impossible time is an error
that names the file, the line, the path inside the YAML and the problem.
The same parsers validate JSON bodies sent to the control API.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import urllib.parse

import yaml

from . import document
from .clock import parse_iso8601
from .model import (ARM_FAULT_KINDS, FAULT_KINDS, ControlPlaneSpec, EntraDeliverySpec, EventGridSubscriptionSpec,
                    EventSpec, FaultSpec, ScaleSetSpec, Scenario, Settings, VMSpec)

GUID = re.compile(r"^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$")
VM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SCALE_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")

_TOP_KEYS = ("name", "description", "time_scale", "clock", "start_time", "seed", "rate_limit", "subscription_id",
             "resource_group", "location", "vm_size", "vms", "fleet", "scale_sets", "events", "faults", "control_plane")
_VM_KEYS = ("name", "availability_set", "update_domain", "fault_domain", "port", "address", "computer_name", "vm_id",
            "subscription", "resource_group", "location")
_SCALE_SET_KEYS = ("name", "instances", "subscription", "resource_group", "location")
_CONTROL_PLANE_KEYS = ("opted_in", "features_registered", "retention", "management_group", "tenant_id", "event_grid",
                       "resource_graph_quota")
_QUOTA_KEYS = ("requests", "window", "enforce")
EVENT_GRID_KEYS = ("endpoint", "name", "schema", "max_events_per_batch", "headers", "validate", "duplicate_every",
                   "max_attempts", "retry_delays", "insecure_skip_verify", "timeout", "entra")
ENTRA_KEYS = ("tenant_id", "application_id_or_uri", "token_version")
EVENT_GRID_SCHEMAS = ("EventGridSchema", "CloudEventSchemaV1_0")
EVENT_GRID_NAME = re.compile(r"^[A-Za-z0-9-]{3,64}$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the publisher sets itself (Azure refuses aeg-* delivery properties too).
RESERVED_HEADERS = ("content-type", "content-length", "host", "connection", "transfer-encoding")
_FLEET_KEYS = ("count", "prefix", "availability_set", "update_domains", "fault_domains")
EVENT_KEYS = ("at", "id", "type", "resources", "availability_set", "scale_set", "notice", "started_for", "source", "description",
              "duration", "cancel_at", "initial_status", "approval", "approval_delay", "outage", "fields")
FAULT_KEYS = ("kind", "vm", "from", "until", "path", "method", "code", "seconds", "bytes", "count", "retry_after",
              "fields")
# What a fields / arm_fields fault may write over: each key names a mapping of field -> any JSON value.
FIELDS_TARGETS = {"fields": ("event", "document"), "arm_fields": ("row", "properties")}
_KIND_KEYS = {"status": ("code",), "arm_status": ("code",), "delay": ("seconds",), "warmup": ("seconds",),
              "huge": ("bytes",), "fields": ("fields",), "arm_fields": ("fields",)}


class ScenarioError(Exception):
    """An invalid scenario or control-API body; ``str()`` is the message to show."""

    def __init__(self, source, path, message, line=None):
        self.source = source
        self.path = path
        self.message = message
        self.line = line
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {path or '(top level)'}: {message}" if path is not None else f"{where}: {message}")


_MISSING = object()


class Checker:
    """Reads typed values out of nested dicts, failing with the YAML path."""

    def __init__(self, source, lines=None):
        self.source = source
        self.lines = lines or {}

    def fail(self, path, message):
        """Raise a ScenarioError for ``path``, with its line when known."""
        line = self.lines.get(path)
        if line is None and path:
            # Fall back to the closest enclosing node with a known line.
            parent = path
            while line is None and parent:
                shorter = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", parent)
                parent = "" if shorter == parent else shorter
                line = self.lines.get(parent)
        raise ScenarioError(self.source, path, message, line)

    def mapping(self, data, path, allowed):
        """Require a mapping whose keys are all in ``allowed``."""
        if not isinstance(data, dict):
            self.fail(path, f"expected a mapping, got {_type_name(data)}")
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                self.fail(join(path, str(key)), f"unknown key {key!r} (allowed: {', '.join(allowed)})")
        return data

    def get(self, data, path, key, kind, default=_MISSING):
        """Value of ``data[key]`` checked against ``kind`` (str, int, number, bool, list, any)."""
        where = join(path, key)
        if key not in data or data[key] is None:
            if default is _MISSING:
                self.fail(where, "is required")
            return default
        value = data[key]
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "list": isinstance(value, list),
            "any": True,
        }[kind]
        if not ok:
            self.fail(where, f"expected {_KIND_NAMES[kind]}, got {_type_name(value)}")
        return float(value) if kind == "number" else value

    def choice(self, data, path, key, choices, default=_MISSING, *, what="value"):
        """A string restricted to ``choices``."""
        value = self.get(data, path, key, "str", default)
        if value is not None and value not in choices:
            self.fail(join(path, key), f"unknown {what} {value!r} (expected one of {', '.join(choices)})")
        return value

    def number(self, data, path, key, default=_MISSING, *, minimum=None, positive=False):
        """A number, optionally bounded below."""
        value = self.get(data, path, key, "number", default)
        if value is not None:
            if positive and value <= 0:
                self.fail(join(path, key), f"must be greater than 0, got {value:g}")
            if minimum is not None and value < minimum:
                self.fail(join(path, key), f"must be at least {minimum:g}, got {value:g}")
        return value

    def integer(self, data, path, key, default=_MISSING, *, minimum=None, maximum=None):
        """An integer within optional bounds."""
        value = self.get(data, path, key, "int", default)
        if value is not None:
            if minimum is not None and value < minimum:
                self.fail(join(path, key), f"must be at least {minimum}, got {value}")
            if maximum is not None and value > maximum:
                self.fail(join(path, key), f"must be at most {maximum}, got {value}")
        return value


_KIND_NAMES = {"str": "a string", "int": "an integer", "number": "a number", "bool": "true or false", "list": "a list",
               "any": "a value"}


def _type_name(value):
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


def join(path, key):
    """``events[0]`` + ``type`` -> ``events[0].type``."""
    return f"{path}.{key}" if path else key


def is_loopback(address):
    """True for an IP literal in 127.0.0.0/8 or ::1 ("localhost" counts as 127.0.0.1)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def parse_vm(check, data, path):
    """One entry of ``vms``."""
    check.mapping(data, path, _VM_KEYS)
    name = check.get(data, path, "name", "str")
    if not VM_NAME.match(name):
        check.fail(join(path, "name"), f"invalid VM name {name!r} (1-64 letters, digits, '_', '.', '-')")
    address = check.get(data, path, "address", "str", None)
    if address is not None and not is_loopback(address):
        check.fail(join(path, "address"), f"{address!r} is not a loopback address (127.0.0.0/8 or ::1)")
    vm_id = check.get(data, path, "vm_id", "str", None)
    if vm_id is not None and not GUID.match(vm_id):
        check.fail(join(path, "vm_id"), f"{vm_id!r} is not a GUID")
    return VMSpec(
        name=name,
        subscription=_subscription(check, data, path),
        resource_group=_resource_group(check, data, path),
        location=check.get(data, path, "location", "str", None),
        availability_set=check.get(data, path, "availability_set", "str", None),
        update_domain=check.integer(data, path, "update_domain", 0, minimum=0, maximum=19),
        fault_domain=check.integer(data, path, "fault_domain", 0, minimum=0, maximum=19),
        port=check.integer(data, path, "port", None, minimum=0, maximum=65535),
        address=address,
        computer_name=check.get(data, path, "computer_name", "str", None),
        vm_id=vm_id,
    )


def _subscription(check, data, path, key="subscription"):
    value = check.get(data, path, key, "str", None)
    if value is not None and not GUID.match(value):
        check.fail(join(path, key), f"{value!r} is not a subscription id (a GUID)")
    return value


def _resource_group(check, data, path):
    value = check.get(data, path, "resource_group", "str", None)
    if value is not None and (not RESOURCE_GROUP.match(value) or value.endswith(".")):
        check.fail(join(path, "resource_group"), f"invalid resource group name {value!r}")
    return value


def parse_scale_set(check, data, path):
    """One entry of ``scale_sets``: a ScaleSetSpec and its instances, VMs ``<name>_0`` ... ``<name>_N-1``."""
    check.mapping(data, path, _SCALE_SET_KEYS)
    name = check.get(data, path, "name", "str")
    if not SCALE_SET_NAME.match(name):
        check.fail(join(path, "name"), f"invalid scale set name {name!r} (1-60 letters, digits, '_', '.', '-')")
    spec = ScaleSetSpec(name=name, instances=check.integer(data, path, "instances", minimum=1, maximum=1000),
                        subscription=_subscription(check, data, path), resource_group=_resource_group(check, data, path),
                        location=check.get(data, path, "location", "str", None))
    vms = [VMSpec(name=f"{name}_{index}", scale_set=name, subscription=spec.subscription,
                  resource_group=spec.resource_group, location=spec.location, update_domain=index % 5,
                  fault_domain=index % 2) for index in range(spec.instances)]
    return spec, vms


def parse_control_plane(check, data, path, vms, scale_sets):
    """``control_plane:``: opt-in, feature registration, retention of finished rows."""
    if data is None:
        return ControlPlaneSpec()
    check.mapping(data, path, _CONTROL_PLANE_KEYS)
    opted = check.get(data, path, "opted_in", "any", [])
    if opted == "all":
        opted_in = "all"
    else:
        if not isinstance(opted, list):
            check.fail(join(path, "opted_in"), "expected 'all' or a list of VM, scale set or availability set names")
        known = ({vm.name for vm in vms} | {spec.name for spec in scale_sets}
                 | {vm.availability_set for vm in vms if vm.availability_set is not None})
        for index, name in enumerate(opted):
            where = f"{join(path, 'opted_in')}[{index}]"
            if not isinstance(name, str):
                check.fail(where, f"expected a resource name, got {_type_name(name)}")
            if name not in known:
                check.fail(where, f"unknown VM, scale set or availability set {name!r}")
        opted_in = tuple(opted)
    default = ControlPlaneSpec()
    subscriptions = [parse_event_grid_subscription(check, item, f"{join(path, 'event_grid')}[{index}]")
                     for index, item in enumerate(check.get(data, path, "event_grid", "list", []))]
    names = set()
    for index, spec in enumerate(subscriptions):
        if spec.name is not None:
            if spec.name.lower() in names:
                check.fail(f"{join(path, 'event_grid')}[{index}].name", f"duplicate subscription name {spec.name!r}")
            names.add(spec.name.lower())
    quota_path = join(path, "resource_graph_quota")
    quota = check.get(data, path, "resource_graph_quota", "any", {})
    check.mapping(quota, quota_path, _QUOTA_KEYS)
    return ControlPlaneSpec(
        quota_requests=check.integer(quota, quota_path, "requests", default.quota_requests, minimum=1),
        quota_window=check.number(quota, quota_path, "window", default.quota_window, positive=True),
        quota_enforced=check.get(quota, quota_path, "enforce", "bool", default.quota_enforced),
        opted_in=opted_in,
        features_registered=check.get(data, path, "features_registered", "bool", True),
        retention=check.number(data, path, "retention", default.retention, minimum=0),
        management_group=check.get(data, path, "management_group", "str", default.management_group),
        tenant_id=_subscription(check, data, path, "tenant_id") or default.tenant_id,
        event_grid=tuple(subscriptions),
    )


def parse_event_grid_subscription(check, data, path):
    """One Event Grid webhook subscription (``control_plane.event_grid[]`` or the control API's body).

    The endpoint must be http(s) on a loopback host: the simulator never connects to another machine."""
    check.mapping(data, path, EVENT_GRID_KEYS)
    endpoint = check.get(data, path, "endpoint", "str")
    where = join(path, "endpoint")
    try:
        parts = urllib.parse.urlsplit(endpoint)
        _port = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        check.fail(where, f"{endpoint!r} is not a URL: {exc}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        check.fail(where, f"{endpoint!r} is not an http:// or https:// URL")
    if not is_loopback(parts.hostname):
        check.fail(where, f"host {parts.hostname!r} is not a loopback address; the simulator delivers Event Grid "
                          "events only to 127.0.0.0/8, ::1 or localhost, never to another machine")
    name = check.get(data, path, "name", "str", None)
    if name is not None and not EVENT_GRID_NAME.match(name):
        check.fail(join(path, "name"), f"invalid subscription name {name!r} (3-64 letters, digits and '-')")
    headers = check.get(data, path, "headers", "any", {})
    if not isinstance(headers, dict):
        check.fail(join(path, "headers"), f"expected a mapping of header names to values, got {_type_name(headers)}")
    if len(headers) > 10:
        check.fail(join(path, "headers"), f"at most 10 delivery headers (as on Azure), got {len(headers)}")
    for key, value in headers.items():
        at = join(join(path, "headers"), str(key))
        if not isinstance(key, str) or not HEADER_NAME.match(key):
            check.fail(at, f"invalid header name {key!r}")
        if key.lower().startswith("aeg-") or key.lower() in RESERVED_HEADERS or key.lower().startswith("webhook-"):
            check.fail(at, f"header {key!r} is set by the publisher itself")
        if not isinstance(value, str) or "\r" in value or "\n" in value or len(value) > 4096:
            check.fail(at, "expected a single-line string of at most 4096 characters")
    delays = check.get(data, path, "retry_delays", "list", list(EventGridSubscriptionSpec.retry_delays))
    if not delays or len(delays) > 30:
        check.fail(join(path, "retry_delays"), "expected a list of 1 to 30 delays in seconds")
    for index, delay in enumerate(delays):
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 3600:
            check.fail(f"{join(path, 'retry_delays')}[{index}]", f"expected seconds from 0 to 3600, got {delay!r}")
    timeout = check.number(data, path, "timeout", EventGridSubscriptionSpec.timeout, positive=True)
    if timeout > 300:
        check.fail(join(path, "timeout"), f"must be at most 300, got {timeout:g}")
    entra = _entra_delivery(check, data, path)
    if entra is not None and any(key.lower() == "authorization" for key in headers):
        check.fail(join(join(path, "headers"), "Authorization"),
                   "Microsoft Entra authentication sends Authorization itself: leave it out of headers")
    return EventGridSubscriptionSpec(
        endpoint=endpoint,
        name=name,
        schema=check.choice(data, path, "schema", EVENT_GRID_SCHEMAS, "EventGridSchema", what="schema"),
        max_events_per_batch=check.integer(data, path, "max_events_per_batch", 1, minimum=1, maximum=5000),
        headers=tuple(headers.items()),
        validate=check.get(data, path, "validate", "bool", True),
        duplicate_every=check.integer(data, path, "duplicate_every", 0, minimum=0),
        max_attempts=check.integer(data, path, "max_attempts", 5, minimum=1, maximum=30),
        retry_delays=tuple(float(delay) for delay in delays),
        insecure_skip_verify=check.get(data, path, "insecure_skip_verify", "bool", False),
        timeout=timeout,
        entra=entra,
    )


def _entra_delivery(check, data, path):
    """A subscription's ``entra`` mapping (Azure's Microsoft Entra authentication of webhook deliveries), or None."""
    entra = check.get(data, path, "entra", "any", None)
    if entra is None:
        return None
    where = join(path, "entra")
    check.mapping(entra, where, ENTRA_KEYS)
    app = check.get(entra, where, "application_id_or_uri", "str")
    if not app.strip() or len(app) > 256 or not app.isprintable():
        check.fail(join(where, "application_id_or_uri"), "expected the app's id or id URI (printable, at most 256)")
    return EntraDeliverySpec(
        application_id_or_uri=app,
        tenant_id=_subscription(check, entra, where, "tenant_id"),
        token_version=check.integer(entra, where, "token_version", 1, minimum=1, maximum=2),
    )


def fleet_vms(check, data, path):
    """Expand ``fleet: {count, prefix, ...}`` into VMs ``<prefix>0`` ... ``<prefix>N-1``."""
    check.mapping(data, path, _FLEET_KEYS)
    count = check.integer(data, path, "count", minimum=1, maximum=10000)
    prefix = check.get(data, path, "prefix", "str", "vm-")
    aset = check.get(data, path, "availability_set", "str", None)
    uds = check.integer(data, path, "update_domains", 5, minimum=1, maximum=20)
    fds = check.integer(data, path, "fault_domains", 2, minimum=1, maximum=3)
    vms = []
    for index in range(count):
        name = f"{prefix}{index}"
        if not VM_NAME.match(name):
            check.fail(join(path, "prefix"), f"generates invalid VM name {name!r}")
        vms.append(VMSpec(name=name, availability_set=aset, update_domain=index % uds, fault_domain=index % fds))
    return vms


class VmIndex:
    """VM names, availability-set members and scale-set instances of a VM list, looked up without a scan
    (a generated fleet of thousands of VMs with hundreds of events must load fast)."""

    def __init__(self, vms):
        self.vms = list(vms)
        self.names = {vm.name for vm in self.vms}
        self.sets, self.scale_sets = {}, {}
        for vm in self.vms:
            if vm.availability_set is not None:
                self.sets.setdefault(vm.availability_set, []).append(vm.name)
            if vm.scale_set is not None:
                self.scale_sets.setdefault(vm.scale_set, []).append(vm.name)


def _resolve_resources(check, data, path, vms):
    """``resources`` (VM names), ``availability_set`` or ``scale_set`` (all of its members), exactly one."""
    lookup = vms if isinstance(vms, VmIndex) else VmIndex(vms)
    given = [key for key in ("resources", "availability_set", "scale_set") if data.get(key) is not None]
    if len(given) != 1:
        check.fail(path, "give exactly one of 'resources' (VM names), 'availability_set' or 'scale_set'")
    if given == ["scale_set"]:
        scale_set = check.get(data, path, "scale_set", "str")
        members = tuple(lookup.scale_sets.get(scale_set, ()))
        if not members:
            check.fail(join(path, "scale_set"), f"no scale set {scale_set!r}")
        return members
    has_set = given == ["availability_set"]
    names = lookup.names
    if has_set:
        aset = check.get(data, path, "availability_set", "str")
        members = tuple(lookup.sets.get(aset, ()))
        if not members:
            check.fail(join(path, "availability_set"), f"no VM is in availability set {aset!r}")
        return members
    resources = check.get(data, path, "resources", "list")
    if not resources:
        check.fail(join(path, "resources"), "must list at least one VM")
    seen = []
    for index, name in enumerate(resources):
        where = f"{join(path, 'resources')}[{index}]"
        if not isinstance(name, str):
            check.fail(where, f"expected a VM name, got {_type_name(name)}")
        if name not in names:
            check.fail(where, f"unknown VM {name!r}")
        if name in seen:
            check.fail(where, f"VM {name!r} listed twice")
        seen.append(name)
    return tuple(seen)


def parse_event(check, data, path, vms, *, default_at=0.0):
    """One event; ``vms`` are the VMSpecs its resources must name (a list or a VmIndex)."""
    check.mapping(data, path, EVENT_KEYS)
    event_type = check.choice(data, path, "type", document.EVENT_TYPES, what="event type")
    resources = _resolve_resources(check, data, path, vms)
    at = check.number(data, path, "at", default_at, minimum=0)
    event_id = check.get(data, path, "id", "str", None)
    if event_id is not None and not GUID.match(event_id):
        check.fail(join(path, "id"), f"{event_id!r} is not a GUID")
    status = check.choice(data, path, "initial_status", ("Scheduled", "Started"), "Scheduled")
    born_started = status == "Started"
    if born_started:
        for key in ("notice", "cancel_at"):
            if data.get(key) is not None:
                check.fail(join(path, key), "not allowed with initial_status Started (the event has no NotBefore)")
        notice = None
    else:
        notice = check.number(data, path, "notice", float(document.DEFAULT_NOTICE[event_type]), minimum=0)
    cancel_at = check.number(data, path, "cancel_at", None, minimum=0)
    if cancel_at is not None and not at < cancel_at < at + notice:
        check.fail(join(path, "cancel_at"), f"must fall after 'at' ({at:g}) and before NotBefore ({at + notice:g})")
    if born_started and event_type == "Reboot":
        default_description = document.HARDWARE_FAILURE_DESCRIPTION
    else:
        default_description = document.DEFAULT_DESCRIPTION[event_type]
    return EventSpec(
        type=event_type,
        resources=resources,
        at=at,
        id=event_id,
        notice=notice,
        started_for=check.number(data, path, "started_for", float(document.DEFAULT_STARTED_FOR[event_type]),
                                 positive=True),
        source=check.choice(data, path, "source", document.EVENT_SOURCES, "Platform"),
        description=check.get(data, path, "description", "str", default_description),
        duration=check.integer(data, path, "duration", document.DEFAULT_DURATION[event_type], minimum=-1),
        cancel_at=cancel_at,
        initial_status=status,
        approval=check.choice(data, path, "approval", ("any", "all"), "any"),
        approval_delay=check.number(data, path, "approval_delay", 0.0, minimum=0),
        outage=check.number(data, path, "outage", 0.0, minimum=0),
        fields=_event_fields(check, data, path),
    )


def _event_fields(check, data, path):
    """`fields`: Azure keys of the event and the JSON values that replace them, verbatim, wherever it is shown."""
    fields = check.get(data, path, "fields", "any", {})
    check.mapping(fields, join(path, "fields"), document.EVENT_FIELDS)
    return tuple((field, json.dumps(value)) for field, value in sorted(fields.items()))


def parse_fault(check, data, path, vms, *, default_from=0.0):
    """One fault."""
    check.mapping(data, path, FAULT_KEYS)
    kind = check.choice(data, path, "kind", FAULT_KINDS, what="fault kind")
    arm = kind in ARM_FAULT_KINDS
    for key, kinds in (("code", ("status", "arm_status")), ("seconds", ("delay", "warmup")), ("bytes", ("huge",)),
                       ("retry_after", ("throttle",)), ("fields", ("fields", "arm_fields"))):
        if data.get(key) is not None and kind not in kinds:
            check.fail(join(path, key), f"not used by kind {kind!r} (only by {', '.join(kinds)})")
    if kind in ("reset_incarnation", "expire_tokens"):
        for key in ("until", "path", "method", "count"):
            if data.get(key) is not None:
                check.fail(join(path, key), f"not used by kind {kind!r} (it happens once, at 'from')")
    if arm and data.get("vm") is not None:
        check.fail(join(path, "vm"), f"not used by kind {kind!r} (a fault of the control-plane face, not of a VM)")
    for key in _KIND_KEYS.get(kind, ()):
        if key != "bytes" and data.get(key) is None:
            check.fail(join(path, key), f"is required for kind {kind!r}")
    names = {vm.name for vm in vms}
    target = check.get(data, path, "vm", "any", "all")
    if target == "all":
        targets = None
    else:
        listed = [target] if isinstance(target, str) else target
        if not isinstance(listed, list) or not listed:
            check.fail(join(path, "vm"), "expected 'all', a VM name or a list of VM names")
        for name in listed:
            if name not in names:
                check.fail(join(path, "vm"), f"unknown VM {name!r}")
        targets = tuple(listed)
    start = check.number(data, path, "from", default_from, minimum=0)
    until = check.number(data, path, "until", None, minimum=0)
    if until is not None and until <= start:
        check.fail(join(path, "until"), f"must be after 'from' ({start:g})")
    fault_path = check.get(data, path, "path", "str", "/" if arm else "/metadata")
    if not fault_path.startswith("/"):
        check.fail(join(path, "path"), "must start with '/'")
    code = check.integer(data, path, "code", None, minimum=500 if kind == "arm_status" else 100, maximum=599)
    seconds = check.number(data, path, "seconds", None, positive=True)
    size = check.integer(data, path, "bytes", 1048576 if kind == "huge" else None, minimum=64, maximum=1 << 30)
    fields = None
    if kind in FIELDS_TARGETS:
        fields = _parse_fields(check, data["fields"], join(path, "fields"), FIELDS_TARGETS[kind])
    return FaultSpec(kind=kind, vms=targets, start=start, until=until, path=fault_path,
                     method=check.choice(data, path, "method", ("GET", "POST"), None),
                     code=code, seconds=seconds, size=size, fields=fields,
                     count=check.integer(data, path, "count", None, minimum=1),
                     retry_after=check.integer(data, path, "retry_after", 5 if kind == "throttle" else None,
                                               minimum=0, maximum=3600))


def _parse_fields(check, data, path, targets):
    """The values a fields fault writes: {target: {field: any JSON value}}, kept as JSON text (specs are frozen)."""
    if not isinstance(data, dict) or not data:
        check.fail(path, "expected a mapping with %s" % " and/or ".join(repr(t) for t in targets))
    for target, values in data.items():
        if target not in targets:
            check.fail(join(path, str(target)), "unknown key; expected %s" % " or ".join(repr(t) for t in targets))
        if not isinstance(values, dict):
            check.fail(join(path, target), "expected a mapping of field names to values")
    return json.dumps(data, sort_keys=True)


def parse_scenario(data, source="<scenario>", lines=None):
    """Validate a scenario mapping (as loaded from YAML) into a Scenario."""
    check = Checker(source, lines)
    if data is None:
        data = {}
    check.mapping(data, "", _TOP_KEYS)
    clock = check.choice(data, "", "clock", ("scaled", "manual"), "scaled")
    start_time = check.get(data, "", "start_time", "str", None)
    if start_time is not None:
        if clock != "manual":
            check.fail("start_time", "only valid with 'clock: manual' (a scaled clock follows the wall clock)")
        try:
            parse_iso8601(start_time)
        except ValueError:
            check.fail("start_time", f"{start_time!r} is not an ISO-8601 timestamp")
    settings = Settings(
        name=check.get(data, "", "name", "str", "unnamed"),
        time_scale=check.number(data, "", "time_scale", 1.0, positive=True),
        clock=clock,
        start_time=start_time,
        seed=check.integer(data, "", "seed", None),
        rate_limit=check.integer(data, "", "rate_limit", 5, minimum=0),
        subscription_id=check.get(data, "", "subscription_id", "str", Settings.subscription_id),
        resource_group=check.get(data, "", "resource_group", "str", Settings.resource_group),
        location=check.get(data, "", "location", "str", Settings.location),
        vm_size=check.get(data, "", "vm_size", "str", Settings.vm_size),
    )
    check.get(data, "", "description", "str", "")
    vms = [parse_vm(check, item, f"vms[{index}]") for index, item in enumerate(check.get(data, "", "vms", "list", []))]
    declared = len(vms)
    if data.get("fleet") is not None:
        vms.extend(fleet_vms(check, data["fleet"], "fleet"))
    generated = len(vms)
    scale_sets, owners = [], {}
    for index, item in enumerate(check.get(data, "", "scale_sets", "list", [])):
        spec, instances = parse_scale_set(check, item, f"scale_sets[{index}]")
        if spec.name.lower() in {known.name.lower() for known in scale_sets}:
            check.fail(f"scale_sets[{index}].name", f"duplicate scale set name {spec.name!r}")
        scale_sets.append(spec)
        owners.update((len(vms) + offset, f"scale_sets[{index}]") for offset in range(len(instances)))
        vms.extend(instances)
    if not vms:
        check.fail("vms", "the scenario defines no VM (add 'vms', 'fleet' or 'scale_sets')")
    seen = {}
    for index, vm in enumerate(vms):
        if vm.name.lower() in seen:
            where = f"vms[{index}].name" if index < declared else "fleet" if index < generated else owners[index]
            check.fail(where, f"duplicate VM name {vm.name!r}")
        seen[vm.name.lower()] = index
    vm_index = VmIndex(vms)
    events = [parse_event(check, item, f"events[{index}]", vm_index)
              for index, item in enumerate(check.get(data, "", "events", "list", []))]
    ids = set()
    for index, event in enumerate(events):
        if event.id is not None:
            if event.id.upper() in ids:
                check.fail(f"events[{index}].id", f"duplicate event id {event.id!r}")
            ids.add(event.id.upper())
    faults = [parse_fault(check, item, f"faults[{index}]", vms)
              for index, item in enumerate(check.get(data, "", "faults", "list", []))]
    control_plane = parse_control_plane(check, data.get("control_plane"), "control_plane", vms, scale_sets)
    return Scenario(settings=settings, vms=tuple(vms), events=tuple(events), faults=tuple(faults), source=source,
                    scale_sets=tuple(scale_sets), control_plane=control_plane)


def _node_lines(node, path, lines, source):
    """Record the 1-based line of every node by path; reject duplicate mapping keys."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        keys = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in keys:
                raise ScenarioError(source, join(path, str(key)), "duplicate key", key_node.start_mark.line + 1)
            keys.add(key)
            _node_lines(value_node, join(path, str(key)), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _node_lines(item, f"{path}[{index}]", lines, source)


def load_yaml(text, source):
    """Parse YAML text into (data, lines-by-path) with a clear error for bad syntax."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(source, None, f"invalid YAML: {problem}",
                            None if mark is None else mark.line + 1) from None
    if node is None:
        return None, {}
    lines = {}
    _node_lines(node, "", lines, source)
    loader = yaml.SafeLoader("")
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ScenarioError(source, None, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, lines


def read_scenario_data(path):
    """Read a scenario file into (data, lines) without validating it."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ScenarioError(str(path), None, f"cannot read scenario: {exc.strerror}") from None
    return load_yaml(text, str(path))


def load_scenario(path):
    """Load and validate a scenario file."""
    data, lines = read_scenario_data(path)
    return parse_scenario(data, str(path), lines)


def build_scenario(source=None, *, extra_vms=(), fleet_count=None, fleet_prefix=None, overrides=None):
    """A Scenario from a file path, a dict, a Scenario or nothing, plus command-line additions.

    ``extra_vms`` are appended to ``vms``; ``fleet_count``/``fleet_prefix``
    replace the scenario's ``fleet``; ``overrides`` (None values ignored)
    replace top-level settings such as ``time_scale`` or ``clock``. With no
    VM at all, a single VM ``myvm`` is simulated.
    """
    if isinstance(source, Scenario):
        if extra_vms or fleet_count or any(value is not None for value in (overrides or {}).values()):
            raise ScenarioError(source.source, None, "cannot add VMs or override settings of an already built Scenario")
        return source
    lines = {}
    if source is None:
        data, label = {}, "<command line>"
    elif isinstance(source, dict):
        data, label = copy.deepcopy(source), "<dict>"
    else:
        data, lines = read_scenario_data(source)
        label = str(source)
    if data is None:
        data = {}
    if isinstance(data, dict):
        if extra_vms:
            data["vms"] = list(data.get("vms") or []) + [{"name": name} for name in extra_vms]
        if fleet_count:
            fleet = dict(data.get("fleet") or {}) if isinstance(data.get("fleet"), dict) else {}
            fleet["count"] = fleet_count
            if fleet_prefix is not None:
                fleet["prefix"] = fleet_prefix
            data["fleet"] = fleet
        for key, value in (overrides or {}).items():
            if value is not None:
                data[key] = value
        if (overrides or {}).get("clock") == "scaled":
            data.pop("start_time", None)
        if not data.get("vms") and not data.get("fleet") and not data.get("scale_sets"):
            data["vms"] = [{"name": "myvm"}]
    return parse_scenario(data, label, lines)
