# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""imds: this VM's scheduled events from the Instance Metadata Service, as rulebook events.

It polls IMDS through the collection's one client (no proxy, the 5 requests/s budget, the two-minute first
call) and turns documents into lifecycle changes with the watcher's rules (module_utils/lifecycle.py): one event
when an event appears, is updated, approved, started, and when it is gone (completed, cancelled or vanished). An unchanged
document emits nothing; an IMDS failure is logged and the next poll backs off (1, 2, 4 ... up to max_backoff
seconds) without ending the rulebook. Without vm_name, and while IMDS does not name this VM, it polls on as the
watcher does (health.VM_NAME_UNKNOWN): events are of scope unknown, never this VM's, and the name is asked again
1, 2, 4 ... 60 seconds later.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
short_description: This VM's Azure scheduled events, from IMDS, as rulebook events
description:
  - Polls the Instance Metadata Service's scheduled-events document of the VM it runs on and emits one event per
    lifecycle change of each scheduled event (C(appeared), C(updated), C(approved), C(started), C(gone)).
  - Every event has C(change), C(event_id), C(scheduled_event) (the keys of M(imds.scheduled_events.event_info)'s
    events), C(outcome) (C(completed), C(cancelled) or C(vanished), for C(gone) only), C(detail), C(source) (C(imds))
    and C(vm).
  - C(gone) is judged like the watcher does, since IMDS never says an event is over. C(completed) when it was seen
    Started; in the same boot, when it was approved or left after its NotBefore; across a new boot, when it is a
    Reboot, Redeploy or Preempt that was approved or still listed at its NotBefore (the new boot was its effect).
    C(vanished) when it left across a new boot otherwise, never seen to start (a stop and deallocation clears
    pending events; it may also have run unseen). Otherwise C(cancelled). C(approved) means it was seen Started
    while its NotBefore was still ahead.
