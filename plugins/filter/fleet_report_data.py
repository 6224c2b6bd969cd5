# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_report_data
short_description: Shape every host's watcher_info and event_info results into one fleet report
version_added: 0.1.0
description:
  - Builds the document that the C(imds.scheduled_events.fleet_report) role renders as HTML, JSON and Markdown, from
    the results that every host registered.
  - Hosts are listed in the order of O(hosts). A host whose result is unreachable, failed, skipped or missing is
    reported as such instead of failing.
  - Events are merged across hosts by EventId, with the inventory hosts they affect (C(Resources) are matched to
    hosts by the Azure resource name each host reported). The time to C(NotBefore) is computed against one clock,
    the report's.
  - Holds are listed per host and reason, with the targets they hold. Approvals come from the watcher's journal
    (entries whose C(state) is V(approved)), with who approved (C(by), C(approved_by), C(actor), C(holder) or C(who)
    of the entry, else the watcher) and when.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
options:
  _input:
    description:
      - A mapping of inventory host name to host variables, such as C(hostvars).
    type: dict
    required: true
  hosts:
    description:
      - The hosts to report on, in order, for example C(ansible_play_hosts_all). Default every key of the input.
    type: list
    elements: str
  result_key:
    description:
      - The registered M(imds.scheduled_events.watcher_info) result of each host. With its
        O(imds.scheduled_events.watcher_info#module:include_events=true), it carries the events too.
      - Required unless O(control_plane) is given.
    type: str
  control_plane:
    description:
      - A registered M(imds.scheduled_events.control_plane_event_info) result (the fleet from Azure Resource Graph).
        Its events are merged with the hosts' by EventId; each event of the report lists its C(sources) (V(imds),
        V(resource_graph)) and its C(owner); C(Completed) and C(Canceled) events are kept, with C(finished) true.
      - Hosts whose IMDS was not read are matched to events by their inventory name.
    type: dict
  events_key:
    description:
      - A registered M(imds.scheduled_events.event_info) result, when events were read by a task of their own.
    type: str
  group_by:
    description:
      - A host variable shown as each host's group (for example V(availability_set)).
    type: str
  title:
    description: The report's title.
    type: str
    default: Fleet maintenance report
  now:
    description:
      - The report's time, ISO-8601. Default now. For reproducible reports and tests.
    type: str
"""

EXAMPLES = r"""
- name: Read events and holds on every host
  imds.scheduled_events.watcher_info:
    include_events: true
  register: fleet_view
  ignore_unreachable: true
  ignore_errors: true

- name: Build the report on the controller
  ansible.builtin.set_fact:
    report: "{{ hostvars | imds.scheduled_events.fleet_report_data(hosts=ansible_play_hosts_all, result_key='fleet_view') }}"
  run_once: true

- name: Hosts with a pending event
  ansible.builtin.debug:
    msg: "{{ report.hosts | selectattr('pending') | map(attribute='host') }}"
  run_once: true
"""

RETURN = r"""
_value:
  description: The report.
  type: dict
  contains:
    format:
      description: V(imds-scheduled-events/fleet-report).
      type: str
    version:
      description: V(1).
      type: int
    title:
      description: The title.
      type: str
    generated:
      description: The report's time (ISO-8601 UTC).
      type: str
    summary:
      description:
        - Counts (C(hosts), C(ok), C(unreachable), C(failed), C(no_data), C(events), C(events_scheduled),
          C(events_started), C(events_finished), C(hosts_pending), C(hosts_in_progress), C(hosts_held), C(holds),
          C(approvals), C(watcher_active)), the C(sources) events came from, and the soonest C(next_not_before) with
          C(seconds_until_next).
      type: dict
    hosts:
      description:
        - One entry per host - C(host), C(status) (V(ok), V(unreachable), V(failed), V(no data)), C(error), C(group),
          C(vm_name), C(events_error), C(pending), C(in_progress), C(next_not_before), C(seconds_until_next),
          C(event_ids), C(held), C(hold_reasons), C(held_targets), C(watcher_service), C(journal_unparseable),
          C(problems).
      type: list
      elements: dict
    events:
      description:
        - One entry per event across the fleet - C(event_id), C(event_type), C(status), C(not_before),
          C(seconds_until_start), C(resources), C(hosts) (inventory hosts it affects), C(other_resources) (VMs no
          host reported), C(seen_by) (hosts whose IMDS showed it), C(sources) (V(imds), V(resource_graph)),
          C(owner) (from Resource Graph), C(finished) (C(Completed) or C(Canceled)), C(shared), C(source),
          C(description), C(duration_seconds), C(problems). Events in progress first, then pending, then finished.
      type: list
      elements: dict
    holds:
      description:
        - One entry per host and hold reason - C(host), C(reason_id), C(text), C(holder), C(since), C(event_id),
          C(targets), C(phases).
      type: list
      elements: dict
    approvals:
      description: C(host), C(event_id), C(event_type), C(time), C(by), C(detail), oldest first.
      type: list
      elements: dict
    unreachable:
      description: Hosts that could not be read - C(host), C(status), C(msg).
      type: list
      elements: dict
    problems:
      description: What hosts could not read (hold record, journal, systemctl, IMDS), one line each.
      type: list
      elements: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.imds.scheduled_events.plugins.module_utils.fleet import build_report
from ansible_collections.imds.scheduled_events.plugins.plugin_utils.data import data_filter


def _get(mapping, key):
    if not key or not isinstance(mapping, Mapping):
        return None
    try:
        return mapping[key]
    except KeyError:
        return None


def fleet_report_data(data, result_key=None, hosts=None, events_key=None, group_by=None,
                      title="Fleet maintenance report", now=None, control_plane=None):
    if not isinstance(data, Mapping):
        raise AnsibleFilterError("fleet_report_data expects hostvars (host -> variables), not %s" % type(data).__name__)
    if not result_key and control_plane is None:
        raise AnsibleFilterError("fleet_report_data: result_key (the registered watcher_info result) or control_plane "
                                 "(a control_plane_event_info result) is required")
    names = [str(h) for h in (list(data) if hosts is None else hosts)]
    per_host = {}
    for name in names:
        variables = _get(data, name)
        per_host[name] = {"watcher": _get(variables, result_key), "events": _get(variables, events_key),
                          "group": _get(variables, group_by)}
    try:
        return build_report(per_host, now=now, title=title,
                            control_plane=dict(control_plane) if isinstance(control_plane, Mapping) else control_plane)
    except ValueError as exc:
        raise AnsibleFilterError("fleet_report_data: %s" % exc) from exc


class FilterModule(object):
    def filters(self):
        return {"fleet_report_data": data_filter(fleet_report_data)}
