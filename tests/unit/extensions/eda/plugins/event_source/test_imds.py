# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The imds event source against the simulator on a manual clock: one poll() at a time, no sleeps."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import sys

import pytest

from ansible_collections.imds.scheduled_events.extensions.eda.plugins.event_source import imds as source
from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsClient
from ansible_collections.imds.scheduled_events.plugins.module_utils.sources import ArgumentError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 6))
if os.path.join(ROOT, "simulator") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "simulator"))

from imds_simulator import ControlClient, Simulator  # noqa: E402  pylint: disable=wrong-import-position,import-error

START = "2030-01-01T00:00:00Z"
START_EPOCH = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
REBOOT = "4CAEA225-A741-474D-A72E-428C86FCD853"
FREEZE = "C7061BAC-AFDC-4513-B24B-AA5F13A16123"
PEER = "A626E37F-793E-44E1-89B5-99AE0B96044C"
VMS = [{"name": "myvm", "availability_set": "as1"}, {"name": "myvm-peer", "availability_set": "as1"}]


@pytest.fixture
def sim():
    # rate_limit 0: the tests poll back to back in real time, faster than IMDS allows (the client paces in use)
    scenario = {"name": "eda", "clock": "manual", "start_time": START, "rate_limit": 0, "vms": VMS, "events": [
        {"id": REBOOT, "type": "Reboot", "resources": ["myvm"], "at": 10, "notice": 900, "started_for": 60},
        {"id": FREEZE, "type": "Freeze", "resources": ["myvm"], "at": 10, "notice": 600, "cancel_at": 100},
        {"id": PEER, "type": "Reboot", "resources": ["myvm-peer"], "at": 10, "notice": 900},
    ]}
    with Simulator.from_scenario(scenario, clock="manual", port=0, control_port=0) as simulator:
        yield simulator


class Rig(object):
    """A source on the simulator's clock: wall time is START + simulated seconds."""

    def __init__(self, sim, tmp_path):
        self.sim = sim
        self.tmp = tmp_path
        self.boot_file = tmp_path / "boot_id"
        self.boot_file.write_text("boot-1\n")

    def wall(self):
        return START_EPOCH + self.sim.world.now()

    def source(self, **args):
        args.setdefault("boot_id_file", str(self.boot_file))
        client = ImdsClient(endpoint=self.sim.endpoint("myvm"), retries=0, timeout=30, first_timeout=60)
        return source.ImdsSource(dict(args, endpoint=self.sim.endpoint("myvm")), client=client, clock=self.wall)

    def advance(self, seconds):
        self.sim.world.advance(seconds)


@pytest.fixture
def rig(sim, tmp_path):
    return Rig(sim, tmp_path)


def changes(events):
    return [(e["change"], e["event_id"], e.get("outcome")) for e in events]


def test_a_reboot_from_appeared_to_gone(rig):
    src = rig.source()
    assert src.poll() == []
    rig.advance(10)
    events = src.poll()
    assert changes(events) == [("appeared", REBOOT, None), ("appeared", FREEZE, None)]  # not the peer's
    reboot = events[0]
    assert reboot["source"] == "imds" and reboot["vm"] == "myvm"
    assert reboot["scheduled_event"]["EventType"] == "Reboot"
    assert reboot["scheduled_event"]["affects_this_vm"] is True
    assert reboot["scheduled_event"]["seconds_until_start"] == 900
    assert reboot["detail"] == "Reboot Scheduled for myvm"
    assert src.poll() == [] and src.poll() == []  # an unchanged document emits nothing
    ImdsClient(endpoint=rig.sim.endpoint("myvm")).approve([REBOOT])
    assert changes(src.poll()) == [("approved", REBOOT, None), ("started", REBOOT, None)]
    rig.advance(61)
    polls = [src.poll() for dummy in range(3)]
    assert polls[0] == [] and polls[1] == []
    assert changes(polls[2]) == [("gone", REBOOT, "completed")]


def test_a_cancelled_freeze_is_gone_cancelled(rig):
    src = rig.source(event_types=["freeze"])
    rig.advance(10)
    assert changes(src.poll()) == [("appeared", FREEZE, None)]
    rig.advance(91)  # cancelled at 100, before its NotBefore
    for dummy in range(2):
        assert src.poll() == []
    assert changes(src.poll()) == [("gone", FREEZE, "cancelled")]


