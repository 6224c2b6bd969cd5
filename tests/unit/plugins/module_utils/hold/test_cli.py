# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""imds-hold: status, hold, release and settle, against the fake machine."""

from __future__ import annotations

import io
import json
import os

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold import cli

UID = os.getuid()


@pytest.fixture
def imds_hold(state_file, system, fake_time):
    def run(*argv, **env):
        out, err = io.StringIO(), io.StringIO()
        status = cli.main(["--state-file", state_file] + list(argv), stdout=out, stderr=err,
                          environ=dict({"SUDO_USER": "alice"}, **env), run=system.run, clock=fake_time.clock,
                          monotonic=fake_time.monotonic, sleep=fake_time.sleep, owner_uid=UID)
        return status, out.getvalue(), err.getvalue()
    return run


def test_status_when_nothing_is_held(imds_hold, state_file):
    assert imds_hold("status") == (0, "Nothing is held (state file %s).\n" % state_file, "")
    status, out, dummy = imds_hold("status", "--json")
    assert status == 0 and json.loads(out)["held"] is False


def test_hold_status_release(imds_hold, system):
    system.ansible_pull()
    status, out, err = imds_hold("hold", "--reason", "kernel patching", "--reason-id", "CHG-1", "--unit",
                                 "ansible-pull.timer", "--puppet", "--guard")
    assert status == 0, err
    assert "systemd:ansible-pull.timer: held (hold for reason 'CHG-1'; stop ansible-pull.timer)" in out
    assert system.units["ansible-pull.timer"].active == "inactive" and system.read_puppet()

    status, out, err = imds_hold("hold", "--reason", "Reboot", "--event-id", "E-1", "--holder", "imds-watcher",
                                 "--unit", "ansible-pull.timer")
    assert status == 0, err

    status, out, dummy = imds_hold("status")
    assert status == 0
    assert "Drift correction is held: 3 target(s), 2 reason(s)" in out
    assert "  CHG-1: kernel patching\n      by alice (imds-hold) since 2025-06-15T15:06:40Z; holds guard, puppet, " \
           "systemd:ansible-pull.timer" in out
    assert "  E-1: Reboot\n      by imds-watcher since 2025-06-15T15:06:40Z, event E-1; holds systemd:ansible-pull.timer" in out
    assert "  systemd:ansible-pull.timer: held since 2025-06-15T15:06:40Z, by CHG-1, E-1\n" \
           "      stopped by the hold (was active, enabled); release restores that" in out

    status, out, dummy = imds_hold("release", "--reason-id", "CHG-1")
    assert status == 0 and "puppet: released" in out and "systemd:ansible-pull.timer: held (drop reason 'CHG-1')" in out
    status, out, dummy = imds_hold("release", "--event-id", "E-1", "--json")
    data = json.loads(out)
    assert status == 0 and data["changed"] and data["holds"]["held"] is False
    assert data["backends"]["systemd:ansible-pull.timer"]["steps"][-2:] == ["start ansible-pull.timer",
                                                                            "release systemd:ansible-pull.timer"]
    assert system.units["ansible-pull.timer"].active == "active" and system.read_puppet() is None


def test_check_changes_nothing(imds_hold, system, state_file):
    system.ansible_pull()
    status, out, dummy = imds_hold("hold", "--reason", "x", "--unit", "ansible-pull.timer", "--check")
    assert status == 0 and "[check] systemd:ansible-pull.timer: held" in out
    assert not os.path.exists(state_file) and system.units["ansible-pull.timer"].active == "active"


def test_commands_and_scoped_release(imds_hold, system):
    spec = json.dumps({"name": "lb", "hold": ["/bin/lb", "drain"], "release": ["/bin/lb", "undrain"], "timeout": 30})
    assert imds_hold("hold", "--reason", "x", "--command", spec, "--guard")[0] == 0
    assert system.commands[-1][0] == ["/bin/lb", "drain"]
    status, out, dummy = imds_hold("release", "--all", "--command-name", "lb")
    assert status == 0 and system.commands[-1][0] == ["/bin/lb", "undrain"]
    assert "guard" in imds_hold("status")[1]


LB = json.dumps({"name": "lb", "hold": ["/bin/lb", "drain"], "release": ["/bin/lb", "undrain"]})


