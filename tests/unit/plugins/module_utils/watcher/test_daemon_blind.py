# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The daemon when it cannot do its whole job, against the simulator on 127.0.0.1: without a VM name (IMDS has no
compute/name, as Microsoft's mock), with IMDS silent for long, with an unreadable hold record. It says so in the log,
in `imds-watcher status` and in the metrics, and stays on the safe side: it holds, and approves nothing it cannot
attribute."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re

import pytest

from ansible_collections.imds.scheduled_events.plugins.module_utils.imds import ImdsClient
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.cli import main
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.daemon import Daemon
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import TRUST, UID
from ansible_collections.imds.scheduled_events.tests.unit.utils import hostile
from ansible_collections.imds.scheduled_events.tests.unit.utils.scripted_server import ScriptedServer, answer

REBOOT_ID = "4CAEA225-A741-474D-A72E-428C86FCD853"
PEER_ID = "9D8C7B6A-5F4E-4D3C-8B2A-1F0E9D8C7B6A"
MINE = {"id": REBOOT_ID, "type": "Reboot", "resources": ["myvm"], "at": 3, "notice": 900, "started_for": 600}
PEERS = {"id": PEER_ID, "type": "Reboot", "resources": ["myvm-peer"], "at": 3, "notice": 900, "cancel_at": 120}
APPROVE_ALL = {"rules": [{"name": "all", "when": "`true`"}]}
# An IMDS without the compute endpoint (Microsoft's mock server; images that block it).
NO_COMPUTE = {"kind": "status", "code": 404, "path": "/metadata/instance"}
DEGRADED = "imds_scheduled_events_degraded{reason=\"%s\"} %d\n"


class Records(logging.Handler):
    def __init__(self):
        logging.Handler.__init__(self, logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelno, record.getMessage()))

    def said(self, text, level=logging.WARNING):
        return [m for lvl, m in self.lines if lvl == level and text in m]


@contextlib.contextmanager
def logged(rig):
    records = Records()
    rig.logger.addHandler(records)
    rig.logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        rig.logger.removeHandler(records)


def status(rig, code=0, **config):
    """(`imds-watcher status`, `status --json` parsed) with the rig's config and these overrides."""
    path = rig.write_config(**dict({"vm_name": None}, **config))
    outputs = []
    for extra in ([], ["--json"]):
        out, err = io.StringIO(), io.StringIO()
        assert main(["--config", path, "--secrets", "", "status"] + extra, stdout=out, stderr=err, trust=TRUST,
                    hold_options={"owner_uid": UID}) == code, err.getvalue()
        outputs.append(out.getvalue())
    return outputs[0], json.loads(outputs[1])


def blind(rig, ticks):
    """A daemon without a VM name and with a policy that approves everything, after `ticks` ticks."""
    daemon = rig.daemon(vm_name=None, approval=APPROVE_ALL)
    for dummy in range(ticks):
        rig.tick(daemon)
    return daemon


def metrics(rig):
    return (rig.tmp / "metrics" / "imds_scheduled_events.prom").read_text()


def test_without_a_vm_name_it_polls_holds_every_event_approves_none_and_says_so(rig_factory):
    rig = rig_factory([MINE, PEERS], faults=[NO_COMPUTE])
    with logged(rig) as records:
        daemon = blind(rig, 10)
    # it polls and holds both events, its own and the peer's, since it cannot tell them apart
    assert sorted(r["id"] for r in rig.holds().status()["reasons"]) == sorted([PEER_ID, REBOOT_ID])
    assert rig.event(REBOOT_ID).approved_by == [] and rig.event(PEER_ID).approved_by == []
    assert daemon.machine.record(REBOOT_ID)["scope"] == "unknown"
    assert rig.syslog[0].startswith("(this VM, name unknown) Reboot ")
    # it says so: one warning (not one per tick), the status, the metric
    assert len(records.said("DEGRADED (vm_name_unknown)")) == 1
    text, data = status(rig)
    assert "THE WATCHER IS DEGRADED" in text and "vm_name_unknown since" in text and "none is approved" in text
    assert "Fix: set vm_name in the config" in text
    assert [d["reason"] for d in data["degraded"]] == ["vm_name_unknown"] and "404" in data["degraded"][0]["detail"]
    assert data["degraded"][0]["since"] == "2025-06-15T15:00:01Z"
    assert DEGRADED % ("vm_name_unknown", 1) in metrics(rig)
    assert DEGRADED % ("imds_unreachable", 0) in metrics(rig) and DEGRADED % ("hold_record_unreadable", 0) in metrics(rig)
    # it keeps asking for its name, with backoff: 1, 2, 4 ... seconds, not at every tick
    asked = [r["sim_time"] for r in rig.sim.request_log.query(vm="myvm") if "/metadata/instance" in r["path"]]
    assert asked == [1.0, 2.0, 4.0, 8.0]


