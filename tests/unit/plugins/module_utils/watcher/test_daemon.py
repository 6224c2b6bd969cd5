# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The daemon against the simulator on 127.0.0.1, stepped tick by tick on a manual clock:
real hold record and operator commands, real hooks, real journal, state and metrics files."""

from __future__ import annotations

import json
import os
import signal

from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher import config as config_mod
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.daemon import Daemon, read_boot_id
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import TRUST

REBOOT_ID = "4CAEA225-A741-474D-A72E-428C86FCD853"
FREEZE_ID = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
PREEMPT_ID = "1E5F1B9A-3C6D-4E8F-9A0B-2C3D4E5F6A7B"
PEER_ID = "9D8C7B6A-5F4E-4D3C-8B2A-1F0E9D8C7B6A"
REBOOT = {"id": REBOOT_ID, "type": "Reboot", "resources": ["myvm"], "at": 5, "notice": 900, "started_for": 600}
FREEZE = {"id": FREEZE_ID, "type": "Freeze", "resources": ["myvm"], "at": 5, "notice": 900, "started_for": 60,
          "duration": 5}
PREEMPT = {"id": PREEMPT_ID, "type": "Preempt", "resources": ["myvm"], "at": 5}
RULES = {"rules": [{"name": "short-freeze", "when": "EventType=='Freeze' && DurationInSeconds < `10`"},
                   {"name": "spot", "when": "EventType=='Preempt'"}]}


def test_reboot_lifecycle_with_the_reboot_it_causes(rig_factory):
    rig = rig_factory([REBOOT])
    rig.hook("pre", "10-drain")
    rig.hook("post", "10-check")
    rig.hook("post", "20-reboot-only", event_type="Reboot")
    rules = {"rules": [{"name": "reboot-after-hooks", "when": "EventType=='Reboot'"}]}
    daemon = rig.daemon(approval=rules)
    for dummy in range(4):
        assert rig.tick(daemon) == 1.0
    assert rig.marks() == []
    rig.tick(daemon)  # t=5: it appears; held, hooked and approved in this tick
    assert rig.marks() == ["hold %s" % REBOOT_ID]
    assert rig.hooks_ran() == ["pre 10-drain %s Scheduled -" % REBOOT_ID]
    assert rig.event(REBOOT_ID).approved_by == ["myvm"]
    assert rig.holds().status()["reasons"][0]["holder"] == "imds-watcher"
    rig.tick(daemon)
    assert daemon.machine.record(REBOOT_ID)["state"] == "started"
    # the VM reboots: IMDS is unreachable for a while, then a new process with a new boot id
    rig.control("POST", "/vms/myvm/reboot", {"seconds": 30})
    for expected in (1.0, 2.0, 4.0, 5.0):
        assert rig.tick(daemon) == expected
    assert rig.marks() == ["hold %s" % REBOOT_ID]  # errors never release
    rig.advance(30, settle=True)
    daemon = rig.daemon(boot="boot-b", approval=rules)
    rig.tick(daemon)
    assert rig.marks() == ["hold %s" % REBOOT_ID, "release %s" % REBOOT_ID]
    assert rig.hooks_ran()[1:] == ["post 10-check %s Started completed" % REBOOT_ID,
                                   "post 20-reboot-only %s Started completed" % REBOOT_ID]
    assert rig.holds().status()["held"] is False
    assert rig.transitions(REBOOT_ID) == ["detected", "holding", "held", "pre_hooks", "ready", "approving",
                                          "approved", "started", "gone", "post_hooks", "releasing", "released"]
    for dummy in range(5):  # the Started tail after the reboot is not held again
        rig.tick(daemon)
    assert len(rig.marks()) == 2
    metrics = (rig.tmp / "metrics" / "imds_scheduled_events.prom").read_text()
    assert "imds_scheduled_events_holds_active 0\n" in metrics
    assert "imds_scheduled_events_last_successful_poll_timestamp_seconds %r\n" % rig.time.wall() in metrics
    assert [line.split(": ")[1].split(" ")[0] for line in rig.syslog[:2]] == ["detected", "held"]


def test_freeze_and_preempt_are_approved_in_the_tick_that_sees_them(rig_factory):
    rig = rig_factory([FREEZE, PREEMPT])
    daemon = rig.daemon(approval=RULES)
    for dummy in range(5):
        rig.tick(daemon)
    preempt = rig.event(PREEMPT_ID)
    assert preempt.approved_by == ["myvm"] and preempt.started_at - preempt.appeared_at <= 1
    assert rig.event(FREEZE_ID).approved_by == ["myvm"]
    # one target, two reasons: the hold command runs once, the release once the last reason goes
    assert len(rig.marks()) == 1 and rig.marks()[0].startswith("hold ")
    assert sorted(r["id"] for r in rig.holds().status()["reasons"]) == sorted([FREEZE_ID, PREEMPT_ID])
    for dummy in range(70):
        rig.tick(daemon)
    assert len(rig.marks()) == 2 and rig.marks()[1].startswith("release ")
    assert rig.holds().status()["held"] is False
    assert daemon.metrics.get("approvals_total") == 2
    assert daemon.metrics.get("events_seen_total", type="Freeze") == 1


def test_cancelled_event(rig_factory):
    rig = rig_factory([dict(REBOOT, cancel_at=60)])
    rig.hook("post", "10-check")
    daemon = rig.daemon()
    for dummy in range(64):
        rig.tick(daemon)
    assert rig.marks() == ["hold %s" % REBOOT_ID, "release %s" % REBOOT_ID]
    assert rig.hooks_ran() == ["post 10-check %s Scheduled cancelled" % REBOOT_ID]
    assert rig.journal()[-1]["outcome"] == "cancelled"


def test_an_event_for_another_vm_only_holds_nothing(rig_factory):
    rig = rig_factory([dict(REBOOT, id=PEER_ID, resources=["myvm-peer"])])
    daemon = rig.daemon(approval={"rules": [{"name": "all", "when": "`true`"}]})
    for dummy in range(10):
        rig.tick(daemon)
    assert rig.marks() == [] and rig.holds().status()["held"] is False
    assert rig.transitions(PEER_ID) == ["detected", "ignored"]
    assert rig.event(PEER_ID).approved_by == []


def test_a_shared_event_is_held_but_not_approved_early(rig_factory):
    rig = rig_factory([dict(FREEZE, resources=["myvm", "myvm-peer"])])
    daemon = rig.daemon(approval=RULES)
    for dummy in range(8):
        rig.tick(daemon)
    assert rig.marks() == ["hold %s" % FREEZE_ID] and rig.event(FREEZE_ID).approved_by == []
    assert "note" in rig.transitions(FREEZE_ID)
    rig2 = rig_factory([dict(FREEZE, resources=["myvm", "myvm-peer"])])
    shared = {"rules": [{"name": "set", "when": "EventType=='Freeze'", "allow_shared": True}]}
    daemon = rig2.daemon(approval=shared)
    for dummy in range(6):
        rig2.tick(daemon)
    assert rig2.event(FREEZE_ID).approved_by == ["myvm"]


def test_imds_errors_back_off_and_never_release(rig_factory):
    rig = rig_factory([REBOOT])
    daemon = rig.daemon()
    for dummy in range(6):
        rig.tick(daemon)
    rig.control("POST", "/faults", {"kind": "status", "code": 500, "count": 5})
    delays = [rig.tick(daemon) for dummy in range(6)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 1.0]
    assert daemon.metrics.get("imds_errors_total") == 5
    rig.control("POST", "/faults", {"kind": "malformed", "count": 3})
    for dummy in range(3):
        rig.tick(daemon)
    assert rig.marks() == ["hold %s" % REBOOT_ID]
    assert daemon.machine.record(REBOOT_ID)["state"] == "ready"


def test_a_failing_hold_keeps_retrying_and_never_approves(rig_factory):
    rig = rig_factory([FREEZE])
    settings = rig.settings()
    settings["hold"]["commands"][0]["hold"] = ["/bin/sh", "-c", "echo 'cannot drain' >&2; exit 1"]
    daemon = Daemon(config_mod.parse(dict(settings, approval=RULES)), trust=TRUST, **rig.daemon_options())
    daemon.start()
    for dummy in range(40):
        rig.tick(daemon)
    assert rig.event(FREEZE_ID).approved_by == []
    rec = daemon.machine.record(FREEZE_ID)
    assert rec["state"] == "holding" and "cannot drain" in rec["error"]
    assert rig.transitions(FREEZE_ID).count("hold_failed") == 1
    assert daemon.metrics.get("action_failures_total", action="hold") > 3


def test_a_failing_pre_hook_blocks_approval(rig_factory):
    rig = rig_factory([FREEZE])
    rig.hook("pre", "10-fails", rc=4)
    daemon = rig.daemon(approval=RULES)
    for dummy in range(8):
        rig.tick(daemon)
    assert rig.event(FREEZE_ID).approved_by == []
    assert daemon.machine.record(FREEZE_ID)["state"] == "blocked"
    assert daemon.metrics.get("hook_failures_total", phase="pre") == 1
    blocked = [e for e in rig.journal() if e["transition"] == "blocked"][0]
    assert "10-fails exited 4" in blocked["detail"] and blocked["data"]["runs"][0]["rc"] == 4


def test_sigterm_saves_and_releases_nothing(rig_factory):
    rig = rig_factory([dict(REBOOT, at=1)])
    daemon = rig.daemon(start=False)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        rig.time.sleep(seconds)
        if len(sleeps) == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the daemon's own handler

    daemon.sleep = sleep
    previous = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    try:
        assert daemon.run() == 0
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert rig.marks() == ["hold %s" % REBOOT_ID] and rig.holds().status()["held"] is True
    saved = json.loads((rig.tmp / "state" / "watcher-state.json").read_text())
    assert saved["events"][REBOOT_ID.lower()]["state"] == "ready"


def test_a_corrupt_state_adopts_the_holds_and_releases_only_when_the_event_is_over(rig_factory):
    rig = rig_factory([REBOOT])
    rig.hook("pre", "10-drain")
    daemon = rig.daemon()
    for dummy in range(6):
        rig.tick(daemon)
    (rig.tmp / "state" / "watcher-state.json").write_text("{torn")
    daemon = rig.daemon()
    rig.tick(daemon)
    assert daemon.machine.record(REBOOT_ID)["adopted"] is True
    assert [n for n in os.listdir(str(rig.tmp / "state")) if ".corrupt-" in n]
    assert rig.marks() == ["hold %s" % REBOOT_ID]
    for dummy in range(5):
        rig.tick(daemon)
    assert rig.marks() == ["hold %s" % REBOOT_ID]
    rig.control("POST", "/events/%s/cancel" % REBOOT_ID)
    for dummy in range(2):
        rig.tick(daemon)
    assert rig.marks() == ["hold %s" % REBOOT_ID]
    rig.tick(daemon)
    assert rig.marks() == ["hold %s" % REBOOT_ID, "release %s" % REBOOT_ID]


def test_a_crash_at_every_tick_changes_nothing(rig_factory):
    rig = rig_factory([FREEZE])
    for tick in range(80):
        daemon = rig.daemon(approval=RULES)  # a new process from the files on disk, every tick
        rig.tick(daemon)
    assert rig.marks() == ["hold %s" % FREEZE_ID, "release %s" % FREEZE_ID]
    assert rig.event(FREEZE_ID).approved_by == ["myvm"]
    assert rig.transitions(FREEZE_ID)[-1] == "released"


def test_hold_settings_reach_the_hold_library(rig_factory):
    rig = rig_factory([])
    daemon = rig.daemon(hold={"state_file": str(rig.tmp / "holds" / "holds.json")})
    assert daemon.targets == []
    rig.tick(daemon)
    assert daemon.act(_hold_decision()).ok  # nothing configured to hold: nothing to fail


def _hold_decision():
    from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.machine import Hold
    return Hold(REBOOT_ID, {"EventId": REBOOT_ID}, "test")


def test_defaults_for_the_real_world(tmp_path):
    settings = {"vm_name": "myvm", "state_dir": str(tmp_path), "metrics_file": ""}
    daemon = Daemon(config_mod.parse(settings), boot_id="b")
    assert daemon.client.retries == 0 and daemon.client.first_timeout == 120.0 and daemon.client.timeout == 5.0
    assert daemon.client.endpoint == "http://169.254.169.254" or os.environ.get("IMDS_ENDPOINT")
    assert daemon.holds.state_file == "/var/lib/imds-scheduled-events/holds.json"
    assert daemon.next_delay() == 1.0
    assert read_boot_id(str(tmp_path / "none")) is None
    assert read_boot_id() is None or len(read_boot_id()) == 36
