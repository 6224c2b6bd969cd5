#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: drift_pause
short_description: Hold configuration-management drift correction with a reason, and release it exactly as it was
version_added: 0.1.0
description:
  - Pauses the agents that re-apply configuration on a schedule (ansible-pull, chef-client, puppet, custom jobs) while
    maintenance is under way, and records why, who asked and for which scheduled event.
  - Several reasons can hold at once, for example an operator's and an event's. O(state=resumed) drops one reason;
    a target is released only when its last reason goes, and then restored to exactly its state before the hold.
  - "Backends: systemd timers and services (O(systemd_units)), jobs wrapped in C(imds-drift-guard) (O(guard)),
    C(puppet agent --disable) (O(puppet)) and operator commands (O(commands))."
  - The hold record is one JSON file on the managed node (O(state_file)), shared with the C(imds-hold) command, the
    C(imds-drift-guard) wrapper and the watcher daemon. It is written atomically under a lock, before and after every
    step, so a run that is killed half-way leaves a record from which the next hold or release finishes the job.
  - See C(docs/drift-correction.md) in the collection for each backend with a worked example, the crontab line and the
    systemd drop-in for ansible-pull, and the record's format.
author:
  - imds.scheduled_events maintainers (@imds-scheduled-events)
extends_documentation_fragment:
  - imds.scheduled_events.attributes
options:
  state:
    description:
      - V(paused) holds every target named by the backend options for the reason O(reason_id).
      - V(resumed) drops the reason O(reason_id) from the targets named by the backend options, or from every target
        when none is named. Targets that no reason holds any more are restored to their state before the hold.
    type: str
    choices: [paused, resumed]
    default: paused
  reason:
    description:
      - Why drift correction is held, for people. Shown by C(imds-hold status), logged by C(imds-drift-guard) and
        written into puppet's lock file.
      - Required when O(state=paused).
    type: str
  reason_id:
    description:
      - The id to release this reason by. Holding twice with the same id and text changes nothing.
      - Defaults to O(event_id) when given, otherwise to V(manual). Give distinct ids to holds that are released
        independently.
    type: str
  event_id:
    description:
      - The scheduled event (C(EventId)) behind the hold, if any. Recorded with the reason and passed to commands.
    type: str
  holder:
    description:
      - Who or what holds, for people.
      - Defaults to the user Ansible runs as on the managed node (C(SUDO_USER) when becoming root), followed by
        V((drift_pause)).
    type: str
  all_reasons:
    description:
      - With O(state=resumed), drop every reason instead of O(reason_id), which releases the targets completely.
    type: bool
    default: false
  systemd_units:
    description:
      - systemd timers and services to hold, for example V(ansible-pull.timer) or V(chef-client.timer). A name
        without a type is a service.
      - A timer is stopped, then the run it started (its C(Unit=)) is waited for. A C(Type=oneshot) service is waited
        for. Any other running service is stopped.
      - A unit that was not running before the hold is left alone, and release starts only what the hold stopped.
      - A unit that is not installed fails the task before anything changes.
    type: list
    elements: str
    default: []
  systemd_mask:
    description:
      - Also mask the units until release (C(systemctl mask --runtime)), so that nothing else can start them.
      - Release unmasks only what the hold masked. A unit whose file is in C(/etc/systemd/system) cannot be masked at
        runtime; it is then only stopped, and the result says so in C(notes).
    type: bool
    default: false
  systemd_wait_timeout:
    description:
      - Seconds to wait for a run already in progress to finish. V(0) does not wait.
      - When the run is still going at the end, the task fails with the units stopped and the hold recorded as
        incomplete; holding again keeps waiting.
    type: int
    default: 600
  puppet:
    description:
      - Disable the puppet agent with C(puppet agent --disable) and a message naming the reason; the lock file comes
        from C(puppet config print agent_disabled_lockfile).
      - If puppet was already disabled by someone else, it is left alone, and release does not enable it. Release
        enables puppet only while its lock file still carries the hold's message.
    type: bool
    default: false
  guard:
    description:
      - Hold jobs run through C(imds-drift-guard) (ansible-pull under cron or a systemd service). While held, the guard
        exits 0 without running the job and logs who holds and why.
      - Holding waits for guarded jobs already running to finish (O(guard_wait_timeout)).
    type: bool
    default: false
  guard_wait_timeout:
    description:
      - Seconds to wait for guarded jobs already running. V(0) does not wait.
    type: int
    default: 600
  commands:
    description:
      - Operator commands that hold and release something else, as argument lists run without a shell.
      - The reason reaches them only as environment variables (E(IMDS_HOLD_ACTION), E(IMDS_HOLD_TARGET),
        E(IMDS_HOLD_REASON), E(IMDS_HOLD_REASON_ID), E(IMDS_HOLD_HOLDER), E(IMDS_EVENT_ID), E(IMDS_HOLD_STATE_FILE))
        and as a JSON object on stdin.
      - A command may run again after a crash, so it must be idempotent. A non-zero exit fails the task and leaves the
        target incomplete; the next hold or release runs it again.
      - With O(state=resumed) only O(commands[].name) is used; the release command is the one recorded by the hold.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Names the target (C(command:<name>) in the record). Letters, digits, V(_), V(.), V(@) and V(-).
        type: str
        required: true
      hold:
        description:
          - Program and arguments to run to hold. Required when O(state=paused).
        type: list
        elements: str
      release:
        description:
          - Program and arguments to run to release. Required when O(state=paused).
        type: list
        elements: str
      timeout:
        description:
          - Seconds each command may run before it is killed and the step fails.
        type: int
        default: 300
  state_file:
    description:
      - The hold record. Its directory is created (mode 0755) when missing.
      - The file and its directory must be owned by root and not writable by group or others; otherwise the task
        fails without reading it.
      - A file that is not a valid record is never overwritten; a copy is kept next to it as
        C(<state_file>.corrupt-<digest>) and the task fails until it is repaired.
    type: path
    default: /var/lib/imds-scheduled-events/holds.json
