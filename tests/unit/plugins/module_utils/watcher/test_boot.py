# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""imds-watcher-boot against the fake machine early in a boot (start jobs queued, nothing started yet): what it puts
back, what it says and at which priority, and the safe side when the record cannot be read. The real boot order is
tested with systemd in tests/system/test_watcher_boot_hold.py."""

from __future__ import annotations

import io
import json
import os
import re

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import SystemdBackend
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import HoldManager, Reason
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import boot
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.hold.fakes import (
    FakeSystem, FakeTime, Unit)
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import (
    REBOOT_ID, TRUST, UID)
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile

EVENT = Reason(REBOOT_ID, "Reboot at 10:00", event_id=REBOOT_ID, holder="imds-watcher")
JOURNAL = {"JOURNAL_STREAM": "8:12345", "PATH": "/usr/bin:/bin"}  # systemd sets it when the output goes to the journal


@pytest.fixture
def vm(tmp_path):
    """The fake machine with an enabled ansible-pull.timer and chef-client.timer, the record's directory and the
    watcher's config (holding both timers)."""
    system = FakeSystem(FakeTime())
    system.ansible_pull()
    system.add(Unit("chef-client.timer", active="active", triggers=["chef-client.service"]))
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    config = tmp_path / "watcher.json"
    config.write_text(json.dumps({"hold": {"systemd_units": ["ansible-pull.timer", "chef-client.timer"]}}))
    os.chmod(str(tmp_path), 0o755)
    os.chmod(str(config), 0o644)
    system.state_file = str(state_dir / "holds.json")
    system.config = str(config)
    return system


def options(vm):
    return {"run": vm.run, "owner_uid": UID}


def run_boot(vm, environ=None):
    """(exit status, lines on stderr) of imds-watcher-boot early in a boot."""
    err = io.StringIO()
    code = boot.main(["--state-file", vm.state_file, "--config", vm.config], stderr=err,
                     environ=JOURNAL if environ is None else dict(environ, PATH="/usr/bin:/bin"), config_trust=TRUST, **options(vm))
    return code, err.getvalue().splitlines()


def hold_timer(vm):
    HoldManager(state_file=vm.state_file, **options(vm)).hold(EVENT, [SystemdBackend.target("ansible-pull.timer")])


def started_or_unmasked(vm):
    return [c for c in vm.calls if c[0] == "systemctl" and c[1] in ("start", "unmask")]


def test_nothing_held_says_so_and_touches_nothing(vm):
    vm.reboot(early=True)
    assert run_boot(vm) == (0, ["<6>imds-watcher-boot: nothing is held (%s): nothing to put back" % vm.state_file])
    assert vm.calls == []
    code, lines = run_boot(vm, environ={})
    assert lines == ["imds-watcher-boot: nothing is held (%s): nothing to put back" % vm.state_file], \
        "no priority prefix on a terminal"


def test_a_held_timer_is_kept_from_starting_and_the_rest_of_the_boot_goes_on(vm):
    hold_timer(vm)
    vm.reboot(early=True)
    vm.calls = []
    code, lines = run_boot(vm)
    assert code == 0
    assert lines == ["<6>imds-watcher-boot: systemd:ansible-pull.timer (held by %s): stop ansible-pull.timer (its "
                     "start at boot is cancelled)" % REBOOT_ID]
    assert started_or_unmasked(vm) == []
    vm.finish_boot()
    assert vm.units["ansible-pull.timer"].active == "inactive", "held: its start was cancelled before it could fire"
    assert vm.units["chef-client.timer"].active == "active", "not held: it starts as usual"


def test_a_hold_it_cannot_put_back_fails_the_unit_loudly_and_is_kept(vm):
    hold_timer(vm)
    vm.reboot(early=True)
    vm.fail[("stop", "ansible-pull.timer")] = 1
    code, lines = run_boot(vm)
    assert code == 1
    assert lines[0].startswith("<3>imds-watcher-boot: systemd:ansible-pull.timer (held by %s): could not put the "
                               "hold back: systemctl stop --no-block -- ansible-pull.timer exited with 1" % REBOOT_ID)
    assert HoldManager(state_file=vm.state_file, **options(vm)).status()["held"]


def corrupt(vm):
    with open(vm.state_file, "w") as handle:
        handle.write("{not json")


def writable_by_others(vm):
    hold_timer(vm)
    os.chmod(vm.state_file, 0o666)


