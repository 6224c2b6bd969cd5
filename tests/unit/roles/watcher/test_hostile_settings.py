# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The watcher role's settings that it writes into the systemd unit, the ansible-pull drop-in and the cron job,
with every hostile value (tests/unit/utils/hostile.py), through Ansible's own templating as the template module
uses it (the role's defaults and vars are templates, the settings are data, as a user's !unsafe values or a
lookup's are): the role's preflight refuses exactly the values that would add a line (a line break, NUL, a
trailing backslash) or that systemd would split (a ReadWritePaths= path with blanks, quotes or a backslash); every
other value leaves the files with the same directives and cron jobs, and arrives intact once systemd's %% and
cron's \\% are read back. (tests/system/test_pull_packaged_ansible.py applies the role with hostile settings on
Debian 12's ansible-core 2.14 and Debian 13's 2.19.)"""

from __future__ import annotations

import os
import re

import pytest

from ansible.template import trust_as_template

from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile, role_templates

ROLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "roles", "watcher")
VALUES = hostile.strings("/nonexistent/canary")
PREFLIGHT = "Assert that no setting would add a line to the unit, the drop-in or the cron job"


def role_variables(settings):
    """The variables the role's tasks give its templates, with `settings` (data)."""
    variables = dict(settings)
    variables.update({"__watcher_detect_container": {"rc": 1, "stdout": ""}, "ansible_managed": "Ansible managed",
                      "__watcher_cron_guarded": True, "__watcher_pull_unit": {"stdout": ""}})
    variables["__watcher_pull_commands"] = [settings.get("watcher_ansible_pull_command", "/usr/bin/ansible-pull")]
    return variables


def render(settings, template):
    return role_templates.render(ROLE, template, role_variables(settings))


def preflight_passes(settings):
    """The role's own assertion, its conditions evaluated as the assert module does."""
    task = next(t for t in role_templates.load(ROLE, "tasks/preflight.yml") if t["name"] == PREFLIGHT)
    engine = role_templates.templar(ROLE, dict(role_variables(settings), **role_templates.trusted(task["vars"])))
    return all(engine.template(trust_as_template("{{ (%s) | bool }}" % cond)) for cond in task["ansible.builtin.assert"]["that"])


def settings_for(value):
    return {"watcher_unit_read_write_paths": ["/srv/" + value], "watcher_unit_capabilities": ["CAP_" + value],
            "watcher_unit_extra_options": ["Environment=HOSTILE=" + value],
            "watcher_ansible_pull_command": "/usr/bin/ansible-pull --url " + value,
            "watcher_ansible_pull_cron_log": "/var/log/" + value, "watcher_ansible_pull_cron_user": "root"}


def directives(unit):
    """(section, key) of each directive, as systemd reads the file (a trailing backslash continues a line)."""
    found, section = [], None
    for line in unit.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
        else:
            found.append((section, line.split("=", 1)[0]))
    return found


def refused(value):
    """What the role must refuse: a line break or NUL or trailing backslash anywhere, blanks, quotes or a
    backslash in a path."""
    return bool(re.search("[\r\n\x00]", value) or value.endswith("\\") or re.search("[\\s\"'\\\\]", value))


BASELINE = settings_for("x")


@pytest.mark.parametrize("case", VALUES, ids=hostile.ids(VALUES))
def test_a_setting_adds_no_line_and_arrives_intact(case):
    settings = settings_for(case.value)
    assert preflight_passes(settings) is not refused(case.value), "refused exactly when it would break a file"
    unit = render(settings, "imds-watcher.service.j2")
    dropin = render(settings, "ansible-pull-guard.conf.j2")
    cron = render(settings, "ansible-pull.cron.j2")
    hostile.assert_no_trace("/nonexistent/canary", unit, dropin, cron)
    if refused(case.value):
        return
    assert directives(unit) == directives(render(BASELINE, "imds-watcher.service.j2")), "no directive added"
    assert directives(dropin) == [("[Service]", "ExecStart")] * 2
    paths = [line[len("ReadWritePaths="):] for line in unit.splitlines() if line.startswith("ReadWritePaths=")]
    assert paths[-1].replace("%%", "%") == "/srv/" + case.value, "the path arrives, % escaped as %%"
    assert ("Environment=HOSTILE=" + case.value) in unit.splitlines(), "extra options are unit syntax, as written"
    command = [line for line in dropin.splitlines() if line.startswith("ExecStart=/")][0].split(" -- ", 1)[1]
    assert command.replace("%%", "%") == settings["watcher_ansible_pull_command"]
    jobs = [line for line in cron.splitlines() if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(jobs) == 1, "one cron job"
    assert jobs[0].replace("\\%", "%").endswith(" -- %s >>/var/log/%s 2>&1" % (settings["watcher_ansible_pull_command"],
                                                                               case.value)), "cron's \\% read back"
