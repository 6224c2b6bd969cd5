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

    # How requests are timed, retried and paced: shared by every module that talks to IMDS and the events lookup.
    REQUESTS = r"""
options:
  timeout:
    description:
      - Seconds to wait for each answer once the service is warm. An answer still coming after that, however slowly
        it trickles in, is cut off. Must be positive.
    type: float
    default: 5
  first_timeout:
    description:
      - Seconds to wait for the first answer of scheduled events while the service may be cold. The first request
        after a long idle period enables scheduled events for the VM and can take up to two minutes. Must be
        positive.
      - The service counts as warm, and O(timeout) applies from the first request, once any process of the same
        user on this VM has had an answer from it in the last 12 hours (Azure disables it after 24 hours without
        requests; the watcher, which polls every second, keeps it warm). Reading this VM's name never needs the
        long wait.
    type: float
    default: 120
  retries:
    description:
      - How many times to retry a request that failed with 404, 410, 429, a 5xx status, a timeout or a connection
        error, with exponential backoff and jitter. Other errors are not retried. Must not be negative.
      - A retry is made only when it still fits in O(deadline).
    type: int
    default: 4
  deadline:
    description:
      - Seconds that one call to IMDS may take in all (a read of the scheduled events, a read of this VM's name, an
        approval), with every attempt, the backoff between them and any wait for a free slot in the budget of five
        requests per second. Must be positive.
      - While the service may be cold (see O(first_timeout)), its first answer may take up to O(first_timeout), and
        what it takes beyond O(timeout) does not count. Such a call ends within O(deadline) + O(first_timeout) -
        O(timeout) (145 seconds with the defaults), any other within O(deadline).
      - "When time runs out, the call fails with the time spent, the number of attempts and the last error, for
        example C(no answer within the 30 s deadline: 5 attempts in 28.6 s; another after 6.2 s of backoff would
        not fit; last: timed out after 5 s)."
    type: float
    default: 30
notes:
  - Requests stay under IMDS's budget of five per second, retries included, together with those of every other
    process of the same user on the VM that uses this collection (the watcher, modules, lookups, the Event-Driven
    Ansible source). They share a record in C(/run/imds-scheduled-events/) for root, in
    C($XDG_RUNTIME_DIR/imds-scheduled-events/) or else C(/tmp/imds-scheduled-events-<uid>/) for other users
    (E(IMDS_SE_PACE_DIR) names another directory; it must be the user's own and writable by nobody else).
  - Processes of different users do not share a budget, so that no user can slow down another's (root's watcher
    above all); IMDS answers 429 to what they send together beyond it, and that is retried. When the record cannot
    be used, requests are paced per process and a warning says why.
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
