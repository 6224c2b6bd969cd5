#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: control_plane_policy
short_description: Opt VMs, scale sets and availability sets in to scheduled events on Azure's control plane
version_added: 0.1.0
description:
  - Sets C(scheduledEventsPolicy.scheduledEventsAdditionalPublishingTargets.eventGridAndResourceGraph) on VMs, Virtual
    Machine Scale Sets and availability sets, so Azure publishes their scheduled events to Resource Graph and Event
    Grid (preview), where M(imds.scheduled_events.control_plane_event_info) reads them.
  - Optionally sets the auto-approval of reboots and redeploys that users ask for
    (C(userInitiatedReboot), C(userInitiatedRedeploy)).
  - Reads each resource first and changes only what differs, so the task is idempotent. Members of a scale set or an
    availability set cannot be set one by one; set the scale set or the availability set.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
extends_documentation_fragment:
  - imds.scheduled_events.control_plane
  - imds.scheduled_events.attributes
options:
  resources:
    description:
      - The resources to set, each by its resource id (C(id)) or by C(kind), C(name), C(resource_group) and
        C(subscription).
    type: list
    elements: dict
    required: true
    suboptions:
      id:
        description:
          - The resource id, for example
            C(/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/web).
        type: str
      kind:
        description: V(vm), V(scale_set) or V(availability_set) (or the ARM type names).
        type: str
      name:
        description: The resource's name.
        type: str
      resource_group:
        description: Its resource group.
        type: str
      subscription:
        description: Its subscription id.
        type: str
  publish:
    description:
      - V(true) publishes the resources' scheduled events to Event Grid and Resource Graph, V(false) stops it.
    type: bool
    default: true
  scheduled_events_api_version:
    description:
      - The scheduled-events api-version of what is published (C(scheduledEventsApiVersion)).
    type: str
    default: "2020-07-01"
  auto_approve_user_reboot:
    description:
      - Set C(userInitiatedReboot.automaticallyApprove). Not changed when not given.
    type: bool
  auto_approve_user_redeploy:
    description:
      - Set C(userInitiatedRedeploy.automaticallyApprove). Not changed when not given.
    type: bool
  api_version:
    description:
      - The C(Microsoft.Compute) api-version; C(scheduledEventsPolicy) needs V(2025-04-01) or later.
    type: str
    default: "2025-04-01"
attributes:
  check_mode:
    support: full
    details:
      - Reads every resource and reports which would change; changes none.
  diff_mode:
    support: full
    details:
      - The policy of each resource that changes, before and after.
notes:
  - Register the preview feature first, once per subscription
    (C(az feature register --namespace Microsoft.Compute --name SendScheduledEventsPolicy)); the module says so when
    Azure refuses for that reason.
  - Needs write access to the resources (for example Virtual Machine Contributor).
seealso:
  - module: imds.scheduled_events.control_plane_event_info
"""

EXAMPLES = r"""
- name: Publish the scheduled events of the web scale set and the database availability set
  imds.scheduled_events.control_plane_policy:
    resources:
      - {kind: scale_set, name: web, resource_group: rg-web, subscription: 00000000-0000-0000-0000-000000000001}
      - id: /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-db/providers/Microsoft.Compute/availabilitySets/db
  delegate_to: localhost
  run_once: true

- name: Stop publishing for one VM
  imds.scheduled_events.control_plane_policy:
    resources:
      - {kind: vm, name: legacy-01, resource_group: rg-legacy, subscription: 00000000-0000-0000-0000-000000000001}
    publish: false
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
resources:
  description: Every resource, whether it changed, and its policy after the task.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The resource id.
      type: str
    changed:
      description: Whether the task changed (or in check mode would change) its policy.
      type: bool
    publishing:
      description: Whether its events are published to Event Grid and Resource Graph after the task.
      type: bool
    policy:
      description: Its C(scheduledEventsPolicy) after the task (before, in check mode).
      type: dict
  sample: [{id: /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachineScaleSets/web,
            changed: true, publishing: true,
            policy: {scheduledEventsAdditionalPublishingTargets: {eventGridAndResourceGraph: {enable: true,
                     scheduledEventsApiVersion: "2020-07-01"}}}}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imds.scheduled_events.plugins.module_utils.ansible_support import (
    CONTROL_PLANE_ARGUMENT_SPEC, arm_client_from_module, argument_spec)
from ansible_collections.imds.scheduled_events.plugins.module_utils.control_plane import (
    ControlPlaneError, Owner, explain, policy_differs, policy_patch, publishing_of)


def owners_from(module):
    owners = []
    for index, spec in enumerate(module.params["resources"]):
        try:
            if spec.get("id"):
                owners.append(Owner.from_resource_id(spec["id"]))
            else:
                owners.append(Owner.from_spec(spec.get("kind"), spec.get("name"), spec.get("resource_group"),
                                              spec.get("subscription")))
        except ValueError as exc:
            module.fail_json(msg="resources[%d]: %s" % (index, exc))
    return owners


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            CONTROL_PLANE_ARGUMENT_SPEC,
            resources=dict(type="list", elements="dict", required=True, options=dict(
                id=dict(type="str"), kind=dict(type="str"), name=dict(type="str"), resource_group=dict(type="str"),
                subscription=dict(type="str"))),
            publish=dict(type="bool", default=True),
            scheduled_events_api_version=dict(type="str", default="2020-07-01"),
            auto_approve_user_reboot=dict(type="bool"),
            auto_approve_user_redeploy=dict(type="bool"),
            api_version=dict(type="str", default="2025-04-01"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    owners = owners_from(module)
    wanted = policy_patch(params["publish"], params["scheduled_events_api_version"],
                          params["auto_approve_user_reboot"], params["auto_approve_user_redeploy"])
    client = arm_client_from_module(module)
    results, before, after = [], {}, {}
    for owner in owners:
        path = owner.id
        try:
            current = client.request("GET", path, params["api_version"])
            publishing, policy = publishing_of(current)
            changed = policy_differs(policy, wanted)
            if changed and not module.check_mode:
                updated = client.request("PATCH", path, params["api_version"], wanted)
                publishing, new_policy = publishing_of(updated)
                if policy_differs(new_policy, wanted):
                    module.fail_json(msg="%s: Azure accepted the policy but does not show it (%s); check the "
                                         "api_version and the SendScheduledEventsPolicy feature" % (path, new_policy),
                                     resources=results)
            else:
                new_policy = policy
        except ControlPlaneError as exc:
            module.fail_json(msg="%s: %s" % (path, explain(exc)), status=exc.status, code=exc.code, resources=results)
        if changed:
            before[owner.id] = policy
            after[owner.id] = wanted["properties"]["scheduledEventsPolicy"]
        results.append(dict(id=owner.id, changed=changed, publishing=publishing if not module.check_mode or not changed
                            else params["publish"], policy=new_policy))
    out = dict(changed=any(r["changed"] for r in results), resources=results)
    if module._diff:
        out["diff"] = dict(before=before, after=after)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