def hold_for_the_watcher(imds_hold):
    status, out, err = imds_hold("hold", "--reason", "Reboot", "--event-id", "E-1", "--holder", "imds-watcher",
                                 "--command", LB)
    assert status == 0, err


def test_a_release_in_progress_says_so_and_asks_nothing(imds_hold, system):
    hold_for_the_watcher(imds_hold)
    seen = []
    real_run = system.run

    def run(argv, *args, **kwargs):  # status, asked while the release runs its step
        if list(argv) == ["/bin/lb", "undrain"]:
            seen.append(imds_hold("status"))
        return real_run(argv, *args, **kwargs)

    system.run = run
    status, out, err = imds_hold("release", "--event-id", "E-1")
    assert status == 0 and "command:lb: released" in out, err
    code, out, err = seen[0]
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith("Drift correction is being released: 1 target(s) not yet restored, no "
                                          "reason holds them (state file ")
    assert "\n  command:lb: being released now (in progress: pid %d, since 2025-06-15T15:06:40Z), its last reason " \
           "E-1 (imds-watcher) was dropped\n" % os.getpid() in out
    assert "incomplete" not in out and "settle" not in out and "run " not in out


def test_an_interrupted_release_says_what_to_do(imds_hold, system):
    hold_for_the_watcher(imds_hold)
    system.command_rc["/bin/lb"] = 1
    status, out, err = imds_hold("release", "--event-id", "E-1")
    assert status == 1 and "/bin/lb undrain exited with 1" in err
    status, out, err = imds_hold("status")
    assert (status, err) == (0, "")
    assert "\n  command:lb: being released (incomplete: run imds-hold settle to finish), its last reason E-1 " \
           "(imds-watcher) was dropped; the release that pid %d started at 2025-06-15T15:06:40Z stopped half way " \
           "(killed, or a step failed)\n" % os.getpid() in out
    assert json.loads(imds_hold("status", "--json")[1])["targets"][0]["in_progress"] is False
    system.command_rc["/bin/lb"] = 0
    status, out, err = imds_hold("settle")
    assert status == 0 and "command:lb: released" in out, err
    assert imds_hold("status")[1].startswith("Nothing is held")


def test_failures_exit_1_and_say_what_is_left(imds_hold, system):
    system.ansible_pull()
    system.start_run("ansible-pull.service", 100)
    status, out, err = imds_hold("hold", "--reason", "x", "--unit", "ansible-pull.timer", "--wait-timeout", "5")
    assert status == 1 and "still running after 5.0 s" in err
    assert "being held (incomplete: run hold again to finish)" in out
    status, out, err = imds_hold("settle")
    assert status == 1 and "still running" in err
    status, out, err = imds_hold("hold", "--reason", "x", "--unit", "ansible-pull.timer", "--wait-timeout", "500")
    assert status == 0, err


def test_errors_before_anything_changes(imds_hold, state_file):
    status, dummy, err = imds_hold("hold", "--reason", "x", "--unit", "nope.timer")
    assert status == 1 and "nope.timer is not installed" in err and not os.path.exists(state_file)
    with open(state_file, "w", encoding="utf-8") as handle:
        handle.write("garbage")
    status, dummy, err = imds_hold("status")
    assert status == 1 and "is corrupt" in err


@pytest.mark.parametrize("argv", [
    ["hold", "--reason", "x"],
    ["hold", "--unit", "a.timer"],
    ["hold", "--reason", "x", "--unit", "a.socket"],
    ["hold", "--reason", "x", "--command", "lb drain"],
    ["hold", "--reason", "x", "--command", '{"name": "lb", "hold": "lb drain", "release": ["x"]}'],
    ["release"],
    ["release", "--all", "--reason-id", "x"],
    [],
])
def test_usage_errors_exit_2(imds_hold, argv, capsys):
    assert imds_hold(*argv)[0] == 2
    capsys.readouterr()


def test_default_holder():
    assert cli.default_holder("imds-hold", {"SUDO_USER": "bob", "USER": "root"}) == "bob (imds-hold)"
    assert cli.default_holder("drift_pause", {"USER": "root"}) == "root (drift_pause)"
    assert cli.default_holder("x", {}) == "uid %d (x)" % UID
