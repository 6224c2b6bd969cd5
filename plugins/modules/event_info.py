#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: event_info
short_description: Read Azure Scheduled Events for this VM, optionally waiting for a change
version_added: 0.1.0
description:
  - Reads the scheduled-events document from the Azure Instance Metadata Service (IMDS) of the VM the task runs on.
  - Returns every event with Azure's own keys verbatim, plus derived keys (whether it affects this VM, whether other
    VMs share it, NotBefore as ISO-8601 and the seconds left until it), and summary values a C(when:) can use directly.
  - Can wait until matching events are present, started, or gone, so a playbook can approve an event and then wait
    for the maintenance to finish.
  - Azure never reports that an event is over; a finished or cancelled event vanishes from the document. Waiting for
    V(absent) is therefore the way to know that maintenance has ended.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
extends_documentation_fragment:
  - imds.scheduled_events.imds
  - imds.scheduled_events.imds.REQUESTS
  - imds.scheduled_events.imds.FILTERS
  - imds.scheduled_events.attributes
  - imds.scheduled_events.attributes.info_module
options:
  wait_for:
    description:
      - V(none) reads the document once.
      - V(present) waits until at least one event matches the filters.
      - V(started) waits until no matching event is still C(Scheduled) (each one has started, or is already gone).
      - V(absent) waits until no event matches the filters, which is how maintenance is seen to end.
      - A Reboot or Redeploy restarts the VM, which ends the task's connection. Wait for V(started), then use
        M(ansible.builtin.wait_for_connection), then wait for V(absent).
    type: str
    choices: [none, present, started, absent]
    default: none
  wait_timeout:
    description:
      - Seconds to wait before failing, when O(wait_for) is not V(none).
      - It bounds the whole wait, reads included. Each read is bounded by O(deadline) and by what is left of the
        wait, whichever ends first. An IMDS failure that would be retried does not end the wait early; the last one
        is reported if time runs out. V(0) reads once, bounded by O(deadline) alone.
    type: int
    default: 1800
  wait_interval:
    description:
      - Seconds between two reads while waiting. Azure recommends polling no faster than once a second.
    type: float
    default: 5
notes:
  - "Approving events is done by M(imds.scheduled_events.event_approve)."
  - "On a controller that runs on the VM itself (for example with C(ansible-pull)), the
    R(imds.scheduled_events.events lookup, ansible_collections.imds.scheduled_events.events_lookup) reads the same
    data without a task."
seealso:
  - module: imds.scheduled_events.event_approve
  - plugin: imds.scheduled_events.events
    plugin_type: lookup
  - name: Azure Scheduled Events for Linux VMs
    description: Microsoft's description of the API.
    link: https://learn.microsoft.com/azure/virtual-machines/linux/scheduled-events
"""

EXAMPLES = r"""
- name: Read pending maintenance
  imds.scheduled_events.event_info:
  register: maintenance

- name: Drain this node when maintenance is coming
  ansible.builtin.debug:
    msg: "{{ maintenance.pending_event_ids | join(', ') }} start at {{ maintenance.next_not_before }}"
  when: maintenance.pending

- name: Only this VM's reboots and redeploys
  imds.scheduled_events.event_info:
    event_types: [Reboot, Redeploy]
    this_vm_only: true
  register: restarts

- name: Wait until every event for this VM is gone (maintenance over, or cancelled)
  imds.scheduled_events.event_info:
    this_vm_only: true
    wait_for: absent
    wait_timeout: 3600
    wait_interval: 10

- name: Rehearse against the bundled simulator
  imds.scheduled_events.event_info:
    endpoint: http://127.0.0.1:8169
"""

RETURN = r"""
document_incarnation:
  description:
    - C(DocumentIncarnation) of the document read last. It changes whenever the events change, but skips values
      and resets after 24 hours without requests, so compare it with C(!=), never C(>).
  returned: always
  type: int
  sample: 4
this_vm:
  description:
    - This VM's resource name, as IMDS reports it (or as O(vm_name) gave it).
    - Null when O(vm_name) is not set and IMDS does not give the name (for example Microsoft's mock server has no
      C(compute/name)). The module then warns, returns the events with RV(events[].affects_this_vm),
      RV(events[].shared) and RV(events[].scope) null, and counts every event in the summaries (RV(pending),
      RV(pending_event_ids), ...), since any of them may be this VM's. With O(this_vm_only=true) it fails instead,
      saying the name is needed.
  returned: always
  type: str
  sample: myvm
