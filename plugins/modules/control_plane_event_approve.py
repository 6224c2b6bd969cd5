#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: control_plane_event_approve
short_description: Approve Azure Scheduled Events from the control plane, without logging in to the VMs
version_added: 0.1.0
description:
  - Approves (acknowledges) scheduled events through Azure Resource Manager, so maintenance starts now instead of at
    C(NotBefore). The VMs see the event C(Started) in their IMDS, exactly as if one of them had approved it.
  - The events are read from Resource Graph first (as M(imds.scheduled_events.control_plane_event_info) does); only
    C(Scheduled) ones are acknowledged. Events already C(Started), C(Completed) or C(Canceled) are reported in
    RV(not_approved), not as failures, so the task is idempotent.
  - Approving an event starts it for B(every) VM in its C(Resources). Name the VMs that are ready with O(vm_names);
    an event that also lists VMs not named is approved only with O(allow_shared=true). Without O(vm_names), only the
    events named in O(event_ids) are approved, for all their VMs.
  - Acknowledges with one request per owner where the api-version has the list form (V(2025-10-01-preview)), else
    one request per event.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
extends_documentation_fragment:
  - imds.scheduled_events.control_plane
  - imds.scheduled_events.attributes
options:
  subscriptions:
    description:
      - Subscription ids in which to look for the events. At least one of O(subscriptions) and O(management_groups).
    type: list
    elements: str
  management_groups:
    description:
      - Management group names in which to look for the events.
    type: list
    elements: str
  event_ids:
    description:
      - EventIds to approve (GUIDs, case-insensitive). A value that is not a GUID fails the task before any request.
      - An id that Resource Graph does not know fails the task unless O(missing_ok=true).
    type: list
    elements: str
  event_types:
    description:
      - Approve the events of these types that list the VMs of O(vm_names).
    type: list
    elements: str
  vm_names:
    description:
      - The VMs that are ready for maintenance (resource names as C(Resources) lists them; scale-set instances are
        C(<scale set>_<instance id>)).
      - Required unless O(event_ids) is given. With it, events that list none of these VMs are never approved, and
        events that also list others only with O(allow_shared=true). An event Resource Graph files under a VM not
        named here is not approved either, whatever its C(Resources) say.
    type: list
    elements: str
  allow_shared:
    description:
      - Also approve events whose C(Resources) list VMs besides those of O(vm_names). Approving them starts the
        maintenance on those VMs too, ready or not.
    type: bool
    default: false
  missing_ok:
    description:
      - Skip ids from O(event_ids) that Resource Graph does not have (never published, or gone) instead of failing.
    type: bool
    default: false
  api_version:
    description:
      - The C(Microsoft.Maintenance) api-version of the acknowledge call. V(2025-10-01-preview) has the list form.
    type: str
    default: 2025-10-01-preview
    choices: [2025-10-01-preview, 2023-10-01-preview]
attributes:
  check_mode:
    support: full
    details:
      - Reads Resource Graph and reports what would be approved; acknowledges nothing.
  diff_mode:
    support: none
notes:
  - The identity needs the C(Scheduled Events Contributor) role (action
    C(Microsoft.Maintenance/scheduledevents/acknowledge/action)) on the VMs, scale sets or availability sets, and
    Reader for Resource Graph.
  - Resource Graph may lag the platform by a few seconds; an event started meanwhile makes the acknowledge fail, which
    is then reported like an already started one when a second read confirms it.
seealso:
  - module: imds.scheduled_events.control_plane_event_info
  - module: imds.scheduled_events.event_approve
"""

EXAMPLES = r"""
- name: Approve the pending maintenance of the web tier, which is drained
  imds.scheduled_events.control_plane_event_approve:
    subscriptions: [00000000-0000-0000-0000-000000000001]
    vm_names: "{{ groups['web'] }}"
  delegate_to: localhost
  run_once: true
  register: approval

- name: Approve one event that restarts a whole availability set
  imds.scheduled_events.control_plane_event_approve:
    subscriptions: [00000000-0000-0000-0000-000000000001]
    event_ids: [C7061BAC-AFDC-4513-B24B-AA5F13A16123]
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
approved:
  description: The events acknowledged (in check mode, that would be), each with its owner's id.
  returned: always
  type: list
  elements: dict
  contains:
    EventId:
      description: The event's id.
      type: str
    owner:
      description: The resource id of the VM, scale set or availability set the acknowledge went to.
      type: str
    Resources:
      description: The VMs the maintenance now starts on.
      type: list
      elements: str
  sample: [{EventId: C7061BAC-AFDC-4513-B24B-AA5F13A16123, Resources: [web_0, web_3],
            owner: /subscriptions/0000-0001/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachineScaleSets/web}]
not_approved:
  description: Selected events that were not approved, each with its reason.
  returned: always
  type: list
  elements: dict
  contains:
    EventId:
      description: The event's id.
      type: str
    reason:
      description:
        - V(does not list this VM) (none of O(vm_names)), V(also lists other VMs), V(already started),
          V(already finished) (C(Completed) or C(Canceled)) or V(not in the document) (not in Resource Graph).
      type: str
    detail:
      description: More about the reason.
      type: str
      returned: when there is more to say