attributes:
  check_mode:
    support: full
    details:
      - Reads the record and the live state of new targets, and reports the steps that would run; changes nothing.
  diff_mode:
    support: full
    details:
      - Shows the record's targets before and after.
notes:
  - Needs root on the managed node (C(become)), like the tools it drives.
  - The C(imds-hold) and C(imds-drift-guard) commands that share the record are in the collection's
    C(roles/watcher/files/bin); C(docs/drift-correction.md) says where they and the library go on the VM.
seealso:
  - module: imds.scheduled_events.event_info
  - module: imds.scheduled_events.event_approve
"""

EXAMPLES = r"""
- name: Hold ansible-pull and puppet while the kernel is patched
  imds.scheduled_events.drift_pause:
    state: paused
    reason: Kernel patching, change CHG-1234
    reason_id: CHG-1234
    systemd_units: [ansible-pull.timer]
    puppet: true
  become: true

- name: Release that reason again; anything else still holding keeps its hold
  imds.scheduled_events.drift_pause:
    state: resumed
    reason_id: CHG-1234
    systemd_units: [ansible-pull.timer]
    puppet: true
  become: true

- name: Hold for a scheduled event, also masking the timers and the cron guard
  imds.scheduled_events.drift_pause:
    reason: Reboot scheduled by Azure
    event_id: C7061BAC-AFDC-4513-B24B-AA5F13A16123
    holder: maintenance playbook
    systemd_units: [ansible-pull.timer, chef-client.timer]
    systemd_mask: true
    systemd_wait_timeout: 900
    guard: true
  become: true
  register: drift_hold

- name: Show who holds what
  ansible.builtin.debug:
    msg: "{{ drift_hold.holds.reasons | map(attribute='text') | list }}"