events:
  description: The events that match the filters.
  returned: always
  type: list
  elements: dict
  contains:
    EventId:
      description: Azure's EventId, verbatim. It stays the same from C(Scheduled) to C(Started).
      type: str
      sample: C7061BAC-AFDC-4513-B24B-AA5F13A16123
    EventType:
      description: V(Freeze), V(Reboot), V(Redeploy), V(Preempt) or V(Terminate); unknown types are kept.
      type: str
      sample: Reboot
    ResourceType:
      description: Always V(VirtualMachine) so far.
      type: str
    Resources:
      description: Resource names of every VM the event affects; may include other VMs, or only other VMs.
      type: list
      elements: str
      sample: [myvm]
    EventStatus:
      description: V(Scheduled) or V(Started). Azure never reports completion; the event vanishes instead.
      type: str
    NotBefore:
      description: Azure's NotBefore, verbatim (RFC1123; empty once the event has started).
      type: str
      sample: Mon, 11 Apr 2026 22:26:58 GMT
    Description:
      description: Free text; often empty. Returned with O(api_version) 2019-04-01 or later.
      type: str
      returned: when Azure sends it
    EventSource:
      description: V(Platform) or V(User). Returned with O(api_version) 2019-08-01 or later.
      type: str
      returned: when Azure sends it
    DurationInSeconds:
      description: Expected length of the interruption; V(-1) when unknown. Returned with 2020-07-01.
      type: int
      returned: when Azure sends it
    affects_this_vm:
      description: Whether C(Resources) lists this VM; null when this VM's name is unknown (see RV(this_vm)).
      type: bool
    shared:
      description:
        - Whether C(Resources) lists this VM and other VMs; approving it starts the maintenance for all.
        - Null when this VM's name is unknown (see RV(this_vm)).
      type: bool
    scope:
      description:
        - V(this_vm), V(shared), V(other_vms) or V(none) (empty C(Resources)).
        - Null when this VM's name is unknown (see RV(this_vm)).
      type: str
    not_before:
      description: NotBefore as ISO-8601 UTC, or null when it has started or the value could not be read.
      type: str
      sample: "2026-04-11T22:26:58Z"
    seconds_until_start:
      description: Whole seconds until NotBefore; 0 once due or started; null when unknown.
      type: int
    duration_seconds:
      description: C(DurationInSeconds) as an integer, or null when Azure did not send it.
      type: int
    problems:
      description: What could not be read as documented (an unknown type, an unreadable NotBefore, ...).
      type: list
      elements: str
      returned: when there is a problem
pending:
  description: Whether an event for this VM is still C(Scheduled) (any event, when this VM's name is unknown).
  returned: always
  type: bool
in_progress:
  description: Whether an event for this VM has C(Started).
  returned: always
  type: bool
pending_event_ids:
  description: EventIds of the C(Scheduled) events for this VM, whatever the filters.
  returned: always
  type: list
  elements: str
started_event_ids:
  description: EventIds of the C(Started) events for this VM, whatever the filters.
  returned: always
  type: list
  elements: str
next_not_before:
  description: The soonest NotBefore of a C(Scheduled) event for this VM (ISO-8601 UTC), or null.
  returned: always
  type: str
seconds_until_next:
  description: Seconds until RV(next_not_before), or null.
  returned: always
  type: int
waited:
  description: Seconds spent waiting, when O(wait_for) is not V(none).
  returned: when O(wait_for) is not V(none)
  type: float
polls:
  description: How many times the document was read.
  returned: always
  type: int
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imds.scheduled_events.plugins.module_utils.ansible_support import (
    FILTER_ARGUMENT_SPEC, IMDS_ARGUMENT_SPEC, argument_spec, client_from_module, filter_from_module,
    this_vm_from_module)
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsError
from ansible_collections.imds.scheduled_events.plugins.module_utils.waiting import WaitTimeout, wait_for_events


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            IMDS_ARGUMENT_SPEC, FILTER_ARGUMENT_SPEC,
            wait_for=dict(type="str", default="none", choices=["none", "present", "started", "absent"]),
            wait_timeout=dict(type="int", default=1800),
            wait_interval=dict(type="float", default=5.0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["wait_timeout"] < 0 or params["wait_interval"] <= 0:
        module.fail_json(msg="wait_timeout must not be negative and wait_interval must be positive")
    client = client_from_module(module)
    selection = filter_from_module(module)
    try:
        needed = "to pick this VM's events (this_vm_only)" if selection.this_vm_only else None
        vm = this_vm_from_module(module, client, needed=needed)
        outcome = wait_for_events(client, selection, vm, params["wait_for"], params["wait_timeout"],
                                  params["wait_interval"], clock=time.monotonic, sleep=time.sleep)
    except WaitTimeout as exc:
        module.fail_json(msg=str(exc), **exc.outcome.as_result(vm))
    except ImdsError as exc:
        module.fail_json(msg=str(exc), status=exc.status)
    result = outcome.as_result(vm)
    if params["wait_for"] == "none":
        result.pop("waited")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