def test_peers_events_only_when_asked(rig):
    src = rig.source(this_vm_only=False, event_types=["Reboot"])
    rig.advance(10)
    events = src.poll()
    assert changes(events) == [("appeared", REBOOT, None), ("appeared", PEER, None)]
    assert events[1]["scheduled_event"]["scope"] == "other_vms"


def name_requests(rig):
    return [r for r in rig.sim.request_log.query("myvm", None, None) if r["path"].startswith("/metadata/instance")]


def test_without_vm_name_and_without_compute_endpoint_it_polls_on_with_scope_unknown(rig, caplog):
    """Microsoft's mock has no /metadata/instance; some images block it. The source behaves like the watcher: events
    go out of scope unknown (never this VM's; this_vm_only cannot tell, so peers' too), one warning that says to
    set vm_name, the name asked again 1, 2, 4 ... s later, and attribution as usual once IMDS gives it."""
    control = ControlClient(rig.sim.control_url)
    control.add_fault(kind="status", code=404, path="/metadata/instance")
    src = rig.source(event_types=["Reboot"])
    rig.advance(10)
    with caplog.at_level(logging.DEBUG, logger=source.__name__):
        events = src.poll()
        assert changes(events) == [("appeared", REBOOT, None), ("appeared", PEER, None)]
        assert all("vm" not in e for e in events)
        assert [(e["scheduled_event"]["scope"], e["scheduled_event"]["affects_this_vm"]) for e in events] == [
            ("unknown", None), ("unknown", None)]
        assert src.poll() == [] and len(name_requests(rig)) == 1, "asked again only when the backoff says"
        rig.advance(1)
        assert src.poll() == [] and len(name_requests(rig)) == 2
        rig.advance(1)
        assert src.poll() == [] and len(name_requests(rig)) == 2, "the second failure waits 2 s"
        control.clear_faults()
        rig.advance(1)
        assert src.poll() == [] and len(name_requests(rig)) == 3
        ImdsClient(endpoint=rig.sim.endpoint("myvm")).approve([REBOOT])
        events = src.poll()
    assert changes(events) == [("approved", REBOOT, None), ("started", REBOOT, None)]
    assert events[0]["vm"] == "myvm" and events[0]["scheduled_event"]["scope"] == "this_vm"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "vm_name is not set and IMDS does not name this VM" in warnings[0]
    assert "404" in warnings[0] and "set vm_name" in warnings[0] and "asked again in 1 s" in warnings[0]
    assert any("this VM is myvm (compute/name, after 2 failed request(s))" in r.getMessage() for r in caplog.records)


def test_with_vm_name_the_compute_endpoint_is_never_asked(rig):
    ControlClient(rig.sim.control_url).add_fault(kind="status", code=404, path="/metadata/instance")
    src = rig.source(vm_name="myvm")
    rig.advance(10)
    assert [e["scheduled_event"]["scope"] for e in src.poll()] == ["this_vm", "this_vm"]
    assert name_requests(rig) == []


def test_imds_failures_are_logged_once_and_the_source_goes_on(rig, caplog):
    control = ControlClient(rig.sim.control_url)
    src = rig.source()
    rig.advance(10)
    control.add_fault(kind="status", code=500, count=3)
    with caplog.at_level(logging.DEBUG, logger=source.__name__):
        assert src.poll() is None
        assert src.next_delay() == 1.0
        assert src.poll() is None
        assert src.next_delay() == 2.0
        assert src.poll() is None
        assert src.next_delay() == 4.0
        assert changes(src.poll()) == [("appeared", REBOOT, None), ("appeared", FREEZE, None)]
    assert src.next_delay() == 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "IMDS poll failed: " in warnings[0] and "500" in warnings[0]
    assert warnings[0].endswith("(1 in a row; next in 1 s)")
    assert any("IMDS answers again after 3 failure(s)" in r.getMessage() for r in caplog.records)


def test_the_backoff_stops_at_max_backoff(rig):
    control = ControlClient(rig.sim.control_url)
    src = rig.source(max_backoff=3)
    control.add_fault(kind="status", code=503, count=5)
    delays = []
    for dummy in range(5):
        assert src.poll() is None
        delays.append(src.next_delay())
    assert delays == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_a_restart_with_a_state_file_neither_repeats_nor_loses(rig):
    state = str(rig.tmp / "state.json")
    src = rig.source(state_file=state)
    rig.advance(10)
    src.poll()
    src.after_poll()
    assert os.stat(state).st_mode & 0o777 == 0o600
    saved = json.loads(open(state).read())
    assert sorted(saved["events"]) == sorted([REBOOT.lower(), FREEZE.lower(), PEER.lower()])  # tracked, not told
    again = rig.source(state_file=state)
    assert again.poll() == []
    rig.advance(91)
    for dummy in range(2):
        again.poll()
    assert changes(again.poll()) == [("gone", FREEZE, "cancelled")]


