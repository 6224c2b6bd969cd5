# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: events
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
version_added: 0.1.0
short_description: Azure Scheduled Events as a list, for C(when:) and C(loop:), read from the controller
description:
  - Reads the scheduled-events document from the Azure Instance Metadata Service (IMDS) and returns the events as a
    list of dictionaries, optionally filtered and reshaped with a JMESPath expression.
  - B(A lookup runs on the controller, not on the managed node.) IMDS answers only on the VM itself, so this lookup is
    meant for controllers that run on the VM they configure, for example C(ansible-pull) or a play that
    uses the C(local) connection.
  - In push mode (a controller configuring remote VMs), the lookup would read the controller's own IMDS, or fail.
    Use the M(imds.scheduled_events.event_info) module there; it runs on each managed node and returns the same
    event dictionaries.
  - Each event has Azure's keys verbatim plus the keys this collection derives (whether it affects this VM, whether
    other VMs share it, NotBefore as ISO-8601, the seconds left until it), exactly as
    M(imds.scheduled_events.event_info) returns them.
  - The lookup takes no terms; every option is passed as a keyword.
extends_documentation_fragment:
  - imds.scheduled_events.imds.REQUESTS
  - imds.scheduled_events.imds.FILTERS
options:
  endpoint:
    description:
      - Base URL of the Instance Metadata Service, scheme, host and port only.
      - When not set by keyword, by the C(imds_endpoint) variable or by the E(IMDS_ENDPOINT) environment variable of
        the B(controller), V(http://169.254.169.254) is used.
      - Point it at the bundled simulator (for example V(http://127.0.0.1:8169)) to rehearse maintenance without Azure.
      - Requests never go through a proxy, whatever E(HTTP_PROXY), E(HTTPS_PROXY) or E(NO_PROXY) say.
    type: str
    env:
      - name: IMDS_ENDPOINT
    vars:
      - name: imds_endpoint
  api_version:
    description:
      - Scheduled-events API version to request.
      - Older versions hide newer fields and event types (for example V(Terminate) needs V(2019-01-01) or later,
        C(DurationInSeconds) needs V(2020-07-01)).
    type: str
    default: "2020-07-01"
    choices: ["2017-03-01", "2017-08-01", "2017-11-01", "2019-01-01", "2019-04-01", "2019-08-01", "2020-07-01"]
  vm_name:
    description:
      - This VM's Azure resource name, the value that C(Resources) lists.
      - When not set, it is read from IMDS (C(/metadata/instance/compute/name)), which costs one more request. The OS
        hostname is never used, since scale-set hostnames differ from resource names.
      - When IMDS does not give the name (Microsoft's mock server has none), the events are still returned, with
        C(affects_this_vm), C(shared) and C(scope) null, and a warning; with O(this_vm_only=true) the lookup fails
        instead, saying the name is needed.
    type: str
  query:
    description:
      - A JMESPath expression applied to the list of event dictionaries (after the filters), for example
        V([?EventType=='Reboot'].EventId) or V(length(@\)).
      - When it yields a list, that list is returned. When it yields anything else (a number, a string, a
        dictionary, null), the value is returned as a one-element list.
      - Needs the Python library C(jmespath) on the controller, only when this option is set.
    type: str
requirements:
  - requests (Python library on the controller)
  - jmespath (Python library on the controller, only for O(query))
notes:
  - The lookup runs on the controller. It only makes sense where the controller is the VM itself (C(ansible-pull), or a
    play that uses the C(local) connection). For remote VMs use M(imds.scheduled_events.event_info).
  - Call this lookup with the C(query) function, which always returns a list, as in the examples. The C(lookup)
    function returns the only element of a one-element list, joins a list of several strings into one
    comma-separated string (for example the EventIds a O(query) selects), unless C(wantlist=true) is given.
  - Each evaluation sends one request to IMDS (two when O(vm_name) is not set). A C(when:) on a block is evaluated
    for every task in it; read the events once with M(ansible.builtin.set_fact) when several tasks need them.
  - Approving events is done by M(imds.scheduled_events.event_approve).
seealso:
  - module: imds.scheduled_events.event_info
  - module: imds.scheduled_events.event_approve
  - name: JMESPath specification
    description: The language of the O(query) option.
    link: https://jmespath.org/specification.html
  - name: Azure Scheduled Events for Linux VMs
    description: Microsoft's description of the API.
    link: https://learn.microsoft.com/azure/virtual-machines/linux/scheduled-events
"""

EXAMPLES = r"""
# These tasks run in an ansible-pull playbook (or any play with connection: local) on the Azure VM itself.

- name: End this ansible-pull run while an event for this VM is scheduled or in progress
  ansible.builtin.meta: end_play
  when: query('imds.scheduled_events.events', this_vm_only=true) | length > 0

- name: Log each Reboot event that affects this VM
  ansible.builtin.debug:
    msg: "Reboot {{ item }} is coming"
  loop: "{{ query('imds.scheduled_events.events', event_types=['Reboot'], this_vm_only=true) | map(attribute='EventId') }}"

- name: The same EventIds with a JMESPath query
  ansible.builtin.debug:
    msg: "Reboot {{ item }} is coming"
  loop: >-
    {{ query('imds.scheduled_events.events', this_vm_only=true,
             query="[?EventType=='Reboot'].EventId") }}

- name: Read the events once, then use them in several tasks
  ansible.builtin.set_fact:
    maintenance: "{{ query('imds.scheduled_events.events', this_vm_only=true, statuses=['Scheduled']) }}"

- name: Warn when approving an event would start maintenance on other VMs too
  ansible.builtin.debug:
    msg: "{{ item.EventId }} is shared by {{ item.Resources | join(', ') }}"
  loop: "{{ maintenance | selectattr('shared') }}"
  loop_control:
    label: "{{ item.EventId }}"

- name: A query that yields a number comes back as a one-element list
  ansible.builtin.debug:
    msg: "{{ query('imds.scheduled_events.events', query='length(@)') | first }} events in the document"

- name: Rehearse against the bundled simulator
  ansible.builtin.debug:
    msg: "{{ query('imds.scheduled_events.events', endpoint='http://127.0.0.1:8169', vm_name='myvm') }}"
"""

RETURN = r"""
_value:
  description:
    - The events that match the filters, one dictionary per event, in the document's order.
    - When O(query) is set, the result of the JMESPath expression instead, as a list (a result that is not a list
      is returned as a one-element list).
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
      description:
        - Whether C(Resources) lists this VM.
        - Null when this VM's name is unknown, that is when O(vm_name) is not set and IMDS does not give it (for
          example Microsoft's mock server); the lookup then warns, and fails instead when O(this_vm_only) needs
          the name.
      type: bool
    shared:
      description:
        - Whether C(Resources) lists this VM and other VMs; approving it starts the maintenance for all.
        - Null when this VM's name is unknown.
      type: bool
    scope:
      description:
        - V(this_vm), V(shared), V(other_vms) or V(none) (empty C(Resources)).
        - Null when this VM's name is unknown.
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
"""

import sys

from ansible.errors import AnsibleLookupError, AnsibleOptionsError
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

from ansible_collections.imds.scheduled_events.plugins.module_utils import imds
from ansible_collections.imds.scheduled_events.plugins.module_utils.ansible_support import (
    client_options, selection_from_options, this_vm_if_known)
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import utcnow
from ansible_collections.imds.scheduled_events.plugins.module_utils.waiting import describe

try:
    import jmespath
    JMESPATH_IMPORT_ERROR = None
except ImportError as import_error:
    jmespath = None
    JMESPATH_IMPORT_ERROR = import_error

display = Display()


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleOptionsError(
                "the imds.scheduled_events.events lookup takes no terms, got %r; pass options as keywords, for "
                "example query('imds.scheduled_events.events', event_types=['Reboot'], this_vm_only=true)"
                % (list(terms),))
        self.set_options(var_options=variables, direct=kwargs)
        unknown = sorted(set(kwargs) - set(self._options))
        if unknown:
            raise AnsibleOptionsError("the imds.scheduled_events.events lookup has no option %s; it knows %s"
                                      % (", ".join(unknown), ", ".join(sorted(self._options))))
        expression = self._compile_query()
        client = self._client()
        selection = selection_from_options(self.get_option)
        try:
            vm, warning = this_vm_if_known(self.get_option, client, "to pick this VM's events (this_vm_only)"
                                           if selection.this_vm_only else None)
            document = client.get_document()
        except ValueError as exc:
            raise AnsibleOptionsError("vm_name %r is not a VM name: %s" % (self.get_option("vm_name"), exc)) from exc
        except imds.ImdsError as exc:
            raise AnsibleLookupError("reading IMDS failed: %s" % exc) from exc
        if warning:
            display.warning("imds.scheduled_events.events: %s" % warning)
        now = utcnow()
        events = [describe(event, vm, now) for event in selection.apply(document.events, vm)]
        if expression is None:
            return events
        try:
            result = expression.search(events)
        except jmespath.exceptions.JMESPathError as exc:
            raise AnsibleLookupError("the JMESPath query %r failed: %s" % (self.get_option("query"), exc)) from exc
        return result if isinstance(result, list) else [result]

    def _compile_query(self):
        """Check the expression before any request is sent."""
        text = self.get_option("query")
        if not text:
            return None
        if jmespath is None:
            raise AnsibleLookupError(
                "the query option needs the Python library 'jmespath' in the controller's Python (%s); "
                "install it there, for example with 'pip install jmespath'" % sys.executable) from JMESPATH_IMPORT_ERROR
        try:
            return jmespath.compile(text)
        except jmespath.exceptions.JMESPathError as exc:
            raise AnsibleLookupError("the query option %r is not a valid JMESPath expression: %s" % (text, exc)) from exc

    def _client(self):
        try:
            return imds.ImdsClient(warn=lambda text: display.warning("imds.scheduled_events.events: %s" % text),
                                   **client_options(self.get_option))
        except imds.ImdsError as exc:
            if not imds.HAS_REQUESTS:
                raise AnsibleLookupError(
                    "the imds.scheduled_events.events lookup needs the Python library 'requests' in the controller's "
                    "Python (%s); install it there, for example with 'pip install requests'" % sys.executable) from exc
            raise AnsibleOptionsError(str(exc)) from exc