- name: Release the event's reason (its reason_id defaulted to the event id)
  imds.scheduled_events.drift_pause:
    state: resumed
    event_id: C7061BAC-AFDC-4513-B24B-AA5F13A16123
  become: true

- name: Drain from a load balancer with operator commands (argument lists, no shell)
  imds.scheduled_events.drift_pause:
    reason: Maintenance window
    reason_id: window
    commands:
      - name: lb
        hold: [/usr/local/bin/lb-member, drain]
        release: [/usr/local/bin/lb-member, undrain]
        timeout: 120
  become: true

- name: Break glass - drop every reason and restore everything
  imds.scheduled_events.drift_pause:
    state: resumed
    all_reasons: true
  become: true
"""

RETURN = r"""
backends:
  description:
    - What this task did (in check mode, would do) to each target, keyed by target (V(systemd:<unit>), V(puppet),
      V(guard), V(command:<name>)).
  returned: always
  type: dict
  contains:
    backend:
      description: V(systemd), V(puppet), V(guard) or V(command).
      type: str
    name:
      description: The unit, V(puppet-agent), V(imds-drift-guard) or the command's name.
      type: str
    changed:
      description: Whether anything changed for this target.
      type: bool
    steps:
      description: The steps that ran, for example V(stop ansible-pull.timer) or V(drop reason 'CHG-1234').
      type: list
      elements: str
    state:
      description:
        - V(held), V(holding) (incomplete, see RV(backends.error)), V(releasing) (incomplete), V(released) or
          V(not held).
      type: str
    reasons:
      description: The ids of the reasons holding it after the task.
      type: list
      elements: str
    notes:
      description: Things worth knowing, for example that puppet was already disabled by someone else.
      type: list
      elements: str
    error:
      description: Why a step failed; the task fails too.
      type: str
      returned: when a step failed
  sample:
    systemd:ansible-pull.timer:
      backend: systemd
      name: ansible-pull.timer
      changed: true
      steps: ["hold for reason 'CHG-1234'", stop ansible-pull.timer, wait for ansible-pull.service to finish]
      state: held
      reasons: [CHG-1234]
      notes: []
holds:
  description: The full hold status after the task, as C(imds-hold status --json) prints it.
  returned: always
  type: dict
  contains:
    state_file:
      description: The hold record's path.
      type: str
    held:
      description: Whether anything is held.
      type: bool
    updated:
      description: When the record was last written (UTC, ISO 8601).
      type: str
    targets:
      description:
        - Every held target with its C(phase), C(prior) state, planned C(actions), C(done) steps, C(reasons),
          C(notes) and a one-line C(summary).
      type: list
      elements: dict
    reasons:
      description:
        - Every reason (C(id), C(text), C(event_id), C(holder), C(since)) with the C(targets) it holds.
      type: list
      elements: dict
  sample:
    state_file: /var/lib/imds-scheduled-events/holds.json
    held: true
    updated: "2025-06-01T10:00:00Z"
    reasons:
      - id: CHG-1234
        text: Kernel patching
        event_id: null
        holder: alice (drift_pause)
        since: "2025-06-01T10:00:00Z"
        targets: [puppet, systemd:ansible-pull.timer]
    targets:
      - key: systemd:ansible-pull.timer
        backend: systemd
        name: ansible-pull.timer
        phase: held
        since: "2025-06-01T10:00:00Z"
        held_at: "2025-06-01T10:00:04Z"
        prior: {ActiveState: active, SubState: waiting, UnitFileState: enabled, LoadState: loaded, Type: "",
                Triggers: [ansible-pull.service]}
        actions: [stop, wait]
        done: [stop, wait]
        notes: []
        reasons: [{id: CHG-1234, text: Kernel patching, event_id: null, holder: alice (drift_pause),
                   since: "2025-06-01T10:00:00Z"}]
        summary: stopped by the hold (was active, enabled); release restores that