options:
  endpoint:
    description: IMDS base URL. Defaults to the E(IMDS_ENDPOINT) environment variable, then http://169.254.169.254.
    type: str
  api_version:
    description: Scheduled-events api-version.
    type: str
    default: "2020-07-01"
  vm_name:
    description:
      - This VM's Azure resource name (compute/name, the name the events' C(Resources) list); asked from IMDS when
        not given.
      - When IMDS answers without it (Microsoft's mock server has no compute endpoint; some images block it), the
        source does not stop. It polls on and emits events whose C(scheduled_event.scope) is C(unknown) and
        C(affects_this_vm) null, never as this VM's, and without C(vm). It logs a warning once, and asks for the name
        again 1, 2, 4 ... 60 seconds later; once IMDS gives it, events are attributed as usual. Setting O(vm_name)
        avoids all of this.
    type: str
  this_vm_only:
    description:
      - Only events whose Resources list this VM (peers' events in an availability set say nothing).
      - While this VM's name is unknown, whose an event is cannot be told, so every event is emitted (with scope
        C(unknown)). One that turns out to be only a peer's says nothing more once the name is known, but its
        C(gone).
    type: bool
    default: true
  event_types:
    description: Only these event types (Freeze, Reboot, Redeploy, Preempt, Terminate); all when not given.
    type: list
    elements: str
  poll_interval:
    description: Seconds between two polls (0.2 to 3600).
    type: float
    default: 1.0
  max_backoff:
    description: Longest wait, in seconds, between polls while IMDS fails.
    type: float
    default: 5.0
  confirm_polls:
    description: Successful documents without an event before it is gone (a flap is not an ending).
    type: int
    default: 3
  state_file:
    description:
      - Absolute path of a JSON file where the source keeps what it has seen, so that a restart of the rulebook,
        or the reboot an event caused, neither repeats C(appeared) nor loses C(gone).
      - Must be writable by the rulebook's user and by nobody else; its directory is made (0700) if missing.
        Without it, memory ends with the process.
    type: str
  boot_id_file:
    description: Where the kernel's boot id is read; a change means the VM rebooted. Tests point it elsewhere.
    type: str
    default: /proc/sys/kernel/random/boot_id
"""

EXAMPLES = r"""
- name: Drain and approve a reboot of this VM
  hosts: localhost
  sources:
    - imds.scheduled_events.imds:
        event_types: [Reboot, Redeploy]
        state_file: /var/lib/imds-scheduled-events/eda/imds.json
  rules:
    - name: Drain, then approve
      condition: event.change == "appeared" and event.scheduled_event.EventStatus == "Scheduled"
      action:
        run_playbook:
          name: drain_and_approve.yml
          extra_vars:
            event_id: "{{ event.event_id }}"
"""

import asyncio
import logging
import os
import sys
import time

try:
    import ansible_collections.imds.scheduled_events.plugins.module_utils  # noqa: F401  pylint: disable=unused-import
except ImportError:  # ansible-rulebook runs this file by path: put the collection tree it lies in on sys.path
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 7)))

from ansible_collections.imds.scheduled_events.plugins.module_utils.events import (  # noqa: E402
    KNOWN_EVENT_TYPES, EventFilter, ThisVm)
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import (  # noqa: E402
    API_VERSIONS, DEFAULT_API_VERSION, DEFAULT_FIRST_TIMEOUT, DEFAULT_TIMEOUT, ImdsClient, ImdsError, poll_delay)
from ansible_collections.imds.scheduled_events.plugins.module_utils.lifecycle import (  # noqa: E402
    BOOT_ID_FILE, DEFAULT_CONFIRM_POLLS, DocumentTracker, read_boot_id, validate_tracker_state)
from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import (  # noqa: E402
    Argument, ArgumentError, RepeatedLog, StateFile, check_args, poll_forever, rulebook_event)
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.health import NameSearch  # noqa: E402

SOURCE = "imds.scheduled_events.imds"
ARGS = {
    "endpoint": Argument("str"),
    "api_version": Argument("str", DEFAULT_API_VERSION, choices=API_VERSIONS),
    "vm_name": Argument("str"),
    "this_vm_only": Argument("bool", True),
    "event_types": Argument("list", choices=KNOWN_EVENT_TYPES),
    "poll_interval": Argument("float", 1.0, minimum=0.2, maximum=3600),
    "max_backoff": Argument("float", 5.0, minimum=0.2, maximum=3600),
    "confirm_polls": Argument("int", DEFAULT_CONFIRM_POLLS, minimum=1, maximum=100),
    "state_file": Argument("path"),
    "boot_id_file": Argument("path", BOOT_ID_FILE),
}

logger = logging.getLogger(__name__)


def _significant(state):
    """The tracker's state without what moves on every poll, so an unchanged lifecycle is not rewritten."""
    events = {}
    for key, rec in state["events"].items():
        rec = dict((k, v) for k, v in rec.items() if k not in ("last_seen", "event"))
        events[key] = rec
    return dict(state, events=events)


class ImdsSource(object):
    """One poll at a time: poll() is synchronous and returns the rulebook events, so it is tested without a loop."""

    def __init__(self, args, client=None, clock=time.time):
        self.args = check_args(SOURCE, args, ARGS)
        if self.args["max_backoff"] < self.args["poll_interval"]:
            raise ArgumentError("%s: max_backoff (%s) must be at least poll_interval (%s)" % (
                SOURCE, self.args["max_backoff"], self.args["poll_interval"]))
        try:
            self.client = client or ImdsClient(endpoint=self.args["endpoint"], api_version=self.args["api_version"],
                                               retries=0, timeout=DEFAULT_TIMEOUT, first_timeout=DEFAULT_FIRST_TIMEOUT)
        except ImdsError as exc:
            raise ArgumentError("%s: %s" % (SOURCE, exc))
        self.clock = clock
        self.selection = EventFilter(types=self.args["event_types"], this_vm_only=self.args["this_vm_only"])
        # While this VM's name is unknown no event is known to be its own: this_vm_only would silence them all.
        self.unnamed_selection = EventFilter(types=self.args["event_types"])
        self.naming = NameSearch()
        self.state_file = None
        if self.args["state_file"]:
            self.state_file = StateFile(self.args["state_file"], logger, clock=clock)
            self.state_file.check_trusted()
        self.tracker = None
        self.failures = RepeatedLog(logger)

    def _this_vm(self):
        """vm_name, else the name IMDS gives, else ThisVm.unknown() until the next try (NameSearch's backoff) when
        IMDS answers without a name (404, 403, an unusable name). Before the first document, a failure that is no
        such answer (IMDS down or busy: 410, 429, 5xx, no connection) fails the poll instead, which is tried again."""
        if self.args["vm_name"]:
            return ThisVm(self.args["vm_name"])
        try:
            vm = ThisVm(self.client.compute_name())
        except ImdsError as exc:
            answered = not exc.retryable if exc.status is None else exc.status < 500 and exc.status not in (410, 429)
            if not answered and self.tracker is None:
                raise
            self.naming.failed(self.clock(), exc)
            logger.log(logging.WARNING if self.naming.failures == 1 else logging.DEBUG,
                       "%s: vm_name is not set and IMDS does not name this VM (%s): events are emitted with scope "
                       "unknown, never as this VM's, until it does; set vm_name to this VM's Azure resource name "
                       "(asked again in %g s)", SOURCE, exc, self.naming.delay())
            return ThisVm.unknown()
        if self.naming.failures:
            logger.info("%s: this VM is %s (compute/name, after %d failed request(s)): events are attributed as usual",
                        SOURCE, vm.name, self.naming.failures)
        return vm

    def _start(self):
        vm = self._this_vm()
        saved = self.state_file.load(validate_tracker_state) if self.state_file else None
        boot_id = read_boot_id(self.args["boot_id_file"])
        self.tracker = DocumentTracker(vm, boot_id, confirm_polls=self.args["confirm_polls"],
                                       selection=self.selection if vm.known else self.unnamed_selection, state=saved)
        logger.info("%s: watching scheduled events of %s (boot %s, %d event(s) from the state file)", SOURCE,
                    vm.name or "this VM (name unknown)", boot_id, len(self.tracker.events))

    def _name_again(self):
        if self.tracker.vm.known or not self.naming.due(self.clock()):
            return
        vm = self._this_vm()
        if vm.known:
            self.tracker.vm = vm
            self.tracker.selection = self.selection

    def poll(self):
        """One request (and, while this VM's name is unknown and a try is due, one for the name); the rulebook
        events it leads to."""
        try:
            if self.tracker is None:
                self._start()
            else:
                self._name_again()
            document = self.client.get_document()
        except ImdsError as exc:
            self.failures.failed("%s: IMDS poll failed: %s" % (SOURCE, exc), "; next in %g s" % self.next_delay(1))
            return None
        self.failures.recovered("%s: IMDS answers" % SOURCE)
        changes = self.tracker.observe(self.clock(), document)
        return [rulebook_event(c, "imds", vm=self.tracker.vm.name) for c in changes]

    def next_delay(self, extra=0):
        return poll_delay(self.args["poll_interval"], self.failures.count + extra, self.args["max_backoff"])

    def after_poll(self):
        if self.state_file and self.tracker is not None:
            self.state_file.save(self.tracker.state, _significant)


async def main(queue, args):
    """ansible-rulebook's entry point."""
    await poll_forever(queue, ImdsSource(args))


if __name__ == "__main__":
    # python imds.py: print the events of the simulator at IMDS_ENDPOINT (make simulator) as they come.
    import json

    class _PrintQueue(object):
        async def put(self, event):
            print(json.dumps(event, sort_keys=True), flush=True)

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(_PrintQueue(), {"vm_name": os.environ.get("VM_NAME")} if os.environ.get("VM_NAME") else {}))