def symlinked(vm):
    target = vm.state_file + ".elsewhere"
    with open(target, "w") as handle:
        json.dump({"format": "imds-scheduled-events/holds", "version": 1, "targets": {}}, handle)
    os.symlink(target, vm.state_file)


def newer_version(vm):
    with open(vm.state_file, "w") as handle:
        json.dump({"format": "imds-scheduled-events/holds", "version": 99, "targets": {}}, handle)


@pytest.mark.parametrize("spoil", [corrupt, writable_by_others, symlinked, newer_version])
def test_an_unreadable_record_stops_the_units_the_config_holds_for_this_boot_and_releases_nothing(vm, spoil):
    spoil(vm)
    files = sorted(os.listdir(os.path.dirname(vm.state_file)))
    vm.reboot(early=True)
    vm.calls = []
    code, lines = run_boot(vm)
    assert code == 1, "the unit fails: systemctl --failed and a degraded boot show it"
    assert lines[0].startswith("<3>imds-watcher-boot: cannot read the hold record, so nobody can tell what is held: ")
    assert lines[1:] == ["<3>imds-watcher-boot: stopped for this boot, as the watcher's config holds them: "
                         "ansible-pull.timer, chef-client.timer. Nothing is released. Once the record is repaired "
                         "(imds-hold status reads it), start them again (systemctl start ansible-pull.timer "
                         "chef-client.timer) or reboot."]
    assert started_or_unmasked(vm) == []
    assert sorted(os.listdir(os.path.dirname(vm.state_file))) == files, "the record is left as it is, no copy made"
    vm.finish_boot()
    assert vm.units["ansible-pull.timer"].active == vm.units["chef-client.timer"].active == "inactive"


def unreadable_config(vm):
    os.chmod(vm.config, 0o666)


def missing_config(vm):
    os.unlink(vm.config)


def config_without_units(vm):
    with open(vm.config, "w") as handle:
        json.dump({"hold": {"puppet": True}}, handle)


@pytest.mark.parametrize("spoil, says", [
    (unreadable_config, "nothing is held at this boot: the watcher's config cannot tell what to hold either: "),
    (missing_config, "nothing is held at this boot: the watcher's config cannot tell what to hold either: "),
    (config_without_units, "nothing is held at this boot: the watcher's config cannot tell what to hold either: "),
])
def test_an_unreadable_record_and_config_say_that_nothing_is_held(vm, spoil, says):
    corrupt(vm)
    spoil(vm)
    vm.reboot(early=True)
    code, lines = run_boot(vm)
    assert code == 1 and len(lines) == 2
    assert lines[1].startswith("<3>imds-watcher-boot: " + says), lines
    assert [c for c in vm.calls if c[1] != "show"] == []


def test_a_config_holding_no_unit_says_so(vm):
    corrupt(vm)
    with open(vm.config, "w") as handle:
        json.dump({"hold": {"systemd_units": []}}, handle)
    vm.reboot(early=True)
    code, lines = run_boot(vm)
    assert code == 1 and lines[1] == "<3>imds-watcher-boot: the watcher's config %s holds no systemd unit: nothing " \
        "to stop" % vm.config


def test_hostile_unit_names_in_the_config_stay_data(vm, tmp_path):
    """The config is root's, but its values still never become a shell word or an option of systemctl: each one is
    refused by name, and the valid unit beside them is stopped."""
    canary = str(tmp_path / "canary")
    values = [case.value for case in hostile.strings(canary) + hostile.wrong_types()]
    with open(vm.config, "w") as handle:
        json.dump({"hold": {"systemd_units": values + ["ansible-pull.timer"]}}, handle)
    corrupt(vm)
    vm.reboot(early=True)
    vm.calls = []
    code, lines = run_boot(vm)
    assert code == 1
    stopped = [c[-1] for c in vm.calls if c[1] == "stop"]  # the fake checks that each follows `--`
    assert "ansible-pull.timer" in stopped
    assert all(re.match(r"^[A-Za-z0-9:_.@\\-]+\.(service|timer)$", name) for name in stopped), "only unit names"
    refused = [v for v in values if not isinstance(v, str) or not re.match(r"^[A-Za-z0-9:_.@\\-]+$", v)]
    assert len([line for line in lines if line.startswith("<3>imds-watcher-boot: cannot stop ")]) == len(refused)
    assert all(line.isprintable() for line in lines), "one line each, no control characters"
    hostile.assert_no_trace(canary, "\n".join(lines))
