# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The outcome the daemon reports (journal, post-hooks' IMDS_EVENT_OUTCOME, metrics, notifications) is what
happened, against the simulator on 127.0.0.1 with a manual clock and a boot id per process."""

from __future__ import annotations

REBOOT_ID = "4CAEA225-A741-474D-A72E-428C86FCD853"
REBOOT = {"id": REBOOT_ID, "type": "Reboot", "resources": ["myvm"], "at": 2, "notice": 900, "started_for": 600}
GONE = "imds_scheduled_events_events_gone_total{outcome=\"%s\"} %d\n"


def metrics(rig):
    return (rig.tmp / "metrics" / "imds_scheduled_events.prom").read_text()


def test_deallocated_by_its_owner_the_pending_event_vanished(rig_factory):
    """Stopped and deallocated while the Reboot was Scheduled: Azure clears the VM's pending events, and when its
    owner starts it again an hour later (past NotBefore) the event is gone, never Started, and the boot id changed.
    Post-hooks are told `vanished`, not `completed`."""
    rig = rig_factory([REBOOT])
    rig.hook("post", "10-check")
    daemon = rig.daemon()
    for dummy in range(4):
        rig.tick(daemon)
    assert rig.marks() == ["hold %s" % REBOOT_ID]
    rig.control("POST", "/events/%s/cancel" % REBOOT_ID)  # what the deallocation does to pending events
    rig.control("POST", "/vms/myvm/reboot", {"seconds": 3600})
    rig.advance(3600, settle=True)
    daemon = rig.daemon(boot="boot-b")
    for dummy in range(4):
        rig.tick(daemon)
    assert rig.hooks_ran() == ["post 10-check %s Scheduled vanished" % REBOOT_ID]
    assert rig.marks() == ["hold %s" % REBOOT_ID, "release %s" % REBOOT_ID]
    gone = [e for e in rig.journal() if e["transition"] == "gone"]
    assert [e["outcome"] for e in gone] == ["vanished"] and "not seen to start" in gone[0]["detail"]
    assert rig.journal()[-1]["outcome"] == "vanished"
    assert any(("%s: gone (vanished: " % REBOOT_ID) in line for line in rig.syslog), rig.syslog
    assert GONE % ("vanished", 1) in metrics(rig) and GONE % ("completed", 0) in metrics(rig)


def test_a_reboot_seen_started_then_gone_after_the_reboot_completed(rig_factory):
    rig = rig_factory([dict(REBOOT, notice=10, started_for=30)])
    rig.hook("post", "10-check")
    daemon = rig.daemon()
    for dummy in range(14):  # it starts at 12 s, at its NotBefore
        rig.tick(daemon)
    assert daemon.machine.record(REBOOT_ID)["state"] == "started"
    rig.control("POST", "/vms/myvm/reboot", {"seconds": 60})
    rig.advance(60, settle=True)  # back after its Started tail: gone
    daemon = rig.daemon(boot="boot-b")
    for dummy in range(4):
        rig.tick(daemon)
    assert rig.hooks_ran() == ["post 10-check %s Started completed" % REBOOT_ID]
    assert GONE % ("completed", 1) in metrics(rig)
