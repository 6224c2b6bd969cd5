#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: watcher_info
short_description: Report what drift correction is held and why, the watcher's state and its latest journal entries
version_added: 0.1.0
description:
  - Reads, on the VM the task runs on, the drift-correction hold record shared by M(imds.scheduled_events.drift_pause),
    C(imds-hold), C(imds-drift-guard) and the watcher daemon, and returns every held target (systemd units, puppet,
    the guard, operator commands) with the reasons that hold it, who set them and since when.
  - Reports whether the watcher service is running (C(systemctl is-active)), or V(unknown) where systemd does not run.
  - Says whether the watcher is degraded, that is cannot do its whole job (RV(degraded)), because this VM's name is
    unknown, IMDS is unreachable for long, or the hold record is unreadable. It is read from the watcher's state
    file, as the daemon last saved it.
  - Returns the last entries of the watcher's journal, a JSON-lines file written by the watcher daemon. The file is
    read from its end, at most O(journal_max_bytes), and lines that are not JSON objects are skipped and counted, so
    a half-written line or a damaged file never fails the task.
  - With O(include_events=true), also reads this VM's scheduled events exactly as M(imds.scheduled_events.event_info)
    does, in the same process, so a fleet-wide report needs one module run per host. An IMDS failure is then reported
    in RV(event_info) and does not fail the task.
  - Never changes anything. A missing state file means that nothing is held; a state file that cannot be read or
    trusted is reported in RV(problems).
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
extends_documentation_fragment:
  - imds.scheduled_events.imds
  - imds.scheduled_events.imds.REQUESTS
  - imds.scheduled_events.attributes
  - imds.scheduled_events.attributes.info_module
options:
  state_file:
    description:
      - The hold record, as given to M(imds.scheduled_events.drift_pause) and C(imds-hold --state-file).
      - It is trusted only when owned by root and not writable by group or others, as the hold library requires.
    type: path
    default: /var/lib/imds-scheduled-events/holds.json
  journal_file:
    description:
      - The watcher's journal, one JSON object per line with at least C(time), C(event_id), C(event_type), C(state)
        and C(detail).
    type: path
    default: /var/lib/imds-scheduled-events/journal.jsonl
  watcher_state_file:
    description:
      - The watcher daemon's state file, for RV(degraded). A missing file (the watcher never ran) means not degraded.
    type: path
    default: /var/lib/imds-scheduled-events/watcher-state.json
  journal_entries:
    description:
      - How many of the latest journal entries to return. V(0) returns none (the file is not read).
    type: int
    default: 20
  journal_max_bytes:
    description:
      - Read at most this many bytes from the end of the journal, whatever its size.
    type: int
    default: 1048576
  service:
    description:
      - The watcher's systemd unit.
    type: str
    default: imds-watcher.service
  include_events:
    description:
      - Also read this VM's scheduled events from IMDS and return them in RV(event_info), as
        M(imds.scheduled_events.event_info) would without filters. The IMDS options below apply only then, and so does
        the need for the C(requests) library.
    type: bool
    default: false
notes:
  - The journal's format belongs to the watcher daemon; entries are returned as they are, with any further keys.
seealso:
  - module: imds.scheduled_events.drift_pause
  - module: imds.scheduled_events.event_info
  - name: The fleet report
    description: The C(imds.scheduled_events.fleet_report) role gathers this module's result from every host.
    link: https://example.invalid/imds/scheduled_events/docs/fleet.md
"""

EXAMPLES = r"""
- name: What is held on this VM, and why
  imds.scheduled_events.watcher_info:
  register: watcher

- name: Say who holds drift correction
  ansible.builtin.debug:
    msg: "{{ item.id }} ({{ item.holder }} since {{ item.since }}): {{ item.text }} -> {{ item.targets | join(', ') }}"
  loop: "{{ watcher.holds.reasons }}"
  when: watcher.held

- name: Alert when the watcher is not running
  ansible.builtin.debug:
    msg: "imds-watcher is {{ watcher.service.state }} on {{ inventory_hostname }}"
  when: watcher.service.state not in ['active', 'unknown']

