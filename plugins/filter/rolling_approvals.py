# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: rolling_approvals
short_description: Which scheduled events may be approved now, without too many hosts of a group in maintenance
version_added: 0.1.0
description:
  - Takes every host's M(imds.scheduled_events.event_info) result and a grouping (an availability set or update domain
    hostvar, or inventory group membership), and returns the events that may be approved now so that no group has
    more than O(max_hosts) hosts, or O(max_percent) percent of its hosts, in maintenance at once.
  - A host is in maintenance when an event that lists it has C(Started), or was approved (O(approved)). Those hosts
    count against their groups' limits before anything new is approved.
  - An approval starts the event for every VM in its C(Resources), so an event shared by several hosts is approved for
    all of them or not at all, and counts every one of them. Hosts without events count in the size of their group.
  - Events are taken soonest C(NotBefore) first. An event that is not approved now comes back in RV(_value.deferred)
    with a reason; one that alone exceeds a group's limit will never be approved in waves and starts at C(NotBefore).
  - Hosts without a usable result (unreachable, failed, not gathered) count as in maintenance unless
    O(unknown_busy=false), since nobody can tell that they are not.
  - The result is a plan for one wave; run M(imds.scheduled_events.event_approve) on each host of RV(_value.by_host),
    wait until the events are over, read the events again and plan the next wave. The C(playbooks/rolling_approvals.yml)
    playbook of this collection does exactly that.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
options:
  _input:
    description:
      - A mapping of inventory host name to that host's M(imds.scheduled_events.event_info) result.
      - Or, with O(result_key), a mapping of host name to host variables, such as C(hostvars).
    type: dict
    required: true
  result_key:
    description:
      - The variable (registered result) that holds each host's M(imds.scheduled_events.event_info) result, when the
        input maps hosts to their variables. Dots walk into dictionaries, for example V(report.event_info) for the
        events that M(imds.scheduled_events.watcher_info) returns with O(imds.scheduled_events.watcher_info#module:include_events=true).
    type: str
  hosts:
    description:
      - The hosts to plan for, for example C(ansible_play_hosts_all). Default every key of the input.
      - A listed host missing from the input counts as a host without a result.
    type: list
    elements: str
  group_by:
    description:
      - The host variable that names each host's group, for example V(availability_set) or V(update_domain).
        A list value puts the host in several groups. Read from the input's values (host variables with
        O(result_key)).
      - Or a mapping of host name to group name (or list of names).
      - Mutually exclusive with O(inventory_groups). Without either, every host is in one group V(all).
    type: raw
  inventory_groups:
    description:
      - A mapping of group name to member hosts, for example a selection of C(groups). A host in several groups must
        stay within the limit of each. The group V(all) is ignored.
    type: dict
  ungrouped:
    description:
      - Where hosts that no group names go. V(group) puts them together in the group V(ungrouped), V(separate) makes each
        its own group.
    type: str
    choices: [group, separate]
    default: group
  max_hosts:
    description:
      - At most this many hosts of a group in maintenance at once. V(0) approves nothing.
      - At least one of O(max_hosts) and O(max_percent) is required; with both, the smaller limit applies.
    type: int
  max_percent:
    description:
      - At most this percentage of a group's hosts in maintenance at once, rounded down, but at least one host when
        the percentage is above zero (otherwise a small group could never go ahead). The arithmetic is exact, so
        V(29) percent of 100 hosts is 29.
    type: float
  approved:
    description:
      - EventIds already approved (for example by an earlier wave) that may still show as C(Scheduled). Their hosts
        count as in maintenance.
    type: list
    elements: str
    default: []
  allow_shared:
    description:
      - Whether an event listing several VMs may be approved. The limits are checked for every host it lists either way.
    type: bool
    default: true
  allow_unknown_resources:
    description:
      - Whether an event listing a VM that no host reported (outside the inventory, or a host with another name)
        may be approved. Its group, and so its limit, is unknown.
    type: bool
    default: false
  unknown_busy:
    description:
      - Whether hosts without a usable result count as in maintenance.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Read every host's events
  imds.scheduled_events.event_info:
    this_vm_only: true
  register: maintenance

- name: One host per availability set at a time
  ansible.builtin.set_fact:
    wave: >-
      {{ hostvars | imds.scheduled_events.rolling_approvals(result_key='maintenance', hosts=ansible_play_hosts_all,
                                                             group_by='availability_set', max_hosts=1) }}
  run_once: true

- name: Approve this host's part of the wave
  imds.scheduled_events.event_approve:
    event_ids: "{{ wave.by_host[inventory_hostname] }}"
    allow_shared: true
  when: inventory_hostname in wave.by_host

