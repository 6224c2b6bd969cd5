"""What IMDS serves: api-versions, version gating and the JSON shapes.

Everything here is a pure function of the world's data and the requested
api-version, so the gating rules can be read (and tested) in one place.
"""

from __future__ import annotations

import json
import re
import uuid

from .clock import iso8601, rfc1123

# Scheduled-events api-versions Azure has published, oldest first.
SCHEDULED_EVENTS_VERSIONS = (
    "2017-03-01", "2017-08-01", "2017-11-01", "2019-01-01", "2019-04-01", "2019-08-01", "2020-07-01",
)
EVENT_TYPES = ("Freeze", "Reboot", "Redeploy", "Preempt", "Terminate")
EVENT_SOURCES = ("Platform", "User")

# Event types that older api-versions do not show at all.
TYPE_SINCE = {"Preempt": "2017-11-01", "Terminate": "2019-01-01"}
# Event fields added after the first version.
FIELD_SINCE = (("Description", "2019-04-01"), ("EventSource", "2019-08-01"), ("DurationInSeconds", "2020-07-01"))
# Every key of an entry of Events, in the order Azure documents them.
EVENT_FIELDS = ("EventId", "EventType", "ResourceType", "Resources", "EventStatus", "NotBefore") + tuple(
    field for field, since in FIELD_SINCE)

# Instance metadata accepts any YYYY-MM-DD version from this one on.
INSTANCE_MIN_VERSION = "2017-04-02"
INSTANCE_NEWEST_VERSIONS = ["2025-04-07", "2024-07-17", "2024-03-15"]
_DATE_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# Namespace for deterministic vmIds derived from VM names.
_VM_ID_NAMESPACE = uuid.UUID("6f1c2a4e-7d0b-4c55-9a43-2b8f0d6e9a10")

# Azure's minimum notices (seconds) and this simulator's defaults for the rest.
DEFAULT_NOTICE = {"Freeze": 900, "Reboot": 900, "Redeploy": 600, "Preempt": 30, "Terminate": 300}
DEFAULT_STARTED_FOR = {"Freeze": 300, "Reboot": 600, "Redeploy": 600, "Preempt": 60, "Terminate": 60}
DEFAULT_DURATION = {"Freeze": 5, "Reboot": -1, "Redeploy": -1, "Preempt": -1, "Terminate": -1}
DEFAULT_DESCRIPTION = {
    "Freeze": "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
    "Reboot": "Host server is undergoing maintenance.",
    "Redeploy": "Host server is undergoing maintenance.",
    "Preempt": "",
    "Terminate": "",
}
HARDWARE_FAILURE_DESCRIPTION = "Host server is undergoing an emergency repair."


def is_scheduled_events_version(version):
    """True for a published scheduled-events api-version."""
    return version in SCHEDULED_EVENTS_VERSIONS


def is_instance_version(version):
    """True for an instance api-version this simulator accepts (YYYY-MM-DD, >= 2017-04-02)."""
    return bool(version) and bool(_DATE_VERSION.match(version)) and version >= INSTANCE_MIN_VERSION


def type_visible(event_type, api_version):
    """Whether clients on ``api_version`` see events of ``event_type`` at all."""
    return api_version >= TYPE_SINCE.get(event_type, SCHEDULED_EVENTS_VERSIONS[0])


def render_event(event, api_version, to_datetime, status=None):
    """One entry of ``Events``, shaped for ``api_version``.

    ``event`` needs: id, type, resources, status, not_before (sim seconds or
    None), description, source, duration. ``to_datetime`` maps sim seconds to a
    datetime. ``status`` overrides ``event.status`` (the control plane's
    Completed and Canceled, which IMDS never shows); NotBefore is ``""`` once
    the event has started.
    """
    preview = api_version == "2017-03-01"
    status = event.status if status is None else status
    if status in ("Started", "Completed") or event.not_before is None:
        not_before = ""
    else:
        moment = to_datetime(event.not_before)
        not_before = iso8601(moment) if preview else rfc1123(moment)
    resources = ["_" + name for name in event.resources] if preview else list(event.resources)
    body = {
        "EventId": event.id,
        "EventStatus": status,
        "EventType": event.type,
        "ResourceType": "VirtualMachine",
        "Resources": resources,
        "NotBefore": not_before,
    }
    values = {"Description": event.description, "EventSource": event.source, "DurationInSeconds": event.duration}
    for field, since in FIELD_SINCE:
        if api_version >= since:
            body[field] = values[field]
    for field, value in event.fields:  # a scenario's verbatim replacements (JSON text), for hostile-input tests
        if field in body:
            body[field] = json.loads(value)
    return body