- name: Alert when the watcher cannot do its whole job (for example, it does not know this VM's name)
  ansible.builtin.debug:
    msg: "imds-watcher on {{ inventory_hostname }}: {{ item.reason }} since {{ item.since }}: {{ item.detail }}"
  loop: "{{ watcher.degraded }}"

- name: Events and watcher state in one module run (what the fleet_report role does)
  imds.scheduled_events.watcher_info:
    include_events: true
    journal_entries: 5
  register: fleet_view

- name: Read another hold record, for example in a test
  imds.scheduled_events.watcher_info:
    state_file: /srv/test/holds.json
    journal_file: /srv/test/journal.jsonl
"""

RETURN = r"""
held:
  description: Whether anything is held. Null when the hold record could not be read.
  returned: always
  type: bool
state_file:
  description: The hold record read.
  returned: always
  type: str
holds:
  description: The hold library's status of the record; empty when it could not be read.
  returned: always
  type: dict
  contains:
    held:
      description: Whether any target is held.
      type: bool
    updated:
      description: When the record was last written (ISO-8601 UTC), or null.
      type: str
    targets:
      description: Every held target.
      type: list
      elements: dict
      contains:
        key:
          description: The target, for example V(systemd:ansible-pull.timer), V(puppet), V(guard) or V(command:myjob).
          type: str
        backend:
          description: V(systemd), V(puppet), V(guard) or V(command).
          type: str
        name:
          description: The unit, command or agent name.
          type: str
        phase:
          description:
            - V(holding), V(held) or V(releasing); anything but V(held) means the hold or release has not finished,
              see C(in_progress).
          type: str
        in_progress:
          description:
            - For a target that is not simply held, whether a hold, release or settle is at work on it now (it
              holds the hold record's lock). V(false) means it stopped half way (killed, or a step failed) and
              C(imds-hold settle) finishes it. Always V(false) for a held target.
          type: bool
        writer_pid:
          description: The pid of the process at work on it when C(in_progress), else null (0 when not yet known).
          type: int
        progress:
          description:
            - The last process that worked on a target not yet held or released, C(pid) and C(since) (ISO-8601
              UTC), or null.
          type: dict
        released_by:
          description: For a target being released, the reason whose drop released it, or null.
          type: dict
        since:
          description: When the target was first held.
          type: str
        reasons:
          description: The reasons holding it (C(id), C(text), C(event_id), C(holder), C(since)).
          type: list
          elements: dict
        summary:
          description: What the hold did and what release will restore, one line.
          type: str
    reasons:
      description: Every reason with the C(targets) it holds (C(id), C(text), C(event_id), C(holder), C(since)).
      type: list
      elements: dict
  sample:
    held: true
    updated: "2026-04-11T22:00:01Z"
    targets:
      - key: systemd:ansible-pull.timer
        backend: systemd
        name: ansible-pull.timer
        phase: held
        since: "2026-04-11T22:00:00Z"
        reasons: [{id: C7061BAC-AFDC-4513-B24B-AA5F13A16123, text: Reboot pending, holder: imds-watcher,
                   event_id: C7061BAC-AFDC-4513-B24B-AA5F13A16123, since: "2026-04-11T22:00:00Z"}]
        summary: stopped by the hold (was active, enabled); release restores that
    reasons: [{id: C7061BAC-AFDC-4513-B24B-AA5F13A16123, text: Reboot pending, holder: imds-watcher,
               event_id: C7061BAC-AFDC-4513-B24B-AA5F13A16123, since: "2026-04-11T22:00:00Z",
               targets: [systemd:ansible-pull.timer]}]
service:
  description: The watcher service.
  returned: always
  type: dict
  contains:
    name:
      description: The unit asked about.
      type: str
    state:
      description:
        - What C(systemctl is-active) says (V(active), V(inactive), V(failed), V(activating), ...).
        - V(unknown) when systemd does not run on this machine or could not be asked.
      type: str
    systemd:
      description: Whether systemd runs on this machine.
      type: bool
  sample: {name: imds-watcher.service, state: active, systemd: true}
journal:
  description: The latest journal entries.
  returned: always
  type: dict
  contains:
    path:
      description: The journal file.
      type: str
    present:
      description: Whether the file exists.
      type: bool
    entries:
      description: The last O(journal_entries) entries, oldest first, as the watcher wrote them.
      type: list
      elements: dict
    unparseable:
      description: Lines in the part read that are not JSON objects (skipped).
      type: int
    truncated:
      description: Whether the file is larger than O(journal_max_bytes), so that older lines were not read.
      type: bool
    size:
      description: The file's size in bytes.
      type: int
  sample:
    path: /var/lib/imds-scheduled-events/journal.jsonl
    present: true
    entries:
      - {time: "2026-04-11T22:00:00Z", event_id: C7061BAC-AFDC-4513-B24B-AA5F13A16123, event_type: Reboot,
         state: held, detail: "drift correction held: ansible-pull.timer"}
    unparseable: 0
    truncated: false
    size: 2048
degraded:
  description:
    - What keeps the watcher from its whole job, as the daemon last saved it; empty when nothing does, or when it
      never ran.
    - C(reason) is V(vm_name_unknown) (no C(vm_name) configured and IMDS does not name the VM, so every event is held,
      and none approved), V(imds_unreachable) (no successful poll for max(120 s, 12 x C(max_backoff))) or
      V(hold_record_unreadable) (nothing can be held or released).
  returned: always
  type: list
  elements: dict
  contains:
    reason:
      description: V(vm_name_unknown), V(imds_unreachable) or V(hold_record_unreadable).
      type: str
    since:
      description: When it began (ISO-8601 UTC).
      type: str
    detail:
      description: What is wrong, one line.
      type: str
    consequence:
      description: What the watcher does, or cannot do, meanwhile.
      type: str
    fix:
      description: What to do about it.
      type: str
  sample:
    - reason: vm_name_unknown
      since: "2026-04-11T22:00:01Z"
      detail: "vm_name is not configured and IMDS does not name this VM: IMDS GET /metadata/instance/compute/name
        answered 404 Not Found"
      consequence: drift correction is held for every event in the document, since whose it is cannot be told, and
        none is approved
      fix: set vm_name in the config (the role's watcher_vm_name) to this VM's Azure resource name, or let the VM
        reach IMDS's /metadata/instance/compute/name
event_info:
  description:
    - What M(imds.scheduled_events.event_info) returns for this VM without filters (C(events), C(pending),
      C(next_not_before), ...), or C(failed) and C(msg) when IMDS could not be read.
  returned: when O(include_events=true)
  type: dict
problems:
  description: What could not be read, one line each (the hold record, the journal, the watcher's state, systemctl, IMDS).
  returned: always
  type: list
  elements: str
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imds.scheduled_events.plugins.module_utils.ansible_support import (
    IMDS_ARGUMENT_SPEC, argument_spec, client_from_module, this_vm_from_module)
from ansible_collections.imds.scheduled_events.plugins.module_utils.events import EventFilter
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.common import DEFAULT_STATE_FILE, HoldError
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import HoldManager
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsError
from ansible_collections.imds.scheduled_events.plugins.module_utils.waiting import wait_for_events
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.health import as_list as degraded_list
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.state import StateStore

DEFAULT_JOURNAL = "/var/lib/imds-scheduled-events/journal.jsonl"
DEFAULT_WATCHER_STATE = "/var/lib/imds-scheduled-events/watcher-state.json"
SYSTEMD_RUNTIME = "/run/systemd/system"


def read_holds(state_file):
    """(status dict, problem or None): the hold library's own view of the record."""
    try:
        return HoldManager(state_file=state_file).status(), None
    except (HoldError, OSError) as exc:
        return {}, "hold record %s: %s" % (state_file, exc)


def read_degraded(path):
    """(the watcher's degraded list, problem or None) from its state file; never raises."""
    try:
        state, problem = StateStore(path).read()
    except OSError as exc:
        return [], "watcher state %s: %s" % (path, exc.strerror or exc)
    if problem:
        return [], "watcher state %s: %s" % (path, problem)
    return degraded_list((state or {}).get("degraded")), None


def read_journal(path, entries, max_bytes):
    """The last `entries` JSON objects among the last `max_bytes` bytes of `path`; never raises."""
    journal = {"path": path, "present": False, "entries": [], "unparseable": 0, "truncated": False, "size": 0}
    if entries <= 0:
        journal["present"] = os.path.exists(path)
        return journal, None
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return journal, None
    except OSError as exc:
        return journal, "journal %s: %s" % (path, exc.strerror or exc)
    with handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            start = max(0, size - max_bytes)
            if start > 0:
                handle.seek(start - 1)
                data = handle.read(max_bytes + 1)
                # Unless the window starts right after a newline, its first line is a fragment.
                data = data[1:] if data[:1] == b"\n" else data.partition(b"\n")[2]
            else:
                data = handle.read(max_bytes)
        except OSError as exc:
            return dict(journal, present=True), "journal %s: %s" % (path, exc.strerror or exc)
    journal.update(present=True, size=size, truncated=start > 0)
    parsed = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            entry = None
        if isinstance(entry, dict):
            parsed.append(entry)
        else:
            journal["unparseable"] += 1
    journal["entries"] = parsed[-entries:]
    return journal, None


def service_state(module, unit):
    """(service dict, problem or None) from `systemctl is-active`."""
    service = {"name": unit, "state": "unknown", "systemd": False}
    if not os.path.isdir(SYSTEMD_RUNTIME):
        return service, None
    service["systemd"] = True
    systemctl = module.get_bin_path("systemctl")
    if systemctl is None:
        return service, "systemd runs but systemctl was not found"
    rc, out, err = module.run_command([systemctl, "is-active", "--", unit],
                                      environ_update={"LC_ALL": "C", "LANG": "C"})
    words = out.strip().split()
    if words:
        service["state"] = words[0]
        return service, None
    return service, "systemctl is-active %s exited with %s: %s" % (unit, rc, (err.strip() or "no output")[:300])


def read_events(module):
    """event_info's result without filters, through the same client and model; IMDS errors are reported."""
    client = client_from_module(module)
    try:
        vm = this_vm_from_module(module, client)
        outcome = wait_for_events(client, EventFilter(), vm, "none", 0, 1.0, clock=time.monotonic, sleep=time.sleep)
    except ImdsError as exc:
        return {"failed": True, "msg": str(exc), "status": exc.status}, "IMDS: %s" % exc
    result = outcome.as_result(vm)
    result.pop("waited", None)
    return result, None


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            IMDS_ARGUMENT_SPEC,
            state_file=dict(type="path", default=DEFAULT_STATE_FILE),
            journal_file=dict(type="path", default=DEFAULT_JOURNAL),
            watcher_state_file=dict(type="path", default=DEFAULT_WATCHER_STATE),
            journal_entries=dict(type="int", default=20),
            journal_max_bytes=dict(type="int", default=1024 * 1024),
            service=dict(type="str", default="imds-watcher.service"),
            include_events=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["journal_entries"] < 0 or params["journal_max_bytes"] <= 0:
        module.fail_json(msg="journal_entries must not be negative and journal_max_bytes must be positive")

    problems = []
    holds, problem = read_holds(params["state_file"])
    if problem:
        problems.append(problem)
    journal, problem = read_journal(params["journal_file"], params["journal_entries"], params["journal_max_bytes"])
    if problem:
        problems.append(problem)
    service, problem = service_state(module, params["service"])
    if problem:
        problems.append(problem)
    degraded, problem = read_degraded(params["watcher_state_file"])
    if problem:
        problems.append(problem)
    result = dict(changed=False, held=holds.get("held") if holds else None, state_file=params["state_file"],
                  holds=holds, service=service, journal=journal, degraded=degraded)
    if params["include_events"]:
        result["event_info"], problem = read_events(module)
        if problem:
            problems.append(problem)
    result["problems"] = problems
    module.exit_json(**result)


if __name__ == "__main__":
    main()
