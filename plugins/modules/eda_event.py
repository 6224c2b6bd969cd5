#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

# This file only documents the action plugin plugins/action/eda_event.py, which does the work on the controller.

from __future__ import annotations

DOCUMENTATION = r"""
module: eda_event
short_description: Read the event ansible-rulebook passed to a playbook as data, never as a template or host pattern
version_added: 0.1.0
description:
  - C(ansible-rulebook) passes the event that triggered C(run_playbook) as the extra var C(ansible_eda), and
    ansible-core treats extra vars as trusted templates. Whoever wrote the event (the sender of an Event Grid
    delivery, Azure's C(Description), whoever named a VM) would have a reference such as
    C({{ ansible_eda.event.scheduled_event }}) render the Jinja they wrote on the controller (a C(pipe) lookup runs
    any command), and a play whose C(hosts) is built from the event's C(Resources) run on whatever host pattern a VM
    name spells (C(all), C(*), C(web:&db)).
  - This action reads C(ansible_eda) from the task's variables without templating it, checks that it is an event of
    this collection's sources (the EDA event sources C(imds.scheduled_events.imds),
    C(imds.scheduled_events.event_grid) and C(imds.scheduled_events.resource_graph)), and
    returns it rebuilt from plain values that no ansible-core version renders (marked unsafe before ansible-core
    2.19, without the trusted-template tag from 2.19 on).
  - It also returns the inventory hosts the event's C(Resources) name, matched the way Azure compares resource names
    (case-insensitively), never as a host pattern, and the names that match no inventory host.
  - A playbook run by a rulebook should reference the event only through this action's result (register it) and never
    C(ansible_eda) itself; docs/eda.md "Event data is data" shows the pattern.
  - Runs in the controller's process; no module is sent to any host and no connection is made.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
extends_documentation_fragment:
  - imds.scheduled_events.attributes
  - imds.scheduled_events.attributes.INFO_MODULE
attributes:
  action:
    support: full
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
options: {}
notes:
  - Fails when there is no C(ansible_eda.event) (the playbook was not started by a rulebook) or when it is not an
    event of this collection's sources, saying what is wrong.
  - The hosts are matched against the inventory's C(all) group. C(--limit), and so the rulebook's C(hosts), still
    applies to any play that uses them.
seealso:
  - name: Event data is data (docs/eda.md)
    description: How a rulebook's playbook uses the event safely.
    link: https://example.invalid/imds/scheduled_events/docs/eda.md#event-data-is-data
"""

EXAMPLES = r"""
- name: Read the event as data
  imds.scheduled_events.eda_event:
  register: eda

- name: Say what happened (the event's text is shown, never rendered)
  ansible.builtin.debug:
    msg: "{{ eda.event.scheduled_event.EventType }} {{ eda.event.change }}: {{ eda.event.scheduled_event.Description }}"

# In a play on all hosts: go on only with the hosts the event's Resources name (a VM named "all" names no other)
- name: Read the event as data, once for the play
  imds.scheduled_events.eda_event:
  register: eda
  run_once: true

- name: Leave out the hosts the event does not name
  ansible.builtin.meta: end_host
  when: inventory_hostname not in eda.hosts
"""

RETURN = r"""
event:
  description:
    - C(ansible_eda.event) as the source queued it - C(change), C(event_id), C(scheduled_event), C(outcome),
      C(detail), C(source) ... (docs/eda.md "The events") and C(meta), which ansible-rulebook adds - as plain data.
    - Null when ansible-rulebook passed RV(events) instead.
  returned: always
  type: dict
  sample:
    change: appeared
    event_id: 4CAEA225-A741-474D-A72E-428C86FCD853
    source: imds
    vm: web_0
    outcome: null
    detail: Reboot Scheduled for web_0
    scheduled_event:
      EventId: 4CAEA225-A741-474D-A72E-428C86FCD853
      EventType: Reboot
      EventStatus: Scheduled
      Resources: [web_0]
      Description: "{{ this text stays text }}"
events:
  description: C(ansible_eda.events) (C(m_0), C(m_1) ... for a rule with several conditions), each as RV(event).
  returned: always (null when ansible-rulebook passed a single event)
  type: dict
rule:
  description: The name of the rule that ran the playbook.
  returned: always
  type: str
ruleset:
  description: The name of the rule set.
  returned: always
  type: str
hosts:
  description:
    - The inventory hosts (of group C(all)) whose names are, compared as Azure compares resource names, the VM names
      in the event's C(Resources), in that order. A VM named C(all) or C(*) names only a host of exactly that name.
  returned: always
  type: list
  elements: str
  sample: [web_0, web_1]
unmatched:
  description: The names in C(Resources) that no inventory host has.
  returned: always
  type: list
  elements: str
  sample: [web_2]
"""