def render_document(incarnation, events, api_version, to_datetime):
    """The whole scheduled-events document, dropping event types the version predates."""
    return {
        "DocumentIncarnation": incarnation,
        "Events": [render_event(event, api_version, to_datetime) for event in events
                   if type_visible(event.type, api_version)],
    }


def vm_id_for(name):
    """A stable lower-case vmId GUID for a VM name (Azure's vmIds are lower case)."""
    return str(uuid.uuid5(_VM_ID_NAMESPACE, name))


# (field, first instance api-version that has it); values are filled in compute_metadata.
_COMPUTE_SINCE = (
    ("location", "2017-04-02"),
    ("name", "2017-04-02"),
    ("osType", "2017-04-02"),
    ("platformFaultDomain", "2017-04-02"),
    ("platformUpdateDomain", "2017-04-02"),
    ("vmId", "2017-04-02"),
    ("vmSize", "2017-04-02"),
    ("placementGroupId", "2017-08-01"),
    ("resourceGroupName", "2017-08-01"),
    ("subscriptionId", "2017-08-01"),
    ("vmScaleSetName", "2017-12-01"),
    ("zone", "2017-12-01"),
    ("resourceId", "2019-03-11"),
    ("osProfile", "2020-07-15"),
)


def compute_metadata(vm, api_version, settings):
    """The ``compute`` object. IMDS encodes every primitive as a string."""
    resource_id = (f"/subscriptions/{settings['subscription_id']}/resourceGroups/{settings['resource_group']}"
                   f"/providers/Microsoft.Compute/virtualMachines/{vm.name}")
    if settings.get("scale_set"):  # a scale-set instance: <set>_<i> is virtualMachines/<i> of the set
        resource_id = (f"/subscriptions/{settings['subscription_id']}/resourceGroups/{settings['resource_group']}"
                       f"/providers/Microsoft.Compute/virtualMachineScaleSets/{settings['scale_set']}"
                       f"/virtualMachines/{vm.name.rsplit('_', 1)[-1]}")
    values = {
        "location": settings["location"],
        "name": vm.name,
        "osType": "Linux",
        "platformFaultDomain": str(vm.fault_domain),
        "platformUpdateDomain": str(vm.update_domain),
        "vmId": vm.vm_id or vm_id_for(vm.name),
        "vmSize": settings["vm_size"],
        "placementGroupId": "",
        "resourceGroupName": settings["resource_group"],
        "subscriptionId": settings["subscription_id"],
        "vmScaleSetName": settings.get("scale_set", ""),
        "zone": "",
        "resourceId": resource_id,
        "osProfile": {
            "adminUsername": "azureuser",
            "computerName": vm.computer_name or vm.name,
            "disablePasswordAuthentication": "true",
        },
    }
    return {field: values[field] for field, since in _COMPUTE_SINCE if api_version >= since}


def instance_metadata(vm, index, api_version, settings):
    """The whole ``/metadata/instance`` object, with a minimal one-NIC network block."""
    return {
        "compute": compute_metadata(vm, api_version, settings),
        "network": {
            "interface": [{
                "ipv4": {
                    "ipAddress": [{"privateIpAddress": f"10.0.{index // 250}.{4 + index % 250}", "publicIpAddress": ""}],
                    "subnet": [{"address": "10.0.0.0", "prefix": "16"}],
                },
                "ipv6": {"ipAddress": []},
                "macAddress": f"000D3A{index:06X}",
            }],
        },
    }