state_file:
  description: The hold record's path.
  returned: always
  type: str
  sample: /var/lib/imds-scheduled-events/holds.json
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import (
    CommandBackend, GuardBackend, PuppetBackend, SystemdBackend, Target, normalize_unit)
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.cli import default_holder
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.common import HoldError
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import (
    HoldManager, Reason, default_reason_id)

STATE_FILE = "/var/lib/imds-scheduled-events/holds.json"


def targets_from(params, paused):
    """Backend options to targets; for a release only their names matter."""
    units = [normalize_unit(u) for u in params["systemd_units"]]
    if not paused:
        targets = [Target(SystemdBackend.kind, u, {}) for u in units]
        if params["puppet"]:
            targets.append(Target(PuppetBackend.kind, PuppetBackend.NAME, {}))
        if params["guard"]:
            targets.append(Target(GuardBackend.kind, GuardBackend.NAME, {}))
        return targets + [Target(CommandBackend.kind, c["name"], {}) for c in params["commands"]]
    targets = [SystemdBackend.target(u, mask=params["systemd_mask"], wait_timeout=params["systemd_wait_timeout"])
               for u in units]
    if params["puppet"]:
        targets.append(PuppetBackend.target())
    if params["guard"]:
        targets.append(GuardBackend.target(wait_timeout=params["guard_wait_timeout"]))
    for command in params["commands"]:
        for part in ("hold", "release"):
            if not command.get(part):
                raise ValueError("commands: %s needs %r to pause" % (command["name"], part))
        targets.append(CommandBackend.target(command["name"], command["hold"], command["release"],
                                             timeout=command["timeout"]))
    return targets


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["paused", "resumed"], default="paused"),
            reason=dict(type="str"),
            reason_id=dict(type="str"),
            event_id=dict(type="str"),
            holder=dict(type="str"),
            all_reasons=dict(type="bool", default=False),
            systemd_units=dict(type="list", elements="str", default=[]),
            systemd_mask=dict(type="bool", default=False),
            systemd_wait_timeout=dict(type="int", default=600),
            puppet=dict(type="bool", default=False),
            guard=dict(type="bool", default=False),
            guard_wait_timeout=dict(type="int", default=600),
            commands=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                hold=dict(type="list", elements="str"),
                release=dict(type="list", elements="str"),
                timeout=dict(type="int", default=300),
            )),
            state_file=dict(type="path", default=STATE_FILE),
        ),
        required_if=[("state", "paused", ("reason",))],
        supports_check_mode=True,
    )
    params = module.params
    paused = params["state"] == "paused"
    if params["all_reasons"] and (paused or params["reason_id"]):
        module.fail_json(msg="all_reasons applies to state=resumed only, without reason_id")
    reason_id = params["reason_id"] or default_reason_id(params["event_id"])
    state_file = params["state_file"]
    try:
        manager = HoldManager(state_file=state_file)
        state_file = manager.state_file
        targets = targets_from(params, paused)
        if paused:
            reason = Reason(reason_id, params["reason"], event_id=params["event_id"],
                            holder=params["holder"] or default_holder("drift_pause"))
            outcome = manager.hold(reason, targets, check_mode=module.check_mode)
        else:
            outcome = manager.release(reason_id=reason_id, targets=targets, all_reasons=params["all_reasons"],
                                      check_mode=module.check_mode)
    except (HoldError, ValueError) as exc:
        module.fail_json(msg=str(exc), state_file=state_file)

    data = outcome.as_dict()
    result = dict(changed=outcome.changed, backends=data["backends"], holds=data["holds"],
                  state_file=state_file)
    if module._diff:
        result["diff"] = dict(before=outcome.before["targets"], after=outcome.after["targets"],
                              before_header=state_file, after_header=state_file)
    if outcome.failed:
        module.fail_json(msg="; ".join(outcome.errors), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
