#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: event_approve
short_description: Approve Azure Scheduled Events for this VM so maintenance starts now
version_added: 0.1.0
description:
  - "Approves (starts) pending scheduled events for the VM the task runs on, with one POST of
    C({\"StartRequests\": [...]}) for every selected event."
  - Without approval, Azure starts an event at its NotBefore time. Approve once the VM is ready (drained, stopped,
    backed up) to get the maintenance over with sooner.
  - Approving an event starts it for B(every) VM in its C(Resources). This module therefore never approves an event
    that does not list this VM, and approves an event that also lists other VMs only with O(allow_shared=true).
  - Events already C(Started) are not approved again, so the task is idempotent.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
extends_documentation_fragment:
  - imds.scheduled_events.imds
  - imds.scheduled_events.imds.REQUESTS
  - imds.scheduled_events.attributes
options:
  event_ids:
    description:
      - EventIds to approve (GUIDs, case-insensitive). A value that is not a GUID fails the task before any request.
      - An id that is not in the document fails the task, with the list of what is pending, unless O(missing_ok=true).
      - When neither O(event_ids) nor O(event_types) is given, every C(Scheduled) event that lists this VM is selected.
    type: list
    elements: str
  event_types:
    description:
      - Approve the events of these types that list this VM, for example V(Freeze) or V(Reboot).
    type: list
    elements: str
  allow_shared:
    description:
      - Also approve events whose C(Resources) list other VMs besides this one (an availability set or placement
        group). Approving them starts the maintenance on those VMs too, ready or not.
    type: bool
    default: false
  missing_ok:
    description:
      - Skip ids from O(event_ids) that are not in the document (already over, or cancelled) instead of failing.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - Reads the document and reports what would be approved; posts nothing.
  diff_mode:
    support: none
notes:
  - Azure answers 200 for an event that another VM has already approved. If the POST fails, the module reads the
    document again; events that have started or vanished meanwhile are reported in RV(not_approved), not as failures.
  - Approval does not guarantee an immediate start; Azure may wait for other tenants of the host.
seealso:
  - module: imds.scheduled_events.event_info
"""

EXAMPLES = r"""
- name: Approve everything pending for this VM that concerns it alone
  imds.scheduled_events.event_approve:
  register: approval

- name: Approve this VM's short freezes at once
  imds.scheduled_events.event_approve:
    event_types: [Freeze]

- name: Approve one event that also restarts the other members of the availability set
  imds.scheduled_events.event_approve:
    event_ids: [C7061BAC-AFDC-4513-B24B-AA5F13A16123]
    allow_shared: true

- name: Drain, approve, and wait for the maintenance to be over
  block:
    - name: Read what is pending
      imds.scheduled_events.event_info:
        this_vm_only: true
      register: maintenance

    - name: Approve it
      imds.scheduled_events.event_approve:
        event_ids: "{{ maintenance.pending_event_ids }}"
        missing_ok: true
      when: maintenance.pending

    - name: Wait until Azure has started it
      imds.scheduled_events.event_info:
        event_ids: "{{ maintenance.pending_event_ids }}"
        wait_for: started
        wait_timeout: 900
      when: maintenance.pending
"""

RETURN = r"""
approved:
  description:
    - EventIds that were approved (in check mode, that would be approved).
  returned: always
  type: list
  elements: str
  sample: [C7061BAC-AFDC-4513-B24B-AA5F13A16123]
not_approved:
  description:
    - Selected events that were not approved, each with its reason.
  returned: always
  type: list
  elements: dict
  contains:
    EventId:
      description: The event's id.
      type: str
    reason:
      description:
        - V(does not list this VM), V(also lists other VMs), V(already started) or V(not in the document).
      type: str
    detail:
      description: More about the reason, such as the other VMs an approval would start.
      type: str
      returned: when there is more to say
  sample: [{EventId: A626E37F-793E-44E1-89B5-99AE0B96044C, reason: also lists other VMs,
            detail: "approving it would also start it for peer"}]
this_vm:
  description: This VM's resource name.
  returned: always
  type: str
  sample: myvm
document_incarnation:
  description: C(DocumentIncarnation) of the document the decision was made on.
  returned: always
  type: int
  sample: 4
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imds.scheduled_events.plugins.module_utils import approval
from ansible_collections.imds.scheduled_events.plugins.module_utils.ansible_support import (
    IMDS_ARGUMENT_SPEC, argument_spec, client_from_module, fail_on_bad_event_ids, this_vm_from_module)
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import EventFilter, is_event_id
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsError


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            IMDS_ARGUMENT_SPEC,
            event_ids=dict(type="list", elements="str"),
            event_types=dict(type="list", elements="str"),
            allow_shared=dict(type="bool", default=False),
            missing_ok=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    requested = params["event_ids"]
    fail_on_bad_event_ids(module, requested)
    client = client_from_module(module)
    try:
        vm = this_vm_from_module(module, client)
        document = client.get_document()
    except ImdsError as exc:
        module.fail_json(msg=str(exc), status=exc.status)

    selection = EventFilter(event_ids=requested, types=params["event_types"])
    decided = approval.plan(document, vm, selection, requested_ids=requested, allow_shared=params["allow_shared"])
    result = dict(changed=False, approved=[], not_approved=[s.as_dict() for s in decided.skipped], this_vm=vm.name,
                  document_incarnation=document.incarnation)
    if decided.missing and not params["missing_ok"]:
        pending = ["%s (%s, %s, %s)" % (e.event_id, e.event_type, e.status, ", ".join(e.resources))
                   for e in document.events]
        module.fail_json(msg="not in the scheduled-events document: %s; the document holds: %s"
                         % (", ".join(decided.missing), "; ".join(pending) or "no events"), **result)
    result["not_approved"].extend(approval.Skip(i, approval.NOT_IN_DOCUMENT).as_dict() for i in decided.missing)
    if not decided.approve:
        module.exit_json(**result)
    if module.check_mode:
        result.update(changed=True, approved=decided.approve_ids)
        module.exit_json(**result)
    try:
        approved, late_skips = approval.approve_and_confirm(client, decided)
    except ImdsError as exc:
        named = ", ".join(i if is_event_id(i) else repr(i) for i in decided.approve_ids)
        module.fail_json(msg="approving %s failed: %s" % (named, exc), status=exc.status, **result)
    result["not_approved"].extend(s.as_dict() for s in late_skips)
    result.update(changed=bool(approved), approved=approved)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
