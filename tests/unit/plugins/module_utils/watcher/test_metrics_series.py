# -*- coding: utf-8 -*-
# Copyright: imds.scheduled_events contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The series the alerting rules read: one per tracked event with bounded labels and its timestamps, the age of
every hold reason, the watcher's start time and version; each appears and disappears when docs/watcher.md says."""

from __future__ import annotations

import os
import re

from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.backends import CommandBackend
from ansible_collections.imds.scheduled_events.plugins.module_utils.hold.manager import HoldManager, Reason
from ansible_collections.imds.scheduled_events.plugins.module_utils.watcher.metrics import (
    MAX_LABEL, METRICS, PREFIX, WATCHER_VERSION, Metrics)
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.conftest import START_EPOCH
from ansible_collections.imds.scheduled_events.tests.unit.plugins.module_utils.watcher.helpers import UID

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", ".."))
REBOOT_ID = "4CAEA225-A741-474D-A72E-428C86FCD853"
PEER_ID = "9D8C7B6A-5F4E-4D3C-8B2A-1F0E9D8C7B6A"
REBOOT = {"id": REBOOT_ID, "type": "Reboot", "resources": ["myvm"], "at": 5, "notice": 900, "started_for": 600}
SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)",?')


def parse(text):
    """{(name, ((label, value), ...)): value} of an exposition text; every sample line must parse."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = tuple(sorted(LABEL.findall(match.group(2) or "")))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def series(samples, name):
    """[(labels as a dict, value)] of one metric."""
    return [(dict(labels), value) for (metric, labels), value in sorted(samples.items()) if metric == PREFIX + name]


def record(**overrides):
    rec = {"id": REBOOT_ID, "type": "Reboot", "status": "Scheduled", "scope": "this_vm", "state": "ready",
           "held": True, "first_seen": 1750000000.0, "since": 1750000002.5, "not_before": 1750000900.0,
           "event": {"EventId": REBOOT_ID, "EventSource": "Platform"}}
    rec.update(overrides)
    return rec


def test_every_new_family_has_help_and_type():
    text = Metrics().render()
    for name in ("watcher_info", "watcher_start_time_seconds", "event_info", "event_not_before_timestamp_seconds",
                 "event_detected_timestamp_seconds", "event_state_since_timestamp_seconds",
                 "hold_reason_since_timestamp_seconds", "hold_reason_age_seconds"):
        assert name in METRICS
        assert "# TYPE %s%s gauge\n" % (PREFIX, name) in text


def test_version_is_the_collections():
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        version = re.search(r"^version:\s*(\S+)", handle.read(), re.M).group(1)
    assert WATCHER_VERSION == version


def test_failure_counters_are_there_at_zero_before_the_first_failure():
    samples = parse(Metrics().render())  # so increase() counts the first failure and rules never see "no data"
    assert series(samples, "action_failures_total") == [
        ({"action": "approve"}, 0.0), ({"action": "hold"}, 0.0), ({"action": "release"}, 0.0)]
    assert series(samples, "hook_failures_total") == [({"phase": "post"}, 0.0), ({"phase": "pre"}, 0.0)]


def test_start_time_and_version():
    metrics = Metrics()
    metrics.started(1750000000.25)
    samples = parse(metrics.render())
    assert series(samples, "watcher_info") == [({"version": WATCHER_VERSION}, 1.0)]
    assert series(samples, "watcher_start_time_seconds") == [({}, 1750000000.25)]


def test_one_series_per_tracked_event_with_its_labels_and_timestamps():
    metrics = Metrics()
    metrics.set_events([record(), record(id=PEER_ID, type="Freeze", scope="other_vms", state="ignored", held=False,
                                         not_before=None, event={"EventSource": "User"})])
    samples = parse(metrics.render())
    assert series(samples, "event_info") == [
        ({"event_id": REBOOT_ID, "type": "Reboot", "status": "Scheduled", "source": "Platform", "scope": "this_vm",
          "state": "ready", "held": "true"}, 1.0),
        ({"event_id": PEER_ID, "type": "Freeze", "status": "Scheduled", "source": "User", "scope": "other_vms",
          "state": "ignored", "held": "false"}, 1.0)]
    # no NotBefore (a Started event, or none given): no series rather than a made-up time
    assert series(samples, "event_not_before_timestamp_seconds") == [({"event_id": REBOOT_ID}, 1750000900.0)]
    assert series(samples, "event_detected_timestamp_seconds") == [
        ({"event_id": REBOOT_ID}, 1750000000.0), ({"event_id": PEER_ID}, 1750000000.0)]
    assert ({"event_id": REBOOT_ID}, 1750000002.5) in series(samples, "event_state_since_timestamp_seconds")


def test_a_forgotten_event_leaves_no_series():
    metrics = Metrics()
    metrics.set_events([record()])
    metrics.set_events([])
    samples = parse(metrics.render())
    for name in ("event_info", "event_not_before_timestamp_seconds", "event_detected_timestamp_seconds",
                 "event_state_since_timestamp_seconds"):
        assert series(samples, name) == []


def test_labels_of_hostile_or_missing_fields_stay_bounded_and_parse():
    metrics = Metrics()
    weird = 'We"ird\\Type\n' + "x" * 1000
    metrics.set_events([record(type=weird, status=None, scope=None, event=None, id="a" * 500)])
    samples = parse(metrics.render())
    [(labels, value)] = series(samples, "event_info")
    assert value == 1.0
    assert labels["status"] == labels["scope"] == labels["source"] == "unknown"
    assert len(labels["event_id"]) == MAX_LABEL and labels["event_id"].endswith("...")
    assert labels["type"].startswith('We\\"ird\\\\Type\\n')  # escaped in the file, as the format wants
    metrics.set_events([record(status="Sched\udcffuled\0")])  # what json.loads lets through; the file is UTF-8
    assert series(parse(metrics.render()), "event_info")[0][0]["status"] == "Sched\ufffduled\ufffd"


def test_the_age_of_every_hold_reason():
    metrics = Metrics()
    reasons = [{"id": REBOOT_ID, "holder": "imds-watcher", "event_id": REBOOT_ID, "since": "2025-06-15T15:00:02Z"},
               {"id": "db-upgrade", "holder": "alice", "event_id": None, "since": "2025-06-15T14:00:00Z"},
               {"id": "torn", "holder": "bob", "since": "yesterday"}]
    now = 1750000000.0 + 3602.0  # 2025-06-15T15:00:02Z is 1749999602
    metrics.set_hold_reasons(reasons, now)
    samples = parse(metrics.render())
    assert sorted(series(samples, "hold_reason_since_timestamp_seconds"), key=lambda s: s[1]) == [
        ({"reason_id": "db-upgrade", "holder": "alice"}, 1749996000.0),
        ({"reason_id": REBOOT_ID, "holder": "imds-watcher", "event_id": REBOOT_ID}, 1749999602.0)]
    ages = dict((labels["reason_id"], value) for labels, value in series(samples, "hold_reason_age_seconds"))
    assert ages == {REBOOT_ID: now - 1749999602.0, "db-upgrade": now - 1749996000.0}
    metrics.set_hold_reasons([], now)
    assert series(parse(metrics.render()), "hold_reason_age_seconds") == []


def read(rig):
    return parse((rig.tmp / "metrics" / "imds_scheduled_events.prom").read_text())


def test_the_daemon_writes_each_series_while_it_applies(rig_factory):
    rig = rig_factory([REBOOT, dict(REBOOT, id=PEER_ID, resources=["myvm-peer"])])
    daemon = rig.daemon()
    # the hold record's times from the simulated clock too, so the ages follow it
    daemon.holds = HoldManager(state_file=str(rig.tmp / "holds" / "holds.json"), owner_uid=UID, clock=rig.time.wall)
    rig.tick(daemon)
    samples = read(rig)
    assert series(samples, "watcher_info") == [({"version": WATCHER_VERSION}, 1.0)]
    assert series(samples, "watcher_start_time_seconds") == [({}, round(rig.time.wall() - 1.0, 3))]
    assert series(samples, "event_info") == [] and series(samples, "hold_reason_age_seconds") == []
    assert series(samples, "notification_failures_total") == [({"channel": "syslog"}, 0.0)]  # each configured channel
    # an operator's own hold is listed too, with its holder
    daemon.holds.hold(Reason("db-upgrade", "upgrading the database", holder="alice"),
                      [CommandBackend.target("noop", ["true"], ["true"])])
    for dummy in range(4):
        rig.tick(daemon)
    detected = rig.time.wall()
    samples = read(rig)
    info = dict((labels["event_id"], labels) for labels, dummy in series(samples, "event_info"))
    assert info[REBOOT_ID] == {"event_id": REBOOT_ID, "type": "Reboot", "status": "Scheduled", "source": "Platform",
                               "scope": "this_vm", "state": "ready", "held": "true"}
    assert info[PEER_ID]["state"] == "ignored" and info[PEER_ID]["held"] == "false"
    assert ({"event_id": REBOOT_ID}, START_EPOCH + rig.event(REBOOT_ID).not_before) in \
        series(samples, "event_not_before_timestamp_seconds")
    assert ({"event_id": REBOOT_ID}, detected) in series(samples, "event_detected_timestamp_seconds")
    holders = sorted((labels["holder"], labels["reason_id"]) for labels, dummy in
                     series(samples, "hold_reason_since_timestamp_seconds"))
    assert holders == [("alice", "db-upgrade"), ("imds-watcher", REBOOT_ID)]
    # the age grows with the clock, tick by tick
    rig.tick(daemon, seconds=60)
    samples = read(rig)
    ages = dict((labels["reason_id"], value) for labels, value in series(samples, "hold_reason_age_seconds"))
    since = dict((labels["reason_id"], value) for labels, value in series(samples, "hold_reason_since_timestamp_seconds"))
    assert ages == dict((reason, rig.time.wall() - value) for reason, value in since.items())
    assert ages[REBOOT_ID] >= 60
    # cancelled: gone after confirm_polls, released, forgotten; its series go, the operator's reason stays
    rig.control("POST", "/events/%s/cancel" % REBOOT_ID)
    rig.control("POST", "/events/%s/cancel" % PEER_ID)
    for dummy in range(4):
        rig.tick(daemon)
    assert rig.marks() == ["hold %s" % REBOOT_ID, "release %s" % REBOOT_ID]
    samples = read(rig)
    for name in ("event_info", "event_not_before_timestamp_seconds", "event_detected_timestamp_seconds",
                 "event_state_since_timestamp_seconds"):
        assert series(samples, name) == []
    assert [labels["reason_id"] for labels, dummy in series(samples, "hold_reason_age_seconds")] == ["db-upgrade"]
    assert series(samples, "events_pending") == [({}, 0.0)]


def test_an_unreadable_hold_record_keeps_the_last_reasons_and_the_file_is_still_written(rig_factory):
    rig = rig_factory([REBOOT])
    daemon = rig.daemon()
    for dummy in range(6):
        rig.tick(daemon)
    assert len(series(read(rig), "hold_reason_age_seconds")) == 1
    os.chmod(str(rig.tmp / "holds"), 0o777)  # a record others may write is refused
    try:
        polls = series(read(rig), "polls_total")[0][1]
        rig.tick(daemon)
        samples = read(rig)
        assert series(samples, "polls_total")[0][1] == polls + 1
        assert len(series(samples, "hold_reason_age_seconds")) == 1
    finally:
        os.chmod(str(rig.tmp / "holds"), 0o755)
