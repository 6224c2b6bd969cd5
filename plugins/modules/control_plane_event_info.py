#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: control_plane_event_info
short_description: Read the scheduled events of a whole fleet from Azure Resource Graph
version_added: 0.1.0
description:
  - Returns every scheduled event of the VMs, scale sets and availability sets in the given subscriptions or
    management groups, with one Resource Graph query (every page followed), without logging in to any VM.
  - Azure publishes an event there only for resources that opted in (M(imds.scheduled_events.control_plane_policy));
    the feature is in preview.
  - Unlike IMDS, the control plane says when an event is over. C(EventStatus) is C(Scheduled), C(Started),
    C(Completed) or C(Canceled); the last two are kept as such and flagged RV(events[].finished).
  - Each event carries the same keys as M(imds.scheduled_events.event_info) returns, plus the resource that owns it
    (RV(events[].owner)), parsed from the row's id.
  - Filters are sent to Azure inside the query (RV(query) shows it), so a large fleet answers only what was asked.
    A row that cannot be read is reported in RV(problems), never dropped silently.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
extends_documentation_fragment:
  - imds.scheduled_events.control_plane
  - imds.scheduled_events.attributes
  - imds.scheduled_events.attributes.info_module
options:
  subscriptions:
    description:
      - Subscription ids to read. At least one of O(subscriptions) and O(management_groups).
    type: list
    elements: str
  management_groups:
    description:
      - Management group names to read (every subscription under them).
    type: list
    elements: str
  event_ids:
    description:
      - Only these EventIds (GUIDs, case-insensitive).
    type: list
    elements: str
  event_types:
    description:
      - Only these event types, for example V(Reboot) or V(Redeploy).
    type: list
    elements: str
  statuses:
    description:
      - Only these statuses, among V(Scheduled), V(Started), V(Completed) and V(Canceled). Default all.
    type: list
    elements: str
  sources:
    description:
      - Only events started by V(Platform) or by a V(User).
    type: list
    elements: str
  resource_groups:
    description:
      - Only events whose owner is in these resource groups.
    type: list
    elements: str
  vm_names:
    description:
      - Only events whose C(Resources) list at least one of these VM resource names (scale-set instances are named
        C(<scale set>_<instance id>)). RV(events[].affects_this_vm), RV(events[].shared) and RV(events[].scope)
        then say whether an event lists only these VMs or others too.
    type: list
    elements: str
notes:
  - Needs read access (Reader) on the resources, and the C(SendScheduledEventsPolicy) feature of
    C(Microsoft.Compute) registered before any resource can opt in.
  - How long Azure keeps C(Completed) and C(Canceled) rows is not documented.
seealso:
  - module: imds.scheduled_events.event_info
  - module: imds.scheduled_events.control_plane_event_approve
  - module: imds.scheduled_events.control_plane_policy
"""

EXAMPLES = r"""
- name: Every scheduled event of the production subscriptions
  imds.scheduled_events.control_plane_event_info:
    subscriptions:
      - 00000000-0000-0000-0000-000000000001
      - 00000000-0000-0000-0000-000000000002
  delegate_to: localhost
  run_once: true
  register: fleet

- name: Reboots and redeploys still to come, under a management group, with a managed identity
  imds.scheduled_events.control_plane_event_info:
    management_groups: [production]
    event_types: [Reboot, Redeploy]
    statuses: [Scheduled]
    auth_source: msi
  delegate_to: localhost
  run_once: true
  register: coming

- name: Say which events are over
  ansible.builtin.debug:
    msg: "{{ fleet.events | selectattr('finished') | map(attribute='EventId') | list }}"
"""

RETURN = r"""
events:
  description:
    - The events, in the order of their row ids. Azure's keys verbatim (C(EventId), C(EventType), C(ResourceType),
      C(Resources), C(EventStatus), C(NotBefore), C(Description), C(EventSource), C(DurationInSeconds)) plus the keys
      below.
  returned: always
  type: list
  elements: dict
  contains:
    not_before:
      description: C(NotBefore) as ISO 8601 UTC, or null once started.
      type: str
    duration_seconds:
      description: C(DurationInSeconds) as an integer, or null when unknown.
      type: int
    seconds_until_start:
      description: Whole seconds until C(NotBefore); V(0) once started, null when unknown or finished.
      type: int
    finished:
      description: The event is C(Completed) or C(Canceled).
      type: bool
    owner:
      description: The resource that owns the event on the control plane.
      type: dict
      contains:
        id:
          description: Its resource id.
          type: str
        kind:
          description: V(virtualMachines), V(virtualMachineScaleSets) or V(availabilitySets).
          type: str
        name:
          description: Its name.
          type: str
        resource_group:
          description: Its resource group.
          type: str
        subscription:
          description: Its subscription id.
          type: str
    affects_this_vm:
      description: With O(vm_names), whether the event lists any of them.
      type: bool
      returned: when O(vm_names) is set
    shared:
      description: With O(vm_names), whether the event lists them and other VMs too.
      type: bool
      returned: when O(vm_names) is set
    scope:
      description: With O(vm_names), V(this_vm), V(shared), V(other_vms) or V(none).
      type: str
      returned: when O(vm_names) is set
    row_id:
      description:
        - The Resource Graph row's id (the owner's id, then C(/providers/Microsoft.Maintenance/scheduledevents/<EventId>)).
      type: str
    location:
      description: The owner's region.
      type: str
    source:
      description: Where the event was seen, V(resource_graph).
      type: str
    problems:
      description: What was odd in the row's properties (an unknown status, an unreadable C(NotBefore)).
      type: list
      elements: str
      returned: when there is a problem
  sample:
    - EventId: C7061BAC-AFDC-4513-B24B-AA5F13A16123
      EventType: Reboot
      ResourceType: VirtualMachine
      Resources: [web_3]
      EventStatus: Completed
      NotBefore: ""
      Description: Virtual machine is going to be restarted as requested by authorized user.
      EventSource: User
      DurationInSeconds: -1
      not_before: null
      duration_seconds: null
      seconds_until_start: null
      finished: true
      owner:
        id: /subscriptions/0000-0001/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachineScaleSets/web
        kind: virtualMachineScaleSets
        name: web
        resource_group: rg-web
        subscription: 0000-0001
      row_id: >-
        /subscriptions/0000-0001/resourcegroups/rg-web/providers/Microsoft.Compute/virtualMachineScaleSets/web/providers/Microsoft.Maintenance/scheduledevents/C7061BAC-AFDC-4513-B24B-AA5F13A16123
      location: westeurope
      source: resource_graph
