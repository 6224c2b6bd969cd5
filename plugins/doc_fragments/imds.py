# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # Connection options shared by every module that talks to IMDS.
    DOCUMENTATION = r"""
options:
  endpoint:
    description:
      - Base URL of the Instance Metadata Service, scheme, host and port only.
      - When not set, the E(IMDS_ENDPOINT) environment variable of the managed node is used, then
        V(http://169.254.169.254).
      - Point it at the bundled simulator (for example V(http://127.0.0.1:8169)) to rehearse maintenance without Azure.
      - Requests never go through a proxy, whatever E(HTTP_PROXY), E(HTTPS_PROXY) or E(NO_PROXY) say.
    type: str
  api_version:
    description:
      - Scheduled-events API version to request.
      - Older versions hide newer fields and event types (for example V(Terminate) needs V(2019-01-01) or later,
        C(DurationInSeconds) needs V(2020-07-01)).
    type: str
    default: "2020-07-01"
    choices: ["2017-03-01", "2017-08-01", "2017-11-01", "2019-01-01", "2019-04-01", "2019-08-01", "2020-07-01"]
  timeout:
    description:
      - Seconds to wait for each answer once the service is warm.
    type: float
    default: 5
  first_timeout:
    description:
      - Seconds to wait for the first answer of the task. The first request after a long idle period enables
        scheduled events for the VM and can take up to two minutes.
    type: float
    default: 120
  retries:
    description:
      - How many times to retry a request that failed with 404, 410, 429, a 5xx status, a timeout or a connection
        error, with exponential backoff and jitter. Other errors are not retried.
      - Requests stay under IMDS's budget of five per second in every case.
    type: int
    default: 4
  vm_name:
    description:
      - This VM's Azure resource name, the value that C(Resources) lists.
      - When not set, it is read from IMDS (C(/metadata/instance/compute/name)). The OS hostname is never used,
        since scale-set hostnames differ from resource names.
      - When IMDS does not give the name (Microsoft's mock server has none), M(imds.scheduled_events.event_info)
        without C(this_vm_only) still returns the events, with what depends on the name null, and warns; whatever
        needs the name fails, saying so.
    type: str
requirements:
  - requests (Python library on the managed node)
notes:
  - The module runs on the VM itself, the only place where Azure's IMDS answers.
"""

    # Filters shared by event_info, event_approve and the events lookup.
    FILTERS = r"""
options:
  event_ids:
    description:
      - Only events with these EventIds (case-insensitive).
    type: list
    elements: str
  event_types:
    description:
      - Only events of these types, for example V(Freeze), V(Reboot), V(Redeploy), V(Preempt), V(Terminate).
      - Types unknown to this collection are accepted, since Azure may add some.
    type: list
    elements: str
  statuses:
    description:
      - Only events in these statuses (V(Scheduled), V(Started)).
    type: list
    elements: str
  sources:
    description:
      - Only events from these sources (V(Platform), V(User)). Needs O(api_version=2019-08-01) or later.
    type: list
    elements: str
  this_vm_only:
    description:
      - Only events whose C(Resources) list this VM, alone or with others.
      - Events that list only other VMs of the availability set or placement group are left out.
    type: bool
    default: false
"""