def test_the_reboot_it_caused_ends_it_across_a_restart(rig):
    state = str(rig.tmp / "state.json")
    src = rig.source(state_file=state, event_types=["Reboot"])
    rig.advance(10)
    src.poll()
    ImdsClient(endpoint=rig.sim.endpoint("myvm")).approve([REBOOT])
    assert changes(src.poll()) == [("approved", REBOOT, None), ("started", REBOOT, None)]
    src.after_poll()
    rig.boot_file.write_text("boot-2\n")  # the VM rebooted; the rulebook starts again
    after = rig.source(state_file=state, event_types=["Reboot"])
    events = after.poll()  # IMDS still shows the Started tail
    assert changes(events) == [("gone", REBOOT, "completed")]
    assert "rebooted" in events[0]["detail"]
    rig.advance(61)
    assert [after.poll() for dummy in range(3)] == [[], [], []]


def test_an_event_gone_across_a_restart_without_starting_vanished(rig):
    """Stopped and deallocated by its owner while the Reboot was Scheduled: Azure clears pending events, and when the
    VM boots again (past NotBefore) the event is gone without having started. Not `completed`: `vanished`."""
    state = str(rig.tmp / "state.json")
    src = rig.source(state_file=state, event_types=["Reboot"])
    rig.advance(10)
    assert changes(src.poll()) == [("appeared", REBOOT, None)]
    src.after_poll()
    ControlClient(rig.sim.control_url).cancel(REBOOT)  # what the deallocation did to it
    rig.advance(3600)
    rig.boot_file.write_text("boot-2\n")
    after = rig.source(state_file=state, event_types=["Reboot"])
    events = [e for dummy in range(3) for e in after.poll()]
    assert changes(events) == [("gone", REBOOT, "vanished")]
    assert events[0]["detail"].startswith("vanished: gone from the document for 3 successful polls; it was not seen")


def test_an_unreadable_state_file_is_moved_aside(rig, caplog):
    state = rig.tmp / "state.json"
    state.write_text("[]")
    os.chmod(str(state), 0o600)
    src = rig.source(state_file=str(state))
    rig.advance(10)
    assert len(src.poll()) == 2
    assert list(rig.tmp.glob("state.json.unreadable-*"))
    assert "is unreadable" in caplog.text


@pytest.mark.parametrize("args, message", [
    ({"poll_intervall": 1}, "unknown argument(s) poll_intervall"),
    ({"poll_interval": 10, "max_backoff": 5}, "max_backoff (5.0) must be at least poll_interval (10.0)"),
    ({"event_types": ["Nap"]}, "Nap not one of Freeze, Reboot, Redeploy, Preempt, Terminate"),
    ({"api_version": "2099-01-01"}, "must be one of"),
    ({"state_file": "state.json"}, "must be an absolute path"),
])
def test_bad_arguments_are_refused_before_anything_runs(args, message):
    with pytest.raises(ArgumentError) as caught:
        source.ImdsSource(args)
    assert message in str(caught.value)


def test_a_bad_endpoint_is_refused():
    with pytest.raises(ArgumentError, match="must not carry a path"):
        source.ImdsSource({"endpoint": "http://127.0.0.1:1/metadata"})


def test_main_puts_events_on_the_queue(sim):
    """ansible-rulebook's contract: main(queue, args) runs until cancelled."""
    sim.world.advance(10)

    async def scenario():
        queue = asyncio.Queue()
        task = asyncio.ensure_future(source.main(queue, {"endpoint": sim.endpoint("myvm"), "vm_name": "myvm",
                                                         "event_types": ["Reboot"], "poll_interval": 0.2}))
        try:
            return await asyncio.wait_for(queue.get(), timeout=120)  # bounds a hang only
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    event = asyncio.run(scenario())
    assert (event["change"], event["event_id"], event["vm"]) == ("appeared", REBOOT, "myvm")