counts:
  description: How many events per status.
  returned: always
  type: dict
  sample: {Scheduled: 3, Started: 1, Completed: 12, Canceled: 1}
problems:
  description: Rows that could not be read, each with its id (when it has one) and what is wrong.
  returned: always
  type: list
  elements: dict
  sample: [{id: /subscriptions/x/..., problem: "it has no properties object"}]
query:
  description: The KQL query sent, to paste into Resource Graph Explorer.
  returned: always
  type: str
  sample: |-
    maintenanceresources
    | where type == "microsoft.maintenance/scheduledevents"
    | project id, name, type, subscriptionId, resourceGroup, location, properties
    | order by id asc
total_records:
  description: C(totalRecords) as Resource Graph counted them.
  returned: always
  type: int
  sample: 17
pages:
  description: How many pages were read.
  returned: always
  type: int
  sample: 1
resource_graph_quota:
  description:
    - Resource Graph's per-user quota as its last answer announced it, and how the queries were paced by it. Shown
      with C(-v). Azure allows a user so many queries per window (for example 15 per 5 seconds); each query waits
      its share of the time left in the window, and once the quota is spent the next one waits for the reset.
  returned: always
  type: dict
  contains:
    remaining:
      description: C(x-ms-user-quota-remaining) of the last answer, null when Azure did not say (or a wait spent it).
      type: int
    resets_after:
      description: C(x-ms-user-quota-resets-after) of the last answer, in seconds.
      type: float
    waited:
      description: Seconds waited for the quota, and for C(Retry-After) of throttled queries.
      type: float
    throttled:
      description: How many queries were answered 429 (and retried).
      type: int
    queries:
      description: How many Resource Graph queries were sent (every page, every retry).
      type: int
  sample: {remaining: 13, resets_after: 4.0, waited: 0.0, throttled: 0, queries: 2}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imds.scheduled_events.plugins.module_utils.ansible_support import (
    CONTROL_PLANE_ARGUMENT_SPEC, arm_client_from_module, argument_spec, control_plane_events)
from ansible_collections.imds.scheduled_events.plugins.module_utils.control_plane import build_query
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import NamedVms


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            CONTROL_PLANE_ARGUMENT_SPEC,
            subscriptions=dict(type="list", elements="str"),
            management_groups=dict(type="list", elements="str"),
            event_ids=dict(type="list", elements="str"),
            event_types=dict(type="list", elements="str"),
            statuses=dict(type="list", elements="str"),
            sources=dict(type="list", elements="str"),
            resource_groups=dict(type="list", elements="str"),
            vm_names=dict(type="list", elements="str"),
        ),
        required_one_of=[("subscriptions", "management_groups")],
        supports_check_mode=True,
    )
    params = module.params
    try:
        query = build_query(event_ids=params["event_ids"], types=params["event_types"], statuses=params["statuses"],
                            sources=params["sources"], resource_groups=params["resource_groups"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    client = arm_client_from_module(module)
    found = control_plane_events(module, client, query)

    vms = NamedVms(params["vm_names"]) if params["vm_names"] else None
    events = [e for e in found.events if vms is None or e.event.affects(vms)]
    counts = {}
    for item in events:
        counts[item.event.status] = counts.get(item.event.status, 0) + 1
    if found.problems:
        module.warn("%d row(s) of Resource Graph could not be read: see problems" % len(found.problems))
    module.exit_json(changed=False, events=[e.describe(vms) for e in events], counts=counts,
                     problems=found.problems, query=query, total_records=found.total_records, pages=found.pages,
                     resource_graph_quota=client.quota.as_dict())


if __name__ == "__main__":
    main()
