# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""resource_graph: the fleet's scheduled events read from Azure Resource Graph, as rulebook events.

For fleets without an Event Grid subscription: it polls the query control_plane_event_info sends (the same
ArmClient, KQL and row reading of module_utils/control_plane.py) and turns each row's status into the changes the
event_grid source emits (lifecycle.StatusTracker), so a rulebook can swap one source for the other.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
short_description: The fleet's Azure scheduled events from Resource Graph, polled, as rulebook events
description:
  - Polls Azure Resource Graph (C(maintenanceresources), preview) for the scheduled events of the subscriptions or
    management groups given and emits the events of the event_grid source with C(source) C(resource_graph).
  - The first poll emits C(appeared) (and C(started)) for every pending event and C(gone) for the finished rows
    Resource Graph still holds, unless O(skip_finished_on_start=true).
  - A row that cannot be read emits C(change=unreadable) once; a failed poll is logged and retried with backoff.
options:
  subscriptions:
    description: Subscription ids to read.
    type: list
    elements: str
  management_groups:
    description: Management group ids to read.
    type: list
    elements: str
  event_types:
    description: Only these event types.
    type: list
    elements: str
  resource_groups:
    description: Only events of resources in these resource groups.
    type: list
    elements: str
  vms:
    description: VM names to judge C(affects_this_vm) and C(shared) against.
    type: list
    elements: str
  poll_interval:
    description:
      - Seconds between two queries (1 to 3600).
      - Resource Graph throttles per user and tenant (about 15 queries in 5 seconds).
    type: float
    default: 60
  max_backoff:
    description: Longest wait, in seconds, between queries while they fail.
    type: float
    default: 600
  skip_finished_on_start:
    description: Do not emit C(gone) for rows already Completed or Canceled at the first poll.
    type: bool
    default: true
  auth_source:
    description: How to sign in (auto, msi, env, cli, credentials), as in the control-plane modules.
    type: str
    default: auto
  client_id:
    description: Service principal or user-assigned managed identity client id.
    type: str
  secret:
    description: Service principal secret (auth_source=credentials). Prefer msi or env.
    type: str
  tenant:
    description: Tenant id (auth_source=credentials).
    type: str
  management_endpoint:
    description: Azure Resource Manager URL; sovereign clouds differ.
    type: str
    default: https://management.azure.com
"""

EXAMPLES = r"""
- name: Run the post-maintenance check when Azure says Completed
  hosts: all
  sources:
    - imds.scheduled_events.resource_graph:
        subscriptions: ["00000000-0000-0000-0000-000000000000"]
        auth_source: msi
  rules:
    - name: Post-maintenance check
      condition: event.change == "gone" and event.outcome == "completed"
      action:
        run_playbook:
          name: post_maintenance_check.yml
"""

import logging
import os
import sys
import time

try:
    import ansible_collections.imds.scheduled_events.plugins.module_utils  # noqa: F401  pylint: disable=unused-import
except ImportError:  # ansible-rulebook runs this file by path: put the collection tree it lies in on sys.path
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 7)))

from ansible_collections.imds.scheduled_events.plugins.module_utils.control_plane import (  # noqa: E402
    AUTH_SOURCES, DEFAULT_ENDPOINT, ControlPlaneError, build_query, query_events, signed_in_client)
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import (  # noqa: E402
    KNOWN_EVENT_TYPES, NamedVms)
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import poll_delay  # noqa: E402
from ansible_collections.imds.scheduled_events.plugins.module_utils.lifecycle import StatusTracker  # noqa: E402
from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import (  # noqa: E402
    Argument, ArgumentError, RepeatedLog, check_args, poll_forever, rulebook_event, unreadable_event)

SOURCE = "imds.scheduled_events.resource_graph"
ARGS = {
    "subscriptions": Argument("list"),
    "management_groups": Argument("list"),
    "event_types": Argument("list", choices=KNOWN_EVENT_TYPES),
    "resource_groups": Argument("list"),
    "vms": Argument("list"),
    "poll_interval": Argument("float", 60.0, minimum=1, maximum=3600),
    "max_backoff": Argument("float", 600.0, minimum=1, maximum=3600),
    "skip_finished_on_start": Argument("bool", True),
    "auth_source": Argument("str", "auto", choices=AUTH_SOURCES),
    "client_id": Argument("str"),
    "secret": Argument("secret"),
    "tenant": Argument("str"),
    "management_endpoint": Argument("str", DEFAULT_ENDPOINT),
}

logger = logging.getLogger(__name__)


class ResourceGraphSource(object):
    """One query at a time: poll() is synchronous and returns the rulebook events."""

    def __init__(self, args, client=None, clock=time.time):
        self.args = check_args(SOURCE, args, ARGS)
        if not self.args["subscriptions"] and not self.args["management_groups"]:
            raise ArgumentError("%s: name subscriptions or management_groups to read" % SOURCE)
        if self.args["max_backoff"] < self.args["poll_interval"]:
            raise ArgumentError("%s: max_backoff must be at least poll_interval" % SOURCE)
        try:
            self.query = build_query(types=self.args["event_types"], resource_groups=self.args["resource_groups"])
            self.client = client or signed_in_client(
                self.args["auth_source"], self.args["client_id"], self.args["secret"], self.args["tenant"],
                endpoint=self.args["management_endpoint"])
        except (ValueError, ControlPlaneError) as exc:
            raise ArgumentError("%s: %s" % (SOURCE, exc))
        self.clock = clock
        self.vms = NamedVms(self.args["vms"]) if self.args["vms"] else None
        self.tracker = StatusTracker()
        self.reported_problems = set()
        self.polls = 0
        self.failures = RepeatedLog(logger)

    def poll(self):
        try:
            result = query_events(self.client, self.query, self.args["subscriptions"], self.args["management_groups"])
        except ControlPlaneError as exc:
            delay = poll_delay(self.args["poll_interval"], self.failures.count + 1, self.args["max_backoff"])
            self.failures.failed("%s: the Resource Graph query failed: %s" % (SOURCE, exc), "; next in %g s" % delay)
            return None
        self.failures.recovered("%s: Resource Graph answers" % SOURCE)
        self.polls += 1
        if self.polls == 1:
            logger.info("%s: first query: %d event(s), %d unreadable row(s)", SOURCE, len(result.events),
                        len(result.problems))
        now = self.clock()
        out = []
        for problem in result.problems:
            key = (problem.get("id"), problem.get("problem"))
            if key not in self.reported_problems:
                self.reported_problems.add(key)
                logger.warning("%s: unreadable row %s: %s", SOURCE, problem.get("id"), problem.get("problem"))
                out.append(unreadable_event("resource_graph", problem.get("problem"), row_id=problem.get("id")))
        for found in result.events:
            key = "%s/%s" % (found.owner.key, found.event.event_id.lower())
            described = found.describe(self.vms, None)
            changes = self.tracker.observe(now, key, found.event, described)
            if self.polls == 1 and self.args["skip_finished_on_start"] and found.event.is_finished:
                continue  # history from before the rulebook started: remembered, not announced
            out.extend(rulebook_event(c, "resource_graph") for c in changes)
        return out

    def next_delay(self):
        return poll_delay(self.args["poll_interval"], self.failures.count, self.args["max_backoff"])

    def after_poll(self):
        """Nothing to keep: Resource Graph holds the history."""


async def main(queue, args):
    """ansible-rulebook's entry point."""
    await poll_forever(queue, ResourceGraphSource(args))