requests:
  description: How many acknowledge requests were sent.
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

from ansible_collections.imds.scheduled_events.plugins.module_utils import approval
from ansible_collections.imds.scheduled_events.plugins.module_utils.ansible_support import (
    CONTROL_PLANE_ARGUMENT_SPEC, arm_client_from_module, argument_spec, control_plane_events, fail_on_bad_event_ids)
from ansible_collections.imds.scheduled_events.plugins.module_utils.control_plane import (
    ACKNOWLEDGE_APIS, ControlPlaneError, acknowledge, build_query, explain)
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import Document, EventFilter, NamedVms


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            CONTROL_PLANE_ARGUMENT_SPEC,
            subscriptions=dict(type="list", elements="str"),
            management_groups=dict(type="list", elements="str"),
            event_ids=dict(type="list", elements="str"),
            event_types=dict(type="list", elements="str"),
            vm_names=dict(type="list", elements="str"),
            allow_shared=dict(type="bool", default=False),
            missing_ok=dict(type="bool", default=False),
            api_version=dict(type="str", default=ACKNOWLEDGE_APIS[0], choices=list(ACKNOWLEDGE_APIS)),
        ),
        required_one_of=[("subscriptions", "management_groups"), ("event_ids", "vm_names")],
        supports_check_mode=True,
    )
    params = module.params
    requested = params["event_ids"]
    fail_on_bad_event_ids(module, requested)
    try:
        query = build_query(event_ids=requested, types=params["event_types"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    client = arm_client_from_module(module)
    found = control_plane_events(module, client, query)

    vms = NamedVms(params["vm_names"])  # None: the operator named the events, for all their VMs
    document = Document(None, [e.event for e in found.events], raw=None)
    selection = EventFilter(event_ids=requested, types=params["event_types"])
    decided = approval.plan(document, vms, selection, requested_ids=requested, allow_shared=params["allow_shared"])
    by_id = dict((e.event.event_id.casefold(), e) for e in found.events)
    elsewhere = [e for e in decided.approve if by_id[e.event_id.casefold()].owned_by_other_vm(vms)]
    decided.approve = [e for e in decided.approve if e not in elsewhere]
    decided.skipped.extend(approval.Skip(e.event_id, approval.NOT_THIS_VM, "filed under VM %s"
                                         % by_id[e.event_id.casefold()].owner.name) for e in elsewhere)
    result = dict(changed=False, approved=[], not_approved=[s.as_dict() for s in decided.skipped], requests=0)
    if found.problems:
        module.warn("%d row(s) of Resource Graph could not be read: %s" % (
            len(found.problems), "; ".join("%s: %s" % (p["id"], p["problem"]) for p in found.problems[:5])))
    if decided.missing and not params["missing_ok"]:
        held = ["%s (%s, %s)" % (e.event.event_id, e.event.event_type, e.event.status) for e in found.events]
        module.fail_json(msg="not in Resource Graph (never published there, or gone): %s; it holds: %s"
                         % (", ".join(decided.missing), "; ".join(held) or "no events"),
                         resource_graph_quota=client.quota.as_dict(), **result)
    result["not_approved"].extend(approval.Skip(i, approval.NOT_IN_DOCUMENT).as_dict() for i in decided.missing)

    by_owner = {}
    for event in decided.approve:
        owner = by_id[event.event_id.casefold()].owner
        by_owner.setdefault(owner.key, (owner, []))[1].append(event)
    approved = [dict(EventId=e.event_id, owner=owner.id, Resources=list(e.resources))
                for owner, events in by_owner.values() for e in events]
    if not approved or module.check_mode:
        result.update(changed=bool(approved), approved=approved, resource_graph_quota=client.quota.as_dict())
        module.exit_json(**result)

    done, failures = [], []
    for owner, events in by_owner.values():
        ids = [e.event_id for e in events]
        try:
            result["requests"] += acknowledge(client, owner, ids, params["api_version"])
            done.extend(dict(EventId=e.event_id, owner=owner.id, Resources=list(e.resources)) for e in events)
        except ControlPlaneError as exc:
            failures.append((owner, events, exc))
    if failures:
        # Resource Graph is the judge, as the document is for event_approve: what started or finished meanwhile
        # needed no approval; anything still Scheduled is a real failure.
        again = dict((e.event.event_id.casefold(), e.event) for e in control_plane_events(module, client, query).events)
        still = []
        for owner, events, exc in failures:
            for event in events:
                now = again.get(event.event_id.casefold())
                if now is not None and now.is_started:
                    result["not_approved"].append(approval.Skip(event.event_id, approval.ALREADY_STARTED,
                                                                "started before the approval landed").as_dict())
                elif now is not None and now.is_finished:
                    result["not_approved"].append(approval.Skip(event.event_id, approval.ALREADY_FINISHED,
                                                                now.status).as_dict())
                else:
                    still.append("%s (%s)" % (event.event_id, explain(exc)))
        if still:
            result.update(changed=bool(done), approved=done, resource_graph_quota=client.quota.as_dict())
            module.fail_json(msg="acknowledging failed: %s" % "; ".join(still), **result)
    result.update(changed=bool(done), approved=done, resource_graph_quota=client.quota.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
