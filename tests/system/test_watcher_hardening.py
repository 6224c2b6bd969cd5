# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The watcher unit's sandbox as systemd itself rates it: `systemd-analyze security` on the unit the
role renders with its defaults, loaded by the systemd of each Debian release (247, 252, 257), which must
also know every setting in it (an unknown one is silently ignored: a sandbox lost on that release).

Why: the daemon runs as root, so its unit must confine it; an exposure above 5.0 ("MEDIUM" and worse)
would mean a setting was lost from the template. Each setting that still counts against the score is
listed in ALLOWED with the reason it stays, and docs/reliability.md explains them; a new one fails here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit" / "utils"))
import role_templates  # noqa: E402  pylint: disable=wrong-import-position,import-error

ROLE = ROOT / "roles" / "watcher"
UNIT_NAME = "imds-watcher-hardening-check.service"
UNIT = "/etc/systemd/system/" + UNIT_NAME
MAX_EXPOSURE = 5.0
# What systemd-analyze still counts against the unit with the role's defaults, and why it stays
# (docs/reliability.md, "Least privilege"). Keys are systemd-analyze's setting names.
ALLOWED = {
    "User=/DynamicUser=": "runs as root: a hold stops units, disables puppet and runs operator commands",
    "CapabilityBoundingSet=~CAP_(CHOWN|FSETID|SETFCAP)": "hold commands and hooks may restore ownership",
    "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)": "root's files: state, hold record, puppet's lock",
    "CapabilityBoundingSet=~CAP_KILL": "a hook's timeout kills its whole process group",
    "CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)": "puppet agent and operator commands may switch users",
    "SystemCallFilter=~@privileged": "@system-service keeps chown and friends, for the same commands",
    "SystemCallFilter=~@resources": "hooks may nice/ionice their work",
    "DeviceAllow=": "only char-rtc:r, which ProtectClock=yes adds; PrivateDevices=yes hides the rest",
    "IPAddressDeny=": "IMDS, webhooks and SMTP relays are site-specific addresses",
    "PrivateNetwork=": "IMDS is reached over the network",
    "RestrictAddressFamilies=~AF_(INET|INET6)": "IMDS, webhooks and SMTP",
    "RestrictAddressFamilies=~AF_UNIX": "D-Bus to systemd, syslog",
    "PrivateUsers=": "root of the host user namespace is needed to hold host units",
    "PrivateMounts=": "the watcher never mounts; left off so hooks behave as on the host",
    "ProcSubset=": "hooks and hold commands (systemctl, puppet) read /proc",
    "ProtectProc=": "systemctl and puppet inspect other processes",
    "ProtectHome=": "read-only, not hidden: operators' hooks may read files in /root",
    "RootDirectory=/RootImage=": "the daemon drives the host's systemd and puppet",
    "UMask=": "0022: the hold record is read by imds-drift-guard as other users",
}


def render_unit(in_container=False, template="imds-watcher.service.j2"):
    """The role's template with its defaults, through Ansible's own templating (as the template module does)."""
    text = role_templates.render(str(ROLE), template, {
        "__watcher_detect_container": {"rc": 0 if in_container else 1, "stdout": "docker" if in_container else ""},
        "ansible_managed": "Ansible managed"})
    assert "{{" not in text and "{%" not in text
    return text


def analyse(container, unit_text):
    """Load the unit into the container's systemd (never started) and rate it; also what systemd ignored in it.

    Loaded rather than `--offline`: systemd 247 (Debian 11) has no offline mode, and loading is what shows an
    unknown setting."""
    cursor = container.ssh(["journalctl", "--show-cursor", "-n", "0", "--no-pager"]).stdout.strip().split("cursor: ")[-1]
    container.put_file(UNIT, unit_text)
    try:
        container.ssh(["systemctl", "daemon-reload"])
        proc = container.ssh(["systemd-analyze", "security", "--no-pager", UNIT_NAME], check=False)
        journal = container.ssh(["journalctl", "--after-cursor", cursor, "--no-pager", "-o", "cat"]).stdout
    finally:
        container.ssh(["rm", "-f", UNIT])
        container.ssh(["systemctl", "daemon-reload"])
    output = proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    ignored = [line for line in journal.splitlines() if UNIT_NAME in line or UNIT in line]
    return float(match.group(1)), output, ignored


def exposures(output):
    """The settings that still count: lines marked ✗ with a non-zero weight."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "✗":
            found[parts[1]] = line
    return found


@pytest.mark.parametrize("in_container", [False, True], ids=["vm", "container"])
def test_watcher_unit_exposure_is_at_most_5(systemd_container, in_container):
    exposure, output, ignored = analyse(systemd_container, render_unit(in_container))
    assert not ignored, "this release's systemd complains about the unit:\n%s" % "\n".join(ignored)
    print("exposure (%s): %.1f\n%s" % ("container" if in_container else "vm", exposure, output))
    assert exposure <= MAX_EXPOSURE, output
    unexplained = dict((k, v) for k, v in exposures(output).items() if k not in ALLOWED)
    if in_container:  # documented in the template: the host's boot id would hide the container's reboots
        unexplained = dict((k, v) for k, v in unexplained.items()
                           if k not in ("ProtectKernelTunables=", "ProtectControlGroups="))
    assert not unexplained, "exposures without a reason in ALLOWED and docs/reliability.md:\n%s" % "\n".join(
        unexplained.values())


def test_the_documented_exposures_are_the_ones_allowed_here():
    doc = (ROOT / "docs" / "reliability.md").read_text().replace("\\|", "|")  # pipes escaped in the table
    missing = [name for name in ALLOWED if "`%s`" % name not in doc]
    assert not missing, "docs/reliability.md does not explain %s" % ", ".join(missing)


# imds-watcher-boot.service (tasks/boot.yml) runs early in every boot and only reads the hold record and asks systemd
# to cancel a start: what still counts against it, and why (docs/role-watcher.md, "The unit's hardening").
BOOT_ALLOWED = {
    "User=/DynamicUser=": "root: systemd takes a stop or mask request over its private socket from root only",
    "RestrictAddressFamilies=~AF_UNIX": "systemctl reaches systemd over its socket, and the output the journal",
    "DeviceAllow=": "only char-rtc:r, which ProtectClock=yes adds; PrivateDevices=yes hides the rest",
}


def test_boot_unit_exposure_is_low_and_every_setting_known(systemd_container):
    exposure, output, ignored = analyse(systemd_container, render_unit(template="imds-watcher-boot.service.j2"))
    assert not ignored, "this release's systemd complains about the unit:\n%s" % "\n".join(ignored)
    print("exposure (boot unit): %.1f\n%s" % (exposure, output))
    unexplained = dict((k, v) for k, v in exposures(output).items() if k not in BOOT_ALLOWED)
    assert not unexplained, "exposures without a reason in BOOT_ALLOWED and docs/role-watcher.md:\n%s" % "\n".join(
        unexplained.values())
    assert exposure <= 1.0, output


def test_the_documented_boot_unit_exposures_are_the_ones_allowed_here():
    doc = (ROOT / "docs" / "role-watcher.md").read_text().replace("\\|", "|")
    missing = [name for name in BOOT_ALLOWED if "`%s`" % name not in doc]
    assert not missing, "docs/role-watcher.md does not explain %s" % ", ".join(missing)