def test_once_imds_names_it_its_own_events_are_approved_and_the_peers_stay_held_until_gone(rig_factory):
    rig = rig_factory([MINE, PEERS], faults=[NO_COMPUTE])
    with logged(rig) as records:
        daemon = blind(rig, 6)
        rig.control("DELETE", "/faults")  # compute/name answers from now on
        ticks = 0
        while daemon.vm.name is None and ticks < 70:  # asked again within the backoff's cap
            rig.tick(daemon)
            ticks += 1
        rig.tick(daemon)
    assert daemon.vm.name == "myvm"
    assert rig.event(REBOOT_ID).approved_by == ["myvm"] and rig.event(PEER_ID).approved_by == []
    assert records.said("no longer degraded (vm_name_unknown)", logging.INFO)
    assert DEGRADED % ("vm_name_unknown", 0) in metrics(rig)
    text, data = status(rig)
    assert "DEGRADED" not in text and data["degraded"] == []
    peer = daemon.machine.record(PEER_ID)
    assert peer["held"] and peer["scope"] == "other_vms"  # not released for being a peer's: only once it is gone
    while rig.sim.world.now() < 125:
        rig.tick(daemon)
    assert rig.transitions(PEER_ID)[-1] == "released"
    assert [e["outcome"] for e in rig.journal() if e["event_id"] == PEER_ID and e["transition"] == "gone"] == ["cancelled"]
    assert [r["id"] for r in rig.holds().status()["reasons"]] == [REBOOT_ID]


def test_imds_silent_for_long_and_an_unreadable_hold_record_are_said(rig_factory):
    rig = rig_factory([])
    with logged(rig) as records:
        daemon = rig.daemon(max_backoff=5)
        rig.tick(daemon)
        rig.control("POST", "/faults", {"kind": "status", "code": 500})
        for dummy in range(23):  # 5 s apart once backed off: 110 s without an answer
            rig.tick(daemon, seconds=5.0)
        assert DEGRADED % ("imds_unreachable", 0) in metrics(rig)
        rig.tick(daemon, seconds=10.0)  # past max(120, 12 x max_backoff) seconds
        assert DEGRADED % ("imds_unreachable", 1) in metrics(rig)
        assert records.said("DEGRADED (imds_unreachable)")
        rig.control("DELETE", "/faults")
        rig.tick(daemon)
        assert DEGRADED % ("imds_unreachable", 0) in metrics(rig)
        assert records.said("no longer degraded (imds_unreachable)", logging.INFO)
        os.chmod(str(rig.tmp / "holds"), 0o777)  # a hold record anyone could replace is not trusted
        rig.tick(daemon)
        rig.tick(daemon)
        assert DEGRADED % ("hold_record_unreadable", 1) in metrics(rig)
        assert len(records.said("DEGRADED (hold_record_unreadable)")) == 1
    text, data = status(rig, code=1, vm_name="myvm")  # the hold record cannot be read by status either
    assert "hold_record_unreadable since" in text and "imds-hold status" in text
    assert [d["reason"] for d in data["degraded"]] == ["hold_record_unreadable"] and data["holds"] is None


@pytest.mark.parametrize("value", hostile.strings("CANARY"), ids=hostile.ids(hostile.strings("CANARY")))
def test_what_imds_answers_instead_of_a_name_stays_one_line_of_data(rig_factory, tmp_path, value):
    """The answer to compute/name reaches the log, the state file and `status` as the degraded reason's detail."""
    canary = str(tmp_path / "canary")
    body = value.value.replace("CANARY", canary).encode("utf-8", "surrogatepass")  # bytes, as a server sends
    rig = rig_factory([])
    server = ScriptedServer()
    try:
        with logged(rig) as records:
            server.script(answer(404, body), answer(200, {"DocumentIncarnation": 1, "Events": []}))
            client = ImdsClient(endpoint=server.endpoint, retries=0, timeout=30, first_timeout=30,
                                clock=rig.time.now, sleep=rig.time.sleep)
            daemon = Daemon(rig.config(vm_name=None), trust=TRUST, **dict(rig.daemon_options(), client=client))
            daemon.start()
            rig.tick(daemon)
    finally:
        server.stop()
    text, data = status(rig)
    saved = (rig.tmp / "state" / "watcher-state.json").read_text()
    hostile.assert_no_trace(canary, text, saved, metrics(rig), json.dumps(records.lines))
    assert [d["reason"] for d in data["degraded"]] == ["vm_name_unknown"]
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f]", text)  # one line per item: no control characters
    assert re.findall(r"^imds_scheduled_events_degraded\{.*$", metrics(rig), re.M) == [
        'imds_scheduled_events_degraded{reason="hold_record_unreadable"} 0',
        'imds_scheduled_events_degraded{reason="imds_unreachable"} 0',
        'imds_scheduled_events_degraded{reason="vm_name_unknown"} 1']