- name: At most 20 percent of each update-domain group (inventory groups ud_0 ... ud_4)
  ansible.builtin.debug:
    msg: >-
      {{ hostvars | imds.scheduled_events.rolling_approvals(
           result_key='maintenance', hosts=ansible_play_hosts_all, max_percent=20,
           inventory_groups=groups | dict2items | selectattr('key', 'match', '^ud_') | items2dict) }}
  run_once: true
"""

RETURN = r"""
_value:
  description: The plan for this wave.
  type: dict
  contains:
    approve:
      description: Events to approve now, soonest C(NotBefore) first.
      type: list
      elements: dict
      contains:
        event_id:
          description: The EventId.
          type: str
        event_type:
          description: C(EventType).
          type: str
        approver:
          description: The host to run M(imds.scheduled_events.event_approve) on (one that the event lists).
          type: str
        hosts:
          description: Every inventory host the event puts in maintenance.
          type: list
          elements: str
        resources:
          description: C(Resources), verbatim.
          type: list
          elements: str
        shared:
          description: Whether the event lists several VMs; approve it with O(imds.scheduled_events.event_approve#module:allow_shared=true).
          type: bool
        not_before:
          description: C(NotBefore) as ISO-8601 UTC, or null.
          type: str
        groups:
          description: The groups of its hosts.
          type: list
          elements: str
    by_host:
      description: Host name to the EventIds that host approves in this wave.
      type: dict
    wave_hosts:
      description: Hosts that this wave puts in maintenance (not already in maintenance).
      type: list
      elements: str
    deferred:
      description:
        - Events not approved now, with the keys of RV(_value.approve) (but no C(approver)) and C(reason), C(detail).
        - "Reasons: V(group at its limit), V(would exceed the group's limit), V(affects more hosts of a group than its
          limit) (never approvable in waves), V(lists VMs that no inventory host reported), V(also lists other VMs)."
      type: list
      elements: dict
    groups:
      description: Per group, C(hosts) (its size), C(limit), C(in_maintenance) (hosts before this wave) and C(after).
      type: dict
    in_maintenance:
      description: Hosts in maintenance before this wave (started or approved events, or no result).
      type: list
      elements: str
    unknown:
      description: Hosts without a usable result.
      type: list
      elements: str
    problems:
      description: What could not be read, one line each.
      type: list
      elements: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.imds.scheduled_events.plugins.module_utils.waves import PlanError, plan
from ansible_collections.imds.scheduled_events.plugins.plugin_utils.data import data_filter


def dig(value, path):
    """Walk a dotted path into dictionaries; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        try:
            value = value[part]
        except KeyError:
            return None
    return value


def _lookup(data, host):
    try:
        return data[host]
    except KeyError:
        return None


def rolling_approvals(data, result_key=None, hosts=None, group_by=None, inventory_groups=None, ungrouped="group",
                      max_hosts=None, max_percent=None, approved=None, allow_shared=True,
                      allow_unknown_resources=False, unknown_busy=True):
    if not isinstance(data, Mapping):
        raise AnsibleFilterError("rolling_approvals expects a mapping of host to result (or hostvars), not %s"
                                 % type(data).__name__)
    if group_by is not None and inventory_groups is not None:
        raise AnsibleFilterError("rolling_approvals: give group_by or inventory_groups, not both")
    names = [str(h) for h in (list(data) if hosts is None else hosts)]
    results = {}
    per_host = {}
    for name in names:
        value = _lookup(data, name)
        results[name] = dig(value, result_key) if result_key else value
        per_host[name] = value
    groups = None
    if isinstance(group_by, Mapping):
        groups = dict((n, group_by.get(n)) for n in names)
    elif group_by is not None:
        groups = dict((n, per_host[n].get(str(group_by)) if isinstance(per_host[n], Mapping) else None) for n in names)
    elif inventory_groups is not None:
        if not isinstance(inventory_groups, Mapping):
            raise AnsibleFilterError("rolling_approvals: inventory_groups must map group names to hosts")
        groups = dict((n, []) for n in names)
        for group, members in inventory_groups.items():
            if group == "all":
                continue
            for member in members or ():
                if member in groups:
                    groups[member].append(group)
    try:
        return plan(results, groups=groups, max_hosts=max_hosts, max_percent=max_percent, approved=approved,
                    allow_shared=allow_shared, unknown_busy=unknown_busy,
                    allow_unknown_resources=allow_unknown_resources, ungrouped=ungrouped)
    except PlanError as exc:
        raise AnsibleFilterError("rolling_approvals: %s" % exc) from exc


class FilterModule(object):
    def filters(self):
        return {"rolling_approvals": data_filter(rolling_approvals)}
